"""Which frames and which crop positions a clip takes: pure functions of the frame count, as the reference.

n is the number of frames of the video; results are int64 arrays of frame indices in [0, n). Pretraining,
dense fine-tuning and sparse (SSV2) fine-tuning treat short videos differently, exactly as the reference does
(see the spec, sections 4.2 and 4.5): pretraining repeats the last reachable frame, dense sampling pads with
the final frame, sparse sampling repeats frame 0 at the front.
"""
import numpy as np


def _check(n: int, num_frames: int):
    if n < 1:
        raise ValueError(f"a video needs at least one frame, got n={n}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")


def pretrain_indices(n: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of num_frames frames every `stride` frames; the start is uniform in
    [0, n - num_frames*stride] (0 when the video is shorter), and a cursor that would pass the end stops, so a
    short video repeats its last reachable frame (n=30, stride 4: 0, 4, ..., 28, then 28 again)."""
    _check(n, num_frames)
    span = num_frames * stride
    start = int(rng.integers(n - span + 1)) if n - span + 1 > 0 else 0
    ids = np.empty(num_frames, np.int64)
    cursor = start
    for i in range(num_frames):
        ids[i] = cursor
        # The reference advances a 1-based cursor only while cursor + stride < n.
        if cursor + 1 + stride < n:
            cursor += stride
    return ids


def _dense_window(n: int, num_frames: int, stride: int, end: int | None) -> np.ndarray:
    span = num_frames * stride
    if n <= span:
        # Short video: n // stride evenly spread positions over [0, n], padded with n, clipped to n - 1.
        ids = np.linspace(0, n, num=n // stride)
        ids = np.concatenate([ids, np.full(num_frames - n // stride, float(n))])
        return np.clip(ids, 0, n - 1).astype(np.int64)
    start = end - span
    return np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64)


def dense_train_indices(n: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's dense training view: a window of num_frames*stride frames ending uniformly in
    [span, n), num_frames positions spread evenly over it (effective stride a bit above `stride`)."""
    _check(n, num_frames)
    span = num_frames * stride
    end = int(rng.integers(span, n)) if n > span else None
    return _dense_window(n, num_frames, stride, end)


def dense_val_indices(n: int, num_frames: int, stride: int) -> np.ndarray:
    """The reference's single validation view: the dense window centred on the video (n=300, 16x4: 118..181)."""
    _check(n, num_frames)
    span = num_frames * stride
    return _dense_window(n, num_frames, stride, (span + n) // 2 if n > span else None)


def dense_test_views(n: int, num_frames: int, stride: int, num_segments: int) -> list[np.ndarray]:
    """The reference's multi-view test: frames 0, stride, 2*stride, ... of the whole video (padded with the
    last when too few), and num_segments windows of num_frames consecutive ones, spread evenly
    (300 frames, 16x4, 5 segments: windows start at frames 0, 56, 116, 176, 236). One segment takes the
    centre window (the reference divides by zero there)."""
    _check(n, num_frames)
    strided = np.arange(0, n, stride, dtype=np.int64)
    if len(strided) < num_frames:
        strided = np.concatenate([strided, np.full(num_frames - len(strided), strided[-1])])
    spare = len(strided) - num_frames
    if num_segments == 1:
        starts = [spare // 2]
    else:
        step = max(spare / (num_segments - 1), 0.0)
        starts = [int(c * step) for c in range(num_segments)]
    return [strided[s:s + num_frames] for s in starts]


def sparse_train_indices(n: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """TSN-style: num_frames equal segments, one random frame in each; a video shorter than num_frames
    repeats frame 0 at the front."""
    _check(n, num_frames)
    seg = n // num_frames
    if seg == 0:
        return _sparse_short(n, num_frames)
    return np.arange(num_frames, dtype=np.int64) * seg + rng.integers(seg, size=num_frames)


def sparse_val_indices(n: int, num_frames: int) -> np.ndarray:
    """TSN-style validation: the middle frame of each of num_frames equal segments."""
    _check(n, num_frames)
    seg = n // num_frames
    if seg == 0:
        return _sparse_short(n, num_frames)
    return np.arange(num_frames, dtype=np.int64) * seg + seg // 2


def _sparse_short(n, num_frames):
    return np.concatenate([np.zeros(num_frames - n, np.int64), np.arange(n, dtype=np.int64)])


def sparse_test_views(n: int, num_frames: int, num_segments: int) -> list[np.ndarray]:
    """The reference's sparse multi-view test: view c takes int(c*tick/num_segments + tick*x), tick =
    n/num_frames, x < num_frames; as the reference, the views' ids are pooled, sorted, and view c takes every
    num_segments-th element starting at c."""
    _check(n, num_frames)
    tick = n / num_frames
    pooled = np.sort(np.array([int(c * tick / num_segments + tick * x)
                               for c in range(num_segments) for x in range(num_frames)], np.int64))
    return [pooled[c::num_segments] for c in range(num_segments)]


def centre_offset(side: int, crop: int) -> int:
    """Where a centred crop starts: round((side - crop) / 2) with Python's half-to-even rounding, as the
    reference's CenterCrop (a margin of 175 gives 88, 173 gives 86)."""
    if crop > side:
        raise ValueError(f"crop {crop} is larger than the side {side}")
    return int(round((side - crop) / 2))


def crop_offsets(long_side: int, crop: int, num_crops: int) -> list[int]:
    """Offsets of num_crops crops of size `crop` spread evenly along a side of length long_side (397, 224, 3:
    0, 86, 173); one crop is centred (`centre_offset`; the reference divides by zero there)."""
    if num_crops == 1:
        return [centre_offset(long_side, crop)]
    if crop > long_side:
        raise ValueError(f"crop {crop} is larger than the side {long_side}")
    step = (long_side - crop) / (num_crops - 1)
    return [int(i * step) for i in range(num_crops)]
