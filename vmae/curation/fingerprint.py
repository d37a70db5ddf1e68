"""Perceptual fingerprints of clips: `vmae-data fingerprint`.

A clip's fingerprint is the PDQ hash (Meta's 256-bit perceptual image hash, computed by `pdqhash`) of a few
of its frames, as in Meta's video matcher vPDQ, which hashes frames one by one and matches them as sets:
  - frames: about one per `every` seconds (at least min_frames, at most max_frames, spread evenly over the
    clip), each decoded from its keyframe on, non-reference pictures skipped (vmae.media.grab_frames);
  - each frame is scaled to a small grey square, black bars at its edges (letterbox, pillarbox, found over
    the whole clip) are cut away, and PDQ hashes what is left, scaled to 64 x 64;
  - the mirror image's hash is kept too (PDQ's horizontal flip, from the same DCT), so a mirrored re-upload
    matches; PDQ's quality (0-100, low for flat frames) is kept so that dedup can ignore flat frames;
  - from the same decoding, frames every 0.2 s make the clip's motion signature (temporal_signature), which
    still matches where crops and trims change PDQ's bits; with `motion_phases` P (meant for the evaluation
    sets), frames every 0.2 / P s give it also on grids shifted by 1/P, 2/P, ... of a step;
  - with `crops` (meant for the evaluation sets, which are small), also the hashes of CROP_AT windows of each
    frame, keeping `crop_scales` of each side (92 %): a copy cropped by a few percent is close to one of them,
    where its PDQ bits no longer match the whole frame's.
Why PDQ and these settings: benchmarks/bench_dedup.py and benchmarks/README.md.

Output: one Parquet table, one row per input clip (failures included, with status and error), columns
FP_SCHEMA. Resumable like download: the rows are split into fixed units; each unit writes
.OUT.units/unit-NNNNNN.parquet when done; OUT is written once every unit is.
"""
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vmae import media
from vmae.atomic import atomic_path
from vmae.curation import temporal_signature
from vmae.errors import ConfigError, VmaeError
from vmae.executors import ExecutorConfig, my_slice, run_units
from vmae.manifests import read_manifest

HASH_BYTES = 32
FP_SCHEMA = pa.schema([
    ("key", pa.string()), ("set", pa.string()), ("source", pa.string()), ("video_id", pa.string()),
    ("path", pa.string()),           # the clip file, or the shard holding it
    ("offset", pa.int64()), ("size", pa.int64()),   # the clip's bytes inside that shard (null for files)
    ("status", pa.string()), ("error", pa.string()),
    ("duration", pa.float64()), ("fps", pa.float64()), ("width", pa.int64()), ("height", pa.int64()),
    ("times", pa.list_(pa.float32())),              # seconds from the first frame, one per hashed frame
    ("quality", pa.list_(pa.uint8())),              # PDQ quality 0-100
    ("hashes", pa.binary()),        # 32 bytes per hashed frame: PDQ's bits, most significant bit first
    ("mirrors", pa.binary()),       # the same for the horizontally mirrored frame
    ("motion", pa.binary()),        # int8 [steps, 8]: the motion signature (vmae.curation.temporal_signature)
    ("crops", pa.binary()),         # with --crops: 32 bytes per crop window, len(CROP_AT) per scale per frame
    ("motion_shifted", pa.binary()),   # with motion_phases P: int8 [(P - 1) * steps, 8], the motion signature on
                                       # its grid shifted by 1/P, 2/P, ... of a step, one after another
])
# Tables written before the motion signature, the crops or the shifted signatures lack them; dedup goes without.
OPTIONAL = {"motion", "crops", "motion_shifted"}
CROP_AT = tuple((y, x) for y in (0.0, 0.5, 1.0) for x in (0.0, 0.5, 1.0))  # crop windows' places (share of the slack)
# `fingerprint --dense`: for an evaluation set, denser frames, windows of four sizes (15x the hashes per clip) and
# the motion signature at four phases (recall and cost: benchmarks/README.md, bench_dedup.py).
DENSE = {"crops": True, "crop_scales": (0.86, 0.90, 0.94, 0.98), "every": 0.125, "max_frames": 64,
         "motion_phases": 4}
BATCH_BYTES = 64 << 20   # a binary column is read about this much at a time (--dense crops: 70 KB a row)
READ_BUFFER = 1 << 20    # ... through a read buffer of this size


@dataclass(frozen=True)
class FingerprintConfig:
    every: float = 0.5        # seconds between hashed frames
    min_frames: int = 4       # short clips get denser frames
    max_frames: int = 16      # long clips get sparser ones
    size: int = 128           # frames are hashed from a size x size grey image
    crops: bool = False       # also hash the CROP_AT windows of every frame ...
    crop_scales: tuple = (0.92,)   # ... at each of these sizes (share of each side kept)
    motion_phases: int = 1    # motion signatures on grids shifted by 1/P of a step (reference sets: a copy's
                              # grid, which a trim shifts, then lies near one of them)
    rows_per_unit: int = 256

    def __post_init__(self):
        if self.every <= 0 or not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError("fingerprint: every > 0 and 1 <= min_frames <= max_frames are needed")
        if self.rows_per_unit < 1:
            raise ConfigError("--rows-per-unit must be at least 1")
        if not 1 <= self.motion_phases <= 8:
            raise ConfigError("--motion-phases must lie in 1..8")
        if not self.crop_scales or not all(0.5 <= s < 1 for s in self.crop_scales):
            raise ConfigError(f"--crop-scales {','.join(map(str, self.crop_scales))}: each scale must lie in "
                              "[0.5, 1), e.g. 0.92 (a window keeps 92 % of each side)")

    def signature(self) -> str:
        """What the fingerprints depend on: a unit written with another signature is redone. (The crop scales
        only with crops, the phases only above 1: units written before these options stay valid.)"""
        unused = ({"rows_per_unit"} | (set() if self.crops else {"crop_scales"})
                  | (set() if self.motion_phases > 1 else {"motion_phases"}))
        return json.dumps({**{k: v for k, v in asdict(self).items() if k not in unused},
                           "motion": temporal_signature.VERSION}, sort_keys=True)


@dataclass
class FingerprintReport:
    out: str
    rows: int
    units: int
    units_run: int = 0
    units_skipped: int = 0
    counts: dict = field(default_factory=dict)    # status -> rows (over the whole table once merged)
    frames: int = 0                               # hashed frames, whole table
    complete: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0                      # spent in the units run now

    def lines(self) -> list:
        out = [f"fingerprint: {self.rows} clips in {self.units} units; ran {self.units_run}, skipped "
               f"{self.units_skipped} already done, in {self.seconds:.1f}s"]
        if self.units_run and self.cpu_seconds:
            out[0] += f" ({self.cpu_seconds:.1f} CPU-s in the units)"
        for status, n in sorted(self.counts.items(), key=lambda kv: (kv[0] != media.STATUS_OK, -kv[1])):
            out.append(f"  {status:<13} {n}")
        if self.complete:
            ok = self.counts.get(media.STATUS_OK, 0)
            out.append(f"{self.frames} frames hashed ({self.frames / max(ok, 1):.1f} per clip); wrote {self.out}")
        else:
            out.append(f"{self.out} not written yet: other units are not done (run the remaining --unit-index "
                       "slices, or rerun without --unit-index to finish and merge)")
        return out


# ---------------------------------------------------------------- pure helpers

def pick_frames(times: np.ndarray, cfg: FingerprintConfig) -> np.ndarray:
    """Display indices of the frames to hash: the frames nearest to `count` evenly spaced times.

    Exact times, not the nearest keyframes: copies are encoded with other keyframe intervals, and a keyframe
    a fifth of a second away from the other copy's frame is often a different picture to PDQ
    (benchmarks/README.md)."""
    n = len(times)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    duration = float(times[-1]) + step
    count = min(n, int(np.clip(round(duration / cfg.every), cfg.min_frames, cfg.max_frames)))
    return np.unique(_nearest(times, (np.arange(count) + 0.5) * duration / count))


def _nearest(sorted_times: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    right = np.clip(np.searchsorted(sorted_times, wanted), 1, max(len(sorted_times) - 1, 1))
    left = right - 1
    take_right = np.abs(sorted_times[np.minimum(right, len(sorted_times) - 1)] - wanted) < np.abs(
        sorted_times[left] - wanted)
    return np.where(take_right, np.minimum(right, len(sorted_times) - 1), left)


def border_box(frames: np.ndarray, limit: int = 24, share: float = 0.8, max_share: float = 0.35) -> tuple:
    """(top, bottom, left, right): how many rows/columns of black bars (letterbox, pillarbox) to cut from each
    edge of the grey frames [n, h, w].

    As ffmpeg's cropdetect, a line is black when its pixels are at most `limit` (of 255); here in every frame,
    and for `share` of its pixels, so that a logo or caption drawn over a bar leaves it a bar. Bars run inward
    from the edge; a side never loses more than max_share of the frame (a dark clip keeps its frame)."""
    def bar(lines):  # lines: [n, count, length], outermost first
        is_bar = ((lines <= limit).mean(axis=2) >= share).all(axis=0)
        depth = int(np.argmin(is_bar)) if not is_bar.all() else len(is_bar)
        return depth if depth <= max_share * lines.shape[1] else 0

    columns = frames.transpose(0, 2, 1)
    return bar(frames), bar(frames[:, ::-1]), bar(columns), bar(columns[:, ::-1])


# Multiplying DCT column j by (-1)^j is the DCT of the horizontally mirrored image (PDQ's dihedral trick).
_MIRROR = np.tile((-1.0) ** np.arange(16), 16).astype(np.float32)


def _pdq(image: np.ndarray) -> tuple:
    """(PDQ's 16 x 16 DCT [256] float, quality) of a grey image, scaled to 64 x 64 first.

    At 64 x 64 PDQ samples its grid symmetrically, so the mirror trick below gives exactly the hash of the
    mirrored frame (at 128 x 128 it is 10-30 bits off). pdqhash takes RGB and greys it with weights that sum
    to 1: three equal planes give the grey back."""
    import pdqhash
    from PIL import Image

    small = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((64, 64), Image.Resampling.BOX))
    return pdqhash.compute_float(np.repeat(small[:, :, None], 3, axis=2))


def _bits(dct: np.ndarray) -> np.ndarray:
    return np.packbits(dct > np.median(dct))


def _cut(frames: np.ndarray, box: tuple) -> np.ndarray:
    top, bottom, left, right = box
    return frames[:, top:frames.shape[1] - bottom, left:frames.shape[2] - right]


def pdq_hashes(frames: np.ndarray, box: tuple):
    """(hashes [n, 32] uint8, mirrors [n, 32] uint8, quality [n] uint8) of grey frames [n, h, w] cut to box."""
    hashes, mirrors, quality = [], [], []
    for frame in _cut(frames, box):
        dct, q = _pdq(frame)
        hashes.append(_bits(dct))
        mirrors.append(_bits(dct * _MIRROR))
        quality.append(q)
    empty = np.zeros((0, HASH_BYTES), np.uint8)
    return (np.array(hashes, np.uint8) if hashes else empty, np.array(mirrors, np.uint8) if mirrors else empty,
            np.array(quality, np.uint8))


def crop_hashes(frames: np.ndarray, box: tuple, scales: tuple) -> np.ndarray:
    """[n, len(scales) * len(CROP_AT), 32] uint8: the PDQ hashes of the crop windows of grey frames [n, h, w] cut
    to box, scale by scale."""
    frames = _cut(frames, box)
    h, w = frames.shape[1:3]
    windows = [(int(round((h - ch) * y)), int(round((w - cw) * x)), ch, cw) for ch, cw in
               ((max(int(round(h * s)), 1), max(int(round(w * s)), 1)) for s in scales) for y, x in CROP_AT]
    out = np.zeros((len(frames), len(windows), HASH_BYTES), np.uint8)
    for i, frame in enumerate(frames):
        for k, (top, left, ch, cw) in enumerate(windows):
            out[i, k] = _bits(_pdq(frame[top:top + ch, left:left + cw])[0])
    return out


# ---------------------------------------------------------------- one clip

def fingerprint_clip(src, cfg: FingerprintConfig) -> dict:
    """The fingerprint columns of one clip (a path or its bytes). Raises MediaError."""
    thumbs = (partial(temporal_signature.pick_steps, phases=cfg.motion_phases), (temporal_signature.THUMB,) * 2)
    facts, times, frames, steps, small = media.grab_frames(src, partial(pick_frames, cfg=cfg), (cfg.size, cfg.size),
                                                           thumbs=thumbs)
    box = border_box(frames)
    hashes, mirrors, quality = pdq_hashes(frames, box)
    motion = temporal_signature.signatures(steps, small, box, cfg.size, cfg.motion_phases)
    crops = crop_hashes(frames, box, cfg.crop_scales).tobytes() if cfg.crops else b""
    return {"duration": facts["duration"], "fps": facts["fps"], "width": facts["width"],
            "height": facts["height"], "times": times.astype(np.float32).tolist(), "quality": quality.tolist(),
            "hashes": hashes.tobytes(), "mirrors": mirrors.tobytes(), "motion": motion[0].tobytes(),
            "crops": crops, "motion_shifted": motion[1:].tobytes()}


def process_item(item: dict, cfg: FingerprintConfig) -> dict:
    """One output row: the item's identity plus its fingerprint, or its status and error."""
    row = {name: item.get(name) for name in FP_SCHEMA.names}
    if row["status"] is not None and row["status"] != media.STATUS_OK:
        return row
    try:
        if row["offset"] is None:
            src = row["path"]
        else:
            with open(row["path"], "rb") as f:
                f.seek(row["offset"])
                src = f.read(row["size"])
            if item.get("meta_offset") is not None:
                meta = _read_json_member(row["path"], item["meta_offset"], item["meta_size"])
                row.update(source=meta.get("source"), video_id=meta.get("video_id"))
        row.update(fingerprint_clip(src, cfg), status=media.STATUS_OK, error=None)
    except media.MediaError as e:
        row.update(status=e.reason, error=e.message)
    except OSError as e:
        row.update(status=media.MISSING_FILE if isinstance(e, FileNotFoundError) else "unreadable",
                   error=f"{row['path']}: {e}")
    return row


def _read_json_member(path, offset, size) -> dict:
    with open(path, "rb") as f:
        f.seek(offset)
        try:
            return json.loads(f.read(size))
        except ValueError:  # verify reports a broken KEY.json; the clip itself can still be fingerprinted
            return {}


# ---------------------------------------------------------------- inputs

def read_items(src, set_name: str) -> list:
    """Item dicts (FP_SCHEMA columns known before decoding) for a manifest file or a shard folder."""
    src = Path(src)
    if src.is_dir():
        return _shard_items(src, set_name)
    df = read_manifest(src)
    base = src.resolve().parent
    items, seen = [], set()
    for row in df.to_dict("records"):
        row = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in row.items()}
        item = {"key": row["key"], "set": set_name, "source": row["source"], "video_id": row["video_id"],
                "path": None, "offset": None, "size": None, "status": row["status"], "error": row["error"]}
        if row["key"] in seen:
            item.update(status="duplicate-key", error="an earlier row has the same key")
        elif item["status"] not in (None, media.STATUS_OK):
            item["error"] = f"not fingerprinted: the manifest row has status {item['status']}"
        elif not row["path"]:
            item.update(status="no-path", error="the row has no path: download or import the clip first")
        else:
            path = Path(row["path"]).expanduser()
            item.update(path=str(path if path.is_absolute() else (base / path).resolve()), status=None)
        seen.add(row["key"])
        items.append(item)
    return items


def _shard_items(shard_dir: Path, set_name: str) -> list:
    from vmae.shards import index as shard_index  # webdataset (and with it torch) only when shards are read

    index = shard_index.read_index(shard_dir).sort_values(["shard", "offset"], kind="stable")
    by_key = {}
    for row in index.itertuples(index=False):
        ext = row.member[len(row.key) + 1:]
        if ext in ("mp4", "json"):
            by_key.setdefault(row.key, {})[ext] = row
    items = []
    for key, members in by_key.items():
        item = {"key": key, "set": set_name, "source": None, "video_id": None, "status": None, "error": None,
                "path": None, "offset": None, "size": None}
        video, meta = members.get("mp4"), members.get("json")
        if video is None:
            item.update(status=media.MISSING_FILE, error=f"{shard_dir}: sample {key} has no mp4 member")
        else:
            item.update(path=str((shard_dir / video.shard).resolve()), offset=int(video.offset),
                        size=int(video.size))
            if meta is not None:
                item.update(meta_offset=int(meta.offset), meta_size=int(meta.size))
        items.append(item)
    return items


# ---------------------------------------------------------------- reading a table

def blob_batches(path, column: str):
    """(bytes per row [rows], the rows' bytes concatenated) of a binary column, a batch of rows at a time (at most
    65,536 rows and about BATCH_BYTES)."""
    # Pages streamed through a small buffer: pre-buffering (pyarrow's default) holds a whole row group's column
    # in memory, which for --dense crop windows is gigabytes.
    file = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)
    meta = file.metadata
    size = sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
               for c in range(meta.num_columns) if meta.row_group(g).column(c).path_in_schema == column)
    rows = int(BATCH_BYTES * meta.num_rows // max(size, 1))
    for batch in file.iter_batches(batch_size=max(1, min(1 << 16, rows)), columns=[column]):
        chunk = batch.column(0)
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], np.uint8) if chunk.buffers()[2] is not None else np.zeros(0, np.uint8)
        yield np.diff(offsets), data[offsets[0]:offsets[-1]]


def ok_rows(table: pa.Table) -> np.ndarray:
    """bool [rows]: the rows with a fingerprint (status ok); only these are clips here."""
    return pc.fill_null(pc.equal(table.column("status"), media.STATUS_OK), False).to_numpy(zero_copy_only=False)


def ok_blobs(path, column: str):
    """blob_batches of the rows with a fingerprint only: (bytes per ok row, those rows' bytes)."""
    ok, row = ok_rows(pq.read_table(path, columns=["status"])), 0
    for sizes, data in blob_batches(path, column):
        mine = ok[row:row + len(sizes)]
        row += len(sizes)
        if mine.all():  # as it mostly is: the batch's bytes as they are, not a copy
            yield sizes, data
            continue
        # The ok rows' bytes, one slice per run of ok rows (a byte mask would cost a byte per byte).
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mine.astype(np.int8), [0]])))
        runs = [data[offsets[start]:offsets[end]] for start, end in zip(edges[::2], edges[1::2])]
        yield sizes[mine], np.concatenate(runs) if runs else data[:0]


def signature_batches(files: list):
    """(first clip id, flat int8 [steps, CHANNELS], steps per clip) of the motion signatures of the clips of
    files [(path, role)] (numbered as load_clips numbers them), a batch of rows at a time; no steps for clips
    of a table written before the motion signature."""
    channels, first = temporal_signature.CHANNELS, 0
    for path, _ in files:
        if "motion" not in pq.read_schema(path).names:
            clips = int(ok_rows(pq.read_table(path, columns=["status"])).sum())
            yield first, np.zeros((0, channels), np.int8), np.zeros(clips, np.int64)
            first += clips
            continue
        for sizes, data in ok_blobs(path, "motion"):
            yield first, data.view(np.int8).reshape(-1, channels), sizes // channels
            first += len(sizes)


def motion_batches(files: list):
    """(clip id of each signature, flat int8 [steps, CHANNELS], steps per signature) for the motion index: every
    clip's signature, then the shifted ones (motion_shifted) of the clips of the reference tables (role 1)."""
    channels, steps = temporal_signature.CHANNELS, [np.zeros(0, np.int64)]
    for first, flat, count in signature_batches(files):
        steps.append(count)   # each clip's steps, by clip id: what its shifted signatures are checked against
        yield first + np.arange(len(count)), flat, count
    steps, first = np.concatenate(steps), 0
    for path, role in files:
        clips = int(ok_rows(pq.read_table(path, columns=["status"])).sum())
        if role == 1 and "motion_shifted" in pq.read_schema(path).names:
            at = first
            for sizes, data in ok_blobs(path, "motion_shifted"):
                mine = steps[at:at + len(sizes)]
                runs = sizes // np.maximum(mine * channels, 1)   # shifted signatures of each clip
                if (runs * mine * channels != sizes).any():
                    raise VmaeError(f"{path}: the shifted motion signatures of some clips do not match their "
                                    "signature; fingerprint the set again")
                ids = np.repeat(at + np.arange(len(sizes)), runs)
                yield ids, data.view(np.int8).reshape(-1, channels), np.repeat(mine, runs)
                at += len(sizes)
        first += clips


def read_signatures(files: list, wanted: np.ndarray) -> dict:
    """clip id -> its motion signature, for the clips `wanted` only."""
    out, wanted = {}, np.asarray(wanted, np.int64)
    for first, flat, count in signature_batches(files):
        starts = np.cumsum(count) - count
        for i in wanted[(wanted >= first) & (wanted < first + len(count))]:
            out[int(i)] = flat[starts[i - first]:starts[i - first] + count[i - first]].copy()
    return out


# ---------------------------------------------------------------- units, resume, merge

@dataclass(frozen=True)
class Unit:
    index: int
    path: str            # the unit's result file
    items: tuple
    cfg: FingerprintConfig


def units_dir(out) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.units"


def _table(rows: list, cfg: FingerprintConfig) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=FP_SCHEMA)
    return table.replace_schema_metadata({"vmae.fingerprint": cfg.signature()})


def _write_table(table: pa.Table, path) -> None:
    with atomic_path(path) as tmp:
        # Small row groups let dedup read the hashes a few MB at a time.
        pq.write_table(table, tmp, row_group_size=1 << 16)


def run_unit(unit: Unit) -> dict:
    """Fingerprint a unit's clips and write its result file (the unit's done-marker)."""
    started = time.process_time()
    rows = [process_item(item, unit.cfg) for item in unit.items]
    _write_table(_table(rows, unit.cfg), unit.path)
    return {"counts": Counter(r["status"] for r in rows), "cpu": time.process_time() - started}


def _done(unit: Unit) -> bool:
    """Whether the unit's file holds exactly its keys, made with the same settings and columns (a unit written
    by an older version lacks a newer column: redone, so that the units concatenate)."""
    try:
        schema = pq.read_schema(unit.path)
        keys = pq.read_table(unit.path, columns=["key"]).column("key").to_pylist()
    except (OSError, pa.ArrowInvalid):
        return False
    return ((schema.metadata or {}).get(b"vmae.fingerprint") == unit.cfg.signature().encode()
            and schema.names == FP_SCHEMA.names and keys == [i["key"] for i in unit.items])


def read_fingerprints(path, columns=None) -> pa.Table:
    """These columns (default: all) of a fingerprint table written by `fingerprint`; a clear error for
    anything else."""
    path = Path(path)
    if not path.exists():
        raise VmaeError(f"{path}: no such file; write it with `vmae-data fingerprint`")
    try:
        if not set(FP_SCHEMA.names) - OPTIONAL <= set(pq.read_schema(path).names):
            raise VmaeError(f"{path}: not a fingerprint table (columns {FP_SCHEMA.names} expected); "
                            "write it with `vmae-data fingerprint`")
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise VmaeError(f"{path}: not a readable Parquet file ({e})") from None


def fingerprint(src, out, set_name: Optional[str] = None, cfg: FingerprintConfig = FingerprintConfig(),
                executor: ExecutorConfig = ExecutorConfig(), progress: bool = True) -> FingerprintReport:
    """Fingerprint every clip of a manifest or shard folder `src` into the Parquet table `out`.

    set_name names the collection in the table (default: the manifest's file stem or the folder's name);
    dedup reports leakage per set name.
    """
    from tqdm import tqdm

    started = time.monotonic()
    src, out = Path(src), Path(out)
    if not src.exists():
        raise VmaeError(f"{src}: no such manifest or shard folder")
    set_name = set_name or (src.name if src.is_dir() else src.stem)
    items = read_items(src, set_name)
    if not items:
        raise VmaeError(f"{src}: no clips to fingerprint")
    folder = units_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    units = [Unit(i, str(folder / f"unit-{i:06d}.parquet"), tuple(items[s:s + cfg.rows_per_unit]), cfg)
             for i, s in enumerate(range(0, len(items), cfg.rows_per_unit))]
    report = FingerprintReport(out=str(out), rows=len(items), units=len(units))
    todo = []
    for unit in my_slice(units, executor):
        if _done(unit):
            report.units_skipped += 1
        else:
            todo.append(unit)
    bar = tqdm(total=sum(len(u.items) for u in todo), unit="clip", desc="fingerprint", disable=not progress,
               dynamic_ncols=True)
    # The slice is taken above, over all units, so that every slice gets the same units on a rerun.
    for unit, result in run_units(run_unit, todo, replace(executor, unit_index=None, num_units=None)):
        report.units_run += 1
        report.cpu_seconds += result["cpu"]
        bar.update(len(unit.items))
    bar.close()
    if all(_done(u) for u in units):
        table = pa.concat_tables([pq.read_table(u.path) for u in units])
        _write_table(table.replace_schema_metadata({"vmae.fingerprint": cfg.signature()}), out)
        report.complete = True
        report.counts = dict(Counter(table.column("status").to_pylist()))
        report.frames = int(pc.sum(pc.binary_length(table.column("hashes"))).as_py() or 0) // HASH_BYTES
    report.seconds = time.monotonic() - started
    return report
