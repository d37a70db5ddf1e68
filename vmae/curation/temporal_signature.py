"""A clip's motion signature: how a few globally pooled statistics of its frames change over time.

PDQ hashes single frames, and its bits follow fine image structure: a crop of a few percent, or a trim that
moves the sampled times, changes them. What a crop, a flip, a rescale, a caption or a logo leaves nearly
unchanged is how the picture as a whole changes from one instant to the next. So, per clip:
  - frames nearest a 0.2 s grid are decoded (as tiny yuv420p thumbnails, in fingerprint's decoding), black
    bars cut as for PDQ, then a centre margin too (a crop loses the frame's edges, not its middle);
  - per frame, CHANNELS statistics: the mean of Y in the top and bottom halves, of U and of V likewise (rows,
    so a horizontal flip leaves them), the outer quarters' mean of Y minus the middle half's, and the mean
    spatial gradient of Y;
  - their differences from one grid step to the next, each channel divided by its 75th percentile of size
    (so a darker or smaller copy scales away) and clipped (so one scene cut does not decide everything):
    int8 [steps, CHANNELS], stored as the fingerprint column `motion`.
Two clips match (`correlate`) when, at some lag, the normalised cross-correlation of their signatures over the
overlap is high: a trimmed copy lines up at its lag. The index (`candidate_pairs`) follows Haitsma and Kalker's
audio fingerprints: the signs of 4 steps of the 8 channels make one 32-bit word per step, and
clips sharing a word exactly become candidates if the words after the shared one are close too (as PDQ's
index checks all 256 bits: unrelated clips meet by chance in so large an index). Reference clips also index
their words with the K_WEAK least certain bits flipped (a copy then needs only its strong bits right), and
pretraining clips index every STRIDE-th step only, which bounds the index at scale. Figures and the
variants tried: benchmarks/README.md (bench_dedup.py).
"""
import numpy as np

from vmae.curation.buckets import same_bucket

VERSION = 1          # of the signature's definition: fingerprint redoes units written under another
STEP = 0.2           # seconds between signature steps
MAX_SECONDS = 60.0   # a long video's signature covers its first minute (PDQ covers all of it)
THUMB = 32           # frames are pooled from a THUMB x THUMB yuv420p thumbnail
CENTER = 0.15        # share of the (bar-free) frame cut from each edge before pooling
CHANNELS = 8
LEVEL = 40           # int8 units per unit of normalised change; values are clipped to +-3 units
FLOOR = 0.5          # grey levels: changes smaller than this are noise, not scaled up
MIN_STEPS = 10       # two clips must overlap at least 2 s ...
MIN_SHARE = 0.5      # ... and at least half of the shorter signature
MIN_ENERGY = 0.3     # and each side must move in the overlap (mean squared normalised change per step)
SMOOTH, SPAN = 1, 4  # words: signs of 4 consecutive steps of the 8 channels = 32 bits
K_WEAK = 3           # reference words are also indexed with every flip of their 3 weakest bits
STRIDE = 2           # pretraining clips index every 2nd step
TAG_BITS = 10        # two words meet only if the words after them differ in at most 10 of 32 bits


def pick_steps(times: np.ndarray) -> np.ndarray:
    """Display indices of the frames nearest a STEP grid over the clip's first MAX_SECONDS."""
    n = len(times)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    grid = np.arange(0.0, min(float(times[-1]) + step, MAX_SECONDS), STEP)
    return np.unique(np.clip(np.searchsorted(times, grid), 0, n - 1))


def _inner(planes: np.ndarray, box: tuple, scale: int) -> np.ndarray:
    """planes [n, h, w] cut to the bar-free box (given in pixels of a scale-times larger frame), then CENTER."""
    top, bottom, left, right = (int(np.ceil(b / scale)) for b in box)
    planes = planes[:, top:planes.shape[1] - bottom, left:planes.shape[2] - right]
    dy, dx = int(round(planes.shape[1] * CENTER)), int(round(planes.shape[2] * CENTER))
    return planes[:, dy:planes.shape[1] - dy, dx:planes.shape[2] - dx].astype(np.float32)


def frame_statistics(thumbs: np.ndarray, box: tuple, box_size: int) -> np.ndarray:
    """[n, CHANNELS] statistics of yuv420p thumbnails [n, THUMB * 3 // 2, THUMB] (to_ndarray's layout); box:
    fingerprint's black bars, in pixels of a box_size square frame."""
    n, half = len(thumbs), THUMB // 2
    y = _inner(thumbs[:, :THUMB], box, box_size // THUMB)
    u, v = (_inner(thumbs[:, THUMB + i * half // 2:THUMB + (i + 1) * half // 2].reshape(n, half, half), box,
                   box_size // half) for i in range(2))
    out = [part.mean(axis=(1, 2)) for plane in (y, u, v) for part in np.array_split(plane, 2, axis=1)]
    q = y.shape[2] // 4
    out.append((y[:, :, :q].sum(axis=(1, 2)) + y[:, :, y.shape[2] - q:].sum(axis=(1, 2))) / max(2 * q * y.shape[1], 1)
               - y[:, :, q:y.shape[2] - q].mean(axis=(1, 2)))
    out.append(np.abs(np.diff(y, axis=2)).mean(axis=(1, 2)) + np.abs(np.diff(y, axis=1)).mean(axis=(1, 2)))
    return np.nan_to_num(np.stack(out, 1))


def signature(times: np.ndarray, thumbs: np.ndarray, box: tuple, box_size: int) -> np.ndarray:
    """int8 [steps, CHANNELS]: the motion signature of frames at `times` (seconds) with their thumbnails."""
    if len(times) < 3:
        return np.zeros((0, CHANNELS), np.int8)
    stats = frame_statistics(thumbs, box, box_size)
    grid = np.arange(0.0, float(times[-1]) + 1e-6, STEP)
    change = np.diff(np.stack([np.interp(grid, times, stats[:, c]) for c in range(CHANNELS)], 1), axis=0)
    scale = np.maximum(np.percentile(np.abs(change), 75, axis=0), FLOOR) if len(change) else FLOOR
    return np.clip(np.rint(change / scale * LEVEL), -3 * LEVEL, 3 * LEVEL).astype(np.int8)


# ---------------------------------------------------------------- matching

def correlate(first: list, second: list, chunk: int = 1024) -> tuple:
    """(best normalised cross-correlation over lags [pairs], its lag in steps [pairs]: second's step = first's
    + lag) of signature pairs (first[i], second[i]: int8 [steps, CHANNELS]). Lags with too short an overlap, or
    too little change on either side, score -1."""
    score, lag = np.full(len(first), -1.0, np.float32), np.zeros(len(first), np.int32)
    for lo in range(0, len(first), chunk):
        sides = (first[lo:lo + chunk], second[lo:lo + chunk])
        length = np.array([[len(x) for x in side] for side in sides])
        size = 1 << int(np.ceil(np.log2(max(2 * int(length.max()), 2))))
        x = np.zeros((2, length.shape[1], size // 2, CHANNELS), np.float32)
        for side, signatures in enumerate(sides):
            for row, signature in enumerate(signatures):
                x[side, row, :len(signature)] = signature / LEVEL
        mask = (np.arange(size // 2) < length[..., None]).astype(np.float32)
        energy = (x ** 2).sum(axis=3)
        f = np.fft.rfft(x, size, axis=2)
        fm, fe = np.fft.rfft(mask, size, axis=2), np.fft.rfft(energy, size, axis=2)

        def corr(p, q):  # sum_t p[t] q[t + k] for every lag k (negative lags wrap to the end)
            return np.fft.irfft(np.conj(p) * q, size, axis=-1)

        num = corr(f[0].transpose(0, 2, 1), f[1].transpose(0, 2, 1)).sum(axis=1)
        ea, eb, overlap = corr(fe[0], fm[1]), corr(fm[0], fe[1]), np.rint(corr(fm[0], fm[1]))
        need = np.maximum(MIN_STEPS, MIN_SHARE * length.min(axis=0))[:, None]
        ok = (overlap >= need) & (ea >= MIN_ENERGY * overlap) & (eb >= MIN_ENERGY * overlap)
        s = np.where(ok, num / np.sqrt(np.maximum(ea * eb, 1e-9)), -1.0)
        best = s.argmax(axis=1)
        score[lo:lo + chunk] = s[np.arange(len(best)), best]
        lag[lo:lo + chunk] = np.where(best < size // 2, best, best - size)
    return score, lag


# ---------------------------------------------------------------- the index

def words(flat: np.ndarray, start: np.ndarray, count: np.ndarray, weak: int = 0, chunk: int = 1 << 12) -> tuple:
    """(clip [m], step [m], words [m, 2 ** weak] uint32, tags [m] uint32) of signatures stored flat (int8
    [steps, CHANNELS], clip i owning start[i]:start[i] + count[i]). A word's bytes are the signs of SPAN
    consecutive, disjoint sums of SMOOTH steps (disjoint: overlapping sums would repeat each other's bits, and
    the index would lose selectivity); its tag is the word that follows it. One word per step where both fit;
    the word itself first, then the word with every combination of its `weak` weakest bits flipped."""
    span = SMOOTH * SPAN
    bit = np.uint32(1) << np.arange(32, dtype=np.uint32)
    out = []
    for lo in range(0, len(count), chunk):  # a chunk of clips at a time bounds the memory
        n = count[lo:lo + chunk]
        rows = np.repeat(start[lo:lo + chunk] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        total = np.concatenate([np.zeros((1, CHANNELS), np.int32), np.cumsum(flat[rows], axis=0, dtype=np.int32)])
        usable = np.maximum(n - 2 * span + 1, 0)
        clip = np.repeat(np.arange(lo, lo + len(n)), usable)
        step = np.arange(int(usable.sum())) - np.repeat(np.cumsum(usable) - usable, usable)
        at = np.repeat(np.cumsum(n) - n, usable) + step

        def sums(at):
            return np.concatenate([total[at + (j + 1) * SMOOTH] - total[at + j * SMOOTH] for j in range(SPAN)], 1)

        now = sums(at)
        word = np.empty((len(at), 2 ** weak), np.uint32)
        word[:, 0] = np.bitwise_or.reduce(bit * (now > 0), axis=1)
        if weak:
            least = np.argpartition(np.abs(now), weak, axis=1)[:, :weak]
            for combo in range(1, 2 ** weak):
                flips = [bit[least[:, j]] for j in range(weak) if combo >> j & 1]
                word[:, combo] = word[:, 0] ^ np.bitwise_or.reduce(flips, axis=0)
        out.append((clip, step, word, np.bitwise_or.reduce(bit * (sums(at + span) > 0), axis=1)))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2 ** weak), np.uint32), np.zeros(0, np.uint32)
    return tuple(np.concatenate(parts) for parts in zip(*out))


def candidate_pairs(batches, role: np.ndarray, max_bucket: int) -> tuple:
    """(unique candidate clip pairs as uint64 (a << 32 | b), a < b; buckets skipped as too large): clips sharing
    a word whose tags also differ in at most TAG_BITS bits (which drops the chance meetings of unrelated
    clips), one of them on the pretraining side (role 0). batches: (first clip id, flat signatures, steps per
    clip), as fingerprint.signature_batches yields them. Pretraining words every STRIDE-th step, reference
    words (role 1) with their weak-bit variants."""
    keys, clips, tags = [], [], []
    for first, flat, count in batches:
        ids = first + np.arange(len(count))
        start = np.cumsum(count) - count
        for side, weak in ((0, 0), (1, K_WEAK)):
            mine = np.flatnonzero(role[ids] == side)
            clip, step, word, tag = words(flat, start[mine], count[mine], weak)
            keep = step % STRIDE == 0 if side == 0 else slice(None)
            keys.append(word[keep].ravel())
            clips.append(np.repeat(ids[mine][clip[keep]].astype(np.uint32), word.shape[1]))
            tags.append(np.repeat(tag[keep], word.shape[1]))
    key, clip, tag = (np.concatenate(x) if x else np.zeros(0, np.uint32) for x in (keys, clips, tags))
    del keys, clips, tags
    if len(key) >= 2 ** 32:
        raise ValueError("more than 2^32 motion words to index: split the pretraining set and dedup the parts")
    order = (key.astype(np.uint64) << np.uint64(32)) | np.arange(len(key), dtype=np.uint64)
    del key
    order.sort()
    key, entry = (order >> np.uint64(32)).astype(np.uint32), (order & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    del order
    found = []
    pairs_in_buckets, skipped = same_bucket(key, max_bucket)
    for at, later in pairs_in_buckets:
        i, j = entry[at], entry[later]
        a, b = np.minimum(clip[i], clip[j]), np.maximum(clip[i], clip[j])
        ok = (a != b) & ((role[a] == 0) | (role[b] == 0)) & (np.bitwise_count(tag[i] ^ tag[j]) <= TAG_BITS)
        found.append(np.unique((a[ok].astype(np.uint64) << np.uint64(32)) | b[ok].astype(np.uint64)))
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
    return pairs, skipped
