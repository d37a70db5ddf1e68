"""Write a manifest's clips into well-mixed, deterministic WebDataset shards.

The work is split in three steps:
  1. select (side effects: stat and sniff each input file) -> usable rows + skipped rows with a reason;
  2. plan (pure): shuffle with the seed, interleave the sources, cut into shards by count and size;
  3. write: one unit per shard, run by vmae.executors (process pool, Ray or a Slurm slice); each unit writes
     NAME-%06d.tar under a temporary name, renames it, then writes the sidecar `.NAME-%06d.json`.
When every planned shard has a matching sidecar, index.parquet, skipped.parquet and finally shards.json are
written (vmae.shards.index). A shard's bytes depend only on its plan, never on timing, worker or machine.

Faults: each shard is written under its lock file (vmae.lock), so processes sharing the folder never write
the same shard; the folder records its job (the manifest's keys and the options, `.shard-job.json`) and
refuses another; a clip that cannot be opened is a skipped row; a full or read-only folder stops the run
(OutputError) and keeps the complete shards.
"""
import hashlib
import io
import json
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from vmae import media
from vmae.atomic import atomic_path, make_folder, remove_temporaries, write_text
from vmae.errors import ConfigError, OutputError
from vmae.executors import ExecutorConfig, my_slice, run_units
from vmae.jobs import claim, digest
from vmae.lock import Lock
from vmae.manifests import KEY_PATTERN, conform, manifest_base, read_manifest, resolve_path
from vmae.shards import index as shard_index
from vmae.shards.format import encode_sample, sample_metadata
from vmae.shards.tar import TarSink, header_bytes, padded, tar_bytes

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
# x264 writes its thread count into the stream and its output depends on it: a fixed count keeps transcoded
# shards byte-identical on every machine. Parallelism comes from --workers (one ffmpeg per worker).
TRANSCODE_THREADS = 1
DEFAULT_GOP = 16                     # chosen from the keyframe-interval measurement (benchmarks/README.md)

SKIPPED_COLUMNS = ["key", "source", "path", "reason", "error"]
JOB_FILE = ".shard-job.json"


@dataclass(frozen=True)
class Transcode:
    """Re-encode each clip to H.264 with this short side (None: keep the size) and keyframe interval."""
    short_side: Optional[int] = 320
    gop: int = DEFAULT_GOP

    def __str__(self):
        return f"short-side={self.short_side or 'keep'},gop={self.gop}"


@dataclass(frozen=True)
class ShardConfig:
    name: Optional[str] = None           # None: "uh", or for labeled sets the manifest's single split
    labeled: bool = False                # add KEY.cls; rows need label_id
    max_size: Optional[int] = 1_000_000_000   # bytes per shard (None: no size cap)
    max_count: int = 10_000              # samples per shard
    seed: int = 0
    transcode: Optional[Transcode] = None

    def __post_init__(self):
        if self.name is not None and not NAME_PATTERN.match(self.name):
            raise ConfigError(f"--name {self.name!r}: use letters, digits, '_' and '-' only")
        if self.max_count < 1:
            raise ConfigError("--max-count must be at least 1")
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError("--max-size must be positive")


@dataclass(frozen=True)
class PlannedSample:
    key: str
    path: str        # absolute path of the input clip
    size: int        # its size in bytes at planning time
    meta: dict       # KEY.json content (vmae.shards.format.sample_metadata of the manifest row)


@dataclass(frozen=True)
class ShardUnit:
    """Everything one worker needs to write one shard; picklable, and its plan hash names its content."""
    out_dir: str
    file: str
    samples: tuple
    labeled: bool
    transcode: Optional[Transcode]
    plan: str = ""                       # plan_hash(unit), set by make_units


@dataclass
class ShardReport:
    out_dir: Path
    name: str
    shards: int            # planned shards
    written: int           # written by this run
    reused: int            # complete from an earlier run, skipped
    samples: int           # in all shards (known once complete)
    bytes: int
    skipped: pd.DataFrame  # every manifest row not written, with its reason
    unprobed: int          # rows with a null status accepted because their file looked like a video
    complete: bool         # False: a slice finished but other slices still have shards to write
    pending: int = 0

    def lines(self) -> list:
        out = [f"{self.out_dir}: {self.shards} shard(s) planned; {self.written} written now, "
               f"{self.reused} complete from an earlier run"]
        if self.complete:
            out.append(f"{self.samples} samples, {self.bytes / 1e9:.3f} GB; index.parquet and shards.json written")
        else:
            out.append(f"{self.pending} shard(s) still to be written by other slices; the run that completes "
                       "the last one writes index.parquet and shards.json (or rerun without --unit-index)")
        if self.unprobed:
            out.append(f"{self.unprobed} row(s) with no status (not probed) accepted: their files look like videos")
        if len(self.skipped):
            reasons = self.skipped["reason"].value_counts().sort_index()
            out.append(f"{len(self.skipped)} row(s) skipped ("
                       + ", ".join(f"{r}: {n}" for r, n in reasons.items())
                       + f"); each with its reason in {self.out_dir / shard_index.SKIPPED}"
                       + ("" if self.complete else " once the set is complete"))
        return out


# ------------------------------------------------------------------ option parsing (pure)

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(text) -> Optional[int]:
    """'1GB' -> 10**9, '500MiB' -> 500 * 2**20, '0' or 'none' -> None (no cap)."""
    text = str(text).strip()
    if text.lower() in ("none", "0", ""):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"size {text!r}: write a number with an optional unit, e.g. 1GB, 500MB, 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_transcode(text) -> Optional[Transcode]:
    """'none' -> None; 'short-side=320,gop=16' -> Transcode(320, 16); missing keys take the defaults."""
    text = str(text).strip().lower()
    if text in ("none", ""):
        return None
    values = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        k = k.strip().replace("_", "-")
        if not sep or k not in ("short-side", "gop"):
            raise ConfigError(f"--transcode {text!r}: write 'none' or 'short-side=320,gop=16'")
        if k == "short-side" and v.strip() == "keep":
            values[k] = None
            continue
        if not v.strip().isdigit() or int(v) < 1:
            raise ConfigError(f"--transcode {k}={v!r}: needs a positive whole number")
        values[k] = int(v)
    return Transcode(short_side=values.get("short-side", 320), gop=values.get("gop", DEFAULT_GOP))


# ------------------------------------------------------------------ select (stat + sniff inputs)

def _file_problem(path: str):
    """(reason, message) when the file cannot go into a shard, else (None, size)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return media.MISSING_FILE, f"{path}: no such file"
    except OSError as e:
        return "unreadable", f"{path}: {e.strerror or e}"
    if not os.path.isfile(path):
        return "unreadable", f"{path}: not a regular file"
    if st.st_size == 0:
        return "empty-file", f"{path}: 0 bytes"
    try:
        with open(path, "rb") as f:
            f.read(16)
    except OSError as e:
        return "unreadable", f"{path}: {e.strerror or e}"
    if not media.looks_like_video(path):
        return media.NOT_A_VIDEO, f"{path}: does not start like a video container"
    return None, st.st_size


def _is_null(value) -> bool:
    return value is None or (not isinstance(value, (str, bytes, dict, list)) and bool(pd.isna(value)))


def select_rows(df: pd.DataFrame, base: Path, labeled: bool, io_threads: int = 16):
    """Split manifest rows into (usable PlannedSamples sorted by key, skipped DataFrame, unprobed count).

    A row is usable when its status is "ok" or null (not probed yet: accepted when the file looks like a
    video, and counted), it has a safe key, a label_id for labeled sets, and its file exists, is readable,
    non-empty and starts like a video container. Only the first usable row of a repeated key is kept.
    """
    records = [{k: (None if _is_null(v) else v) for k, v in row.items()} for row in df.to_dict("records")]
    skipped, candidates = [], []
    for row in records:
        key, status = row.get("key"), row.get("status")

        def skip(reason, error, row=row):
            skipped.append({"key": row.get("key"), "source": row.get("source"), "path": row.get("path"),
                            "reason": reason, "error": error})

        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            skip("bad-key", f"key {key!r} is not [A-Za-z0-9_-]+ (see vmae.manifests.make_key)")
        elif status is not None and status != media.STATUS_OK:
            skip(status, row.get("error") or f"status is {status!r}")
        elif labeled and sample_metadata(row)["label_id"] is None:
            skip("no-label", "labeled shards need label_id; use `shard unlabeled-hybrid` for unlabeled rows")
        elif not isinstance(row.get("path"), str) or not row["path"]:
            skip("no-path", "the row has no path: download or import the clip first")
        else:
            candidates.append((row, resolve_path(row["path"], base)))
    with ThreadPoolExecutor(io_threads) as pool:  # stat + 16-byte sniff: I/O bound, slow on network disks
        checks = list(pool.map(_file_problem, [p for _, p in candidates]))
    usable, seen, unprobed = [], set(), 0
    for (row, path), (reason, info) in zip(candidates, checks):
        if reason is not None:
            skipped.append({"key": row["key"], "source": row.get("source"), "path": row["path"],
                            "reason": reason, "error": info})
        elif row["key"] in seen:
            skipped.append({"key": row["key"], "source": row.get("source"), "path": row["path"],
                            "reason": "duplicate-key", "error": "an earlier usable row has the same key"})
        else:
            seen.add(row["key"])
            unprobed += row.get("status") is None
            usable.append(PlannedSample(row["key"], path, int(info), sample_metadata(row)))
    usable.sort(key=lambda s: s.key)
    return usable, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS), unprobed


# ------------------------------------------------------------------ plan (pure)

def sample_tar_bytes(sample: PlannedSample, labeled: bool) -> int:
    """Bytes the sample adds to a tar: exact without transcoding (the input size is the member size)."""
    members = encode_sample(sample.meta, b"", labeled)
    total = 0
    for ext, data in members.items():
        if ext != "__key__":
            size = sample.size if ext == "mp4" else len(data)
            total += header_bytes(f"{sample.key}.{ext}") + padded(size)
    return total


def interleave(samples: list, rng: np.random.Generator) -> list:
    """Shuffle each source, then merge the sources evenly: the i-th of n samples of a source sits at
    (i + u) / n with u uniform in [0, 1), so every stretch of the result holds each source in proportion
    (within about one sample), and so does every shard cut from it."""
    by_source = {}
    for s in samples:
        by_source.setdefault(str(s.meta.get("source")), []).append(s)
    placed = []
    for source in sorted(by_source):
        group = by_source[source]
        order = rng.permutation(len(group))
        positions = (np.arange(len(group)) + rng.random(len(group))) / len(group)
        placed += [(float(positions[i]), source, group[j].key, group[j]) for i, j in enumerate(order)]
    placed.sort(key=lambda t: t[:3])
    return [t[3] for t in placed]


def plan_shards(samples: list, cfg: ShardConfig) -> list:
    """Samples (sorted by key) -> list of shards, each a list of samples in write order. Pure: the result
    depends only on the samples, their sizes and cfg.

    A shard closes before max_count samples or before its tar would pass max_size. Without transcoding the
    size is exact; with transcoding it is estimated from the input sizes (the output is usually smaller).
    A single sample larger than max_size gets a shard of its own.
    """
    rng = np.random.default_rng(cfg.seed)
    shards, current, current_bytes = [], [], 0
    for s in interleave(samples, rng):
        nbytes = sample_tar_bytes(s, cfg.labeled)
        full = len(current) >= cfg.max_count or (
            cfg.max_size is not None and tar_bytes(current_bytes + nbytes) > cfg.max_size)
        if current and full:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(s)
        current_bytes += nbytes
    if current:
        shards.append(current)
    # The interleaved order is regular (source A, B, A, ...): shuffle inside each shard too.
    return [[shard[i] for i in rng.permutation(len(shard))] for shard in shards]


def shard_file(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def make_units(shards: list, out_dir, cfg: ShardConfig, name: str) -> list:
    units = []
    for i, shard in enumerate(shards):
        unit = ShardUnit(str(out_dir), shard_file(name, i), tuple(shard), cfg.labeled, cfg.transcode)
        units.append(replace(unit, plan=plan_hash(unit)))
    return units


def plan_hash(unit: ShardUnit) -> str:
    """What the shard's bytes depend on: keys, metadata, input sizes and options (not paths or machine)."""
    content = {"file": unit.file, "labeled": unit.labeled,
               "transcode": asdict(unit.transcode) if unit.transcode else None,
               "samples": [[s.key, s.size, s.meta] for s in unit.samples]}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ write one shard (the unit function)

def _transcoded_meta(meta: dict, video: bytes) -> dict:
    """The metadata of a re-encoded clip: its new size and frame count (read from the MP4 header)."""
    import av

    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        meta = dict(meta, width=stream.codec_context.width, height=stream.codec_context.height)
        if stream.frames:
            meta["frames"] = int(stream.frames)
    return meta


def _load_clip(sample: PlannedSample, transcode: Optional[Transcode]):
    """(video bytes, metadata, open input file) of one sample: the bytes of a transcode, or the input file
    opened to go in as it is. Raises MediaError or OSError for this sample's input, OutputError when the
    temporary folder of a transcode is full."""
    if transcode is None:
        return None, sample.meta, open(sample.path, "rb", buffering=0)
    video = media.transcode(sample.path, short_side=transcode.short_side, gop=transcode.gop,
                            threads=TRANSCODE_THREADS)
    try:
        return video, _transcoded_meta(sample.meta, video), None
    except Exception as e:  # PyAV cannot read what ffmpeg wrote: this sample's fault, not the run's
        raise media.MediaError(media.CUT_FAILED, f"{sample.path}: the transcoded clip does not open ({e})") from None


def _sample_fault(sample: PlannedSample, error: Exception) -> dict:
    """The skipped row of a sample whose input could not be read."""
    if isinstance(error, media.MediaError):
        reason, message = error.reason, error.message
    elif isinstance(error, FileNotFoundError):
        reason, message = media.MISSING_FILE, f"{sample.path}: no such file"
    else:
        reason, message = "unreadable", f"{sample.path}: {getattr(error, 'strerror', None) or error}"
    return {"key": sample.key, "source": sample.meta.get("source"), "path": sample.path, "reason": reason,
            "error": message}


def write_shard(unit: ShardUnit) -> dict:
    """Write one shard under its lock, then its sidecar; return the sidecar (what vmae.shards.index collects).
    A shard that another live process is writing is left to it (None)."""
    out = Path(unit.out_dir)
    lock = Lock(out / f".{Path(unit.file).stem}.lock")
    if not lock.acquire():
        return None
    try:
        done = completed(unit)  # by another process since this run planned
        if done is not None:
            return done
        remove_temporaries(out / unit.file)  # partial shards of a killed run
        return _write_shard(unit, out)
    finally:
        lock.release()


def _write_shard(unit: ShardUnit, out: Path) -> dict:
    members, sources, labels, skipped = [], Counter(), Counter(), []
    with atomic_path(out / unit.file) as tmp:
        with open(tmp, "wb") as f:
            tar = TarSink(f)
            for s in unit.samples:
                try:
                    video, meta, src = _load_clip(s, unit.transcode)
                except (media.MediaError, OSError) as e:
                    skipped.append(_sample_fault(s, e))
                    continue
                for ext, data in encode_sample(meta, b"" if video is None else video, unit.labeled).items():
                    if ext == "__key__":
                        continue
                    name = f"{s.key}.{ext}"
                    if ext == "mp4" and video is None:
                        with src:
                            members.append([s.key, name, tar.add_file(name, s, src), s.size])
                    else:
                        members.append([s.key, name, tar.add(name, data), len(data)])
                sources[str(meta.get("source"))] += 1
                if unit.labeled:
                    labels[str(meta["label_id"])] += 1
            # No fsync: a killed process cannot leave a renamed, incomplete shard (the kernel keeps what was
            # written), and fsync costs a large share of the throughput. After a power cut, verify's sha256
            # finds a shard whose data never reached the disk.
            sha256 = tar.close()
        if os.path.getsize(tmp) != tar.pos:  # checked before it gets its name
            raise OutputError.at(out, f"{unit.file} came out at {os.path.getsize(tmp)} of {tar.pos} bytes")
        sidecar = {"file": unit.file, "plan": unit.plan, "samples": sum(sources.values()), "bytes": tar.pos,
                   "sha256": sha256, "sources": dict(sorted(sources.items())),
                   "labels": dict(sorted(labels.items(), key=lambda kv: int(kv[0]))),
                   "members": members, "skipped": skipped}
    # The sidecar comes after the rename: a sidecar always describes a complete tar.
    write_text(shard_index.sidecar_path(out, unit.file), json.dumps(sidecar))
    return sidecar


def completed(unit: ShardUnit) -> Optional[dict]:
    """The unit's sidecar when its shard is complete and was written from the same plan, else None."""
    sidecar = shard_index.read_sidecar(Path(unit.out_dir), unit.file)
    if sidecar is None or sidecar.get("plan") != unit.plan:
        return None
    try:
        if os.path.getsize(Path(unit.out_dir) / unit.file) != sidecar["bytes"]:
            return None
    except OSError:
        return None
    return sidecar


# ------------------------------------------------------------------ the whole command

def default_name(df: pd.DataFrame, labeled: bool) -> str:
    """'uh' for unlabeled sets; for labeled sets the manifest's split when it has exactly one, else 'k710'."""
    if not labeled:
        return "uh"
    splits = sorted({s for s in df["split"] if isinstance(s, str)})
    return splits[0] if len(splits) == 1 and NAME_PATTERN.match(splits[0]) else "k710"


def write_shards(manifest, out_dir, cfg: ShardConfig = ShardConfig(),
                 ex: ExecutorConfig = ExecutorConfig(), progress: bool = True,
                 exclude: Optional[dict] = None) -> ShardReport:
    """Shard a manifest (a path or a DataFrame) into out_dir; see the module docstring.

    exclude: key -> (reason, message) of rows to leave out (vmae.curation.dedup.read_exclusions); they are
    listed in skipped.parquet with that reason.

    Relative clip paths resolve against the manifest's folder (the current folder for a DataFrame).
    Complete shards from an earlier run with the same plan are kept; the others are (re)written.
    With ex.unit_index only that slice is written; whichever run finds every shard complete writes the index.
    """
    started = time.time()
    df = conform(manifest) if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    base = manifest_base(manifest)
    out_dir = make_folder(out_dir)
    name = cfg.name or default_name(df, cfg.labeled)
    options = {"name": name, "seed": cfg.seed, "labeled": cfg.labeled, "max_size": cfg.max_size,
               "max_count": cfg.max_count, "transcode": str(cfg.transcode) if cfg.transcode else None}
    left_out = df["key"].isin(list(exclude or ()))
    job = {"manifest_rows": len(df), "keys_digest": digest(sorted(map(str, df["key"]))), **options}
    if left_out.any():  # another set of shards than without --exclude: another job
        job["excluded_digest"] = digest(sorted(map(str, df["key"][left_out])))
    claim(out_dir / JOB_FILE, job, "shard set")
    usable, skipped, unprobed = select_rows(df[~left_out], base, cfg.labeled)
    if left_out.any():
        gone = [{"key": k, "source": s, "path": p, "reason": exclude[k][0], "error": exclude[k][1]}
                for k, s, p in zip(df["key"][left_out], df["source"][left_out], df["path"][left_out])]
        skipped = pd.concat([skipped, pd.DataFrame(gone, columns=SKIPPED_COLUMNS)], ignore_index=True)
    units = make_units(plan_shards(usable, cfg), out_dir, cfg, name)
    mine = my_slice(units, ex)
    todo = [u for u in mine if completed(u) is None]
    if todo:
        # shards.json marks a complete, consistent set: it must not outlive the shards it describes.
        (out_dir / shard_index.SHARDS_JSON).unlink(missing_ok=True)
    run_cfg = replace(ex, unit_index=None, num_units=None)
    results = run_units(write_shard, todo, run_cfg)
    if progress and todo:
        from tqdm import tqdm
        results = tqdm(results, total=len(todo), desc=f"shards -> {out_dir}", unit="shard")
    for _ in results:
        pass
    sidecars = [completed(u) for u in units]
    pending = sum(s is None for s in sidecars)
    report = ShardReport(out_dir, name, len(units), len(todo), len(mine) - len(todo), 0, 0, skipped, unprobed,
                         complete=pending == 0, pending=pending)
    if pending:
        return report
    summary = shard_index.finalize(out_dir, name, sidecars, skipped, options={
        "seed": cfg.seed, "labeled": cfg.labeled, "max_size": cfg.max_size, "max_count": cfg.max_count,
        "transcode": options["transcode"], "unprobed_accepted": unprobed}, started=started)
    report.samples, report.bytes = summary["totals"]["samples"], summary["totals"]["bytes"]
    report.skipped = shard_index.read_skipped(out_dir)
    return report
