"""Every ffmpeg / ffprobe call of vmae: probe a video, cut a clip, transcode for shards, decode a few chosen
frames (fingerprints).

Command lines are built by pure functions (`cut_command`, `probe_command`) so that tests and benchmarks
can run the identical command directly. Audio is always dropped: training reads video frames only.

Failures raise `MediaError(reason, message)` where `reason` is one of the status taxonomy below; the same
strings are the `status` values that manifests record for failed rows.
"""
import io
import json
import math
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vmae.atomic import atomic_path
from vmae.errors import OutputError, is_output_fault_text, output_fault

# Status taxonomy: a manifest row's status is STATUS_OK or exactly one of REASONS.
STATUS_OK = "ok"
UNAVAILABLE = "unavailable"      # the video is gone or never existed (YouTube "Video unavailable", HTTP 404/410)
PRIVATE = "private"              # exists but needs an account: private, members-only, age-gated
REMOVED = "removed"              # taken down: by the uploader, for a terms or copyright violation
GEO_BLOCKED = "geo-blocked"      # not available in the downloading machine's country
RATE_LIMITED = "rate-limited"    # HTTP 429 or YouTube's "try again later" / bot check, after all back-off tries
NETWORK = "network"              # connection refused/reset, timeout, DNS, incomplete transfer
NOT_A_VIDEO = "not-a-video"      # the file has no decodable video stream (an HTML page, a text file, audio only)
TOO_SHORT = "too-short"          # the clip has fewer frames than the row asks for (see vmae.curation.download)
DECODE_ERROR = "decode-error"    # a video, but truncated or corrupt
HTTP_ERROR = "http-error"        # any other HTTP error status
CUT_FAILED = "cut-failed"        # ffmpeg could not cut/encode for a reason not listed above
MISSING_FILE = "missing-file"    # a local file the row points at does not exist
INVALID_ROW = "invalid-row"      # the row's values cannot be used: a URL that is not http(s) or does not parse,
                                 # an id that would name a file outside --from-dir
UNKNOWN = "unknown"              # anything else; the row's `error` column keeps the message
REASONS = (UNAVAILABLE, PRIVATE, REMOVED, GEO_BLOCKED, RATE_LIMITED, NETWORK, NOT_A_VIDEO, TOO_SHORT,
           DECODE_ERROR, HTTP_ERROR, CUT_FAILED, MISSING_FILE, INVALID_ROW, UNKNOWN)

DEFAULT_GOP = 16          # a keyframe every 16 frames: a 16-frame sample never decodes more than 31 frames
DEFAULT_CRF = 23
DEFAULT_PRESET = "veryfast"
_EDGE = 0.001  # seconds; see cut_command


class MediaError(Exception):
    """A video that could not be probed, cut or decoded; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


# Ordered: the first matching pattern wins, so specific YouTube answers come before generic HTTP codes.
_DOWNLOAD_PATTERNS = [
    (RATE_LIMITED, r"HTTP Error 429|Too Many Requests|rate.?limit|try again later|confirm you.re not a bot"),
    (PRIVATE, r"private video|members.only|join this channel|confirm your age|age.restricted|"
              r"requires? (a )?(login|sign.?in)|login required"),
    (REMOVED, r"has been removed|removed by the (uploader|user)|account .*(terminated|closed)|"
              r"copyright (claim|grounds)|violating youtube|terms of service"),
    (GEO_BLOCKED, r"in your country|geo.?restrict|geo.?block|not available in your (region|location)"),
    (UNAVAILABLE, r"video unavailable|this video is( no longer)? (un)?available|does not exist|"
                  r"HTTP Error (404|410)|not found"),
    (NETWORK, r"timed? ?out|connection (refused|reset|aborted)|name resolution|network is unreachable|"
              r"errno (101|104|110|111|113)|incomplete ?read|content ?too ?short|remote end closed|"
              r"ssl|urlopen error|unable to download webpage: <"),
    (HTTP_ERROR, r"HTTP Error \d{3}"),
    (NOT_A_VIDEO, r"unsupported url|no video formats|requested format is not available|"
                  r"does not contain any stream|invalid data found"),
]

_FFMPEG_PATTERNS = [
    (MISSING_FILE, r"no such file or directory"),
    (DECODE_ERROR, r"partial file|invalid nal|error while decoding|corrupt|truncat|end of file|invalid frame|"
                   r"non-existing pps|decode_slice|missing picture|error splitting the input"),
    (NOT_A_VIDEO, r"invalid data found when processing input|does not contain any stream|matches no streams|"
                  r"could not find codec parameters|unknown format|no video stream|moov atom not found"),
]
# A file that opens but has no video stream (audio only) is not a video, whatever its container.
_NO_VIDEO_STREAM = r"does not contain any stream|matches no streams|no video stream"
# ffmpeg reports a failed write of its output and often still exits 0.
_WRITE_ERROR = (r"error writing trailer|error closing file|av_interleaved_write_frame|could not write header|"
                r"error submitting a packet to the muxer|error muxing a packet|i/o error")

# First bytes of the containers videos come in: a file that starts like a video but will not open is a
# damaged video (decode-error), anything else is not a video at all (an HTML page, a text file).
_SIGNATURES = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (0, b"\x1a\x45\xdf\xa3"),
               (0, b"RIFF"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"), (0, b"OggS"))


def _match(patterns, message: str, default: str) -> str:
    for reason, pattern in patterns:
        if re.search(pattern, message, re.IGNORECASE):
            return reason
    return default


def download_reason(message: str = "", http_status: int = None) -> str:
    """Map a yt-dlp error message and/or an HTTP status code to a reason of the taxonomy."""
    if http_status is not None:
        if http_status == 429:
            return RATE_LIMITED
        if http_status in (404, 410):
            return UNAVAILABLE
        if http_status in (401, 403) and not message:
            return PRIVATE
        if http_status >= 400 and not message:
            return HTTP_ERROR
    return _match(_DOWNLOAD_PATTERNS, message or "", UNKNOWN)


def ffmpeg_reason(stderr: str, default: str = CUT_FAILED, path=None) -> str:
    """Map ffmpeg/ffprobe error output (about the file at `path`, if given) to a reason of the taxonomy."""
    reason = _match(_FFMPEG_PATTERNS, stderr or "", default)
    if reason == NOT_A_VIDEO and re.search(_NO_VIDEO_STREAM, stderr or "", re.IGNORECASE):
        return NOT_A_VIDEO
    if reason == NOT_A_VIDEO and path is not None and looks_like_video(path):
        return DECODE_ERROR
    return reason


def looks_like_video(path) -> bool:
    """Whether the file starts with the signature of a common video container."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[at:at + len(sig)] == sig for at, sig in _SIGNATURES)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "no error output"


# ---------------------------------------------------------------- probe

def probe_command(path, count_packets: bool = False) -> list:
    entries = "stream=codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration"
    if count_packets:
        entries += ",nb_read_packets"
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
           f"{entries}:format=duration", "-of", "json"]
    if count_packets:
        cmd.append("-count_packets")
    return cmd + [str(path)]


def decode_command(path) -> list:
    """Decode the first video stream to nowhere: any error output means the file is damaged."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]


def _rate(text) -> float:
    num, _, den = str(text or "0/0").partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _run(cmd, reason_default: str, path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        reason = ffmpeg_reason(result.stderr, reason_default, path)
        raise MediaError(reason, f"{path}: {_last_lines(result.stderr)}")
    return result


def probe(path, decode: bool = False) -> dict:
    """Facts about a video file: dict(fps, frames, width, height, duration, codec).

    frames is the container's frame count when it records one (MP4) and a packet count otherwise
    (WebM/MKV). The header is read in-process with PyAV (the same libavformat fields ffprobe shows, at a
    hundredth of the cost of starting ffprobe); a file PyAV cannot open goes to ffprobe, whose error
    output names the reason. decode=True also decodes the whole stream to catch truncated or corrupt files.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(MISSING_FILE, f"{path}: no such file")
    facts = _probe_pyav(path) or _probe_ffprobe(path)
    if facts["frames"] <= 0 or not facts["width"]:
        raise MediaError(NOT_A_VIDEO, f"{path}: the video stream has no frames")
    if decode:
        check = subprocess.run(decode_command(path), capture_output=True, text=True, errors="replace")
        if check.returncode != 0 or check.stderr.strip():
            reason = ffmpeg_reason(check.stderr, DECODE_ERROR, path)
            raise MediaError(reason, f"{path}: {_last_lines(check.stderr)}")
    return facts


def _probe_pyav(path: Path):
    """The facts from the container header, or None when PyAV cannot read the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            s = container.streams.video[0]
            frames = s.frames or sum(1 for packet in container.demux(s) if packet.size)
            if s.duration is not None:
                duration = float(s.duration * s.time_base)
            else:
                duration = container.duration / 1e6 if container.duration else None
            fps = float(s.average_rate or s.guessed_rate or 0)
            return {"fps": fps, "frames": int(frames), "width": s.codec_context.width,
                    "height": s.codec_context.height, "duration": duration if duration else None,
                    "codec": s.codec_context.codec.canonical_name}
    except (av.error.FFmpegError, OSError, ValueError):
        return None


def _probe_ffprobe(path: Path) -> dict:
    info = json.loads(_run(probe_command(path), NOT_A_VIDEO, path).stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise MediaError(NOT_A_VIDEO, f"{path}: no video stream")
    s = streams[0]
    frames = int(s["nb_frames"]) if str(s.get("nb_frames", "")).isdigit() else 0
    if frames <= 0:
        counted = json.loads(_run(probe_command(path, count_packets=True), NOT_A_VIDEO, path).stdout)
        frames = int((counted.get("streams") or [{}])[0].get("nb_read_packets") or 0)
    fps = _rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
    duration = _float(s.get("duration")) or _float((info.get("format") or {}).get("duration"))
    return {"fps": fps, "frames": frames, "width": int(s.get("width") or 0), "height": int(s.get("height") or 0),
            "duration": duration, "codec": s.get("codec_name")}


# ---------------------------------------------------------------- cut / transcode

def scale_filter(short_side=None) -> str:
    """Resize so the short side is at most short_side (never upscale), keep the aspect ratio, and make
    both sides even (yuv420p needs even dimensions)."""
    if not short_side:
        return "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    s = int(short_side)
    return (f"scale='if(lte(iw,ih),trunc(min(iw,{s})/2)*2,-2)'"
            f":'if(lte(iw,ih),-2,trunc(min(ih,{s})/2)*2)'")


def cut_command(src, dst, start_sec=None, end_sec=None, start_frame=None, num_frames=None, short_side=None,
                gop=None, fps=None, src_fps=None, threads=None, crf=DEFAULT_CRF, preset=DEFAULT_PRESET) -> list:
    """The ffmpeg command that cuts one clip in one pass and re-encodes only that segment.

    Time mode keeps the frames whose timestamps lie in [start_sec, end_sec) (input seeking with a
    re-encode is frame-accurate). Frame mode keeps frames start_frame .. start_frame+num_frames-1 of the
    video at `fps` (frame rate conversion first) or at the source rate `src_fps`. Times and frame indices
    count from the file's first frame, whatever its container start time.
    """
    if start_frame is not None or num_frames is not None:
        if start_sec is not None or end_sec is not None:
            raise ValueError("cut by seconds or by frames, not both")
        if start_frame is None or num_frames is None or num_frames < 1 or start_frame < 0:
            raise ValueError("frame mode needs start_frame >= 0 and num_frames >= 1")
        rate = fps or src_fps
        if not rate:
            raise ValueError("frame mode needs fps or src_fps to place the frames")
        # Seek to a whole frame about a second early: the rate conversion sees the frames on both sides
        # of the first wanted one, and trim counts output frames from the seek point exactly.
        skip = max(0, int(start_frame) - math.ceil(rate))
        seek = skip / rate
        first = int(start_frame) - skip
        filters = [f"fps={rate}", f"trim=start_pts={first}:end_pts={first + int(num_frames)}",
                   "setpts=PTS-STARTPTS"]
    else:
        # Timestamps after the seek are rounded to the stream's time base: a frame lying exactly on start
        # or end could fall either side. Shifting the window by a millisecond (far below any frame
        # interval) keeps a frame at start_sec and drops one at end_sec, as [start, end) says.
        seek = max(0.0, (start_sec or 0.0) - _EDGE)
        filters = [f"trim=end={end_sec - _EDGE - seek:.6f}"] if end_sec is not None else []
        filters += ["setpts=PTS-STARTPTS"] + ([f"fps={fps}"] if fps else [])
    filters.append(scale_filter(short_side))
    gop = int(gop or DEFAULT_GOP)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if seek:
        cmd += ["-ss", f"{seek:.6f}"]
    cmd += ["-i", str(src), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", ",".join(filters),
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            # A fixed keyframe interval and no scene-cut keyframes: random access costs the same everywhere.
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    if threads:
        cmd += ["-threads", str(threads)]
    # faststart puts the index first: readers can stream the clip from a tar member or a pipe.
    # -progress reports the encoded frame count on stdout, so an empty range is caught without a probe.
    return cmd + ["-movflags", "+faststart", "-progress", "pipe:1", "-nostats", "-f", "mp4", str(dst)]


def _encoded_frames(progress: str) -> int:
    found = re.findall(r"^frame=\s*(\d+)", progress or "", re.MULTILINE)
    return int(found[-1]) if found else -1


def cut(src, dst, start_sec=None, end_sec=None, start_frame=None, num_frames=None, short_side=None, gop=None,
        fps=None, threads=None, src_fps=None, crf=DEFAULT_CRF, preset=DEFAULT_PRESET) -> Path:
    """Cut [start_sec, end_sec) (or num_frames frames from start_frame) of src into an H.264 yuv420p MP4 at
    dst, in one ffmpeg pass, atomically. Frame mode without fps probes src for its frame rate unless src_fps
    is given.

    The clip gets its name only once it is known complete: ffmpeg reported no write error (it exits 0
    after a failed trailer) and the written file opens with as many frames as were encoded. Raises
    MediaError for the source's faults (also when ffmpeg decoded past damage in it), OutputError when dst's
    folder cannot take the clip.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise MediaError(MISSING_FILE, f"{src}: no such file")
    if start_frame is not None and not fps and not src_fps:
        src_fps = probe(src)["fps"]
    with atomic_path(dst) as tmp:
        result = subprocess.run(cut_command(src, tmp, start_sec, end_sec, start_frame, num_frames, short_side, gop,
                                            fps, src_fps, threads, crf, preset),
                                capture_output=True, text=True, errors="replace")
        _check_written(result, dst)
        if result.returncode != 0:
            raise MediaError(ffmpeg_reason(result.stderr, CUT_FAILED, src), f"{src}: {_last_lines(result.stderr)}")
        # ffmpeg decodes past damage and still exits 0; a truncated or corrupt source must not pass as ok.
        if ffmpeg_reason(result.stderr, default="") == DECODE_ERROR:
            raise MediaError(DECODE_ERROR, f"{src}: {_last_lines(result.stderr)}")
        encoded = _encoded_frames(result.stdout)
        if encoded == 0:
            raise MediaError(TOO_SHORT, f"{src}: the requested range holds no frames (the video is shorter)")
        try:
            facts = probe(tmp)
        except MediaError as e:
            raise MediaError(CUT_FAILED, f"{dst}: the written clip does not open ({e.message})") from None
        if encoded > 0 and facts["frames"] != encoded:
            raise MediaError(CUT_FAILED, f"{dst}: {facts['frames']} frames written of {encoded} encoded")
    return dst


def _check_written(result: subprocess.CompletedProcess, dst: Path) -> None:
    """Raise when ffmpeg could not write dst: OutputError for a full, read-only or size-limited folder,
    MediaError(cut-failed) for any other write error."""
    if result.returncode == -signal.SIGXFSZ:
        raise OutputError.at(dst.parent, "file size limit reached (ulimit -f)")
    if is_output_fault_text(result.stderr):
        raise OutputError.at(dst.parent, _last_lines(result.stderr, 1))
    if re.search(_WRITE_ERROR, result.stderr or "", re.IGNORECASE):
        raise MediaError(CUT_FAILED, f"{dst}: writing failed: {_last_lines(result.stderr)}")


def transcode(src, short_side=None, gop=None, fps=None, crf=DEFAULT_CRF, preset=DEFAULT_PRESET,
              threads=None) -> bytes:
    """Re-encode a whole video (a path or its bytes) to H.264 yuv420p MP4 bytes, for the shard writer.
    The work files go to the temporary folder (TMPDIR); a full one stops the run with a OutputError."""
    try:
        with tempfile.TemporaryDirectory(prefix="vmae-transcode-") as tmp:
            if isinstance(src, (bytes, bytearray, memoryview)):
                # MP4 needs a seekable input (the index may sit at the end), so bytes go through a file.
                path = Path(tmp, "in")
                path.write_bytes(bytes(src))
                src = path
            out = Path(tmp, "out.mp4")
            cut(src, out, short_side=short_side, gop=gop, fps=fps, crf=crf, preset=preset, threads=threads)
            return out.read_bytes()
    except (OSError, OutputError) as e:
        if output_fault(e, tempfile.gettempdir()) is None:
            raise
        raise OutputError.at(tempfile.gettempdir(), "the temporary folder for transcoding is full or read-only; "
                                                    "set TMPDIR to a folder with space") from e


def default_threads(workers: int) -> int:
    """ffmpeg threads per job when `workers` jobs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# ---------------------------------------------------------------- chosen frames, scaled (fingerprints)

def grab_frames(src, pick, size=(128, 128), pix_fmt: str = "gray", thumbs=None):
    """Decode only the frames `pick` chooses from a video (a path or its bytes), scaled to size (w, h).

    pick(times) gets every frame's time in seconds from the first frame (display order) and returns the
    display indices to decode. Each group of pictures is decoded from its keyframe up to its last chosen frame
    only (non-reference pictures skipped for H.264/HEVC); groups with nothing chosen are not decoded at all.
    Returns (facts, times [n] float64, frames [n, h, w] uint8 for gray, [n, h, w, 3] for rgb24).
    thumbs=(pick2, (w, h)): a second set of frames from the same decoding, as yuv420p (to_ndarray's layout:
    [h * 3 // 2, w], the Y rows then the U and V planes); then (facts, times, frames, times2, frames2).
    Raises MediaError (missing-file, not-a-video, decode-error).
    """
    import av

    from_path = not isinstance(src, (bytes, bytearray, memoryview))
    if from_path and not Path(src).exists():
        raise MediaError(MISSING_FILE, f"{src}: no such file")
    name = str(src) if from_path else "video bytes"
    try:
        container = av.open(str(src) if from_path else io.BytesIO(bytes(src)))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(_open_reason(src if from_path else None), f"{name}: {e}") from None
    with container:
        if not container.streams.video:
            raise MediaError(NOT_A_VIDEO, f"{name}: no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_count = 1  # one clip per worker process; frame threads would also blur skip_frame below
        try:
            packets = [p for p in container.demux(stream) if p.size]
        except av.error.FFmpegError as e:
            raise MediaError(DECODE_ERROR, f"{name}: cannot read the packets ({e})") from None
        stamps = [p.pts if p.pts is not None else p.dts for p in packets]
        shown = sorted(s for s, p in zip(stamps, packets) if s is not None and not p.is_discard)
        if not shown or any(s is None for s in stamps):
            raise MediaError(DECODE_ERROR, f"{name}: no video frames with timestamps")
        base = float(stream.time_base)
        times = (np.asarray(shown, np.float64) - shown[0]) * base
        wanted = [(pick, size, pix_fmt)] + ([(thumbs[0], thumbs[1], "yuv420p")] if thumbs else [])
        requests = []
        for choose, (w, h), fmt in wanted:
            chosen = np.unique(np.asarray(choose(times), np.int64))
            shape = (len(chosen), h * 3 // 2, w) if fmt == "yuv420p" else (len(chosen), h, w) + (
                () if fmt == "gray" else (3,))
            requests.append(({shown[i]: row for row, i in enumerate(chosen.tolist())}, np.zeros(shape, np.uint8),
                             (w, h), fmt, chosen))
        done = _decode_chosen(codec, packets, stamps, requests, name)
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    step = float(np.median(np.diff(times))) if len(times) > 1 else (1 / fps if fps else 0.0)
    facts = {"fps": fps, "frames": len(shown), "width": codec.width, "height": codec.height,
             "duration": float(times[-1] + step), "codec": codec.name}
    out = [facts]
    for _, frames, _, _, chosen in requests:
        kept = np.array([shown[i] in done for i in chosen.tolist()], bool)
        out += [times[chosen][kept], frames[kept]]
    return tuple(out)


def _open_reason(path) -> str:
    return DECODE_ERROR if path is not None and looks_like_video(path) else NOT_A_VIDEO


def _decode_chosen(codec, packets, stamps, requests, name) -> set:
    """Decode the groups of pictures holding the chosen stamps (requests: (stamp -> row of out, out, size,
    pix_fmt, _)); return the stamps that came out."""
    import av

    skip_ok = codec.name in ("h264", "hevc")
    rows = set().union(*(r[0] for r in requests))
    start, last, group = None, {}, []  # group start (packet index of its keyframe) -> last chosen packet index
    for i, packet in enumerate(packets):
        if packet.is_keyframe or start is None:
            start = i
            group.append(i)
        if stamps[i] in rows:
            last[start] = i
    # Consecutive groups with chosen frames are decoded as one run: draining the decoder between them would
    # cost more than the few unchosen pictures in between (and these are skipped where they can be).
    runs = {}
    for before, first in zip([None] + group, group):
        if first in last:
            runs[first] = runs.get(before, first)
            last[runs[first]] = last[first]
    last = {first: end for first, end in last.items() if runs[first] == first}
    # One scaler per request: a scaler keeps its scaling context only while size and format stay the same.
    scalers = [av.video.reformatter.VideoReformatter() for _ in requests]
    done = set()

    def keep(frames):
        for frame in frames:
            stamp = frame.pts if frame.pts is not None else frame.dts
            if stamp in rows and stamp not in done:
                for (where, out, size, pix_fmt, _), scale in zip(requests, scalers):
                    if stamp in where:
                        image = scale.reformat(frame, width=size[0], height=size[1], format=pix_fmt,
                                               interpolation="AREA")
                        out[where[stamp]] = image.to_ndarray()
                done.add(stamp)

    try:
        for first, end in sorted(last.items()):
            for i in range(first, end + 1):
                chosen = stamps[i] in rows
                codec.skip_frame = "DEFAULT" if chosen or not skip_ok or i == first else "NONREF"
                keep(codec.decode(packets[i]))
            codec.skip_frame = "DEFAULT"
            keep(codec.decode(None))  # drain the pictures the decoder holds back, then start clean
            codec.flush_buffers()
    except av.error.FFmpegError as e:
        raise MediaError(DECODE_ERROR, f"{name}: decoding failed ({e})") from None
    finally:
        codec.skip_frame = "DEFAULT"
    if rows and not done:
        raise MediaError(DECODE_ERROR, f"{name}: the decoder returned none of the chosen frames")
    return done
