"""vmae.media against real ffmpeg: frame-exact cuts, resize, keyframes, probe facts and failure reasons."""
import subprocess

import av
import numpy as np
import pytest
from videos import index_frames, make_index_video, read_index, write_video

from vmae import media


def indices(path):
    with av.open(str(path)) as c:
        return [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def v30(tmp_path_factory):
    return make_index_video(tmp_path_factory.mktemp("src") / "v30.mp4", 90, fps=30, gop=50)


def test_cut_by_seconds_is_frame_exact(v30, tmp_path):
    out = media.cut(v30, tmp_path / "c.mp4", start_sec=1.0, end_sec=2.0, short_side=None)
    assert indices(out) == list(range(30, 60))
    # a start between two frames keeps the first frame at or after it
    out = media.cut(v30, tmp_path / "d.mp4", start_sec=0.51, end_sec=1.0)
    assert indices(out) == list(range(16, 30))
    out = media.cut(v30, tmp_path / "e.mp4", start_sec=0.5, end_sec=0.99)  # frame 29 lies at 0.9667
    assert indices(out) == list(range(15, 30))
    out = media.cut(v30, tmp_path / "f.mp4", end_sec=0.5)
    assert indices(out) == list(range(0, 15))


@pytest.mark.parametrize("start", [0, 1, 7, 30, 31, 45, 70])
def test_cut_by_frames_is_frame_exact(v30, tmp_path, start):
    out = media.cut(v30, tmp_path / "c.mp4", start_frame=start, num_frames=20)
    assert indices(out) == list(range(start, start + 20))


def test_cut_counts_from_the_first_frame_whatever_the_container_start_time(v30, tmp_path):
    mkv = tmp_path / "offset.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(v30), "-c", "copy", "-output_ts_offset", "1.5", str(mkv)],
                   check=True)
    assert media.probe(mkv)["frames"] == 90
    assert indices(media.cut(mkv, tmp_path / "a.mp4", start_sec=1.0, end_sec=2.0)) == list(range(30, 60))
    assert indices(media.cut(mkv, tmp_path / "b.mp4", start_frame=50, num_frames=10)) == list(range(50, 60))


def test_cut_with_rate_conversion_matches_the_converted_timeline(tmp_path):
    src = make_index_video(tmp_path / "v25.mp4", 100, fps=25, gop=50)
    out = media.cut(src, tmp_path / "c.mp4", start_frame=60, num_frames=30, fps=30)
    # frame k of the 30 fps timeline shows the 25 fps frame nearest to time k/30
    expected = [int(np.floor(k * 25 / 30 + 0.5)) for k in range(60, 90)]
    got = indices(out)
    assert len(got) == 30
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected)) and got[0] in (49, 50)
    assert media.probe(out)["fps"] == 30


def test_cut_resizes_short_side_keeps_aspect_even_sizes_and_fixed_gop(tmp_path):
    src = write_video(tmp_path / "wide.mp4", index_frames(40, size=(90, 160)), gop=100)
    out = media.cut(src, tmp_path / "c.mp4", short_side=64, gop=8)
    facts = media.probe(out)
    assert (facts["width"], facts["height"]) == (114, 64)  # 160/90*64 = 113.8 -> even
    with av.open(str(out)) as c:
        keys = [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]
    assert keys == list(range(0, 40, 8))
    # an odd-sized source below the short side is not upscaled, only made even
    odd = write_video(tmp_path / "odd.mp4", index_frames(20, size=(48, 48))[:, :47, :45], codec="libx264rgb")
    assert (media.probe(media.cut(odd, tmp_path / "o.mp4", short_side=320))["width"],) == (44,)


def test_cut_drops_audio_and_writes_h264_yuv420p(tmp_path):
    src = tmp_path / "av.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
                    str(src)], check=True)
    out = media.cut(src, tmp_path / "c.mp4")
    with av.open(str(out)) as c:
        assert not c.streams.audio
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_cut_command_is_the_command_cut_runs(v30, tmp_path):
    cmd = media.cut_command(v30, tmp_path / "x.mp4", start_sec=1, end_sec=2, gop=16)
    assert cmd[0] == "ffmpeg" and "-g" in cmd and cmd[cmd.index("-g") + 1] == "16"
    subprocess.run(cmd, check=True, capture_output=True)
    assert indices(tmp_path / "x.mp4") == list(range(30, 60))
    with pytest.raises(ValueError, match="not both"):
        media.cut_command(v30, "x.mp4", start_sec=1, start_frame=3, num_frames=2, src_fps=30)


def test_cut_past_the_end_is_too_short_and_leaves_no_file(v30, tmp_path):
    with pytest.raises(media.MediaError) as e:
        media.cut(v30, tmp_path / "c.mp4", start_sec=10, end_sec=12)
    assert e.value.reason == media.TOO_SHORT
    assert not (tmp_path / "c.mp4").exists()


def test_probe_facts_mp4_and_webm(v30, tmp_path):
    assert media.probe(v30) == {"fps": 30.0, "frames": 90, "width": 64, "height": 64, "duration": 3.0,
                                "codec": "h264"}
    webm = write_video(tmp_path / "v.webm", index_frames(24), fps=24, codec="libvpx-vp9",
                       extra=("-deadline", "realtime", "-cpu-used", "8"))
    facts = media.probe(webm, decode=True)
    assert (facts["frames"], facts["codec"], facts["fps"]) == (24, "vp9", 24.0)  # counted: webm keeps no count
    assert (facts["width"], facts["height"]) == (64, 64) and facts["duration"] == pytest.approx(1.0, abs=0.05)


def test_probe_failure_reasons(v30, tmp_path):
    text = tmp_path / "text.mp4"
    text.write_text("<html>not a video</html>")
    moovless = tmp_path / "cut_short.mp4"
    moovless.write_bytes(v30.read_bytes()[: v30.stat().st_size // 2])  # index at the end, lost
    fast = media.cut(v30, tmp_path / "fast.mp4")
    partial = tmp_path / "partial.mp4"
    partial.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])  # index first, frames lost
    cases = [(tmp_path / "nope.mp4", {}, media.MISSING_FILE), (text, {}, media.NOT_A_VIDEO),
             (moovless, {}, media.DECODE_ERROR), (partial, {"decode": True}, media.DECODE_ERROR)]
    for path, kwargs, reason in cases:
        with pytest.raises(media.MediaError) as e:
            media.probe(path, **kwargs)
        assert e.value.reason == reason, (path.name, e.value)
        assert str(path.name) in str(e.value)
    media.probe(partial)  # without decode=True the damage goes unnoticed: that is what decode is for
    with pytest.raises(media.MediaError) as e:
        media.cut(partial, tmp_path / "c.mp4")
    assert e.value.reason == media.DECODE_ERROR


def test_transcode_from_bytes_and_path(v30):
    data = media.transcode(v30.read_bytes(), short_side=32, gop=8)
    assert data[4:8] == b"ftyp"
    assert media.transcode(v30, short_side=32, gop=8) == data


@pytest.mark.parametrize("message,status,reason", [
    ("ERROR: [youtube] abc: Video unavailable", None, media.UNAVAILABLE),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", None, media.PRIVATE),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate", None, media.PRIVATE),
    ("ERROR: [youtube] abc: This video has been removed by the uploader", None, media.REMOVED),
    ("ERROR: [youtube] abc: Video unavailable. This video is no longer available because the YouTube account "
     "associated with this video has been terminated.", None, media.REMOVED),
    ("ERROR: [youtube] abc: The uploader has not made this video available in your country", None,
     media.GEO_BLOCKED),
    ("ERROR: [youtube] abc: Sign in to confirm you’re not a bot", None, media.RATE_LIMITED),
    ("ERROR: [youtube] abc: This content isn't available, try again later.", None, media.RATE_LIMITED),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests", 429,
     media.RATE_LIMITED),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", 404, media.UNAVAILABLE),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable", 503,
     media.HTTP_ERROR),
    ("ERROR: [generic] x: Unable to download webpage: <urlopen error [Errno 111] Connection refused>", None,
     media.NETWORK),
    ("ERROR: Unsupported URL: https://example.com/page", None, media.NOT_A_VIDEO),
    ("", 429, media.RATE_LIMITED),
    ("", 500, media.HTTP_ERROR),
    ("something odd happened", None, media.UNKNOWN),
])
def test_download_reason(message, status, reason):
    assert media.download_reason(message, status) == reason
    assert reason in media.REASONS


def test_ffmpeg_reason():
    assert media.ffmpeg_reason("x.mp4: No such file or directory") == media.MISSING_FILE
    assert media.ffmpeg_reason("x: Invalid data found when processing input") == media.NOT_A_VIDEO
    assert media.ffmpeg_reason("stream 0, offset 0x1b45: partial file") == media.DECODE_ERROR
    assert media.ffmpeg_reason("Unrecognized option 'foo'") == media.CUT_FAILED
