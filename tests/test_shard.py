"""vmae-data shard: real tiny videos, real tar files, real processes (pool, Ray, kill -9)."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from click.testing import CliRunner

from videos import make_index_video, read_index
from vmae.cli.data import data
from vmae.errors import FolderInUseError
from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest, write_manifest
from vmae.shards.format import decode_sample, encode_sample, sample_metadata
from vmae.shards.index import read_index as read_shard_index
from vmae.shards.index import read_sample
from vmae.shards.writer import (PlannedSample, ShardConfig, Transcode, parse_size, parse_transcode,
                                plan_shards, sample_tar_bytes, select_rows, tar_bytes,
                                write_shards)

SOURCES = ("k400", "ssv2", "ava")


def make_clips(folder: Path, n: int = 4, frames: int = 12) -> list:
    """n tiny real H.264 clips with different lengths (so different bytes)."""
    return [make_index_video(folder / f"clip{i}.mp4", frames + i, size=(64, 64)) for i in range(n)]


def make_manifest(clips, n: int, sources=SOURCES, split="train") -> pd.DataFrame:
    """n ok rows over the clips (rows may share a file) and the sources in turn, with probe facts."""
    df = empty_manifest(n)
    df["source"] = [sources[i % len(sources)] for i in range(n)]
    df["key"] = [f"{df['source'][i]}_{i:04d}" for i in range(n)]
    df["path"] = [str(clips[i % len(clips)]) for i in range(n)]
    df["status"] = "ok"
    df["label_id"] = pd.array([i % 7 for i in range(n)], dtype="Int64")
    df["label"] = [f"class {i % 7}" for i in range(n)]
    df["split"] = split
    df["stride"] = pd.array([2 if s == "ssv2" else 4 for s in df["source"]], dtype="Int64")
    frames = [12 + i % len(clips) for i in range(n)]
    df["frames"] = pd.array(frames, dtype="Int64")
    df["fps"], df["duration"] = 30.0, [f / 30 for f in frames]
    df["width"] = df["height"] = pd.array([64] * n, dtype="Int64")
    return df


def folder_bytes(folder: Path) -> dict:
    """Every file of a folder (sidecars included) by name -> bytes."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("clips"))


# ------------------------------------------------------------------ options and plan (pure)

def test_parse_size_and_transcode():
    assert parse_size("1GB") == 10**9 and parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5kb") == 1500 and parse_size("0") is None
    with pytest.raises(ValueError, match="1GB"):
        parse_size("lots")
    assert parse_transcode("none") is None
    assert parse_transcode("short-side=320") == Transcode(320, 16)
    assert parse_transcode("short-side=256,gop=8") == Transcode(256, 8)
    for bad in ("short-side=abc", "gop=0", "size=3"):
        with pytest.raises(ValueError):
            parse_transcode(bad)


def _planned(counts: dict, size=1000):
    samples = []
    for source, n in counts.items():
        samples += [PlannedSample(f"{source}_{i:04d}", "/x", size + i, {"key": f"{source}_{i:04d}", "source": source})
                    for i in range(n)]
    return sorted(samples, key=lambda s: s.key)


def test_plan_puts_every_source_in_every_shard_in_proportion():
    counts = {"k710": 180, "ssv2": 90, "ava": 30}
    shards = plan_shards(_planned(counts), ShardConfig(max_count=30, max_size=None, seed=3))
    assert [len(s) for s in shards] == [30] * 10
    keys = [s.key for shard in shards for s in shard]
    assert len(keys) == len(set(keys)) == 300
    for shard in shards:
        got = Counter(s.meta["source"] for s in shard)
        for source, n in counts.items():
            assert abs(got[source] - n * 30 / 300) <= 1.5, (got, source)
    again = plan_shards(_planned(counts), ShardConfig(max_count=30, max_size=None, seed=3))
    other = plan_shards(_planned(counts), ShardConfig(max_count=30, max_size=None, seed=4))
    assert [[s.key for s in sh] for sh in again] == [[s.key for s in sh] for sh in shards]
    assert [[s.key for s in sh] for sh in other] != [[s.key for s in sh] for sh in shards]


def test_plan_respects_the_size_cap():
    samples = _planned({"a": 40, "b": 20}, size=30_000)
    cap = 200_000
    shards = plan_shards(samples, ShardConfig(max_count=1000, max_size=cap))
    assert sum(len(s) for s in shards) == 60 and len(shards) > 1
    for shard in shards:
        assert tar_bytes(sum(sample_tar_bytes(s, False) for s in shard)) <= cap
    # A sample bigger than the cap still gets written, alone.
    big = plan_shards(_planned({"a": 3}, size=500_000), ShardConfig(max_size=cap))
    assert [len(s) for s in big] == [1, 1, 1]


# ------------------------------------------------------------------ writing

def test_shards_hold_every_usable_row_and_record_every_skipped_one(tmp_path, clips):
    df = make_manifest(clips, 12)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4000))
    (tmp_path / "empty.mp4").touch()
    bad = make_manifest(clips, 7)
    bad["key"] = ["corrupt", "missing", "empty", "failed", "unprobed", "k400_0000", "bad.key"]
    bad["path"] = [str(garbage), str(tmp_path / "nope.mp4"), str(tmp_path / "empty.mp4"), str(clips[0]),
                   str(clips[1]), str(clips[2]), str(clips[3])]
    bad["status"] = ["ok", "ok", "ok", "unavailable", None, "ok", "ok"]
    bad["error"] = [None, None, None, "Video unavailable", None, None, None]
    manifest = tmp_path / "m.parquet"
    write_manifest(pd.concat([df, bad], ignore_index=True), manifest)
    out = tmp_path / "out"
    report = write_shards(manifest, out, ShardConfig(max_count=5), progress=False)

    skipped = pd.read_parquet(out / "skipped.parquet").set_index("key")
    assert skipped["reason"].to_dict() == {"corrupt": "not-a-video", "missing": "missing-file",
                                           "empty": "empty-file", "failed": "unavailable",
                                           "k400_0000": "duplicate-key", "bad.key": "bad-key"}
    assert skipped.loc["failed", "error"] == "Video unavailable"
    assert report.unprobed == 1 and report.samples == 13 and report.complete
    summary = json.loads((out / "shards.json").read_text())
    assert summary["totals"]["samples"] == 13 and summary["skipped"]["rows"] == 6
    assert summary["options"]["unprobed_accepted"] == 1
    assert [s["file"] for s in summary["shards"]] == ["uh-000000.tar", "uh-000001.tar", "uh-000002.tar"]
    index = read_shard_index(out)
    assert set(index["key"]) == set(df["key"]) | {"unprobed"}
    # The real tars match shards.json, and tar(1) reads them with the fixed header fields.
    for entry in summary["shards"]:
        path = out / entry["file"]
        assert path.stat().st_size == entry["bytes"]
        listing = subprocess.run(["tar", "tvf", str(path)], capture_output=True, text=True, check=True).stdout
        assert all(" 0/0 " in line and "1970-01-01" in line for line in listing.splitlines())
        assert len(listing.splitlines()) == 2 * entry["samples"]


def test_actual_shard_sizes_match_the_plan_and_the_cap(tmp_path, clips):
    df = make_manifest(clips, 20)
    cfg = ShardConfig(max_size=3 * 10240)
    write_shards(df, tmp_path / "out", cfg, progress=False)
    summary = json.loads((tmp_path / "out" / "shards.json").read_text())
    usable, _, _ = select_rows(df, tmp_path, labeled=False)
    planned = [tar_bytes(sum(sample_tar_bytes(s, False) for s in shard)) for shard in plan_shards(usable, cfg)]
    assert [s["bytes"] for s in summary["shards"]] == planned
    assert len(planned) > 2 and max(planned) <= cfg.max_size


def test_same_bytes_with_any_worker_count_and_slices(tmp_path, clips):
    df = make_manifest(clips, 24)
    cfg = ShardConfig(max_count=4, seed=7)
    write_shards(df, tmp_path / "one", cfg, ExecutorConfig(workers=1), progress=False)
    write_shards(df, tmp_path / "pool", cfg, ExecutorConfig(workers=2), progress=False)
    for i in range(3):
        report = write_shards(df, tmp_path / "slices", cfg, ExecutorConfig(unit_index=i, num_units=3),
                              progress=False)
        assert report.written == 2
        assert report.complete == (i == 2)
        assert (tmp_path / "slices" / "shards.json").exists() == (i == 2)
    expected = folder_bytes(tmp_path / "one")
    assert len([n for n in expected if n.endswith(".tar")]) == 6
    assert folder_bytes(tmp_path / "pool") == expected
    assert folder_bytes(tmp_path / "slices") == expected


@pytest.mark.slow
def test_ray_gives_the_same_bytes(tmp_path, clips):
    ray = pytest.importorskip("ray")
    df = make_manifest(clips, 12)
    cfg = ShardConfig(max_count=4)
    write_shards(df, tmp_path / "local", cfg, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        write_shards(df, tmp_path / "ray", cfg, ExecutorConfig(executor="ray"), progress=False)
    finally:
        ray.shutdown()
    assert folder_bytes(tmp_path / "ray") == folder_bytes(tmp_path / "local")


def test_rerun_keeps_complete_shards_and_replans_when_options_change(tmp_path, clips):
    df = make_manifest(clips, 12)
    out = tmp_path / "out"
    write_shards(df, out, ShardConfig(max_count=2), progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    leftovers = [out / ".uh-000003.tar.tmp-4242-0123456789ab", out / "..uh-000003.json.tmp-4242-0123456789ab",
                 out / ".index.parquet.tmp-7-ba9876543210"]
    for path in leftovers:  # what kill -9 leaves behind
        path.write_bytes(b"partial")
    report = write_shards(df, out, ShardConfig(max_count=2), progress=False)
    assert (report.written, report.reused) == (0, 6)
    assert not any(p.exists() for p in leftovers)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps
    # Other options are another job: refused, the folder untouched.
    with pytest.raises(FolderInUseError, match="shard set of another job.*max_count"):
        write_shards(df, out, ShardConfig(max_count=5), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps
    # The same manifest with fewer usable rows (a status changed) replans: it rewrites what changed and
    # removes the shards it no longer has.
    df.loc[:3, "status"] = "unavailable"
    write_shards(df, out, ShardConfig(max_count=2), progress=False)
    write_shards(df, tmp_path / "fresh", ShardConfig(max_count=2), progress=False)
    assert folder_bytes(out) == folder_bytes(tmp_path / "fresh")
    assert sorted(p.name for p in out.glob("*.tar")) == [f"uh-{i:06d}.tar" for i in range(4)]


def _cli(*args):
    return [sys.executable, "-c", "from vmae.cli.data import data; data()", *map(str, args)]


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_output(tmp_path, clips):
    manifest = tmp_path / "m.parquet"
    write_manifest(make_manifest(clips, 16), manifest)
    args = ["shard", "unlabeled-hybrid", "--manifest", manifest, "--max-count", 2, "--workers", 2,
            "--transcode", "short-side=32,gop=4", "--no-progress"]
    subprocess.run(_cli(*args, "--out", tmp_path / "clean"), check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", out), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob(".uh-*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the writer and its pool workers, as a scheduler would
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "shards.json").exists()
    assert 1 <= len(list(out.glob(".uh-*.json"))) < 8  # killed mid-run: some shards done, not all

    subprocess.run(_cli(*args, "--out", out), check=True, capture_output=True)
    assert folder_bytes(out) == folder_bytes(tmp_path / "clean")


# ------------------------------------------------------------------ reading back

def test_a_sample_read_by_key_through_the_index_equals_the_original(tmp_path, clips):
    df = make_manifest(clips, 9)
    write_shards(df, tmp_path / "out", ShardConfig(max_count=3, labeled=True), progress=False)
    row = df.iloc[5]
    sample = read_sample(tmp_path / "out", row["key"])
    key, video, meta, label = decode_sample(sample)
    assert key == row["key"] and label == row["label_id"]
    assert video == Path(row["path"]).read_bytes()
    assert sample["json"] == encode_sample(row.to_dict(), b"", labeled=True)["json"]
    assert meta == sample_metadata(row.to_dict())
    with pytest.raises(KeyError, match="nope"):
        read_sample(tmp_path / "out", "nope")


def test_webdataset_reads_every_sample_with_its_metadata(tmp_path, clips):
    df = make_manifest(clips, 10)
    write_shards(df, tmp_path / "out", ShardConfig(max_count=4, labeled=True), progress=False)
    urls = sorted(str(p) for p in (tmp_path / "out").glob("*.tar"))
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key, video, meta, label = decode_sample(sample)
        seen[key] = (video, meta, label)
    assert set(seen) == set(df["key"])
    for row in df.to_dict("records"):
        video, meta, label = seen[row["key"]]
        assert video == Path(row["path"]).read_bytes()
        assert meta == sample_metadata(row) and label == row["label_id"]
        assert meta["stride"] == (2 if row["source"] == "ssv2" else 4)


def test_transcode_resizes_sets_keyframes_and_updates_the_metadata(tmp_path, clips):
    import av

    df = make_manifest(clips, 3)
    write_shards(df, tmp_path / "out", ShardConfig(transcode=Transcode(short_side=32, gop=4)), progress=False)
    sample = read_sample(tmp_path / "out", df["key"][2])
    meta = json.loads(sample["json"])
    assert (meta["width"], meta["height"], meta["frames"]) == (32, 32, 14)
    with av.open(io.BytesIO(sample["mp4"])) as container:
        keyframes = [p.is_keyframe for p in container.demux(video=0) if p.size]
    with av.open(io.BytesIO(sample["mp4"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert [i for i, k in enumerate(keyframes) if k] == [0, 4, 8, 12]
    assert [read_index(np.repeat(np.repeat(f, 2, 0), 2, 1)) for f in frames] == list(range(14))


# ------------------------------------------------------------------ command line

def test_cli_k710_names_shards_by_split_and_adds_labels(tmp_path, clips):
    df = make_manifest(clips, 6, split="val")
    df.loc[0, "label_id"] = None
    write_manifest(df, tmp_path / "val.parquet")
    result = CliRunner().invoke(data, ["shard", "k710", "--manifest", str(tmp_path / "val.parquet"),
                                       "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 row(s) skipped (no-label: 1)" in result.output
    with tarfile.open(tmp_path / "out" / "val-000000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 15 and sum(n.endswith(".cls") for n in names) == 5


def test_cli_rejects_bad_options_and_fails_when_nothing_is_usable(tmp_path, clips):
    df = make_manifest(clips, 2)
    df["status"] = "private"
    write_manifest(df, tmp_path / "m.parquet")
    base = ["shard", "unlabeled-hybrid", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "o")]
    for extra, message in ((["--max-size", "big"], "1GB"), (["--transcode", "fast"], "short-side=320"),
                           (["--unit-index", "3", "--num-units", "2"], "--unit-index")):
        result = CliRunner().invoke(data, base + extra)
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(data, base + ["--no-progress"])
    assert result.exit_code == 1 and "no sample was written: all 2 rows were skipped (private: 2)" in result.output
    assert not (tmp_path / "o" / "shards.json").exists() and not (tmp_path / "o" / "index.parquet").exists()
