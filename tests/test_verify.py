"""vmae-data verify: a clean set passes; each kind of damage is found and named."""
import io
import json
import shutil
import tarfile

import pandas as pd
import pytest
from click.testing import CliRunner

from test_shard import make_clips, make_manifest
from vmae.cli.data import data
from vmae.shards.index import read_index
from vmae.shards.verify import verify
from vmae.shards.writer import ShardConfig, write_shards


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A labeled set of 12 samples in 3 shards, named train-* after the manifest's split."""
    root = tmp_path_factory.mktemp("verify")
    clips = make_clips(root / "clips")
    out = root / "shards"
    write_shards(make_manifest(clips, 12), out, ShardConfig(max_count=4, labeled=True), progress=False)
    return out


@pytest.fixture
def copy(good, tmp_path):
    shutil.copytree(good, tmp_path / "s")
    return tmp_path / "s"


def _member(folder, suffix, n=0):
    """The n-th index row whose member ends with suffix."""
    rows = read_index(folder)
    return rows[rows["member"].str.endswith(suffix)].sort_values(["shard", "offset"]).iloc[n]


def test_a_clean_set_passes_and_decodes(good):
    report = verify(good, decode=True, progress=False)
    assert report.problems == []
    assert (report.shards, report.samples, report.decoded) == (3, 12, 12)


@pytest.mark.parametrize("where", ["half", "inside a clip"])
def test_a_truncated_shard_is_found(copy, where):
    path = copy / "train-000001.tar"
    size = path.stat().st_size
    clip = _member(copy, ".mp4", 5)
    assert clip["shard"] == path.name
    cut = size // 2 if where == "half" else int(clip["offset"]) + 10
    with open(path, "r+b") as f:
        f.truncate(cut)
    problems = verify(copy, progress=False).problems
    name = path.name
    assert f"{name}: {cut} bytes, shards.json says {size}" in problems
    assert any(p.startswith(f"{name}: sha256 differs") for p in problems)
    assert any(p.startswith(f"{name}: index.parquet lists") for p in problems)
    ending = [p for p in problems if "end-of-archive" in p or "unreadable after" in p]
    assert len(ending) == 1
    if where == "inside a clip":
        assert "unexpected end of data" in ending[0]
    assert all(p.startswith(name) for p in problems)


def test_a_flipped_byte_is_found(copy):
    row = _member(copy, ".mp4", 5)
    with open(copy / row["shard"], "r+b") as f:
        f.seek(int(row["offset"]) + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert verify(copy, progress=False).problems == [
        f"{row['shard']}: sha256 differs from shards.json (the file changed or is damaged)"]


def test_a_damaged_json_member_is_found(copy):
    row = _member(copy, ".json", 2)
    with open(copy / row["shard"], "r+b") as f:
        f.seek(int(row["offset"]))
        f.write(b"#")
    problems = verify(copy, progress=False).problems
    assert f"{row['shard']}: {row['key']}.json is not valid JSON" in "\n".join(problems)


def test_a_missing_member_is_found(copy):
    row = _member(copy, ".cls", 1)
    path = copy / row["shard"]
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers() if m.name != row["member"]]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as dst:
        for m, payload in members:
            dst.addfile(m, io.BytesIO(payload))
    problems = verify(copy, progress=False).problems
    assert f"{row['shard']}: sample {row['key']} lacks {row['key']}.cls" in problems
    assert f"{row['shard']}: index.parquet lists {row['member']}, which the shard does not hold" in problems


def test_a_shard_missing_from_the_index_and_a_listed_shard_missing_from_the_folder(copy):
    summary = json.loads((copy / "shards.json").read_text())
    dropped = summary["shards"].pop(0)
    (copy / "shards.json").write_text(json.dumps(summary))
    (copy / summary["shards"][0]["file"]).unlink()
    problems = verify(copy, progress=False).problems
    assert f"{dropped['file']}: in the folder but not in shards.json / index.parquet" in problems
    assert any(p.startswith(f"{dropped['file']}: index.parquet has 12 members") for p in problems)
    assert f"{summary['shards'][0]['file']}: listed in shards.json but missing from the folder" in problems
    assert any(p.startswith("shards.json: totals.samples is 12") for p in problems)


def test_an_incomplete_set_is_reported(copy):
    (copy / "shards.json").unlink()
    problems = verify(copy, progress=False).problems
    assert len(problems) == 1 and "shards.json not found" in problems[0]


def test_decode_finds_a_clip_that_looks_like_a_video_but_is_not(tmp_path):
    clips = make_clips(tmp_path / "clips", n=2)
    broken = tmp_path / "clips" / "broken.mp4"
    broken.write_bytes(clips[0].read_bytes()[:300])  # starts like an MP4, the rest is gone
    df = make_manifest(clips + [broken], 3)
    write_shards(df, tmp_path / "s", ShardConfig(), progress=False)
    assert verify(tmp_path / "s", progress=False).problems == []
    problems = verify(tmp_path / "s", decode=True, progress=False).problems
    assert len(problems) == 1 and problems[0].startswith(f"uh-000000.tar: {df['key'][2]}.mp4 does not decode")


def test_cli_lists_problems_and_exits_1(good, copy):
    result = CliRunner().invoke(data, ["verify", str(good), "--no-progress"])
    assert result.exit_code == 0 and "3 shards, 12 samples; 0 problem(s)" in result.output
    index = read_index(copy)
    index[index["shard"] != "train-000000.tar"].to_parquet(copy / "index.parquet", index=False)
    result = CliRunner().invoke(data, ["verify", str(copy), "--no-progress", "--workers", "2"])
    assert result.exit_code == 1
    assert "train-000000.tar: member" in result.output and "is not in index.parquet" in result.output
    assert pd.read_parquet(copy / "index.parquet")["shard"].nunique() == 2
