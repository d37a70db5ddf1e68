"""Near-duplicate clips within a pretraining set and between it and evaluation sets: `vmae-data dedup`.

Input: fingerprint tables (vmae.curation.fingerprint): the pretraining side (--fingerprints) and any number of
reference sets (--against, e.g. K400 val, SSV2 validation). Two clips are near-duplicates, as in Meta's vPDQ,
when enough of their frames have a frame in the other clip (anywhere in it: either order, so trimmed copies
match) within `threshold` bits of PDQ Hamming distance, the mirror image of the pretraining clip included.

Copies whose frames PDQ no longer matches (crops, trims of fast-changing content) are found by the clips'
motion signatures (vmae.curation.temporal_signature, with its own index): a pair is also a near-duplicate
when they correlate above motion_threshold at some lag and at least one pair of their frames is within
motion_support bits. Motion alone is weak evidence (simple content that moves alike, e.g. two clips of a
square sliding at one speed, correlates as well as a copy); a copy keeps some frame far closer than unrelated
clips' closest frames (benchmarks/README.md, bench_dedup.py).

No all-pairs comparison: multi-index hashing finds the candidates. Every 256-bit frame hash is cut into
8 words of 32 bits; two frames within 31 bits differ in at most 7 words when their differences spread, and
re-encoded copies share many frames, so two copies almost always share some word exactly. Each word is one
sorted table; clips meeting in a bucket become a candidate pair; every candidate is then checked on all its
frames. Buckets holding more than max_bucket clips (flat or very common content) are skipped and counted.

Outputs in OUT/: pairs.parquet (PAIR_SCHEMA), report.json, and with plot a PNG of example pairs. Pairs are
oriented for `--exclude`: key_a is the pretraining clip to drop, key_b the clip it repeats (a reference
clip: reason eval-leak; or the copy kept within the pretraining set: duplicate-content, the longest and
largest copy, then the first key, is kept).
"""
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vmae import media
from vmae.atomic import atomic_path, write_text
from vmae.curation import temporal_signature
from vmae.curation.buckets import same_bucket, sort_by_key
from vmae.curation.fingerprint import CROP_AT, HASH_BYTES, blob_batches, motion_batches, ok_blobs, ok_rows, \
    read_fingerprints, read_signatures
from vmae.config import option
from vmae.errors import ConfigError, VmaeError

EVAL_LEAK = "eval-leak"
DUPLICATE = "duplicate-content"
WORDS = HASH_BYTES // 4          # 32-bit words per hash: the index tables
VERIFY_CHUNK = 4096              # candidate pairs checked at once (bounds the distance arrays' memory)
NO_MATCH = 999                   # the distance given to a missing or unusable frame

PAIR_SCHEMA = pa.schema([
    ("key_a", pa.string()), ("key_b", pa.string()), ("set_a", pa.string()), ("set_b", pa.string()),
    ("source_a", pa.string()), ("source_b", pa.string()),
    ("reason", pa.string()),          # eval-leak | duplicate-content
    ("distance", pa.float32()),       # mean Hamming distance of the matched frames (of 256 bits)
    ("matched_a", pa.int32()), ("frames_a", pa.int32()),   # frames of a with a match in b / a's usable frames
    ("matched_b", pa.int32()), ("frames_b", pa.int32()),
    ("mirrored", pa.bool_()),         # a matches b's mirror image
    ("time_a", pa.float32()), ("time_b", pa.float32()),    # the closest frame pair, seconds into each clip
    ("motion", pa.float32()),         # correlation of the motion signatures at their best lag (-1: none)
    ("lag", pa.float32()),            # that lag: b's time = a's time + lag, seconds
])


@dataclass(frozen=True)
class DedupConfig:
    """The options of a dedup run; a field with help is also an option of `vmae-data dedup` (vmae.config).
    Defaults: benchmarks/README.md (bench_dedup.py)."""
    threshold: int = option(48, "Two frames match within this many differing bits of 256.")
    coverage: float = option(0.5, "Share of one clip's usable frames that must match the other clip.")
    min_quality: int = option(50, "Frames of lower PDQ quality (0-100; flat, dark) are ignored.")
    motion_threshold: float = option(0.6, "Two clips also match when their motion signatures correlate this "
                                           "well at some time lag (finds crops and trims PDQ misses; 1 matches by "
                                           "PDQ alone) ...")
    motion_support: int = option(80, "... and some pair of their frames is within this many bits (motion alone "
                                     "also pairs unrelated clips that move alike).")
    same_video: bool = option(False, "Also pair clips cut from one video (same source and video_id, e.g. "
                                     "consecutive AVA clips) within the pretraining set.")
    min_frames: int = 2        # and at least this many frames on each side (fewer when a clip has fewer)
    max_bucket: int = 512      # index buckets with more clips are skipped as uninformative

    def __post_init__(self):
        if not 0 <= self.threshold < 256:
            raise ConfigError("--threshold must lie in 0..255 (bits of a 256-bit PDQ hash)")
        if not 0 < self.coverage <= 1:
            raise ConfigError("--coverage must lie in (0, 1]")
        if not 0 <= self.min_quality <= 100:
            raise ConfigError("--min-quality must lie in 0..100 (PDQ's quality score)")
        if not 0 < self.motion_threshold <= 1:
            raise ConfigError("--motion-threshold must lie in (0, 1] (1 matches by PDQ alone, in practice)")
        if not 0 <= self.motion_support < 256:
            raise ConfigError("--motion-support must lie in 0..255 (bits of a 256-bit PDQ hash)")
        if self.min_frames < 1 or self.max_bucket < 2:
            raise ConfigError("--min-frames must be at least 1 and the bucket cap at least 2")


@dataclass
class Clips:
    """Every fingerprinted clip of every set, frames stored flat (CSR): clip i owns frames start[i]:end[i]."""
    meta: pa.Table            # key, set, source, video_id, path, offset, size: one row per clip
    set_code: np.ndarray      # int32 [clips]: index into set_names
    set_names: list
    video_code: np.ndarray    # int64 [clips]: equal for equal (set, source, video_id); -1 without video_id
    role: np.ndarray          # 0 = pretraining side, 1 = reference
    rank: np.ndarray          # keep preference within a set: lower is kept
    start: np.ndarray         # int64 [clips]
    count: np.ndarray         # int64 [clips]
    hashes: np.ndarray        # uint64 [frames, 4]
    mirrors: np.ndarray       # uint64 [frames, 4]
    usable: np.ndarray        # bool [frames]: quality high enough
    times: np.ndarray         # float32 [frames]
    crops: np.ndarray         # uint64 [crop rows, 4]: crop windows' hashes, windows[i] rows per frame of clip i ...
    crop_start: np.ndarray    # int64 [clips]: ... from this row on (-1: the clip has none)
    windows: np.ndarray       # int64 [clips]: crop windows per frame (0: none)

    def usable_frames(self) -> np.ndarray:
        """int64 [clips]: each clip's usable frames."""
        return np.bincount(np.repeat(np.arange(len(self.count)), self.count), weights=self.usable,
                           minlength=len(self.count)).astype(np.int64)

    def crop_frames(self) -> np.ndarray:
        """int64 [crop rows]: the frame of each crop row."""
        has = np.flatnonzero(self.crop_start >= 0)
        rows = self.count[has] * self.windows[has]
        within = np.arange(int(rows.sum())) - np.repeat(np.cumsum(rows) - rows, rows)
        return np.repeat(self.start[has], rows) + within // np.repeat(self.windows[has], rows)

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Values of a meta column for these clips (strings are made only for the rows asked for)."""
        return self.meta.column(name).take(pa.array(rows, pa.int64())).to_numpy(zero_copy_only=False)


def _flat(column):
    """Values of a list column as one numpy array (nulls hold nothing), plus the per-row lengths."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
    return pc.list_flatten(column).to_numpy(), lengths


def _read_hashes(path, column: str, out: np.ndarray) -> None:
    """Copy a binary column of 32-byte hashes into out [frames, 4] uint64, a batch of rows at a time, so that
    only the final array stays in memory."""
    at = 0
    for _, data in blob_batches(path, column):
        data = data.view(np.uint64)
        out[at:at + len(data) // 4] = data.reshape(-1, 4)
        at += len(data) // 4
    if at != len(out):
        raise VmaeError(f"{path}: {column} holds {at} hashes where the quality lists count {len(out)}; "
                        "fingerprint the set again")


def _read_crops(files: list, counts: list) -> tuple:
    """(crops [rows, 4] uint64, crop_start [clips] int64, windows [clips] int64) of the ok rows of files,
    numbered as load_clips numbers them: a clip fingerprinted with --crops owns `windows` rows per frame (9 per
    crop scale), others none (crop_start -1)."""
    rows, with_crops = [], [path for path, _ in files if "crops" in pq.read_schema(path).names]
    for (path, _), n in zip(files, counts):
        # A first pass for the sizes alone, so that the windows are held once, in their final array.
        sizes = [size for size, _ in ok_blobs(path, "crops")] if path in with_crops else []
        size = np.concatenate(sizes) // HASH_BYTES if sizes else np.zeros(len(n), np.int64)
        if ((size != 0) & ((size % np.maximum(n * len(CROP_AT), 1) != 0) | (n == 0))).any():
            raise VmaeError(f"{path}: the crops of some clips do not match their frames; fingerprint the set again")
        rows.append(size)
    rows, count = np.concatenate(rows).astype(np.int64), np.concatenate(counts).astype(np.int64)
    crops, at = np.empty((int(rows.sum()), WORDS // 2), np.uint64), 0
    for path in with_crops:
        for _, data in ok_blobs(path, "crops"):
            crops[at:at + len(data) // HASH_BYTES] = data.view(np.uint64).reshape(-1, WORDS // 2)
            at += len(data) // HASH_BYTES
    return crops, np.where(rows > 0, np.cumsum(rows) - rows, -1), rows // np.maximum(count, 1)


META = ["key", "set", "source", "video_id", "path", "offset", "size", "status", "duration", "width", "height",
        "quality", "times"]


def load_clips(files: list, min_quality: int) -> tuple:
    """(Clips: the rows with status ok of every (path, role) in files, per-set {"role", "statuses"} over all
    rows). Names stay in Arrow and the hashes go straight into their final arrays: memory holds little more
    than the hashes."""
    statuses, metas, counts, usable, times, roles, ranks = {}, [], [], [], [], [], []
    for path, role in files:
        table = read_fingerprints(path, META)
        for name, group in table.select(["set", "status"]).to_pandas().groupby("set", sort=False):
            statuses[name] = {"role": "reference" if role else "pretraining",
                              "statuses": {str(k): int(v) for k, v in group["status"].value_counts().items()}}
        table = table.filter(ok_rows(table))
        q, n = _flat(table.column("quality"))
        counts.append(n), usable.append(q.astype(np.int64) >= min_quality)
        times.append(_flat(table.column("times"))[0].astype(np.float32))
        roles.append(np.full(len(n), role, np.int8))
        # Keep the longest, then largest copy: the original rather than a trimmed or shrunk re-upload.
        pixels = pc.multiply(pc.fill_null(pc.cast(table.column("width"), pa.float64()), 0),
                             pc.fill_null(pc.cast(table.column("height"), pa.float64()), 0))
        ranking = pa.table({"d": pc.fill_null(table.column("duration"), 0.0), "p": pixels, "k": table.column("key")})
        ranks.append(pc.sort_indices(ranking, [("d", "descending"), ("p", "descending"), ("k", "ascending")])
                     .to_numpy())
        metas.append(table.select(META[:7]))
        del table, ranking
    meta = pa.concat_tables(metas).combine_chunks()
    count = np.concatenate(counts).astype(np.int64)
    rank, base = np.empty(len(count), np.int64), 0
    for order in ranks:
        rank[base + order] = base + np.arange(len(order))
        base += len(order)
    sets = pc.dictionary_encode(meta.column("set")).chunk(0)
    # Null when the video_id is: such clips are never "the same video".
    video = pc.dictionary_encode(pc.binary_join_element_wise(
        meta.column("set"), meta.column("source"), meta.column("video_id"), "\x1f")).chunk(0).indices
    video_code = pc.fill_null(video, -1).to_numpy().astype(np.int64)
    codes = {c: np.empty((int(count.sum()), WORDS // 2), np.uint64) for c in ("hashes", "mirrors")}
    at = 0
    for (path, _), n in zip(files, counts):
        for column, array in codes.items():  # failed rows hold no hashes: the ok rows' come out in row order
            _read_hashes(path, column, array[at:at + int(n.sum())])
        at += int(n.sum())
    crops, crop_start, windows = _read_crops(files, counts)
    # Arrow keeps freed memory for its own reuse; the index that comes next needs it.
    pa.default_memory_pool().release_unused()
    clips = Clips(meta=meta, set_code=sets.indices.to_numpy(), set_names=sets.dictionary.to_pylist(),
                  video_code=video_code, role=np.concatenate(roles), rank=rank,
                  start=np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64), count=count,
                  hashes=codes["hashes"], mirrors=codes["mirrors"], usable=np.concatenate(usable),
                  times=np.concatenate(times), crops=crops, crop_start=crop_start, windows=windows)
    return clips, statuses


# ---------------------------------------------------------------- candidates: multi-index hashing

def candidate_pairs(clips: Clips, cfg: DedupConfig, tick=lambda: None) -> tuple:
    """(unique candidate clip pairs as uint64 (a << 32 | b) with a < b, buckets skipped as too large).

    Entries: every usable frame of every clip, the mirror image of every usable pretraining frame, and the
    crop windows of usable frames (clips fingerprinted with --crops). Two entries of a bucket pair their clips
    when one clip is on the pretraining side, they are not both mirror images (that repeats the pair of
    originals) nor both crops, and the two hashes are within the threshold on all 256 bits (which drops the
    chance meetings of unrelated frames). One table at a time keeps the memory at a few bytes per entry.
    tick() is called after each table (progress)."""
    frame_clip = np.repeat(np.arange(len(clips.count), dtype=np.int32), clips.count)
    frames = np.flatnonzero(clips.usable).astype(np.uint32)
    crop_frame = clips.crop_frames()
    crop_rows = np.flatnonzero(clips.usable[crop_frame]).astype(np.uint32)
    # Entries in three blocks: frames [0, mirrors), mirror images [mirrors, crops), crop windows [crops, end).
    sources = (clips.hashes, frames), (clips.mirrors, frames[clips.role[frame_clip[frames]] == 0]), (
        clips.crops, crop_rows)
    mirrors, crops = len(sources[0][1]), len(sources[0][1]) + len(sources[1][1])
    entry_frame = np.concatenate([frames, sources[1][1], crop_frame[crop_rows].astype(np.uint32)])
    del frames, crop_frame
    if len(entry_frame) >= 2 ** 32:
        raise VmaeError("more than 2^32 frames to index: split the pretraining set and dedup the parts")

    def kind(entries):
        return (entries >= mirrors).astype(np.int8) + (entries >= crops)

    def code(entries):
        out = clips.hashes[entry_frame[entries]]
        mirror, crop = kind(entries) == 1, entries >= crops
        out[mirror] = clips.mirrors[entry_frame[entries[mirror]]]
        out[crop] = clips.crops[crop_rows[entries[crop] - crops]]
        return out

    found, skipped = [], 0
    for word in range(WORDS):
        key, entry = sort_by_key((array.view(np.uint32)[rows, word] for array, rows in sources), len(entry_frame))
        # One entry per (word value, clip, kind): a still clip repeats its frames. Only entries whose value
        # repeats are looked at (few), which keeps the memory of this step small.
        again = np.flatnonzero(key[1:] == key[:-1]) + 1
        now, before = entry[again], entry[again - 1]
        repeat = (frame_clip[entry_frame[now]] == frame_clip[entry_frame[before]]) & (kind(now) == kind(before))
        keep = np.ones(len(key), bool)
        keep[again[repeat]] = False
        key, entry = key[keep], entry[keep]
        del keep, again, now, before, repeat
        pairs_in_buckets, big = same_bucket(key, cfg.max_bucket)
        skipped += big
        for i, j in pairs_in_buckets:  # entries of a bucket: few, so their clips are looked up here
            i, j = entry[i], entry[j]
            ci, cj, ki, kj = frame_clip[entry_frame[i]], frame_clip[entry_frame[j]], kind(i), kind(j)
            ok = (ci != cj) & ((ki != kj) | (ki == 0)) & ((clips.role[ci] == 0) | (clips.role[cj] == 0))
            i, j, ci, cj = i[ok], j[ok], ci[ok], cj[ok]
            close = np.bitwise_count(code(i) ^ code(j)).sum(axis=1) <= cfg.threshold
            a, b = np.minimum(ci[close], cj[close]), np.maximum(ci[close], cj[close])
            found.append(np.unique((a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)))
        del key, entry
        tick()
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
    return pairs, skipped


# ---------------------------------------------------------------- verification on all frames

def match_frames(dist: np.ndarray, threshold: int):
    """From frame distances [pairs, frames_a, frames_b] (NO_MATCH where a frame is missing or unusable): per pair
    (frames of a with a match in b, frames of b with a match in a, mean distance of a's matched frames)."""
    best_a, best_b = dist.min(axis=2), dist.min(axis=1)
    hit_a = best_a <= threshold
    matched_a, matched_b = hit_a.sum(axis=1), (best_b <= threshold).sum(axis=1)
    mean = np.where(hit_a, best_a, 0).sum(axis=1) / np.maximum(matched_a, 1)
    return matched_a, matched_b, mean


def is_duplicate(matched_a, frames_a, matched_b, frames_b, cfg: DedupConfig) -> np.ndarray:
    """The clip-level rule: enough of one clip's frames match (the shorter or trimmed copy's, usually), and
    a few frames on both sides."""
    share = np.maximum(matched_a / np.maximum(frames_a, 1), matched_b / np.maximum(frames_b, 1))
    need = np.minimum(cfg.min_frames, np.minimum(frames_a, frames_b))
    return (share >= cfg.coverage) & (matched_a >= np.maximum(need, 1)) & (matched_b >= np.maximum(need, 1))


def _gather(clips: Clips, ids: np.ndarray, width: int, mirrors: bool = False):
    """Frames of clips `ids` padded to width: (hashes [n, width, 4], usable [n, width], frame index)."""
    pos = np.arange(width)
    index = clips.start[ids][:, None] + pos
    present = pos < clips.count[ids][:, None]
    index = np.where(present, index, 0)
    source = clips.mirrors if mirrors else clips.hashes
    return source[index], present & clips.usable[index], index


def _distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """uint16 [n, i, j]: Hamming distances of hashes x [n, i, 4] and y [n, j, 4] (uint64)."""
    out = np.zeros((len(x), x.shape[1], y.shape[1]), np.uint16)
    for word in range(x.shape[2]):  # a word at a time: no [n, i, j, 4] temporaries
        out += np.bitwise_count(x[:, :, None, word] ^ y[:, None, :, word])
    return out


def _crop_distances(side: np.ndarray, clips: Clips, ids: np.ndarray, width: int) -> np.ndarray:
    """uint16 [n, frames, width]: the distance of each frame of `side` [n, frames, 4] to the nearest crop window of
    each of the first `width` frames of clips ids (which have crops)."""
    windows = clips.windows[ids][:, None]
    rows = clips.crop_start[ids][:, None] + np.arange(width) * windows
    rows = np.where(np.arange(width) < clips.count[ids][:, None], rows, 0)
    best = np.full((len(ids), side.shape[1], width), NO_MATCH, np.uint16)
    for k in range(int(windows.max())):  # a clip with fewer windows compares its last one again
        np.minimum(best, _distances(side, clips.crops[rows + np.minimum(k, windows - 1)]), out=best)
    return best


def verify(clips: Clips, pairs: np.ndarray, cfg: DedupConfig, signatures: dict, tick=lambda: None) -> pd.DataFrame:
    """Check candidate pairs on all their frames (both orientations) and on their motion signatures (clip id ->
    signature, from read_signatures); return the duplicates, oriented. tick() is called after each
    VERIFY_CHUNK pairs (progress)."""
    a_all = (pairs >> np.uint64(32)).astype(np.int64)
    b_all = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if not cfg.same_video:
        same = (clips.video_code[a_all] == clips.video_code[b_all]) & (clips.video_code[a_all] >= 0)
        a_all, b_all = a_all[~same], b_all[~same]
    # Crop windows are compared with the other clip's frames: put the clip with crops on side b.
    has_crops = clips.crop_start >= 0
    swap = has_crops[a_all] & ~has_crops[b_all]
    a_all, b_all = np.where(swap, b_all, a_all), np.where(swap, a_all, b_all)
    usable = clips.usable_frames()
    out = []
    for lo in _ticked(range(0, len(a_all), VERIFY_CHUNK), tick):
        a, b = a_all[lo:lo + VERIFY_CHUNK], b_all[lo:lo + VERIFY_CHUNK]
        # Each side padded to its own longest clip: a dense reference set has 4x the frames of the other side.
        width_a, width_b = int(clips.count[a].max()), int(clips.count[b].max())
        ha, ua, ia = _gather(clips, a, width_a)
        ma, _, _ = _gather(clips, a, width_a, mirrors=True)
        hb, ub, ib = _gather(clips, b, width_b)
        invalid = ~(ua[:, :, None] & ub[:, None, :])
        cropped = np.flatnonzero(has_crops[b])
        results = []
        for side in (ha, ma):
            dist = _distances(side, hb)
            if len(cropped):
                dist[cropped] = np.minimum(dist[cropped], _crop_distances(side[cropped], clips, b[cropped], width_b))
            dist[invalid] = NO_MATCH
            results.append((dist, *match_frames(dist, cfg.threshold)))
        # The orientation with more matched frames, then the smaller distance.
        (d0, ma0, mb0, m0), (d1, ma1, mb1, m1) = results
        flip = (ma1 + mb1 > ma0 + mb0) | ((ma1 + mb1 == ma0 + mb0) & (m1 < m0))
        dist = np.where(flip[:, None, None], d1, d0)
        matched_a, matched_b, mean = np.where(flip, ma1, ma0), np.where(flip, mb1, mb0), np.where(flip, m1, m0)
        motion, lag = temporal_signature.correlate([signatures[i] for i in a], [signatures[i] for i in b])
        nearest = np.minimum(d0.min(axis=(1, 2)), d1.min(axis=(1, 2)))
        moves_alike = (motion >= cfg.motion_threshold) & (nearest <= cfg.motion_support)
        dup = is_duplicate(matched_a, usable[a], matched_b, usable[b], cfg) | moves_alike
        if not dup.any():
            continue
        closest = dist[dup].reshape(int(dup.sum()), -1).argmin(axis=1)
        fa, fb = np.divmod(closest, width_b)
        rows = np.flatnonzero(dup)
        out.append(pd.DataFrame({
            "a": a[dup], "b": b[dup], "distance": mean[dup].astype(np.float32),
            "matched_a": matched_a[dup], "frames_a": usable[a][dup], "matched_b": matched_b[dup],
            "frames_b": usable[b][dup], "mirrored": flip[dup],
            "time_a": clips.times[ia[rows, fa]], "time_b": clips.times[ib[rows, fb]], "motion": motion[dup],
            "lag": lag[dup] * np.float32(temporal_signature.STEP)}))
    found = pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["a", "b", "distance", "matched_a", "frames_a", "matched_b", "frames_b", "mirrored", "time_a",
                 "time_b", "motion", "lag"])
    return _orient(clips, found)


def _ticked(items, tick):
    """items, calling tick() once the loop's body is done with each (continue included)."""
    for item in items:
        yield item
        tick()


def _orient(clips: Clips, found: pd.DataFrame) -> pd.DataFrame:
    """Put the clip to drop on side a: the pretraining clip of a leak, the lower-ranked copy of a duplicate."""
    a, b = found["a"].to_numpy(np.int64), found["b"].to_numpy(np.int64)
    swap = (clips.role[a] == 1) | ((clips.role[b] == 0) & (clips.rank[a] < clips.rank[b]))
    out = found.copy()
    for x, y in (("a", "b"), ("matched_a", "matched_b"), ("frames_a", "frames_b"), ("time_a", "time_b")):
        out[x] = np.where(swap, found[y], found[x])
        out[y] = np.where(swap, found[x], found[y])
    out["lag"] = np.where(swap, -found["lag"].to_numpy(np.float32), found["lag"].to_numpy(np.float32))
    a, b = out["a"].to_numpy(np.int64), out["b"].to_numpy(np.int64)
    pairs = pd.DataFrame({
        "key_a": clips.column("key", a), "key_b": clips.column("key", b), "set_a": clips.column("set", a),
        "set_b": clips.column("set", b), "source_a": clips.column("source", a), "source_b": clips.column("source", b),
        "reason": np.where(clips.role[b] == 1, EVAL_LEAK, DUPLICATE)})
    for column in ("distance", "matched_a", "frames_a", "matched_b", "frames_b", "mirrored", "time_a", "time_b",
                   "motion", "lag"):
        pairs[column] = out[column].to_numpy()
    return pairs.sort_values(["reason", "set_b", "key_a", "key_b"], ignore_index=True)


# ---------------------------------------------------------------- the command

@dataclass
class DedupReport:
    out: str
    sets: dict              # set -> {"role", "statuses", "clips", "usable_clips"}
    within: dict            # pretraining duplicates: {"pairs", "dropped", "by_source"}
    leakage: dict           # reference set -> {"videos", "of", "clips", "by_source"}
    candidates: int
    skipped_buckets: int
    seconds: float
    config: dict
    plot: Optional[str] = None

    def lines(self) -> list:
        pre = [n for n, s in self.sets.items() if s["role"] == "pretraining"]
        clips = sum(self.sets[n]["clips"] for n in pre)
        refs = [n for n in self.sets if n not in pre]
        out = [f"dedup: {clips} pretraining clips ({', '.join(pre)})"
               + (" against " + ", ".join(f"{n} ({self.sets[n]['clips']})" for n in refs) if refs else "")
               + f"; {self.candidates} candidate pairs checked in {self.seconds:.1f}s"]
        for name, s in self.sets.items():
            failed = {k: v for k, v in s["statuses"].items() if k != media.STATUS_OK}
            if failed:
                out.append(f"  {name}: {sum(failed.values())} clips without fingerprint ({_counts(failed)}), "
                           "not checked")
            flat = s["clips"] - s["usable_clips"]
            if flat:
                out.append(f"  {name}: {flat} clips with no frame of PDQ quality >= "
                           f"{self.config['min_quality']} (flat or dark), not checked")
        w = self.within
        out.append(f"duplicates within the pretraining set: {w['dropped']} clips repeat another "
                   f"({_counts(w['by_source']) or 'none'}); {w['pairs']} pairs")
        for name in refs:
            leak = self.leakage[name]
            share = leak["videos"] / leak["of"] if leak["of"] else 0.0
            clips = f"{leak['clips']} clip" + "s" * (leak["clips"] != 1)
            out.append(f"leakage {name}: {leak['videos']} of its {leak['of']} videos ({share:.2%}) appear in the "
                       f"pretraining set, as {clips} ({_counts(leak['by_source']) or 'none'})")
        if self.skipped_buckets:
            out.append(f"  {self.skipped_buckets} index buckets held more than {self.config['max_bucket']} clips "
                       "and were skipped (very common content)")
        out.append(f"wrote {Path(self.out) / 'pairs.parquet'} and report.json"
                   + (f"; example pairs: {self.plot}" if self.plot else ""))
        return out


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _check_sets(fingerprints, against) -> list:
    """[(path, role)]: the pretraining table (role 0) and the reference tables (role 1), whose set names must
    differ."""
    files, seen = [(fingerprints, 0)] + [(p, 1) for p in against or ()], {}
    for path, _ in files:
        for name in pc.unique(read_fingerprints(path, ["set"]).column("set")).to_pylist():
            if name in seen:
                raise ConfigError(f"set name {name!r} is in both {seen[name]} and {path}: give each fingerprint "
                                  "file its own name (vmae-data fingerprint --set NAME)")
            seen[name] = path
    return files


def dedup(fingerprints, out, against=(), cfg: DedupConfig = DedupConfig(), plot: bool = False,
          plot_pairs: int = 8, progress: bool = True) -> DedupReport:
    """Find near-duplicate clips in the fingerprint table `fingerprints` and between it and each table of
    `against`; write OUT/pairs.parquet and OUT/report.json (and OUT/pairs.png with plot)."""
    from tqdm import tqdm

    started = time.monotonic()
    files = _check_sets(fingerprints, against)
    # One step per index table, then per chunk of candidate pairs verified.
    bar = tqdm(total=temporal_signature.TABLES + WORDS, desc="dedup: motion index", unit="step",
               disable=not progress, leave=False)
    # The motion index first, from the signatures read a batch at a time: only its words stay in memory.
    roles = np.concatenate([np.full(int(ok_rows(pq.read_table(p, columns=["status"])).sum()), r, np.int8)
                            for p, r in files])
    by_motion, skipped_motion = temporal_signature.candidate_pairs(motion_batches(files), roles, cfg.max_bucket,
                                                                   bar.update)
    pa.default_memory_pool().release_unused()  # the batches' memory, which Arrow would keep for itself
    bar.set_description("dedup: frame index")
    clips, statuses = load_clips(files, cfg.min_quality)
    candidates, skipped = candidate_pairs(clips, cfg, bar.update)
    candidates, skipped = np.union1d(candidates, by_motion), skipped + skipped_motion
    bar.set_description("dedup: verifying")
    bar.total += -(-len(candidates) // VERIFY_CHUNK)
    bar.refresh()
    ends = np.unique(np.r_[candidates >> np.uint64(32), candidates & np.uint64(0xFFFFFFFF)].astype(np.int64))
    pairs = verify(clips, candidates, cfg, read_signatures(files, ends), bar.update)
    bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pairs.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(pairs, schema=PAIR_SCHEMA, preserve_index=False), tmp)

    usable_frames = clips.usable_frames()
    for name, entry in statuses.items():
        mine = clips.set_code == clips.set_names.index(name) if name in clips.set_names else np.zeros(0, bool)
        entry.update(clips=int(mine.sum()), usable_clips=int((mine & (usable_frames > 0)).sum()))
    dups = pairs[pairs["reason"] == DUPLICATE].drop_duplicates("key_a")
    within = {"pairs": int((pairs["reason"] == DUPLICATE).sum()), "dropped": len(dups),
              "by_source": {str(k): int(v) for k, v in dups["source_a"].value_counts().items()}}
    leakage = {}
    for name, entry in statuses.items():
        if entry["role"] == "reference":
            leaks = pairs[(pairs["reason"] == EVAL_LEAK) & (pairs["set_b"] == name)]
            mixture = leaks.drop_duplicates("key_a")
            leakage[name] = {"videos": int(leaks["key_b"].nunique()), "of": entry["clips"],
                             "clips": len(mixture),
                             "by_source": {str(k): int(v) for k, v in mixture["source_a"].value_counts().items()}}
    report = DedupReport(out=str(out), sets=statuses, within=within, leakage=leakage, candidates=len(candidates),
                         skipped_buckets=skipped, seconds=0.0, config=asdict(cfg))
    if plot and len(pairs):
        from vmae.curation.dedup_plot import plot_pairs as draw
        report.plot = str(draw(pairs, clips, out / "pairs.png", plot_pairs))
    report.seconds = time.monotonic() - started
    write_text(out / "report.json", json.dumps({**report.__dict__, "dropped": int(pairs["key_a"].nunique())},
                                               indent=2, default=str) + "\n")
    return report


def read_exclusions(pairs_path) -> dict:
    """key -> (reason, message) for every pretraining clip `--exclude PAIRS` drops (eval-leak wins)."""
    path = Path(pairs_path)
    if not path.exists():
        raise VmaeError(f"{path}: no such file; write it with `vmae-data dedup --out DIR` (DIR/pairs.parquet)")
    try:
        pairs = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise VmaeError(f"{path}: not a readable Parquet file ({e})") from None
    missing = {"key_a", "key_b", "set_b", "reason"} - set(pairs.columns)
    if missing:
        raise VmaeError(f"{path}: not a pairs table of `vmae-data dedup` (missing {sorted(missing)})")
    pairs = pairs.sort_values(["reason", "distance"], key=lambda c: c.map({EVAL_LEAK: 0}).fillna(1)
                              if c.name == "reason" else c, kind="stable")
    out = {}
    for row in pairs.itertuples(index=False):
        if row.key_a not in out:
            out[row.key_a] = (row.reason, f"same content as {row.set_b}/{row.key_b} (distance {row.distance:.0f}, "
                                          f"{row.matched_a} of {row.frames_a} frames)")
    return out
