import pandas as pd
import pytest
from click.testing import CliRunner

from vmae.cli.data import data
from vmae.curation.hybrid import PAPER_CLIPS, PAPER_TOTAL, mix_unlabeled_hybrid
from vmae.manifests import ManifestError, read_manifest, write_manifest


def manifest(path, source, keys, status="ok", split="train", stride=None, path_column=None):
    df = pd.DataFrame({"key": keys, "source": source, "video_id": keys, "status": status, "split": split,
                       "stride": stride, "path": path_column})
    return write_manifest(df, path)


@pytest.fixture
def sources(tmp_path):
    k710 = [f"k400_{i}" for i in range(6)]
    return {
        "k710": manifest(tmp_path / "k710.parquet", "k400", k710, split=["train"] * 5 + ["val"]),
        "ssv2": manifest(tmp_path / "ssv2.parquet", "ssv2", ["ssv2_1", "ssv2_2", "ssv2_3", "ssv2_2"],
                         status=["ok", None, "missing-file", "ok"], stride=4, path_column=str(tmp_path / "v.webm")),
        "ava": manifest(tmp_path / "ava.parquet", "ava", [f"ava_m_{i:03d}" for i in range(3)],
                        status=["ok", "ok", "too-short"], split=None),
        "webvid": manifest(tmp_path / "webvid.parquet", "webvid", ["webvid_1", "webvid_2", "k400_3"], split=None),
    }


def test_mix_counts_strides_and_duplicates(sources, tmp_path):
    out = tmp_path / "hybrid.parquet"
    report = mix_unlabeled_hybrid(sources, out)
    df = read_manifest(out)
    # 6 k710 + 3 ssv2 (one repeated key) + 3 ava + 2 webvid (k400_3 is already taken by k710).
    assert len(df) == 14 and report.total == 14
    counts = {c.source: (c.rows, c.ok, c.duplicates, c.stride) for c in report.counts}
    assert counts == {"k710": (6, 6, 0, 4), "ssv2": (3, 1, 1, 2), "ava": (3, 2, 0, 4), "webvid": (2, 2, 1, 4)}
    assert df.groupby("source")["stride"].first().to_dict() == {"ava": 4, "k400": 4, "ssv2": 2, "webvid": 4}
    assert df["key"].is_unique and df["key"].tolist()[:7] == [f"k400_{i}" for i in range(6)] + ["ssv2_1"]
    assert df["status"].isna().sum() == 1 and (df["status"] == "missing-file").sum() == 1  # every status kept
    rejects = pd.read_csv(tmp_path / "hybrid.rejects.csv")
    assert rejects[["key", "line"]].values.tolist() == [["ssv2_2", 3], ["k400_3", 2]]
    assert rejects["reason"].tolist() == ["duplicate key (kept the earlier ssv2 row)",
                                          "duplicate key (kept the earlier k710 row)"]
    text = "\n".join(report.lines())
    assert "658,000" in text and "1,350,000" in text and "instagram" in text and "(not given)" in text
    assert "val" in text and "warning" in text  # the k710 manifest holds a val row
    # Lists without clips (build-k710's, sample's) are named: the shard step would skip all their rows.
    no_clips = [ln.split()[1] for ln in report.lines() if "has no clip paths" in ln]
    assert no_clips == ["k710", "ava", "webvid"]  # the ssv2 manifest has its videos' paths


def test_stride_override_and_table(sources, tmp_path):
    report = mix_unlabeled_hybrid({"ssv2": sources["ssv2"], "ava": sources["ava"]}, tmp_path / "h.parquet",
                                  {"ssv2": 3, "ava": 1})
    df = read_manifest(tmp_path / "h.parquet")
    assert df.groupby("source")["stride"].first().to_dict() == {"ava": 1, "ssv2": 3}
    line = next(ln for ln in report.lines() if ln.startswith("ssv2"))
    assert line.split() == ["ssv2", "3", "1", f"{PAPER_CLIPS['ssv2']:,}", "0.0%", "3"]
    total = next(ln for ln in report.lines() if ln.startswith("total"))
    assert total.split()[:4] == ["total", "6", "3", f"{PAPER_TOTAL:,}"]
    assert sum(PAPER_CLIPS.values()) == 1_348_000  # the paper's 1.35M, rounded


def test_errors(sources, tmp_path):
    with pytest.raises(ManifestError, match="no manifest given"):
        mix_unlabeled_hybrid({}, tmp_path / "h.parquet")
    with pytest.raises(ManifestError, match="unknown source"):
        mix_unlabeled_hybrid({"ssv2": sources["ssv2"]}, tmp_path / "h.parquet", {"k400": 2})
    with pytest.raises(ManifestError, match="at least 1"):
        mix_unlabeled_hybrid({"ssv2": sources["ssv2"]}, tmp_path / "h.parquet", {"ssv2": 0})


def test_cli(sources, tmp_path):
    runner = CliRunner()
    args = ["mix", "unlabeled-hybrid", "--k710", str(sources["k710"]), "--webvid", str(sources["webvid"]),
            "--out", str(tmp_path / "h.parquet")]
    result = runner.invoke(data, args + ["--stride", "webvid=8"])
    assert result.exit_code == 0, result.output
    assert "k710" in result.output and "dropped 1 webvid rows" in result.output
    assert set(read_manifest(tmp_path / "h.parquet").query("source == 'webvid'")["stride"]) == {8}
    result = runner.invoke(data, args + ["--stride", "webvid"])
    assert result.exit_code == 2 and "SOURCE=N" in result.output
    result = runner.invoke(data, args + ["--stride", "kinetics=2"])
    assert result.exit_code == 1 and "unknown source" in result.output
