"""vmae-data stats: per source and split counts, hours and bytes, and the plot."""
import pytest
from click.testing import CliRunner

from test_shard import make_clips, make_manifest
from vmae.cli.data import data
from vmae.shards.index import read_index
from vmae.shards.stats import sample_table, summarize
from vmae.shards.writer import ShardConfig, write_shards


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    clips = make_clips(root / "clips")
    df = make_manifest(clips, 12)
    df.loc[df["source"] == "ava", "split"] = "val"
    df.loc[0, "duration"] = None  # k400_0000: 12 frames at 30 fps -> 0.4 s from frames / fps
    df.loc[3, ["duration", "frames"]] = None  # k400_0003: nothing to tell its length
    write_shards(df, root / "s", ShardConfig(max_count=5), progress=False)
    return root / "s", df


def test_counts_hours_and_bytes_per_source_and_split(shard_set):
    folder, df = shard_set
    table = summarize(sample_table(folder))
    sizes = read_index(folder).groupby("key")["size"].sum()
    # Named as `mix` names its sources: the K710 merge's k400 rows count as k710.
    assert list(table.index) == [("ava", "val"), ("k710", "train"), ("ssv2", "train"), ("total", "")]
    sources = df["source"].replace({"k400": "k710"})
    for (source, split), row in table.drop(("total", "")).iterrows():
        rows = df[(sources == source) & (df["split"] == split)]
        seconds = rows["duration"].fillna(rows["frames"].astype("float64") / rows["fps"]).fillna(0).sum()
        assert row["samples"] == len(rows)
        assert row["hours"] == pytest.approx(seconds / 3600)
        assert row["GB"] == pytest.approx(sizes[rows["key"]].sum() / 1e9)
    assert table.loc[("k710", "train"), "unknown_duration"] == 1
    assert table.loc[("total", ""), "samples"] == 12
    assert table.loc[("total", ""), "GB"] == pytest.approx(sizes.sum() / 1e9)


def test_cli_prints_the_table_and_writes_the_plot(shard_set, tmp_path):
    folder, _ = shard_set
    result = CliRunner().invoke(data, ["stats", str(folder), "--plot", str(tmp_path / "stats.png")])
    assert result.exit_code == 0, result.output
    assert "ssv2" in result.output and "total" in result.output and "hours" in result.output
    png = (tmp_path / "stats.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_cli_says_what_to_do_for_an_incomplete_set(tmp_path):
    result = CliRunner().invoke(data, ["stats", str(tmp_path)])
    assert result.exit_code == 1 and "index.parquet not found" in result.output
