"""vmae-data download end to end: yt-dlp fetching from a local HTTP server, ffmpeg cutting, statuses,
back-off, resume without re-fetching, and --from-dir adoption."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import av
import pytest
from click.testing import CliRunner
from http_server import Server
from videos import make_index_video, read_index

from vmae import media
from vmae.cli.data import data
from vmae.curation.download import DownloadConfig, clip_path, download, fill_template, needs_work, plan_units
from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest, read_manifest, write_manifest


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for name in ("a", "b", "c", "d", "slow"):
        make_index_video(root / f"{name}.mp4", 60, fps=30, gop=30)  # 2 s each
    make_index_video(root / "short.mp4", 24, fps=30)  # 0.8 s
    (root / "text.mp4").write_text("this is a text file, not a video\n")
    whole = (root / "a.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    server = Server(root)
    yield server
    server.close()


FAST = dict(backoff=0.01, tries=3, short_side=None, rows_per_unit=2)


def manifest(ids, start=0.5, end=1.5):
    df = empty_manifest(len(ids))
    df["key"] = [f"k_{i}" for i in ids]
    df["source"] = "test"
    df["video_id"] = list(ids)
    df["start_sec"], df["end_sec"] = start, end
    return df


def cfg(site, **kw):
    return DownloadConfig(url_template=site.url + "/{video_id}.mp4", **{**FAST, **kw})


def indices(path):
    with av.open(str(path)) as c:
        return [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def test_every_simulated_failure_ends_with_its_status(site, tmp_path):
    site.rules.update({"missing.mp4": 404, "flaky.mp4": (429, 2), "blocked.mp4": (429, 99)})
    (site.root / "flaky.mp4").write_bytes((site.root / "b.mp4").read_bytes())
    (site.root / "blocked.mp4").write_bytes((site.root / "b.mp4").read_bytes())
    df = manifest(["a", "missing", "flaky", "blocked", "text", "truncated", "short"])
    report = download(df, tmp_path, cfg(site), progress=False)
    got = read_manifest(tmp_path / "manifest.parquet").set_index("video_id")
    assert dict(got["status"]) == {"a": "ok", "missing": "unavailable", "flaky": "ok", "blocked": "rate-limited",
                                   "text": "not-a-video", "truncated": "decode-error", "short": "too-short"}
    assert site.hits["flaky.mp4"] == 2 + 2  # two 429 answers, then yt-dlp's page request and the download
    assert site.hits["blocked.mp4"] == 3  # bounded: --tries attempts, then the reason is recorded
    assert "429" in got.loc["blocked", "error"] and "404" in got.loc["missing", "error"]
    assert "0.30s of the 1.00s" in got.loc["short", "error"]
    assert got.loc["truncated", "error"].startswith(site.url + "/truncated.mp4: ")  # the URL, not a temp file
    ok = got.loc["a"]
    assert (ok["frames"], ok["fps"], ok["width"], ok["codec"], ok["duration"]) == (30, 30.0, 64, "h264", 1.0)
    assert Path(ok["path"]) == clip_path(tmp_path.resolve(), "k_a") and Path(ok["path"]).is_absolute()
    assert indices(ok["path"]) == list(range(15, 45))  # [0.5 s, 1.5 s) at 30 fps, frame-exact
    assert got.loc[got["status"] != "ok", "path"].isna().all()
    assert report.counts == {"ok": 2, "unavailable": 1, "rate-limited": 1, "not-a-video": 1, "decode-error": 1,
                             "too-short": 1}
    assert not list((tmp_path / ".tmp").glob("*/*"))  # downloaded sources are removed after the cut


def test_lists_for_the_official_code_hold_the_real_paths_of_labelled_ok_clips(site, tmp_path):
    site.rules["gone.mp4"] = 404
    df = manifest(["a", "gone", "b", "c"])
    df["split"] = ["train", "train", "val", "train"]
    df["label_id"] = [3, 4, 7, None]
    report = download(df, tmp_path, cfg(site), progress=False)
    got = read_manifest(tmp_path / "manifest.parquet").set_index("video_id")
    assert (tmp_path / "train.csv").read_text() == f"{got.loc['a', 'path']} 3\n"  # not the failed or unlabelled
    assert (tmp_path / "val.csv").read_text() == f"{got.loc['b', 'path']} 7\n"
    assert not (tmp_path / "test.csv").exists() and Path(got.loc["a", "path"]).is_file()
    assert report.lists == {str(tmp_path.resolve() / "train.csv"): 1, str(tmp_path.resolve() / "val.csv"): 1}
    assert any(line.startswith("list for the official code: ") for line in report.lines())


def test_interrupted_run_resumes_without_fetching_again(site, tmp_path):
    site.hits.clear()
    ids = ["a", "b", "c", "d", "slow"]
    df = manifest(ids)
    # the first run stops after one of two slices of the units: no merged manifest yet
    first = download(df, tmp_path, cfg(site), ExecutorConfig(unit_index=0, num_units=2), progress=False)
    assert first.manifest is None and first.processed == 3  # units 0 and 2 of [a b] [c d] [slow]
    assert not (tmp_path / "manifest.parquet").exists()
    fetched = Counter(site.hits)
    # a unit killed after cutting a clip but before recording itself: its clip must not be fetched again
    (tmp_path / ".units" / "unit-000002.parquet").unlink()
    second = download(df, tmp_path, cfg(site), progress=False)
    assert second.units_skipped == 1 and second.processed == 3 and second.fetched == 2
    assert site.hits - fetched == Counter({"c.mp4": 2, "d.mp4": 2})  # only the rows never fetched
    assert sum(site.hits.values()) == 2 * len(ids)
    got = read_manifest(tmp_path / "manifest.parquet")
    assert list(got["key"]) == [f"k_{i}" for i in ids] and (got["status"] == "ok").all()
    # a third run has nothing to do
    third = download(df, tmp_path, cfg(site), progress=False)
    assert third.units_run == 0 and sum(site.hits.values()) == 2 * len(ids)


def test_retry_failed_only_retries_the_reasons_asked_for(site, tmp_path):
    site.rules.update({"late.mp4": 404, "gone.mp4": 404})
    df = manifest(["late", "gone"])
    download(df, tmp_path, cfg(site), progress=False)
    (site.root / "late.mp4").write_bytes((site.root / "a.mp4").read_bytes())
    del site.rules["late.mp4"]
    hits = sum(site.hits.values())
    download(df, tmp_path, cfg(site), progress=False)
    assert sum(site.hits.values()) == hits  # recorded failures are kept without --retry-failed
    download(df, tmp_path, cfg(site, retry_failed=("rate-limited",)), progress=False)
    assert sum(site.hits.values()) == hits
    report = download(df, tmp_path, cfg(site, retry_failed=("unavailable",)), progress=False)
    assert report.counts == {"ok": 1, "unavailable": 1}
    with pytest.raises(ValueError, match="unknown failure reason"):
        DownloadConfig(retry_failed=("bogus",))


def test_from_dir_adopts_mirror_clips_and_full_sources(site, tmp_path):
    mirror = tmp_path / "mirror"
    make_index_video(mirror / "vid1_000010_000012.mp4", 60, fps=30, size=(96, 128))
    df = manifest(["vid1", "vid2"], start=10, end=12)
    report = download(df, tmp_path / "out", cfg(site, from_dir=str(mirror), short_side=32), progress=False)
    got = read_manifest(report.manifest).set_index("video_id")
    assert list(got["status"]) == ["ok", "missing-file"]
    assert "--retry-failed missing-file" in got.loc["vid2", "error"]
    assert (got.loc["vid1", "width"], got.loc["vid1", "height"]) == (42, 32)  # short side 32, aspect kept
    assert indices(got.loc["vid1", "path"]) == list(range(60))  # a mirror file is the clip itself
    assert report.fetched == 0
    # a template without start/end names full sources: [start_sec, end_sec) is cut out of them
    make_index_video(mirror / "full.mp4", 90, fps=30)
    report = download(manifest(["full"], start=1.0, end=2.0), tmp_path / "out2",
                      cfg(site, from_dir=str(mirror), from_template="{video_id}.mp4"), progress=False)
    path = read_manifest(report.manifest)["path"][0]
    assert indices(path) == list(range(30, 60))


def test_frame_rows_and_local_paths(site, tmp_path):
    src = make_index_video(tmp_path / "movie.mp4", 120, fps=30)
    df = empty_manifest(2)
    df["key"], df["source"], df["path"] = ["m0", "m1"], "test", str(src)
    df["start_frame"], df["num_frames"] = [10, 100], [30, 30]
    report = download(df, tmp_path / "out", cfg(site), progress=False)
    got = read_manifest(report.manifest)
    assert list(got["status"]) == ["ok", "too-short"]  # frame rows need every frame
    assert indices(got["path"][0]) == list(range(10, 40))


def test_cli_download_with_workers_and_bad_options(site, tmp_path):
    write_manifest(manifest(["a", "b", "c"]), tmp_path / "in.parquet")
    runner = CliRunner()
    result = runner.invoke(data, ["download", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o"),
                                  "--url-template", site.url + "/{video_id}.mp4", "--workers", "2",
                                  "--rows-per-unit", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ok            3" in result.output and "manifest:" in result.output
    assert read_manifest(tmp_path / "o" / "manifest.parquet")["status"].eq("ok").all()
    result = runner.invoke(data, ["download", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o"),
                                  "--url-template", "http://x/{videoid}"])
    assert result.exit_code == 2 and "unknown field(s) ['videoid']" in result.output
    result = runner.invoke(data, ["download", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o"),
                                  "--retry-failed", "nope"])
    assert result.exit_code == 2 and "unknown failure reason" in result.output
    assert runner.invoke(data, ["download", "--help"]).exit_code == 0


def test_pure_helpers():
    assert plan_units(5, 2) == [(0, 2), (2, 4), (4, 5)]
    row = {"video_id": "abc", "start_sec": 10.0, "end_sec": 20.0}
    assert fill_template("{video_id}_{start:06d}_{end:06d}.mp4", row) == "abc_000010_000020.mp4"
    with pytest.raises(media.MediaError, match="no start"):
        fill_template("{video_id}_{start:06d}.mp4", {"video_id": "abc"})
    assert needs_work(None, None) and needs_work({"status": None}, None)
    assert not needs_work({"status": "unavailable"}, None)
    assert needs_work({"status": "unavailable"}, ()) and not needs_work({"status": "unavailable"}, ("network",))
    assert needs_work({"status": "ok", "path": "/nonexistent.mp4"}, None)  # its clip was deleted
    assert clip_path("/o", "k1") == clip_path("/o", "k1") and clip_path("/o", "k1").name == "k1.mp4"


@pytest.mark.slow
def test_killed_process_rerun_fetches_only_what_is_missing(site, tmp_path):
    ids = ["a", "b", "c", "d", "slow"]
    write_manifest(manifest(ids), tmp_path / "in.parquet")
    cmd = [
        str(Path(sys.executable).with_name("vmae-data")), "download", str(tmp_path / "in.parquet"),
        "--out", str(tmp_path / "o"), "--url-template", site.url + "/{video_id}.mp4", "--rows-per-unit", "1",
        "--sleep", "0.2", "--no-progress"]
    site.hits.clear()
    proc = subprocess.Popen(cmd, start_new_session=True)
    units = tmp_path / "o" / ".units"
    deadline = time.monotonic() + 60
    while len(list(units.glob("unit-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "o" / "manifest.parquet").exists()
    finished = [f"{v}.mp4" for f in units.glob("unit-*.parquet") for v in read_manifest(f)["video_id"]]
    before = Counter(site.hits)
    assert 2 <= len(finished) < len(ids)
    subprocess.run(cmd, check=True)
    assert all(site.hits[name] == before[name] == 2 for name in finished)  # finished rows not fetched again
    assert sorted(site.hits) == sorted(f"{i}.mp4" for i in ids)
    assert read_manifest(tmp_path / "o" / "manifest.parquet")["status"].eq("ok").all()
    assert not list(units.glob("*.lock"))  # the killed run's unit lock is cleared


def test_changing_rows_per_unit_keeps_results_and_the_manifest_right(site, tmp_path):
    df = manifest(["a", "b", "c"])
    download(df, tmp_path, cfg(site), progress=False)  # units [a b] [c]
    hits = sum(site.hits.values())
    report = download(df, tmp_path, cfg(site, rows_per_unit=1), progress=False)  # units [a] [b] [c]
    assert sum(site.hits.values()) == hits and report.fetched == 0
    got = read_manifest(report.manifest)
    assert list(got["key"]) == ["k_a", "k_b", "k_c"] and got["status"].eq("ok").all()
