"""Decode chosen frames of a clip held in memory, behind one small interface with two backends.

`get_decoder("pyav" | "decord").open(data)` -> a reader with `num_frames`, `fps`, `width`, `height`,
`get_frames(indices)` -> [k, H, W, 3] uint8 RGB, `close()`. Frame i is the i-th frame in presentation order.
Both backends give bit-identical frames (tested).

Frame counts: PyAV's `stream.frames` is 0 for Matroska/WebM and may miss edit lists, so the PyAV reader counts
the video packets it indexes on open (exact for every container; no duration x fps guess). decord's len() is
used as is (it agrees on every container in the tests).

DEFAULT_DECODER is "pyav": in benchmarks/bench_loader.py it decodes a sample in less CPU time than decord, at
both keyframe intervals measured, and its resident memory stays flat (figures in benchmarks/README.md).
"""
import io
import math
from typing import Sequence

import numpy as np

DEFAULT_DECODER = "pyav"

# Decoders whose skip_frame=NONREF drops only pictures no other picture refers to (checked in tests).
_SKIP_NONREF_CODECS = {"h264", "hevc"}


class DecodeError(Exception):
    """The bytes are not a decodable video (corrupt, truncated, no video stream)."""


class VideoReader:
    """What both backends return; usable as a context manager."""

    num_frames: int
    fps: float
    width: int
    height: int

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_indices(indices, num_frames) -> np.ndarray:
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted.size == 0:
        raise ValueError("get_frames needs at least one frame index")
    if wanted.min() < 0 or wanted.max() >= num_frames:
        raise IndexError(f"frame indices must lie in [0, {num_frames}); got {wanted.min()}..{wanted.max()}")
    return wanted


class PyAVReader(VideoReader):
    """Indexes the packets once on open (no decoding), then for each request decodes from the keyframe at or
    before the first wanted frame up to the last wanted one, telling the decoder to skip the non-reference
    pictures it does not need. Skipped pictures are ones no other picture depends on, so the frames returned
    are bit-identical to a full decode. A request whose frames have not left the decoder yet goes on from where
    the previous one stopped instead of seeking back to a keyframe: reading a long video window after window
    (feature extraction) decodes it once, whatever its keyframe interval. `decoded` counts the pictures that
    left the decoder and `seeks` the requests that started again from a keyframe: the work done, for tests
    and benchmarks."""

    def __init__(self, data: bytes, skip_nonref: bool = True):
        import av

        self._av = av
        # One converter for all frames of the clip: PyAV's per-frame to_ndarray sets up a new swscale context
        # every time, a large part of the conversion cost; the output is bit-identical.
        self._to_rgb = av.video.reformatter.VideoReformatter()
        try:
            self._container = av.open(io.BytesIO(data), mode="r")
        except av.error.FFmpegError as err:
            raise DecodeError(f"cannot open the container: {err}") from err
        try:
            self._index(skip_nonref)
        except BaseException:
            self._container.close()
            raise

    def _index(self, skip_nonref):
        av = self._av
        if not self._container.streams.video:
            raise DecodeError("no video stream")
        stream = self._container.streams.video[0]
        self._stream = stream
        self._codec = stream.codec_context
        # One thread per reader: the loader runs one decoder per worker process, and frame threading would
        # make the per-packet skip_frame switch below apply to the wrong packets.
        self._codec.thread_count = 1
        self._skip_nonref = skip_nonref and self._codec.name in _SKIP_NONREF_CODECS
        try:
            # Packets in decode order; a frame's identity is its packet's pts. The demuxer's final empty
            # packet and packets the container marks as discarded (edit lists) are not frames of the video.
            self._packets = [p for p in self._container.demux(stream) if p.size]
        except av.error.FFmpegError as err:
            raise DecodeError(f"cannot read the packets: {err}") from err
        stamps = [p.pts if p.pts is not None else p.dts for p in self._packets]
        if any(s is None for s in stamps):
            raise DecodeError("packets without timestamps")
        shown = sorted(s for s, p in zip(stamps, self._packets) if not p.is_discard)
        if not shown:
            raise DecodeError("no video frames")
        if len(set(shown)) != len(shown):
            raise DecodeError("several frames share one timestamp")
        self._stamps = stamps
        self.decoded = self.seeks = 0
        self._resume = None  # the packet to feed next when the decoder may go on from the last request
        self._shown = -math.inf  # the latest pts the decoder has output since it was last flushed
        self._frame_pts = shown
        self._keyframes = [i for i, p in enumerate(self._packets) if p.is_keyframe]
        if not self._keyframes:
            raise DecodeError("no keyframe")
        self.num_frames = len(shown)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self.width = self._codec.width
        self.height = self._codec.height

    def _start_packet(self, first_pts) -> int:
        """The last keyframe whose pts is at or before first_pts: every frame from there on can be decoded
        (for open GOPs the leading pictures of a later keyframe are covered too)."""
        start = self._keyframes[0]
        for i in self._keyframes:
            if self._stamps[i] <= first_pts:
                start = i
        return start

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = _check_indices(indices, self.num_frames)
        unique = np.unique(wanted)
        out = np.empty((len(unique), self.height, self.width, 3), np.uint8)
        missing = None
        # Go on from the last request when none of the wanted pictures has left the decoder yet. That is exact:
        # only non-reference pictures were skipped, so the decoder holds every picture the wanted ones depend
        # on. A wanted picture that was itself skipped never comes out; the request is then decoded again.
        if self._resume is not None and self._frame_pts[unique[0]] > self._shown:
            missing = self._decode(unique, out, self._resume, going_on=True)
        if missing is None or missing:
            self.seeks += 1
            self._codec.flush_buffers()
            self._shown = -math.inf
            missing = self._decode(unique, out, self._start_packet(self._frame_pts[unique[0]]), going_on=False)
        if missing:
            raise DecodeError(f"the decoder returned no frame for indices {missing[:5]} (corrupt or truncated)")
        if len(unique) == len(wanted) and np.array_equal(unique, wanted):
            return out
        return out[np.searchsorted(unique, wanted)]

    def _decode(self, unique: np.ndarray, out: np.ndarray, start: int, going_on: bool) -> list:
        """Feed packets from `start` until the frames `unique` are in `out`; return the indices still missing.

        going_on: the decoder continues the last request; pictures come out in display order, so one shown
        past a missing wanted picture means that picture is gone, and the decode stops there."""
        rows = {self._frame_pts[i]: row for row, i in enumerate(unique.tolist())}  # pts -> row of `out`
        wanted_pts = sorted(rows)
        done, first_pending, codec = set(), 0, self._codec
        self._resume = None
        try:
            for i in range(start, len(self._packets)):
                if self._skip_nonref:
                    codec.skip_frame = "DEFAULT" if self._stamps[i] in rows else "NONREF"
                for frame in codec.decode(self._packets[i]):
                    self._keep(frame, rows, out, done)
                if wanted_pts[-1] in done:
                    self._resume = i + 1
                    break
                if going_on:
                    while wanted_pts[first_pending] in done:
                        first_pending += 1
                    if self._shown > wanted_pts[first_pending]:
                        break
            else:
                codec.skip_frame = "DEFAULT"
                for frame in codec.decode(None):
                    self._keep(frame, rows, out, done)
        except self._av.error.FFmpegError as err:
            raise DecodeError(f"decoding failed: {err}") from err
        finally:
            codec.skip_frame = "DEFAULT"
        return [int(i) for i in unique if self._frame_pts[i] not in done]

    def _keep(self, frame, rows, out, done):
        """Convert a wanted frame to RGB straight into its row of `out`; note how far the decoder has shown."""
        pts = frame.pts if frame.pts is not None else frame.dts
        self.decoded += 1
        self._shown = max(self._shown, pts)
        row = rows.get(pts)
        if row is None:
            return
        rgb = self._to_rgb.reformat(frame, format="rgb24")
        if (rgb.height, rgb.width) != out.shape[1:3]:
            raise DecodeError(f"the frame size changes inside the clip ({rgb.width}x{rgb.height})")
        plane = rgb.planes[0]
        lines = np.frombuffer(plane, np.uint8)[:plane.line_size * rgb.height].reshape(rgb.height, plane.line_size)
        out[row] = lines[:, :rgb.width * 3].reshape(rgb.height, rgb.width, 3)
        done.add(pts)

    def close(self) -> None:
        self._packets = []
        self._container.close()


class DecordReader(VideoReader):
    """decord's VideoReader on the same bytes (decord indexes keyframes on open and seeks per batch)."""

    def __init__(self, data: bytes):
        import decord

        try:
            self._vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as err:
            raise DecodeError(f"decord cannot open the video: {err}") from err
        if self.num_frames == 0:
            raise DecodeError("no video frames")
        self._shape = None

    def _frame_shape(self):
        # decord exposes the size only through a decoded frame, so decode one only when asked.
        if self._shape is None:
            self._shape = self.get_frames([0]).shape[1:3]
        return self._shape

    @property
    def height(self) -> int:
        return int(self._frame_shape()[0])

    @property
    def width(self) -> int:
        return int(self._frame_shape()[1])

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import decord

        wanted = _check_indices(indices, self.num_frames)
        unique = np.unique(wanted)
        try:
            frames = self._vr.get_batch(unique.tolist()).asnumpy()
        except (RuntimeError, decord.DECORDError) as err:
            raise DecodeError(f"decord failed to decode: {err}") from err
        return frames[np.searchsorted(unique, wanted)]

    def close(self) -> None:
        self._vr = None


class Decoder:
    """A named backend; `open(data)` returns a VideoReader over the bytes."""

    def __init__(self, name: str):
        if name not in ("pyav", "decord"):
            raise ValueError(f"unknown decoder {name!r}: use 'pyav' or 'decord'")
        self.name = name

    def open(self, data: bytes) -> VideoReader:
        return PyAVReader(data) if self.name == "pyav" else DecordReader(data)

    def __repr__(self):
        return f"Decoder({self.name!r})"


def get_decoder(name: str = DEFAULT_DECODER) -> Decoder:
    return Decoder(name)
