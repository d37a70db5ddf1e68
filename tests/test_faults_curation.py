"""ava, sample, import, mix, shard and verify under real faults (issue 11): full disks, rows that clash or
cannot be read, reused folders, two processes at once. Each test names its case."""
import json
import subprocess
import sys
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from disk import mounted_disk
from videos import make_index_video

from vmae.curation.ava import AvaConfig, cut_ava
from vmae.curation.hybrid import mix_unlabeled_hybrid
from vmae.curation.importer import import_videos
from vmae.curation.sampling import sample_source
from vmae.errors import OutputError
from vmae.lock import Lock
from vmae.manifests import empty_manifest, read_manifest, write_manifest
from vmae.shards import index as shard_index
from vmae.shards.verify import verify
from vmae.shards.writer import ShardConfig, Transcode, write_shards


def cli(*args):
    return subprocess.run([sys.executable, "-c", "from vmae.cli.data import data; data()", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture
def disk(tmp_path):
    with mounted_disk(tmp_path / "disk", 1 << 20) as disk:
        yield disk


# ------------------------------------------------------------------ ava

AVA = AvaConfig(window_start=1, window_end=3, clip_frames=30)


@pytest.fixture
def movie(tmp_path):
    make_index_video(tmp_path / "movies" / "m1.mp4", 120, fps=30)
    make_index_video(tmp_path / "movies" / "m2.mp4", 120, fps=30)
    (tmp_path / "list.txt").write_text("m1.mp4\nm2.mp4\n")
    return tmp_path


def test_case1_ava_full_disk_stops_and_a_rerun_completes(movie, disk):
    out = disk.path / "ava"
    disk.fill(leave=0)
    with pytest.raises(OutputError, match=f"cannot write to {out}.*free"):
        cut_ava(movie / "list.txt", movie / "movies", out, AVA)
    disk.free_up()
    report = cut_ava(movie / "list.txt", movie / "movies", out, AVA)
    assert report.clips_ok == 4 and not list(out.rglob("*.tmp-*"))


def test_case8_ava_removes_partial_clips_and_leaves_a_locked_movie_to_its_owner(movie):
    out = movie / "out"
    partial = out / "clips" / ".ava_m1_000.mp4.tmp-4242-0123456789ab"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a clip")
    with Lock(out / "parts" / "m2.lock"):  # another live process is cutting m2
        report = cut_ava(movie / "list.txt", movie / "movies", out, AVA)
    assert report.clips_ok == 2 and report.pending == 1 and not partial.exists()
    assert "m2.mp4: left to another process" in "\n".join(report.lines())
    assert cut_ava(movie / "list.txt", movie / "movies", out, AVA).clips_ok == 4


# ------------------------------------------------------------------ sample and import

def test_case6_ids_that_become_one_key_are_settled_before_sampling(tmp_path):
    ids = ["vidé", "vid✓", "ig two", "ig_two", "plain", "x" * 300]
    meta = tmp_path / "ig.jsonl"
    meta.write_text("".join(json.dumps({"id": i, "url": f"https://ig/{n}.mp4"}) + "\n" for n, i in enumerate(ids)))
    for seed in range(3):
        report = sample_source("instagram", meta, 5, seed, tmp_path / "ig.parquet")
        df = read_manifest(tmp_path / "ig.parquet")
        assert report.usable == 5 and df["key"].is_unique and sorted(df["video_id"]) == sorted(ids[:5])
    keys = dict(zip(df["video_id"], df["key"]))
    assert keys["plain"] == "instagram_plain" and keys["vidé"].startswith("instagram_vid__")
    assert keys["ig two"] != keys["ig_two"] and keys["ig two"].startswith("instagram_ig_two_")
    rejects = pd.read_csv(tmp_path / "ig.rejects.csv")
    assert rejects["line"].tolist() == [6] and "characters long" in rejects["reason"][0]


def test_case8_import_records_broken_symlinks(tmp_path):
    make_index_video(tmp_path / "ucf" / "jump" / "a.mp4", 20)
    (tmp_path / "ucf" / "jump" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    report = import_videos(tmp_path / "ucf", "ucf", tmp_path / "ucf.parquet")
    assert report.rows == 1
    rejects = pd.read_csv(tmp_path / "ucf.rejects.csv")
    assert rejects["key"].tolist() == ["jump/gone.mp4"] and "broken symbolic link" in rejects["reason"][0]


def test_case4_mix_keeps_relative_paths_pointing_at_their_files(tmp_path):
    df = empty_manifest(1)
    df["key"], df["source"], df["path"] = ["webvid_1"], "webvid", "clips/1.mp4"
    write_manifest(df, tmp_path / "webvid" / "manifest.parquet")
    mix_unlabeled_hybrid({"webvid": tmp_path / "webvid" / "manifest.parquet"}, tmp_path / "mix" / "h.parquet")
    assert read_manifest(tmp_path / "mix" / "h.parquet")["path"][0] == str(tmp_path / "webvid" / "clips" / "1.mp4")


# ------------------------------------------------------------------ shard and verify

@pytest.fixture
def manifest(tmp_path):
    df = empty_manifest(6)
    df["key"] = [f"c{i}" for i in range(6)]
    df["source"], df["status"] = "test", "ok"
    df["path"] = [str(make_index_video(tmp_path / "clips" / f"c{i}.mp4", 12 + i)) for i in range(6)]
    write_manifest(df, tmp_path / "m.parquet")
    return tmp_path / "m.parquet"


def test_case8_transcode_with_a_full_temporary_folder_says_so(manifest, tmp_path, disk, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(disk.path))
    disk.fill(leave=0)
    cfg = ShardConfig(max_count=3, transcode=Transcode(short_side=32, gop=4))
    with pytest.raises(OutputError, match="temporary folder for transcoding.*TMPDIR"):
        write_shards(manifest, tmp_path / "shards", cfg, progress=False)
    assert not (tmp_path / "shards" / "shards.json").exists()
    disk.free_up()
    report = write_shards(manifest, tmp_path / "shards", cfg, progress=False)
    assert report.samples == 6 and verify(tmp_path / "shards", progress=False).ok


def test_case9_verify_fails_on_a_set_without_shards(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / shard_index.SHARDS_JSON).write_text(json.dumps({"shards": [], "totals": {"samples": 0}}))
    pq.write_table(pa.Table.from_pylist([], schema=shard_index.INDEX_SCHEMA), folder / shard_index.INDEX)
    report = verify(folder, progress=False)
    assert not report.ok and "lists no shard" in report.problems[0]
    result = cli("verify", folder, "--no-progress")
    assert result.returncode == 1 and "lists no shard" in result.stdout


@pytest.mark.slow
def test_two_shard_processes_into_one_folder_give_one_clean_set(manifest, tmp_path):
    args = ["shard", "unlabeled-hybrid", "--manifest", manifest, "--max-count", 1, "--transcode",
            "short-side=32,gop=4", "--no-progress"]
    procs = [subprocess.Popen([sys.executable, "-c", "from vmae.cli.data import data; data()",
                               *map(str, args), "--out", str(tmp_path / "both")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    if not (tmp_path / "both" / "shards.json").exists():  # each finished while the other still wrote
        assert cli(*args, "--out", tmp_path / "both").returncode == 0
    assert cli(*args, "--out", tmp_path / "alone").returncode == 0
    assert verify(tmp_path / "both", progress=False).ok
    names = sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == names
    assert all((tmp_path / "both" / n).read_bytes() == (tmp_path / "alone" / n).read_bytes()
               for n in names if n.endswith(".tar"))
