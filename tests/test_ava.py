import os

import av
import numpy as np
import pytest
from click.testing import CliRunner
from videos import make_index_video, read_index

from vmae.cli.data import data
from vmae.errors import FolderInUseError
from vmae.curation.ava import AvaConfig, clips_that_fit, cut_ava, plan_clips, read_file_list
from vmae.executors import ExecutorConfig
from vmae.manifests import ManifestError, read_manifest

# Default clip settings (300 frames at 30 fps) on a window scaled down from 900..1800 s to 2..32 s: 3 clips.
CFG = AvaConfig(window_start=2, window_end=32)


def indices(path) -> list:
    with av.open(str(path)) as container:
        return [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    d = tmp_path_factory.mktemp("ava")
    videos = d / "movies"
    make_index_video(videos / "-movA.mp4", 42 * 30, fps=30)   # 42 s: the whole window fits
    make_index_video(videos / "movB.mkv", 20 * 25, fps=25)    # 20 s at 25 fps: one clip fits
    (d / "list.txt").write_text("-movA.mp4\nmovB.mkv\nmovC.mkv\n-movA.mp4\n")  # movC is missing
    return d


def test_config_and_plan():
    assert AvaConfig().clips_per_movie == 90 and AvaConfig().first_frame == 27000
    rows = plan_clips("-5KQ66BBWC4.mkv", AvaConfig())
    assert [r["key"] for r in rows[:2]] == ["ava_-5KQ66BBWC4_000", "ava_-5KQ66BBWC4_001"]
    assert rows[-1]["start_frame"] == 27000 + 89 * 300 and rows[-1]["end_sec"] == 1800.0
    assert all(b["start_frame"] == a["start_frame"] + 300 for a, b in zip(rows, rows[1:]))
    assert clips_that_fit(1800.0, AvaConfig()) == 90 and clips_that_fit(1799.9, AvaConfig()) == 89
    assert clips_that_fit(1000, AvaConfig()) == 10 and clips_that_fit(600, AvaConfig()) == 0
    with pytest.raises(ManifestError, match="fewer than one clip"):
        AvaConfig(window_start=0, window_end=5)
    with pytest.raises(ManifestError, match="empty"):
        AvaConfig(window_start=10, window_end=5)


def test_file_list(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a.mkv\n\nb.mp4\na.mkv\n")
    assert read_file_list(lst) == ["a.mkv", "b.mp4"]
    lst.write_text("a.mkv\nsub/b.mkv\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_file_list(lst)


def test_cut_frame_exact(movies, tmp_path):
    out = tmp_path / "out"
    report = cut_ava(movies / "list.txt", movies / "movies", out, CFG, ExecutorConfig(workers=2))
    df = read_manifest(out / "manifest.parquet")
    assert df["key"].tolist() == [f"ava_{m}_{k:03d}" for m in ("-movA", "movB", "movC") for k in range(3)]
    assert df["status"].tolist() == ["ok"] * 4 + ["too-short"] * 2 + ["missing-file"] * 3
    assert df["start_frame"].tolist() == [60, 360, 660] * 3 and set(df["num_frames"]) == {300}
    assert df["start_sec"].tolist() == [2.0, 12.0, 22.0] * 3 and df["end_sec"].tolist() == [12.0, 22.0, 32.0] * 3
    assert set(df["stride"]) == {4} and set(df["split"]) == {"train"} and set(df["source"]) == {"ava"}
    ok = df[df["status"] == "ok"]
    assert set(ok["frames"]) == {300} and set(ok["fps"]) == {30.0} and df["path"].isna().sum() == 5

    # Movie A is 30 fps: clip k holds exactly frames 60 + 300k ... 60 + 300k + 299, so no gaps, no overlaps.
    for k in range(3):
        assert indices(out / "clips" / f"ava_-movA_{k:03d}.mp4") == list(range(60 + 300 * k, 360 + 300 * k))
    # Movie B is 25 fps, resampled to 30: output frame j shows the source frame nearest to time j/30.
    got = np.array(indices(out / "clips" / "ava_movB_000.mp4"))
    assert len(got) == 300 and np.abs(got - np.arange(60, 360) * 25 / 30).max() <= 0.5

    assert (report.movies, report.clips_ok, report.clips_planned, report.pending) == (3, 4, 9, 0)
    text = "\n".join(report.lines())
    assert "movB.mkv: too-short: 20.0 s long, cut 1 of 3 clips" in text
    assert "movC.mkv: missing-file: cut 0 of 3 clips" in text


def test_rerun_keeps_finished_clips(movies, tmp_path):
    out = tmp_path / "out"
    cut_ava(movies / "list.txt", movies / "movies", out, CFG)
    clips = out / "clips"
    before = {p.name: p.stat().st_mtime_ns for p in clips.iterdir()}
    make_index_video(clips / "ava_-movA_001.mp4", 10)  # a clip with the wrong frame count is cut again
    report = cut_ava(movies / "list.txt", movies / "movies", out, CFG)
    after = {p.name: p.stat().st_mtime_ns for p in clips.iterdir()}
    assert sorted(n for n in before if before[n] != after[n]) == ["ava_-movA_001.mp4"]
    assert sum(r.reused for r in report.ran) == 3 and sum(r.ok - r.reused for r in report.ran) == 1
    assert indices(clips / "ava_-movA_001.mp4") == list(range(360, 660))
    with pytest.raises(FolderInUseError, match="AVA clips of another job"):
        cut_ava(movies / "list.txt", movies / "movies", out, AvaConfig(window_start=2, window_end=32, fps=25))


def test_slices_add_up(movies, tmp_path):
    out = tmp_path / "out"
    first = cut_ava(movies / "list.txt", movies / "movies", out, CFG, ExecutorConfig(unit_index=1, num_units=2))
    assert [r.movie for r in first.ran] == ["movB.mkv"] and first.pending == 2
    assert read_manifest(out / "manifest.parquet")["video_id"].unique().tolist() == ["movB"]
    second = cut_ava(movies / "list.txt", movies / "movies", out, CFG, ExecutorConfig(unit_index=0, num_units=2))
    assert second.pending == 0 and second.clips_ok == 4
    assert len(read_manifest(out / "manifest.parquet")) == 9


def test_other_extension_and_cli(movies, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("movB.mp4\n")  # listed as .mp4, downloaded as .mkv
    runner = CliRunner()
    result = runner.invoke(data, ["ava", "--file-list", str(lst), "--videos", str(movies / "movies"), "--out",
                                  str(tmp_path / "o"), "--window-start", "1", "--window-end", "3",
                                  "--clip-frames", "30", "--short-side", "32"])
    assert result.exit_code == 0, result.output
    assert "using movB.mkv" in result.output and "2 of 2 clips ok" in result.output
    df = read_manifest(tmp_path / "o" / "manifest.parquet")
    assert df["height"].tolist() == [32, 32] and df["start_frame"].tolist() == [30, 60]
    assert os.path.exists(df["path"].iloc[1])
    result = runner.invoke(data, ["ava", "--file-list", str(lst), "--videos", str(movies / "movies"), "--out",
                                  str(tmp_path / "o"), "--unit-index", "1"])
    assert result.exit_code == 2 and "--num-units" in result.output
