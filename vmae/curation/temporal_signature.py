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
audio fingerprints with locality-sensitive hashing on top: at each step, the signs of the changes over the next
2 * WINDOW spans of SPAN steps (one span starting at each step) of the 8 channels make a code of two words;
TABLES tables are each keyed by their own KEY_BITS bits of the code, and codes meeting in a table make their
clips candidates when all their bits are close (as PDQ's index checks all 256 bits: unrelated clips meet by
chance in so large an index). A change over 0.6 s keeps its sign under a crop or a trim far more often than one
over 0.2 s (a cropped or trimmed copy that keeps 76 % of the step signs keeps 84 % of the span signs): one long
exact key rarely survives, one of several short keys often does. Reference codes also enter each table with
their K_WEAK least certain key bits flipped (a copy then needs only its strong bits right), and pretraining
clips index every STRIDE-th step only, which bounds the index at scale. A reference clip fingerprinted with
motion phases (`fingerprint --dense`) enters with its signatures on grids shifted by fractions of a step too:
a trim puts a copy's grid anywhere between the original's steps, and the nearer grid keeps more of its signs.
Last, a pair of clips is a candidate when its codes met twice at time lags within a step of each other, or
once within SINGLE_BITS (`confirmed`): the smoother the motion, the more its codes' bits repeat each other and
the more often unrelated clips meet by chance, but a chance meeting rarely comes twice at one lag.
Figures and the variants tried: benchmarks/README.md (bench_dedup.py).
"""
import numpy as np

from vmae.curation.buckets import meeting, same_bucket, sort_by_key

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
SPAN = 3             # the index's signs are of the change over SPAN steps (0.6 s), one per step
WINDOW = 7           # the index's codes: two words, the signs of 7 such changes of the 8 channels each
TABLES = 4           # the index has 4 tables, ...
KEY_BITS = 24        # ... each keyed by its own 24 of the code's 112 bits, of spans that share no step
CODE_BITS = 20       # codes meeting in a table pair their clips when they differ in at most 20 of 112 bits
K_WEAK = 3           # reference codes also enter each table with every flip of their 3 weakest key bits
STRIDE = 2           # pretraining clips index every 2nd step
SINGLE_BITS = 16     # a pair of clips whose codes met once is a candidate if they differ in at most 16 bits;
                     # otherwise its codes must meet twice, at time lags within one step of each other


def pick_steps(times: np.ndarray, phases: int = 1) -> np.ndarray:
    """Display indices of the frames nearest a grid of STEP / phases over the clip's first MAX_SECONDS."""
    n = len(times)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    grid = np.arange(0.0, min(float(times[-1]) + step, MAX_SECONDS), STEP / phases)
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


def signatures(times: np.ndarray, thumbs: np.ndarray, box: tuple, box_size: int, phases: int = 1) -> np.ndarray:
    """int8 [phases, steps, CHANNELS]: the motion signature of frames at `times` (seconds) with their thumbnails,
    on the STEP grid from 0 s, then on that grid shifted by STEP * k / phases (k = 1 .. phases - 1)."""
    if len(times) < 3:
        return np.zeros((phases, 0, CHANNELS), np.int8)
    stats = frame_statistics(thumbs, box, box_size)
    out = []
    for k in range(phases):  # a shifted grid keeps the steps of the first; past the last frame it holds still
        grid = np.arange(0.0, float(times[-1]) + 1e-6, STEP) + STEP * k / phases
        change = np.diff(np.stack([np.interp(grid, times, stats[:, c]) for c in range(CHANNELS)], 1), axis=0)
        scale = np.maximum(np.percentile(np.abs(change), 75, axis=0), FLOOR) if len(change) else FLOOR
        out.append(np.clip(np.rint(change / scale * LEVEL), -3 * LEVEL, 3 * LEVEL).astype(np.int8))
    return np.stack(out)


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

def spans(flat: np.ndarray) -> np.ndarray:
    """int16 [rows, CHANNELS]: row t holds the sum of flat rows t .. t + SPAN - 1 (the last rows sum fewer)."""
    out = flat.astype(np.int16)
    for k in range(1, SPAN):
        out[:len(out) - k] += flat[k:]
    return out


def codes(summed: np.ndarray, start: np.ndarray, count: np.ndarray, every: int = 1, chunk: int = 1 << 16) -> tuple:
    """(signature [m], row [m], step [m], code [m, 2] uint64) of signatures stored flat (signature i owning rows
    start[i]:start[i] + count[i]), given as their spans(flat): at every `every`-th step where 2 * WINDOW spans
    fit, the signs of those spans (word j // WINDOW, bit CHANNELS * (j % WINDOW) + c: span j, channel c), i.e.
    of summed[row + j]."""
    usable = np.maximum(np.asarray(count, np.int64) - 2 * WINDOW - SPAN + 2, 0)
    clip = np.repeat(np.arange(len(usable)), usable)
    step = np.arange(int(usable.sum())) - np.repeat(np.cumsum(usable) - usable, usable)
    keep = step % every == 0
    clip, row = clip[keep], np.asarray(start, np.int64)[clip[keep]] + step[keep]
    code = np.empty((len(row), 2), np.uint64)
    for lo in range(0, len(row), chunk):
        signs = np.zeros((len(row[lo:lo + chunk]), 2, 64), bool)   # two words, WINDOW spans each
        signs[:, :, :WINDOW * CHANNELS] = (summed[row[lo:lo + chunk, None] + np.arange(2 * WINDOW)] > 0).reshape(
            -1, 2, WINDOW * CHANNELS)
        code[lo:lo + chunk] = np.packbits(signs, axis=2, bitorder="little").view("<u8")[:, :, 0]
    return clip, row, step[keep], code


def key_bits(table: int) -> np.ndarray:
    """The KEY_BITS code positions (ascending; word w's bit i is position 64 * w + i) that key index table
    `table`: a fixed draw, the same in every run, among the spans table, table + SPAN, table + 2 * SPAN, ... so
    that no two key bits sum a step in common (overlapping spans would make a key's bits agree by chance)."""
    spans = np.arange(table % SPAN, 2 * WINDOW, SPAN)
    span = np.random.default_rng(table).choice(len(spans) * CHANNELS, KEY_BITS, replace=False)
    at = spans[span // CHANNELS]
    return np.sort(64 * (at // WINDOW) + CHANNELS * (at % WINDOW) + span % CHANNELS)


def _keys(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """uint32 [m]: the code positions `bits` of codes [m, 2] uint64, gathered into the low bits in order (a
    table per byte)."""
    key, values, data = np.zeros(len(code), np.uint32), np.arange(256, dtype=np.uint32), code.view(np.uint8)
    for byte in range(16):
        table = np.zeros(256, np.uint32)
        for j in np.flatnonzero((bits >= 8 * byte) & (bits < 8 * byte + 8)):
            table |= ((values >> np.uint32(bits[j] - 8 * byte)) & np.uint32(1)) << np.uint32(j)
        if table.any():
            key |= table[data[:, byte]]
    return key


def _weakest(size: np.ndarray) -> list:
    """Per row of size [m, KEY_BITS] (uint8), the K_WEAK smallest as key bits [m] uint32, smallest first (argmin
    K_WEAK times: far faster than a row-wise partition)."""
    size, out = size.copy(), []
    for _ in range(K_WEAK):
        at = size.argmin(axis=1)
        out.append(np.uint32(1) << at.astype(np.uint32))
        size[np.arange(len(size)), at] = 255
    return out


def candidate_pairs(batches, role: np.ndarray, max_bucket: int, tick=lambda: None) -> tuple:
    """(unique candidate clip pairs as uint64 (a << 32 | b), a < b; buckets skipped as too large): clips with
    codes that meet in one of the TABLES tables and differ in at most CODE_BITS of their 2 * WINDOW * CHANNELS
    bits, as often as `confirmed` asks, one of the clips on the pretraining side (role 0). batches: (clip id of
    each signature, flat signatures, steps per signature), as fingerprint.motion_batches yields them (a reference
    clip may have several: its signature on shifted grids). Pretraining codes every STRIDE-th step; reference
    codes (role 1) every step, each also with its K_WEAK weakest key bits flipped in every combination. tick()
    is called after each table (progress)."""
    # side -> (clip ids, steps, codes), reference codes last; and per reference code, how sure each bit's sign is
    sides = {0: ([np.zeros(0, np.uint32)], [np.zeros(0, np.int16)], [np.zeros((0, 2), np.uint64)]), 1: ([], [], [])}
    weak = [np.zeros((0, 2 * WINDOW * CHANNELS), np.uint8)]
    for ids, flat, count in batches:
        summed = spans(flat)
        for side, (clips, side_steps, side_codes) in sides.items():
            mine = np.flatnonzero(role[ids] == side)
            c, row, at, x = codes(summed, (np.cumsum(count) - count)[mine], count[mine], STRIDE if side == 0 else 1)
            clips.append(ids[mine][c].astype(np.uint32)), side_steps.append(at.astype(np.int16))
            side_codes.append(x)
            if side == 1:  # the size of the span's change
                weak.append(np.minimum(np.abs(summed[row[:, None] + np.arange(2 * WINDOW)]), 255)
                            .reshape(len(row), 2 * WINDOW * CHANNELS).astype(np.uint8))
    clip, step, code = (np.concatenate(sides[0][k] + sides[1][k]) for k in (0, 1, 2))
    weak = np.concatenate(weak)
    first_ref = len(code) - len(weak)
    variants = 2 ** K_WEAK
    if len(code) >= 2 ** 32 or variants * len(weak) >= 2 ** 32:
        raise ValueError("more than 2^32 motion codes to index: split the pretraining set and dedup the parts")

    def flipped(key, flips):  # the reference keys, then a block of them per combination of weak bits
        yield key
        for combo in range(1, variants):
            yield key ^ np.bitwise_or.reduce([flips[j] for j in range(K_WEAK) if combo >> j & 1], axis=0)

    def check(i, j):  # code numbers of pairs that met: those within CODE_BITS, as meetings
        distance = np.bitwise_count(code[i] ^ code[j]).sum(axis=1, dtype=np.uint8)
        ok = (distance <= CODE_BITS) & (clip[i] != clip[j])
        i, j, distance = i[ok], j[ok], distance[ok]
        i, j = np.where(clip[i] < clip[j], i, j), np.where(clip[i] < clip[j], j, i)
        return np.stack([clip[i].astype(np.int64) << 32 | clip[j], step[i], step[j], distance], axis=1)

    found, skipped = [np.zeros((0, 4), np.int64)], 0
    for table in range(TABLES):
        bits = key_bits(table)
        columns = bits // 64 * WINDOW * CHANNELS + bits % 64   # the key bits' spans and channels in `weak`
        key = _keys(code, bits)
        # Two sorted tables, the pretraining codes' and the reference variants': the reference codes meet each
        # other in every bucket, and only their meetings with pretraining codes are wanted.
        pkey, pentry = sort_by_key([key[:first_ref]], first_ref)
        rkey, rentry = sort_by_key(flipped(key[first_ref:], _weakest(weak[:, columns])), variants * len(weak))
        del key
        within, big = same_bucket(pkey, max_bucket)
        across, big_refs = meeting(pkey, rkey, max_bucket)
        skipped += big + big_refs
        found += [check(pentry[at], pentry[later]) for at, later in within]
        found += [check(pentry[at], first_ref + rentry[there] % len(weak)) for at, there in across]
        del pkey, pentry, rkey, rentry
        tick()
    return confirmed(np.concatenate(found)), skipped


def confirmed(meetings: np.ndarray) -> np.ndarray:
    """The clip pairs (uint64, unique) of meetings [pair, step_a, step_b, distance] (a meeting: codes of the two
    clips that start at those steps met in a table, that many bits apart) that one meeting within SINGLE_BITS,
    or two meetings at other steps and at time lags within one step of each other, confirm. Unrelated clips
    meet by chance once, not twice at one lag, even when their motion is smooth enough that their codes often
    agree (measured: benchmarks/README.md)."""
    steps = np.unique(meetings[:, :3], axis=0)   # one code pair can meet in several tables
    pair, lag = steps[:, 0], steps[:, 2] - steps[:, 1]
    order = np.lexsort((lag, pair))
    pair, lag = pair[order], lag[order]
    again = (pair[1:] == pair[:-1]) & (lag[1:] - lag[:-1] <= 1)
    return np.unique(np.r_[pair[1:][again], meetings[meetings[:, 3] <= SINGLE_BITS, 0]]).astype(np.uint64)
