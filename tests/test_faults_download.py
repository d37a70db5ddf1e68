"""vmae-data download under real faults (issue 11): a full disk, odd URLs and rows, relative paths, reused
folders, two processes at once. Each test names the case of the issue it covers."""
import errno
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from disk import SmallDisk
from http_server import Server
from videos import make_index_video, write_video

from vmae import media
from vmae.curation.download import DownloadConfig, clip_path, download
from vmae.errors import FolderInUseError, OutputError, row_error
from vmae.manifests import empty_manifest, read_manifest, write_manifest

FAST = dict(backoff=0.01, tries=1, short_side=None, rows_per_unit=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for name in ("a", "b", "c", "d"):
        make_index_video(root / f"{name}.mp4", 45, fps=30)
    (root / "dir with space").mkdir()
    make_index_video(root / "dir with space" / "vidé.mp4", 45, fps=30)
    server = Server(root)
    yield server
    server.close()


def rows(keys, **columns) -> pd.DataFrame:
    df = empty_manifest(len(keys))
    df["key"], df["source"] = list(keys), "test"
    df["start_sec"], df["end_sec"] = 0.0, 1.0
    for name, values in columns.items():
        df[name] = values
    return df


def cli(*args, preexec=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from vmae.cli.data import data; data()", *map(str, args)],
                          capture_output=True, text=True, preexec_fn=preexec, cwd=cwd)


def complete(path) -> bool:
    """The clip opens and its header's frame count is what was decoded: nothing half-written."""
    try:
        facts = media.probe(path, decode=True)
    except media.MediaError:
        return False
    return facts["frames"] > 0


def noise_video(path, frames=60) -> Path:
    """A video that compresses badly: its clips are large (about 56 KB a second at 64x64)."""
    return write_video(path, np.random.default_rng(0).integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8))


# ------------------------------------------------------------------ case 1: full disk during download

@pytest.fixture
def disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk", 1 << 20)
    yield disk
    disk.close()


def test_case1_full_disk_stops_the_run_and_a_rerun_completes_it(tmp_path, disk):
    src = noise_video(tmp_path / "src.mp4")
    keys = [f"k{i}" for i in range(6)]
    write_manifest(rows(keys, path=str(src)), tmp_path / "in.parquet")
    out = disk.path / "clips"
    args = ["download", tmp_path / "in.parquet", "--out", out, "--rows-per-unit", 1, "--short-side", 0,
            "--no-progress"]
    disk.fill(leave=150_000)  # about two clips and their unit files
    first = cli(*args, preexec=disk.preexec())
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr and f"cannot write to {out}" in first.stderr
    assert "free" in first.stderr and "rerun the same command" in first.stderr
    assert not (out / "manifest.parquet").exists()  # stopped at once: not one failure per later row
    units = sorted((out / ".units").glob("unit-*.parquet"))
    assert 1 <= len(units) < len(keys) and all(read_manifest(u)["status"].eq("ok").all() for u in units)
    written = sorted(out.glob("clips/*/*.mp4"))
    assert all(complete(c) for c in written)  # no clip without its moov atom under its final name
    stamps = {c: c.stat().st_mtime_ns for c in written}

    disk.free_up()
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    got = read_manifest(out / "manifest.parquet")
    assert got["status"].eq("ok").all() and got["frames"].eq(30).all()
    assert all(complete(p) for p in got["path"])
    assert {c: c.stat().st_mtime_ns for c in written} == stamps  # finished clips kept, not cut again
    assert not list(out.rglob("*.tmp-*"))


def test_case1_a_broken_clip_under_its_final_name_is_cut_again(tmp_path):
    src = make_index_video(tmp_path / "src.mp4", 45)
    out = tmp_path / "out"
    clip = clip_path(out.resolve(), "k0")
    clip.parent.mkdir(parents=True)
    whole = (make_index_video(tmp_path / "other.mp4", 30)).read_bytes()
    clip.write_bytes(whole[: len(whole) // 2])  # what ffmpeg left after "Error writing trailer"
    report = download(rows(["k0"], path=str(src)), out, DownloadConfig(**FAST), progress=False)
    assert report.counts == {"ok": 1} and complete(clip) and media.probe(clip)["frames"] == 30


# ------------------------------------------------------------------ case 3: odd URLs and keys

def test_case3_every_odd_url_is_one_rows_status(tmp_path, site):
    port = site.url.rsplit(":", 1)[1]
    urls = {
        "file_url": "file:///etc/hostname",
        "malformed": "http://[::1/x.mp4",
        "bad_port": "http://127.0.0.1:notaport/x.mp4",
        "ftp": "ftp://127.0.0.1/x.mp4",
        "no_host": "http:///x.mp4",
        "quoted": site.url + "/dir%20with%20space/vid%C3%A9.mp4?a=1&b=%2F",
        "long_path": site.url + "/" + "x" * 3000 + ".mp4",
        "refused": "http://127.0.0.1:1/x.mp4",
        "plain": f"http://localhost:{port}/a.mp4",
    }
    df = rows(list(urls) + ["k" * 620], url=list(urls.values()) + [site.url + "/b.mp4"])
    df.loc[len(urls), "start_sec"] = 1e300  # a Kinetics time of 1e300 makes a 620-character key
    write_manifest(df, tmp_path / "in.parquet")
    result = cli("download", tmp_path / "in.parquet", "--out", tmp_path / "out", "--tries", 1, "--backoff", 0,
                 "--rows-per-unit", 4, "--no-progress")
    assert result.returncode == 0, result.stderr
    got = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("key")
    status = got["status"].to_dict()
    assert {k: status[k] for k in ("file_url", "malformed", "bad_port", "ftp", "no_host")} == dict.fromkeys(
        ("file_url", "malformed", "bad_port", "ftp", "no_host"), "invalid-row")
    assert status["quoted"] == status["plain"] == "ok"
    assert status["long_path"] in ("unavailable", "http-error") and status["refused"] == "network"
    assert "only http(s) URLs" in got.loc["file_url", "error"] and "not a valid URL" in got.loc["malformed", "error"]
    rejects = pd.read_csv(tmp_path / "out" / "manifest.rejects.csv")
    assert len(rejects) == 1 and "characters long" in rejects["reason"][0] and "a week" in rejects["reason"][0]


# ------------------------------------------------------------------ case 4: relative paths, --retry-failed

def test_case4_relative_paths_start_from_the_manifest_and_failed_rows_keep_them(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_index_video(data / "videos" / "here.mp4", 45)
    write_manifest(rows(["here", "later"], path=["videos/here.mp4", "videos/later.mp4"]), data / "in.parquet")
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    out = tmp_path / "out"
    first = download(data / "in.parquet", out, DownloadConfig(**FAST), progress=False)
    got = read_manifest(first.manifest).set_index("key")
    assert got["status"].to_dict() == {"here": "ok", "later": "missing-file"}
    assert got.loc["later", "path"] == str(data / "videos" / "later.mp4")  # the input path, not null
    make_index_video(data / "videos" / "later.mp4", 45)
    second = download(first.manifest, out, DownloadConfig(**FAST, retry_failed=()), progress=False)
    assert second.counts == {"ok": 2} and second.processed == 1


# ------------------------------------------------------------------ cases 5 and 7: --from-dir

def test_case5_a_mirror_clip_far_shorter_than_its_row_is_too_short(tmp_path):
    mirror = tmp_path / "mirror"
    make_index_video(mirror / "vid_000000_000010.mp4", 60)  # 2 s for a 0-10 s row
    make_index_video(mirror / "vid_000010_000012.mp4", 60)
    df = rows(["short", "fine"], video_id="vid", start_sec=[0.0, 10.0], end_sec=[10.0, 12.0])
    report = download(df, tmp_path / "out", DownloadConfig(**FAST, from_dir=str(mirror)), progress=False)
    got = read_manifest(report.manifest).set_index("key")
    assert got["status"].to_dict() == {"short": "too-short", "fine": "ok"}
    assert "2.00s of the 10.00s" in got.loc["short", "error"]


def test_case7_ids_cannot_name_files_outside_the_mirror(tmp_path):
    mirror = tmp_path / "deep" / "mirror"
    make_index_video(mirror / "good.mp4", 45)
    make_index_video(tmp_path / "outside.mp4", 45)  # what ../../outside names
    df = rows(["up", "absolute", "hidden", "good"],
              video_id=["../../outside", str(tmp_path / "outside"), ".secret", "good"])
    cfg = DownloadConfig(**FAST, from_dir=str(mirror), from_template="{video_id}.mp4")
    report = download(df, tmp_path / "out", cfg, progress=False)
    got = read_manifest(report.manifest).set_index("key")
    assert got["status"].to_dict() == {"up": "invalid-row", "absolute": "invalid-row", "hidden": "invalid-row",
                                       "good": "ok"}
    assert "not a file name inside --from-dir" in got.loc["up", "error"]


# ------------------------------------------------------------------ case 8: leftovers and audio-only files

def test_case8_partial_clips_of_a_killed_run_are_removed_and_audio_is_not_a_video(tmp_path):
    src = make_index_video(tmp_path / "src.mp4", 45)
    audio = tmp_path / "audio.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=2", "-c:a", "aac", str(audio)], check=True)
    out = tmp_path / "out"
    partial = clip_path(out.resolve(), "k0").with_name(".k0.mp4.tmp-4242-0123456789ab")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a clip")
    report = download(rows(["k0", "sound"], path=[str(src), str(audio)]), out, DownloadConfig(**FAST),
                      progress=False)
    got = read_manifest(report.manifest).set_index("key")
    assert got["status"].to_dict() == {"k0": "ok", "sound": "not-a-video"}
    assert not list(out.rglob("*.tmp-*"))


# ------------------------------------------------------------------ case 9: one folder, one job

def test_case9_another_job_is_refused_and_the_same_job_resumes(tmp_path):
    src = make_index_video(tmp_path / "src.mp4", 45)
    train, val = rows(["t0", "t1"], path=str(src)), rows(["v0"], path=str(src))
    out = tmp_path / "clips"
    first = download(train, out, DownloadConfig(**FAST), progress=False)
    before = (out / "manifest.parquet").read_bytes()
    with pytest.raises(FolderInUseError, match="download of another job.*rows"):
        download(val, out, DownloadConfig(**FAST), progress=False)
    with pytest.raises(FolderInUseError, match="clips"):
        download(train, out, DownloadConfig(**{**FAST, "short_side": 32}), progress=False)
    assert (out / "manifest.parquet").read_bytes() == before
    # The documented second pass: the output manifest, back into its folder, with --retry-failed.
    again = download(first.manifest, out, DownloadConfig(**FAST, retry_failed=()), progress=False)
    assert again.counts == {"ok": 2} and again.processed == 0
    assert json.loads((out / "download.json").read_text())["rows"] == 2


# ------------------------------------------------------------------ two processes into one folder

@pytest.mark.slow
def test_two_processes_share_one_folder_without_fetching_twice(tmp_path, site):
    ids = ["a", "b", "c", "d"]
    write_manifest(rows([f"k_{i}" for i in ids], video_id=ids), tmp_path / "in.parquet")
    args = ["download", tmp_path / "in.parquet", "--out", tmp_path / "o", "--url-template",
            site.url + "/{video_id}.mp4", "--rows-per-unit", 1, "--sleep", 0.3, "--no-progress"]
    site.hits.clear()
    procs = [subprocess.Popen([sys.executable, "-c", "from vmae.cli.data import data; data()", *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert Counter(site.hits) == Counter({f"{i}.mp4": 2 for i in ids})  # each video fetched once, by one of them
    got = read_manifest(tmp_path / "o" / "manifest.parquet")
    assert sorted(got["key"]) == [f"k_{i}" for i in ids] and got["status"].eq("ok").all()
    assert not list((tmp_path / "o" / ".units").glob("*.lock"))
    assert os.path.exists(tmp_path / "o" / "report.json")


def test_an_unexpected_row_error_is_the_rows_status_and_an_output_fault_stops_the_run(tmp_path):
    assert row_error(ValueError("odd frame rate"), tmp_path) == "ValueError: odd frame rate"
    with pytest.raises(OutputError, match="cannot write to .*: no space left"):
        row_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    fault = OutputError.at(tmp_path, "the clip came out short")
    with pytest.raises(OutputError) as caught:
        row_error(fault, tmp_path)
    assert caught.value is fault
