"""Kinetics-710 ("LabeledHybrid"): merge the official K400/K600/K700 annotation lists into one
deduplicated 710-class set, as the VideoMAE V2 paper describes.

Inputs: one folder per version with the CVDF files train.csv, val.csv (or validate.csv) and optionally
test.csv; DeepMind's names (kinetics-400_val.csv, kinetics_700_train.csv, ...) are found too. Columns are
read by name: label, youtube_id, time_start, time_end; split and is_cc are ignored (the split is the file's).
Test files need only youtube_id. A version or split that is absent is reported and skipped.

Decisions:
- Labels become K710 names by the first rule that places them: (1) the label is a K710 name; (2) the rename
  table k710_identical_label_merge.json; (3) the same two ignoring case, spacing and underscores; (4) the
  user's alias file {label: K710 name}. Because (1) comes first, 'throwing ball' stays its own K710 class
  although the rename table lists it (the official label maps keep it too). A label none of these place is
  an error that lists each label with its file and row count, unless on_unknown_label="drop", which drops
  those rows before deduplication and reports them.
- Deduplication: see DEDUP_RULE. Every removed row is counted by where its twin was (same file, another
  version of the same split, a val row whose video is in train) and by how it differed (nothing, only the
  label's spelling, the segment, the K710 class).
- Test leakage: surviving videos whose ID is in any version's test file are counted, not removed.
- Outputs in OUT/: train.parquet and val.parquet (manifest schema, the columns always filled stored as
  required ones; stride 4, key `{video_id}_{start:06d}_{end:06d}` made safe), labels.txt
  (label_map_k710.txt byte for byte, so label_id = line number), train.csv and val.csv in the VideoMAE V2
  finetune list format (`path label_id`, paths from the template; `{label}` is written with '_' for spaces
  because the list is space-separated), and report.json. All are written under temporary names and renamed
  only once everything has succeeded.
- Bad input (missing columns, non-numeric or reversed times, empty IDs or labels, IDs with whitespace, an
  empty or non-UTF-8 file, a folder with no CSV) stops the build with the file and line, before any output.

Speed (the full lists on two cores; benchmarks/bench_build_k710.py): each CSV is parsed once by pyarrow,
two files at a time (labels dictionary-encoded while parsing, times as integers; a file with fractional
times is parsed a second time as floats). The IDs are then grouped in numpy hash tables on both cores while
the labels are resolved on their distinct values; everything after is numpy, with fixed-width records for
the keys and paths, and the duplicate counts are made on the second core while the train split is made.
Each output is written in a thread as soon as it is made, the manifests in row groups as their keys come,
so that the train manifest, the longest write, runs beside the rest. Memory: pyarrow allocates from the C
heap like numpy, glibc is asked to keep freed memory for reuse (vmae.memory), and the parsed tables are
let go as soon as their columns are copied out: fresh pages from the kernel were a fifth of the time.
"""
import codecs
import csv
import difflib
import io
import json
import queue
import re
import string
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from vmae.atomic import atomic_path
from vmae.memory import reuse_freed_memory
from vmae.manifests import SCHEMA, ManifestError, make_key
from vmae.manifests import labels as label_maps

VERSIONS = ("k400", "k600", "k700")  # oldest first: a newer version wins a tie
SPLITS = ("train", "val")
DEFAULT_PATH_TEMPLATE = "{video_id}_{start:06d}_{end:06d}.mp4"
TEMPLATE_FIELDS = ("video_id", "start", "end", "label", "label_id", "source", "split", "key")
OUTPUTS = ("train.parquet", "val.parquet", "train.csv", "val.csv", "labels.txt", "report.json")
DEDUP_RULE = ("One row per YouTube ID survives across all versions and splits: a train row beats any val row "
              "(so a val video that is in any train list leaves val), then the newest version wins "
              "(K700 > K600 > K400), then the first row in its file. The survivor keeps its own segment and "
              "label.")
ORIGINS = ("within_file", "across_versions", "val_in_train")
KINDS = ("same_segment_same_label", "same_segment_renamed_label", "different_segment", "label_conflict")

_COLUMNS = {"train": ("label", "youtube_id", "time_start", "time_end"),
            "val": ("label", "youtube_id", "time_start", "time_end"),
            "test": ("youtube_id",)}
_TYPES = {"label": pa.dictionary(pa.int32(), pa.string()), "youtube_id": pa.string()}  # times: see _parse
_OFFICIAL_HEADER = "label,youtube_id,time_start,time_end,split (K400 adds is_cc; test files have no label)"
# pyarrow parses and writes with the C allocator, the one numpy uses: memory the CSV parser frees is
# then reused by the merge's arrays instead of being faulted in afresh (pyarrow's default allocator keeps
# its own), which makes the build use a tenth less memory and spend less time in the kernel.
_POOL = pa.system_memory_pool()
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[list(b" \t\n\r\v\f")] = True
_SAMPLE_ROW = {"video_id": "abcdefghijk", "start": 17, "end": 27, "label": "abseiling", "label_id": 341,
               "source": "k400", "split": "train", "key": "abcdefghijk_000017_000027"}


@dataclass(frozen=True)
class BuildK710Config:
    label_aliases: Mapping[str, str] = field(default_factory=dict)  # {label in a CSV: K710 name}
    on_unknown_label: str = "error"                                 # "error" or "drop"
    path_template: str = DEFAULT_PATH_TEMPLATE                      # paths in train.csv / val.csv
    stride: int = 4

    def __post_init__(self):
        if self.on_unknown_label not in ("error", "drop"):
            raise ManifestError(f"on_unknown_label must be 'error' or 'drop', not {self.on_unknown_label!r}")
        check_template(self.path_template)
        check_aliases(self.label_aliases)


# ----------------------------------------------------------------------------------------------- labels

def _fold(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


@lru_cache(maxsize=None)
def _folded():
    """({folded K710 name: name}, {folded rename-table key: K710 name})."""
    return ({_fold(n): n for n in label_maps.class_names("k710")},
            {_fold(old): new for old, new in label_maps.rename_table().items()})


def _builtin_label(raw: str):
    """(K710 name, how) by the built-in rules, or (None, None)."""
    k710, renames = label_maps.class_ids("k710"), label_maps.rename_table()
    if raw in k710:
        return raw, "exact"
    if raw in renames:
        return renames[raw], "renamed"
    folded_names, folded_renames = _folded()
    if _fold(raw) in folded_names:
        return folded_names[_fold(raw)], "case_or_spacing"
    if _fold(raw) in folded_renames:
        return folded_renames[_fold(raw)], "renamed"
    return None, None


def resolve_label(raw: str, aliases: Mapping[str, str] = None):
    """(K710 name, how) for a label from a Kinetics CSV; (None, None) when no rule places it.

    how is exact, renamed, case_or_spacing or alias."""
    name, how = _builtin_label(raw)
    if name is None and aliases:
        folded = {_fold(k): v for k, v in aliases.items()}
        name = aliases.get(raw, folded.get(_fold(raw)))
        how = "alias" if name is not None else None
    return name, how


def _close(name: str) -> str:
    near = difflib.get_close_matches(name, label_maps.class_names("k710"), n=3, cutoff=0.6)
    return f" (closest K710 names: {', '.join(repr(n) for n in near)})" if near else ""


def check_aliases(aliases: Mapping[str, str]) -> None:
    """Every alias target must be a K710 name, and no alias may contradict a built-in rule."""
    k710 = label_maps.class_ids("k710")
    problems = []
    for old, new in aliases.items():
        if not isinstance(old, str) or not isinstance(new, str):
            problems.append(f"{old!r}: {new!r} is not a pair of strings")
        elif new not in k710:
            problems.append(f"{old!r} -> {new!r}: {new!r} is not a K710 class name{_close(new)}")
        else:
            builtin, how = _builtin_label(old)
            if builtin is not None and builtin != new:
                problems.append(f"{old!r} -> {new!r} never applies: {old!r} already means {builtin!r} "
                                f"({how}); remove the alias")
    if problems:
        raise ManifestError("bad label alias(es):\n  " + "\n  ".join(problems)
                            + "\nAlias targets must be spelled exactly as in labels.txt (label_map_k710.txt).")


def load_label_aliases(path) -> dict:
    """Read and check a JSON object {label: K710 name}."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError("alias file not found; pass a JSON object {\"label\": \"K710 name\"}", path)
    try:
        aliases = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"not a UTF-8 JSON file ({e}); expected {{\"label\": \"K710 name\", ...}}", path) from None
    if not isinstance(aliases, dict):
        raise ManifestError("expected a JSON object {\"label\": \"K710 name\", ...}", path)
    try:
        check_aliases(aliases)
    except ManifestError as e:
        raise ManifestError(str(e), path) from None
    return aliases


# --------------------------------------------------------------------------------------------- template

def check_template(template: str) -> None:
    """The path template may use only TEMPLATE_FIELDS, must format, and may not contain whitespace."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ManifestError(f"path template {template!r} does not parse ({e})") from None
    bad = [name for name in names if name not in TEMPLATE_FIELDS]
    if bad:
        raise ManifestError(f"path template {template!r}: unknown field(s) {bad}; use {list(TEMPLATE_FIELDS)}")
    try:
        template.format(**_SAMPLE_ROW)
    except (ValueError, KeyError, IndexError) as e:
        raise ManifestError(f"path template {template!r} does not format ({e}); "
                            f"example: {DEFAULT_PATH_TEMPLATE!r}") from None
    if any(ch.isspace() for ch in template):
        raise ManifestError(f"path template {template!r} has whitespace; the list format is space-separated")
    if not {"video_id", "key"} & set(names):
        raise ManifestError(f"path template {template!r} gives every clip the same path; use {{video_id}} or {{key}}")


def _pyvalue(value):
    """Whole-second floats become ints so that `{start:06d}` works on the official integer times."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _template_pieces(template: str, columns: Mapping, known: Mapping = None) -> list:
    """The template as pieces for _join: its literals and, per field, the texts of the column (a pyarrow
    string array, _Texts or a numpy number array).

    Each field is formatted once per distinct value; a pyarrow string column without a format spec passes
    through as it is (it must be free of whitespace). known: {(field, spec): _Texts} already made."""
    pieces = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        if literal:
            pieces.append(literal)
        if name is None:
            continue
        column = columns[name]
        if isinstance(column, pa.Array) and not spec and conv in (None, "s"):
            pieces.append(column)
            continue
        if known and not conv and (name, spec) in known:
            pieces.append(known[(name, spec)])
            continue
        fmt = "{0" + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        try:
            if isinstance(column, _Texts):
                texts = _Texts([fmt.format(t) for t in column.texts], column.index)
            elif isinstance(column, pa.Array):
                codes, uniques = pd.factorize(column.to_numpy(zero_copy_only=False))
                texts = _Texts([fmt.format(u) for u in uniques.tolist()], codes)
            else:
                texts = _format_numbers(column, lambda v: fmt.format(_pyvalue(v)))
        except (ValueError, TypeError) as e:
            raise ManifestError(f"path template {template!r} cannot format {name} values ({e}); "
                                "non-integer times need a float format such as {start:09.3f}") from None
        if any(ch.isspace() for text in texts.texts for ch in text):
            raise ManifestError(f"path template {template!r} puts whitespace into {name}; "
                                "the list format is space-separated")
        pieces.append(texts)
    return pieces


# ------------------------------------------------------------------------------------------------ input

def find_annotation_files(version: str, folder):
    """{split: path} for the official files in folder, and the splits it lacks (reported, skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"--{version} folder not found; pass the folder holding the official "
                            "train.csv, val.csv and test.csv", folder)
    csvs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if not csvs:
        raise ManifestError(f"no CSV file in this --{version} folder; expected the official train.csv, "
                            "val.csv and test.csv", folder)
    found, missing = {}, []
    for split in ("train", "val", "test"):
        names = ("val", "validate") if split == "val" else (split,)
        exact = [folder / f"{n}.csv" for n in names if (folder / f"{n}.csv").is_file()]
        loose = [p for p in csvs if re.search(rf"[-_]({'|'.join(names)})\.csv$", p.name, re.IGNORECASE)]
        candidates = exact or loose
        if len(candidates) > 1:
            raise ManifestError(f"several {split} files {[p.name for p in candidates]}; keep one", folder)
        if candidates:
            found[split] = candidates[0]
        else:
            missing.append(split)
    if not found:
        raise ManifestError(f"no train.csv, val.csv or test.csv in this --{version} folder "
                            f"(found {[p.name for p in csvs]}); rename the official files", folder)
    return found, missing


def read_annotation(path, split: str) -> pa.Table:
    """Read one official Kinetics CSV: youtube_id, plus label, time_start and time_end unless split is test.

    Raises ManifestError naming the file and line of the first bad row."""
    path = Path(path)
    with path.open("rb") as f:
        first = f.readline()
        head = first + f.read(1 << 16)
    head = head[len(codecs.BOM_UTF8):] if head.startswith(codecs.BOM_UTF8) else head
    if not head or head.isspace() and _contents(path).isspace():
        raise ManifestError(f"the file is empty; expected the official header {_OFFICIAL_HEADER}", path, line=1)
    try:
        header = next(csv.reader([head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")]))
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text; re-save the file as UTF-8", path, line=1) from None
    need = _COLUMNS[split]
    missing = [c for c in need if c not in header]
    if missing:
        raise ManifestError(f"missing column(s) {missing}; found {header}; the official header is "
                            f"{_OFFICIAL_HEADER}", path, line=1)
    try:
        table = _parse(path, need)
    except pa.ArrowInvalid as e:
        raise _first_problem(path, _contents(path), header, split, fallback=str(e)) from None
    if _has_problem(table, split):
        raise _first_problem(path, _contents(path), header, split, fallback="invalid values")
    return table


def _parse(path: Path, columns) -> pa.Table:
    """pyarrow's parse of the columns (it reads the file itself and skips a BOM: no copy in Python memory).

    Times are parsed as integers first, a tenth faster than as floats, and the official files hold whole
    seconds; a file with fractional times is parsed again as floats (int32 or float64 columns)."""
    def read(time_type):
        types = {c: _TYPES.get(c, time_type) for c in columns}
        options = pcsv.ConvertOptions(include_columns=list(columns), column_types=types,
                                      strings_can_be_null=False, quoted_strings_can_be_null=False)
        # One thread per file: the build parses two files at a time, and pyarrow's own threads on top of
        # those cost a fifth more CPU on two cores.
        return pcsv.read_csv(str(path), read_options=pcsv.ReadOptions(use_threads=False), convert_options=options,
                             memory_pool=_POOL)
    if "time_start" not in columns:
        return read(pa.float64())
    try:
        return read(pa.int32())
    except pa.ArrowInvalid:
        return read(pa.float64())


def _contents(path: Path) -> bytes:
    data = path.read_bytes()
    return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _string_bytes(array: pa.Array):
    """(value bytes as uint8, offsets) of a pyarrow string array, without copying."""
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int32)[array.offset:array.offset + len(array) + 1]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return values, offsets


def _has_problem(table: pa.Table, split: str) -> bool:
    """Fast vectorised check; _first_problem then finds and explains the first bad row."""
    for chunk in table["youtube_id"].chunks:
        values, offsets = _string_bytes(chunk)
        body = values[offsets[0]:offsets[-1]]
        if (np.diff(offsets) == 0).any():
            return True
        # Whitespace bytes are all <= 0x20: one fast min() clears the usual file.
        if len(body) and body.min() <= 0x20 and _WHITESPACE[body].any():
            return True
    if split == "test":
        return False
    if any(not name.strip() for chunk in table["label"].chunks for name in chunk.dictionary.to_pylist()):
        return True
    start, end = table["time_start"], table["time_end"]
    if start.null_count or end.null_count:
        return True
    start, end = start.to_numpy(), end.to_numpy()
    with np.errstate(invalid="ignore"):
        return bool((~np.isfinite(start) | ~np.isfinite(end) | (start < 0) | (end <= start)).any())


def _row_problem(row: dict, split: str):
    """Why one row (a dict of strings) is unusable, or None; the slow twin of _has_problem."""
    video = row["youtube_id"]
    if not video.strip():
        return "empty youtube_id"
    if any(_WHITESPACE[b] for b in video.encode("utf-8")):
        return f"youtube_id {video!r} contains whitespace"
    if split == "test":
        return None
    if not row["label"].strip():
        return f"empty label (youtube_id {video!r})"
    times = {}
    for name in ("time_start", "time_end"):
        text = row[name]
        if not _NUMBER.match(text) or not np.isfinite(float(text)):
            return f"{name} {text!r} is not a number (youtube_id {video!r})"
        times[name] = float(text)
    if times["time_start"] < 0:
        return f"time_start {row['time_start']} is negative (youtube_id {video!r})"
    if times["time_end"] <= times["time_start"]:
        return f"time_end {row['time_end']} is not after time_start {row['time_start']} (youtube_id {video!r})"
    return None


def _first_problem(path, data: bytes, header, split: str, fallback: str) -> ManifestError:
    """Scan the file row by row (only after the fast check failed) for the first bad row; count bad rows."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return ManifestError(f"not UTF-8 text (byte {data[e.start]:#04x}); re-save the file as UTF-8", path,
                             line=line)
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    first, bad = None, 0
    for values in reader:
        if not values:
            continue
        if len(values) != len(header):
            problem = f"{len(values)} fields where the header has {len(header)}"
        else:
            problem = _row_problem(dict(zip(header, values)), split)
        if problem:
            bad += 1
            first = first or (reader.line_num, problem)
    if first is None:
        return ManifestError(f"could not read the file ({fallback})", path)
    more = f"; {bad} bad rows in this file, the first is shown" if bad > 1 else ""
    return ManifestError(f"{first[1]}{more}. Fix or delete the row(s) and run again", path, line=first[0])


# ------------------------------------------------------------------------------------------------ merge

@dataclass
class _Rows:
    """The labelled rows of every file, concatenated in priority order: the first row of an ID wins."""
    files: list          # [(version, split, path)] in priority order
    fid: np.ndarray      # file index per row
    video_id: pa.ChunkedArray  # as read; one pa.Array once merge_k710 has grouped the IDs
    start: np.ndarray
    end: np.ndarray
    raw: np.ndarray      # code of the label as written, into raw_names
    raw_names: list

    def take(self, keep: np.ndarray) -> "_Rows":
        return _Rows(self.files, self.fid[keep], self.video_id.filter(pa.array(keep)),
                     self.start[keep], self.end[keep], self.raw[keep], self.raw_names)


def _priority(file) -> tuple:
    version, split, _ = file
    return SPLITS.index(split), -VERSIONS.index(version)


def _labelled_files(tables: dict) -> list:
    """[(version, split, path)] of the train and val files, in priority order."""
    return sorted(((v, s, p) for (v, s), (p, _) in tables.items() if s in SPLITS), key=_priority)


def _concat(tables: dict) -> _Rows:
    files = _labelled_files(tables)
    parts = [tables[(v, s)][1] for v, s, _ in files]
    if any(pa.types.is_floating(t.schema.field("time_start").type) for t in parts):
        # Fractional times in some file: all times as float64, so that the tables concatenate.
        times = pa.schema([pa.field("time_start", pa.float64()), pa.field("time_end", pa.float64())])
        parts = [t.cast(pa.schema([times.field(f.name) if f.name in times.names else f for f in t.schema]))
                 for t in parts]
    sizes = [t.num_rows for t in parts]
    table = pa.concat_tables(parts)
    label = table["label"].unify_dictionaries(memory_pool=_POOL)
    # Small integer types: these arrays have a row per input row and are gathered many times.
    return _Rows(files=files, fid=np.repeat(np.arange(len(files), dtype=np.int16), sizes),
                 video_id=table["youtube_id"],
                 start=table["time_start"].to_numpy(), end=table["time_end"].to_numpy(),
                 raw=np.concatenate([c.indices.to_numpy() for c in label.chunks] or [np.zeros(0, np.int32)]),
                 raw_names=label.chunk(0).dictionary.to_pylist() if label.num_chunks else [])


def _resolve_labels(rows: _Rows, config: BuildK710Config):
    """K710 id per row (-1 = unknown) and the label part of the report."""
    k710 = label_maps.class_ids("k710")
    resolved = [resolve_label(raw, config.label_aliases) for raw in rows.raw_names]
    id_of_raw = np.array([k710[name] if name else -1 for name, _ in resolved], dtype=np.int16)
    label_id = np.take(id_of_raw, rows.raw)  # np.take: twice as fast as indexing a small table by int codes
    counts = np.bincount(rows.raw, minlength=len(rows.raw_names))
    mapped = [{"label": raw, "k710": name, "how": how, "rows": int(n)}
              for raw, (name, how), n in zip(rows.raw_names, resolved, counts) if name and how != "exact"]
    unknown = []
    bad = label_id < 0
    if bad.any():
        pairs, n = np.unique(np.stack([rows.fid[bad], rows.raw[bad]]), axis=1, return_counts=True)
        unknown = [{"label": rows.raw_names[c], "file": str(rows.files[f][2]), "rows": int(k)}
                   for (f, c), k in zip(pairs.T.tolist(), n.tolist())]
    if unknown and config.on_unknown_label == "error":
        raise ManifestError(_unknown_message(unknown))
    report = {"mapped": sorted(mapped, key=lambda m: (m["how"], m["label"])), "unknown": unknown,
              "unknown_rows_dropped": int(bad.sum())}
    return label_id, report


def _unknown_message(unknown, limit: int = 40) -> str:
    names = {u["label"] for u in unknown}
    lines = [f"{len(names)} label(s) have no K710 class (matched exactly, through the rename table, ignoring "
             "case/spacing/underscores, then through --label-aliases):"]
    for u in unknown[:limit]:
        lines.append(f"  {u['label']!r} in {u['file']}: {u['rows']} row(s){_close(u['label'])}")
    if len(unknown) > limit:
        lines.append(f"  ... and {len(unknown) - limit} more (label, file) pairs")
    lines.append("Fix: map each to a K710 name in a JSON file {\"label\": \"K710 name\"} passed with "
                 "--label-aliases FILE.json, or pass --on-unknown-label drop to drop these rows "
                 "(they are counted in report.json).")
    return "\n".join(lines)


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """Positions of the first row of each code, for codes numbered in order of first appearance."""
    seen = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]])) if len(codes) else codes
    return np.flatnonzero(codes > seen)


def _chunks(arrays) -> list:
    """The arrays, chunked arrays opened into their chunks."""
    return [c for a in arrays for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]


def _id_chunks(arrays):
    """The IDs of the (chunked) string arrays, chunk by chunk, as numpy void cells (views, no copy) when all
    have one width of 8 to 16 bytes; else None."""
    parts = [_string_bytes(c) for c in _chunks(arrays) if len(c)]
    widths = {int(offsets[1] - offsets[0]) for _, offsets in parts}
    if len(widths) != 1 or not 8 <= (width := widths.pop()) <= 16:
        return None
    if any((np.diff(offsets) != width).any() for _, offsets in parts):
        return None
    return [values[offsets[0]:offsets[-1]].view(f"V{width}") for values, offsets in parts]


def _id_cells(arrays) -> np.ndarray | None:
    """The IDs of the (chunked) string arrays, one after the other, as numpy void cells when all have one
    width of 8 to 16 bytes; else None."""
    chunks = _id_chunks(arrays)
    return None if chunks is None else np.concatenate(chunks)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (2**64 / golden ratio): multiplying mixes bits upwards


def _hash(head: np.ndarray, tail: np.ndarray) -> np.ndarray:
    hashes = tail * _MIX
    hashes ^= head  # in place: one full-size array, not two
    return hashes


def _first_in_part(rows: np.ndarray, head: np.ndarray, tail: np.ndarray, first: np.ndarray, rounds: int = 16):
    """Set first[rows], for the ascending positions rows, to the position of the first row with the same
    (head, tail) words. False, leaving first as it was, when rows are left after `rounds` rounds (only when
    many different IDs share one hash) or numpy did not apply repeated assignments in order.

    A round scatters each row's number into a hash table at its slot with the latest row first, so that the
    earliest row of each slot stays; a row whose words equal that earliest row's has found its first row
    (any earlier row with the same ID would have the same slot). The others, whole IDs at a time, try again
    with their hashes mixed anew. Everything is numpy, which releases the GIL: parts run on both cores."""
    head, tail = head[rows], tail[rows]
    hashes = _hash(head, tail)
    hashes *= _MIX  # mixed again: the slot bits are not the ones that chose the part
    bits = max(int(len(rows)).bit_length() + 1, 10)
    shift = np.uint64(64 - bits)
    table = np.empty(1 << bits, np.int32)
    # The first round, which places nearly every row, without the bookkeeping of the later ones.
    slot = (hashes >> shift).view(np.intp)
    order = np.arange(len(rows) - 1, -1, -1, dtype=np.int32)
    table[slot[::-1]] = order
    earliest = table[slot]
    # numpy applies repeated assignments in order (the last one stays), which the rounds rely on; it does
    # not promise to: check that every slot kept its earliest row.
    if (earliest > order[::-1]).any():
        return False
    same = head[earliest] == head
    same &= tail[earliest] == tail
    local = np.where(same, earliest, -1)
    todo = np.flatnonzero(~same)
    head, tail, hashes = head[todo], tail[todo], hashes[todo]
    for _ in range(rounds - 1):
        if not len(todo):
            break
        hashes *= _MIX
        slot = (hashes >> shift).view(np.intp)
        table[slot[::-1]] = np.arange(len(todo) - 1, -1, -1, dtype=np.int32)
        earliest = table[slot]
        same = head[earliest] == head
        same &= tail[earliest] == tail
        local[todo[same]] = todo[earliest[same]]
        left = np.flatnonzero(~same)
        todo, head, tail, hashes = todo[left], head[left], tail[left], hashes[left]
    if len(todo):
        return False
    first[rows] = rows[local]
    return True


def first_row_of_id(arrays) -> np.ndarray:
    """For every row of the concatenated (chunked) string arrays, the position of the first row with the
    same ID.

    YouTube IDs all have 11 bytes: equal-width IDs of 8 to 16 bytes are read as two 64-bit words (their
    first and their last 8 bytes), which together are the ID; rows are grouped by those words in numpy hash
    tables, in two halves (by a hash bit) on two threads. Other IDs take pyarrow's string hashing."""
    chunks = _id_chunks(arrays)
    if chunks:
        width = chunks[0].itemsize
        words = np.dtype({"names": ["head", "tail"], "formats": ["<u8", "<u8"], "offsets": [0, width - 8],
                          "itemsize": width})
        # Contiguous copies, made chunk by chunk: gathered from many times, several times faster than the
        # words in place (an 11-byte stride).
        total = sum(map(len, chunks))
        head, tail = np.empty(total, np.uint64), np.empty(total, np.uint64)
        at = 0
        for cells in chunks:
            pair = cells.view(words)
            head[at:at + len(cells)], tail[at:at + len(cells)] = pair["head"], pair["tail"]
            at += len(cells)
        # Two parts by the top hash bit, one per core (more, smaller parts were slower).
        upper = _hash(head, tail) >= np.uint64(1 << 63)
        parts = [np.flatnonzero(~upper), np.flatnonzero(upper)]
        first = np.empty(len(head), np.int64)
        with ThreadPoolExecutor(2) as pool:
            if all(list(pool.map(lambda rows: _first_in_part(rows, head, tail, first), parts))):
                return first
    encoded = pc.dictionary_encode(pa.chunked_array(_chunks(arrays), pa.string()))
    codes = np.concatenate([c.indices.to_numpy() for c in encoded.chunks] or [np.zeros(0, np.int32)])
    return _first_rows(codes)[codes]


def _strings(cells: np.ndarray) -> pa.Array:
    """A pyarrow string array over numpy void cells, without copying them."""
    offsets = np.arange(len(cells) + 1, dtype=np.int32) * np.int32(cells.itemsize)
    return pa.StringArray.from_buffers(len(cells), pa.py_buffer(offsets), pa.py_buffer(cells))


def _dedup(rows: _Rows, first_of: np.ndarray, label_id: np.ndarray) -> dict:
    """The duplicates part of the report: each row that is not the first of its ID (first_of from
    first_row_of_id) is counted by where and how it differs from that first row."""
    lost = np.flatnonzero(first_of != np.arange(len(first_of)))
    win = first_of[lost]
    split_of_file = np.array([SPLITS.index(s) for _, s, _ in rows.files], np.int8)
    fid_lost, fid_win = rows.fid[lost], rows.fid[win]
    # Small integer codes, most specific last: ORIGINS and KINDS in their order.
    origin = (fid_lost != fid_win).view(np.int8) + (np.take(split_of_file, fid_lost) > np.take(split_of_file, fid_win))
    kind = (rows.raw[lost] != rows.raw[win]).view(np.int8).copy()
    kind[(rows.start[lost] != rows.start[win]) | (rows.end[lost] != rows.end[win])] = 2
    kind[label_id[lost] != label_id[win]] = 3
    table = np.bincount(origin * np.int8(len(KINDS)) + kind,
                        minlength=len(ORIGINS) * len(KINDS)).reshape(len(ORIGINS), -1)
    # IDs listed more than once inside one file, whichever row wins them: rows minus distinct IDs per file.
    bounds = np.searchsorted(rows.fid, np.arange(len(rows.files) + 1))
    seen = np.zeros(len(first_of), bool)
    per_file = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        seen[first_of[lo:hi]] = True
        per_file.append(int(hi - lo - np.count_nonzero(seen)))
        seen[first_of[lo:hi]] = False
    names = label_maps.class_names("k710")

    def describe(i):
        version, split, _ = rows.files[rows.fid[i]]
        return {"source": version, "split": split, "label": names[label_id[i]], "label_as_written":
                rows.raw_names[rows.raw[i]], "start": float(rows.start[i]), "end": float(rows.end[i])}
    report = {
        "rule": DEDUP_RULE,
        "rows_removed": int(len(lost)),
        "by_origin": {o: int(table[i].sum()) for i, o in enumerate(ORIGINS)},
        "by_kind": {k: int(table[:, j].sum()) for j, k in enumerate(KINDS)},
        "by_origin_and_kind": {o: {k: int(table[i, j]) for j, k in enumerate(KINDS)} for i, o in enumerate(ORIGINS)},
        "ids_repeated_within_a_file": {f"{v} {s}": n for (v, s, _), n in zip(rows.files, per_file)},
        "label_conflict_examples": [{"video_id": rows.video_id[int(lost[c])].as_py(),
                                     "kept": describe(win[c]), "removed": describe(lost[c])}
                                    for c in np.flatnonzero(kind == 3)[:20]],
    }
    return report


def _format_numbers(values: np.ndarray, format_one) -> "_Texts":
    """format_one(v) for every value, computed once per distinct value.

    Whole seconds (the official times) are grouped by table lookup instead of hashing."""
    ints = values.astype(np.int64, copy=False)
    whole = values.dtype.kind in "iu" or (ints == values).all()
    if len(values) and whole and ints.min() >= 0 and ints.max() < 1 << 22:
        present = np.zeros(int(ints.max()) + 1, bool)
        present[ints] = True
        used = np.flatnonzero(present)
        position = np.zeros(len(present), np.int32)
        position[used] = np.arange(len(used), dtype=np.int32)
        return _Texts([format_one(v) for v in used.tolist()], position[ints])
    codes, uniques = pd.factorize(values)
    return _Texts([format_one(v) for v in uniques.tolist()], codes)


@dataclass
class _Texts:
    """A text column kept as its distinct texts and, per row, the position of its text."""
    texts: list
    index: np.ndarray

    def array(self) -> pa.Array:
        return pa.array(self.texts, pa.string()).take(pa.array(self.index))

    def rows(self, lo: int, hi: int) -> "_Texts":
        """Rows lo..hi, sharing these distinct texts."""
        return _Texts(self.texts, self.index[lo:hi])

    @cached_property
    def table(self):
        """The distinct texts as numpy void cells when all have one width in bytes (> 0), else None."""
        encoded = [t.encode("utf-8") for t in self.texts]
        widths = {len(e) for e in encoded}
        if len(widths) != 1 or not (width := widths.pop()):
            return None
        return np.frombuffer(b"".join(encoded), f"V{width}")


def _cells(piece, n: int):
    """A piece as fixed-width cells: bytes for a literal; (cells, index) for a _Texts or a pyarrow string
    array whose texts have one width (> 0), row i being cells[index[i]] (cells[i] when index is None);
    else None."""
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if isinstance(piece, _Texts):
        return None if piece.table is None else (piece.table, piece.index)
    values, offsets = _string_bytes(piece)
    width = int(offsets[1] - offsets[0]) if n else 0
    if not width or (np.diff(offsets) != width).any():
        return None
    return values[offsets[0]:offsets[-1]].view(f"V{width}"), None


def _rows_of(cells):
    """For a piece as _cells gives it: (lo, hi) -> the cells of rows lo..hi, or a literal's bytes."""
    if isinstance(cells, bytes):
        return lambda lo, hi: cells
    table, index = cells
    if index is None:
        return lambda lo, hi: table[lo:hi]
    if table.itemsize > 16:
        return lambda lo, hi: table[index[lo:hi]]
    # Cells of up to 16 bytes are looked up as zero-padded 8- or 16-byte numbers: numpy gathers those
    # several times faster than void cells.
    size = 8 if table.itemsize <= 8 else 16
    words = np.zeros(len(table), np.uint64 if size == 8 else np.complex128)
    np.ndarray((len(table), table.itemsize), np.uint8, words, 0, (size, 1))[:] = table.view(np.uint8).reshape(
        len(table), table.itemsize)
    # np.take: twice as fast as fancy indexing for a small table and int16 or int32 indices.
    return lambda lo, hi: np.ndarray(hi - lo, table.dtype, np.take(words, index[lo:hi]), 0, (size,))


def _join(pieces, n: int, prefix: np.ndarray = None, block: int = 1 << 16) -> pa.Array:
    """Row-wise concatenation of pieces (literals, pyarrow string arrays, _Texts); prefix: rows that get '_'.

    When every piece has one width (YouTube IDs, zero-padded times), each row is a fixed-width record and
    each piece a column of it, filled by numpy: several times faster than pyarrow's
    binary_join_element_wise, which does any other case. Rows go in blocks, so that the gathered cells and
    the '_' insertions stay small and in the CPU cache."""
    cells = [_cells(p, n) for p in pieces]
    widths = [len(c) if isinstance(c, bytes) else c[0].itemsize for c in cells if c is not None]
    width = sum(widths)
    if all(c is not None for c in cells) and width and (n + 1) * (width + 1) < 2**31:
        columns = [(start, w, _rows_of(c)) for c, w, start in zip(cells, widths, np.cumsum([0] + widths).tolist())
                   if w]  # (first byte in the record, width, rows -> cells)
        offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
        if prefix is not None:
            offsets[1:] += np.cumsum(prefix, dtype=np.int32)
        data = np.empty(int(offsets[-1]), np.uint8)
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            records = data[lo * width:hi * width] if prefix is None else np.empty((hi - lo) * width, np.uint8)
            for start, w, rows_of in columns:
                value = rows_of(lo, hi)
                if isinstance(value, bytes):  # a literal: the same bytes in every record
                    np.ndarray((hi - lo, w), np.uint8, records, start, (width, 1))[:] = np.frombuffer(value, np.uint8)
                else:
                    np.ndarray(hi - lo, f"V{w}", records, start, (width,))[:] = value
            if prefix is not None:
                data[offsets[lo]:offsets[hi]] = np.insert(records, np.flatnonzero(prefix[lo:hi]) * width,
                                                          np.uint8(ord("_")))
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    arrays = [p.array() if isinstance(p, _Texts) else p for p in pieces]
    if prefix is not None:
        arrays.insert(0, pa.array(["", "_"], pa.string()).take(pa.array(prefix.astype(np.int8))))
    return pc.binary_join_element_wise(*arrays, "")


def _take_strings(array: pa.Array, idx: np.ndarray) -> pa.Array:
    """array.take(idx); equal-width strings (YouTube IDs) are gathered as numpy void cells."""
    cells = _cells(array, len(array))
    if cells is None or (len(idx) + 1) * cells[0].itemsize >= 2**31:
        return array.take(pa.array(idx))
    return _strings(cells[0][idx])


def _nulls(n: int) -> dict:
    """An all-null array of n rows per schema type, sharing one zeroed buffer (zero validity bits = null)."""
    zeros, empty = pa.py_buffer(np.zeros(8 * (n + 1), np.uint8)), pa.py_buffer(b"")
    return {t: pa.Array.from_buffers(t, n, [zeros, zeros, empty] if pa.types.is_string(t) else [zeros, zeros],
                                     null_count=n) for t in {f.type for f in SCHEMA}}


def _time_text(value) -> str:
    """Key piece of a time: 6-digit whole seconds, or a safe decimal ('12.5' -> '000012_500')."""
    return f"{int(value):06d}" if float(value).is_integer() else make_key(f"{value:010.3f}")


def _key_safe(data: np.ndarray, block: int = 1 << 18) -> bool:
    """Whether every byte is one that make_key keeps (A-Z, a-z, 0-9, '_', '-'). Range tests on the bytes
    are three times faster than a table lookup; blocks keep the temporaries in the CPU cache."""
    for lo in range(0, len(data), block):
        part = data[lo:lo + block]
        safe = (part - np.uint8(ord("0"))) < 10
        safe |= ((part | np.uint8(0x20)) - np.uint8(ord("a"))) < 26  # | 0x20 folds A-Z onto a-z
        safe |= part == ord("-")
        safe |= part == ord("_")
        if not safe.all():
            return False
    return True


def _keys(video_id: pa.Array, start_text: "_Texts", end_text: "_Texts"):
    """make_key(video_id, start, end) per row, vectorised for IDs made of safe characters: (keys, the pieces
    that make them or None, whether two IDs may have met in one key, which _unique_keys then checks)."""
    values, offsets = _string_bytes(video_id)
    body = values[offsets[0]:offsets[-1]]
    n = len(video_id)
    pieces = [video_id, "_", start_text, "_", end_text]
    if not _key_safe(body):  # not YouTube IDs: the general path
        safe = pa.array([make_key(v) for v in video_id.to_pylist()], pa.string())
        return _join([safe, *pieces[1:]], n), None, True
    dash = body[offsets[:-1] - offsets[0]] == ord("-")  # make_key puts '_' before a leading '-'
    if not dash.any():
        return _join(pieces, n), pieces, False
    lengths = np.diff(offsets)
    # Only IDs of different lengths can meet once prefixed ('-x' and '_-x'); YouTube IDs all have 11.
    return _join(pieces, n, prefix=dash), None, bool(lengths.min() != lengths.max())


def _unique_keys(keys: pa.Array) -> pa.Array:
    if pc.count_distinct(keys).as_py() != len(keys):
        counts = pc.value_counts(keys)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ManifestError(f"two YouTube IDs give the same key {twice!r} (make_key replaces characters other "
                            "than letters, digits, '_' and '-'); fix the IDs in the input")
    return keys


def _dictionary(indices: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices), dictionary)


_ROW_GROUP = 1 << 17  # rows per row group of the manifests (and per block of the lists) as they are made


class _Stream:
    """Tables handed from the merge to a writer thread one by one, in order, until close()."""

    def __init__(self):
        self._queue = queue.SimpleQueue()

    def put(self, table: pa.Table) -> None:
        self._queue.put(table)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self):
        while (table := self._queue.get()) is not None:
            yield table


def _split_tables(rows: _Rows, idx: np.ndarray, split: str, label_id: np.ndarray, config: BuildK710Config,
                  on_output=None):
    """(manifest table, list table) of the rows idx of one split, made a row group at a time. Each row group
    of the manifest goes to its writer (on_output(name, _Stream)) as soon as it is made, so that the
    longest write of the build starts early and runs while the rest is made; the list goes out whole."""
    n = len(idx)
    start, end, ids = rows.start[idx], rows.end[idx], label_id[idx]
    names = label_maps.class_names("k710")
    start_text, end_text = _format_numbers(start, _time_text), _format_numbers(end, _time_text)
    # The string columns of few distinct values (label, source, split) are handed over dictionary-encoded,
    # with small indices: Parquet stores them so anyway and need not hash them again, and the file is
    # written without the Arrow schema, so readers see the manifest schema's plain strings. A dictionary
    # must not repeat an entry (Parquet would fall back to plain strings): one entry per version.
    version_of_file = np.array([VERSIONS.index(v) for v, _, _ in rows.files], np.int8)
    source = np.take(version_of_file, rows.fid[idx])
    dictionaries = {"source": pa.array(VERSIONS, pa.string()), "label": pa.array(names, pa.string()),
                    "split": pa.array([split], pa.string())}
    used = {name for _, name, _, _ in string.Formatter().parse(config.path_template)}
    # The path fields whose texts are known before any row group: made once, sliced per row group.
    texts = {}
    if "source" in used:
        texts["source"] = _Texts([v for v, _, _ in rows.files], rows.fid[idx])
    if "split" in used:
        texts["split"] = _Texts([split], np.zeros(n, np.int8))
    if "label" in used:
        # The list is space-separated: class names go into paths with '_' for ' '.
        texts["label"] = _Texts([name.replace(" ", "_") for name in names], ids)
    # The key's time texts are what {start:06d} / {end:06d} give for whole seconds: reuse them.
    whole = start.dtype.kind == "i" or (np.round(start) == start).all() and (np.round(end) == end).all()
    # label_id as its text: pyarrow writes a text column faster than it formats numbers.
    label_texts = pa.array([str(i) for i in range(len(names))], pa.string())
    stream = _Stream() if on_output else None
    if stream:
        on_output(f"{split}.parquet", stream)
    manifests, listings, check_keys = [], [], False
    try:
        # All row groups of the manifest first, so that its writer never waits; then the list's blocks.
        groups = [(lo, min(n, lo + _ROW_GROUP)) for lo in range(0, max(n, 1), _ROW_GROUP)]  # empty: one group
        made = []
        for lo, hi in groups:
            m = hi - lo
            video_id = _take_strings(rows.video_id, idx[lo:hi])
            times = start_text.rows(lo, hi), end_text.rows(lo, hi)
            key, key_pieces, unchecked = _keys(video_id, *times)
            check_keys |= unchecked
            columns = {"key": key, "source": _dictionary(source[lo:hi], dictionaries["source"]),
                       "video_id": video_id, "start_sec": pa.array(start[lo:hi].astype(np.float64)),
                       "end_sec": pa.array(end[lo:hi].astype(np.float64)),
                       "label": _dictionary(ids[lo:hi], dictionaries["label"]),
                       "label_id": pa.array(ids[lo:hi], pa.int64()),
                       "split": _dictionary(np.zeros(m, np.int8), dictionaries["split"]),
                       "stride": pa.array(np.full(m, config.stride, np.int64))}
            nulls = _nulls(m)
            arrays = [columns[f.name] if f.name in columns else nulls[f.type] for f in SCHEMA]
            # The columns filled here are never null: declared so, Parquet stores them as required columns,
            # without a definition level per value (a quarter of the manifest's write). read_manifest, and
            # so every vmae step, reads them back in the manifest schema all the same; pyarrow shows them
            # as "not null".
            manifests.append(pa.Table.from_arrays(arrays, schema=pa.schema(
                [pa.field(f.name, a.type, nullable=f.name not in columns) for f, a in zip(SCHEMA, arrays)])))
            if stream:
                stream.put(manifests[-1])
            made.append((video_id, times, key, key_pieces))
        for (lo, hi), (video_id, times, key, key_pieces) in zip(groups, made):
            m = hi - lo
            fields = {"video_id": video_id, "start": start[lo:hi], "end": end[lo:hi], "label_id": ids[lo:hi],
                      "key": key, **{name: column.rows(lo, hi) for name, column in texts.items()}}
            known = {("start", "06d"): times[0], ("end", "06d"): times[1]} if {"start", "end"} & used and whole else {}
            pieces = _template_pieces(config.path_template, fields, known)
            # A path that begins with the key's own pieces (the default template does) copies the key.
            if key_pieces and len(pieces) >= len(key_pieces) and all(
                    a is b or isinstance(a, str) and a == b for a, b in zip(pieces, key_pieces)):
                pieces = [key, *pieces[len(key_pieces):]]
            listings.append(pa.table({"path": _join(pieces, m), "label_id": label_texts.take(pa.array(ids[lo:hi]))}))
        manifest, listing = pa.concat_tables(manifests), pa.concat_tables(listings)
        if check_keys:
            _unique_keys(manifest["key"])
    finally:
        if stream:
            stream.close()
    # Streamed as well, the list's writer competed with the manifest's for the CPU: the build was slower.
    if on_output:
        on_output(f"{split}.csv", listing)
    return manifest, listing


def _leakage(manifests: dict, out_idx: dict, test_first: dict, n: int) -> dict:
    """Surviving rows whose video is in a test list: counted by split and by test file, not removed.

    test_first: per version, for each test row the position of the first labelled row with its ID
    (n or more when none), which is the surviving row of that ID."""
    report = {"rule": "rows kept; their YouTube ID is also in a test file", "rows": {}, "by_test_file": {},
              "examples": []}
    in_any = np.zeros(n, bool)
    for version, first in test_first.items():
        in_this = np.zeros(n, bool)
        in_this[first[first < n]] = True
        in_any |= in_this
        report["by_test_file"][version] = {split: int(in_this[out_idx[split]].sum()) for split in SPLITS}
    for split in SPLITS:
        hit = in_any[out_idx[split]]
        report["rows"][split] = int(hit.sum())
        report["examples"] += [f"{split} {v}" for v in
                               manifests[split]["video_id"].take(pa.array(np.flatnonzero(hit)[:5])).to_pylist()]
    return report


def merge_k710(tables: dict, config: BuildK710Config, on_output=None):
    """The core, without files. tables: {(version, split): (path, table)} as read_annotation returns them;
    it is emptied once the tables' columns have been copied out, so that their memory is reused for the
    outputs (a tenth of the build's time on the full lists).

    Returns ({split: manifest table}, {split: list table}, report); the manifest tables have the manifest
    columns, with label, source and split dictionary-encoded; the list tables hold path and label_id as
    the texts of the list file. on_output(name, value), when given, receives each output as soon as it is
    begun ("train.parquet", "train.csv", "val.parquet", "val.csv"), so that a caller can write it while
    the rest is computed: a manifest as a _Stream that yields its row groups as they are made and ends
    with the last, a list as a table."""
    tests = {v: t["youtube_id"] for (v, s), (_, t) in tables.items() if s == "test"}
    with ThreadPoolExecutor(1) as helper:
        # The IDs are grouped on the other cores while the labels are resolved here.
        grouping = helper.submit(first_row_of_id, [tables[(v, s)][1]["youtube_id"]
                                                   for v, s, _ in _labelled_files(tables)] + list(tests.values()))
        rows = _concat(tables)
        label_id, label_report = _resolve_labels(rows, config)
        known = label_id >= 0
        if not known.all():
            rows, label_id = rows.take(known), label_id[known]
        # The labelled rows' IDs as one array, to take the outputs' from: equal-width IDs as numpy cells.
        cells = _id_cells([rows.video_id])
        rows.video_id = _strings(cells) if cells is not None else rows.video_id.combine_chunks(memory_pool=_POOL)
        first_of = grouping.result()
    if not known.all():
        # Rows with unknown labels leave before deduplication: regroup the rest by the groups just found.
        kept = np.concatenate([np.flatnonzero(known), np.arange(len(known), len(first_of))])
        codes, _ = pd.factorize(first_of[kept])
        first_of = _first_rows(codes)[codes]
    n = len(rows.fid)
    bounds = np.cumsum([n] + [len(ids) for ids in tests.values()])
    test_first = {v: first_of[lo:hi] for v, lo, hi in zip(tests, bounds[:-1], bounds[1:])}
    tests = None
    tables.clear()  # see the docstring
    names = label_maps.class_names("k710")
    manifests, lists, out_idx, present = {}, {}, {}, {}
    file_bounds = np.searchsorted(rows.fid, np.arange(len(rows.files) + 1)).tolist()
    # The duplicate counts are made on the other core meanwhile (numpy releases the GIL).
    with ThreadPoolExecutor(1) as helper:
        dedup = helper.submit(_dedup, rows, first_of[:n], label_id)
        for split in SPLITS:
            # The first row of each ID survives (see DEDUP_RULE). Output order: K400, K600, K700, each in
            # its file's order.
            files = sorted((VERSIONS.index(v), f) for f, (v, s, _) in enumerate(rows.files) if s == split)
            idx = np.concatenate([np.zeros(0, np.int64)] + [
                lo + np.flatnonzero(first_of[lo:hi] == np.arange(lo, hi))
                for lo, hi in ((file_bounds[f], file_bounds[f + 1]) for _, f in files)])
            manifests[split], lists[split] = _split_tables(rows, idx, split, label_id, config, on_output)
            out_idx[split] = idx
            present[split] = np.bincount(label_id[idx], minlength=len(names)) > 0
        dup_report = dedup.result()
    report = {"labels": label_report, "duplicates": dup_report,
              "val_in_train_removed": dup_report["by_origin"]["val_in_train"],
              "label_conflicts": dup_report["by_kind"]["label_conflict"],
              "test_leakage": _leakage(manifests, out_idx, test_first, n),
              "rows_out": {s: manifests[s].num_rows for s in SPLITS},
              "classes_present": {s: int(present[s].sum()) for s in SPLITS},
              "classes_absent": {s: [names[i] for i in np.flatnonzero(~present[s])] for s in SPLITS}}
    return manifests, lists, report


# -------------------------------------------------------------------------------------------- the build

def build_k710(k400_dir, k600_dir, k700_dir, out_dir, config: BuildK710Config = BuildK710Config()) -> dict:
    """Merge the official K400/K600/K700 lists (any may be None) into OUT; return the report."""
    out_dir = Path(out_dir)
    folders = {v: d for v, d in zip(VERSIONS, (k400_dir, k600_dir, k700_dir)) if d is not None}
    if not folders:
        raise ManifestError("no annotation folder given; pass at least one of --k400, --k600, --k700")
    skipped = [f"{v}: no --{v} folder given" for v in VERSIONS if v not in folders]
    located = {}
    for version, folder in folders.items():
        found, missing = find_annotation_files(version, folder)
        if out_dir.resolve() == Path(folder).resolve():
            raise ManifestError(f"--out is the --{version} input folder; its train.csv and val.csv would be "
                                "overwritten. Choose another --out", out_dir)
        skipped += [f"{version} {split}: no {split}.csv in {folder}" for split in missing]
        located.update({(version, split): path for split, path in found.items()})
    if not any(split in SPLITS for _, split in located):
        raise ManifestError("no train or val file in any folder; nothing to build")
    order = sorted(located, key=lambda k: (VERSIONS.index(k[0]), ("train", "val", "test").index(k[1])))
    with reuse_freed_memory():
        return _build(located, order, folders, skipped, out_dir, config)


def _build(located: dict, order: list, folders: dict, skipped: list, out_dir: Path, config: BuildK710Config):
    """build_k710 once the inputs are found: read them, merge, write the outputs."""
    with ThreadPoolExecutor(2) as pool:  # pyarrow parses without the GIL
        # The largest files first, so that no big one is left to parse alone at the end; errors surface
        # in file order.
        jobs = {key: pool.submit(read_annotation, located[key], key[1])
                for key in sorted(order, key=lambda key: -located[key].stat().st_size)}
        tables = {key: (located[key], jobs[key].result()) for key in order}
    inputs = {v: {s: {"file": str(p), "rows": t.num_rows} for (v2, s), (p, t) in tables.items() if v2 == v}
              for v in folders}
    with _output_writer(out_dir) as write:
        # Each table is written while the next ones are computed; the train manifest, the longest
        # write, starts before the paths and the val split are made.
        _, _, merged = merge_k710(tables, config, on_output=write)
        report = {"inputs": inputs,
                  "skipped": skipped, **merged,
                  "outputs": {name: str(out_dir / name) for name in OUTPUTS},
                  "config": {**asdict(config), "label_aliases": dict(config.label_aliases)}}
        write("labels.txt", label_maps.data_file("label_map_k710.txt").read_bytes())
        write("report.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report


def _write_output(name: str, value, path: Path) -> None:
    """Write one output: bytes as they are, a table or a _Stream of tables (row groups) as Parquet or as the
    space-separated list."""
    if isinstance(value, bytes):
        path.write_bytes(value)
        return
    tables = iter(value) if isinstance(value, _Stream) else iter([value])
    first = next(tables, None)
    if first is None:  # the merge failed before the first row group; the build is failing
        return
    if name.endswith(".parquet"):
        # No statistics, and neither dictionary nor compression for the unique key/video_id (random IDs
        # barely compress) or the times (hashing each of them was a sixth of the write): the full K710 train
        # manifest is 41 MB instead of 31 MB and written a tenth faster.
        unique = ("key", "video_id", "start_sec", "end_sec")
        plain = [c for c in SCHEMA.names if c not in unique]
        compression = {c: "none" if c in unique else "snappy" for c in SCHEMA.names}
        writer = pq.ParquetWriter(path, first.schema, store_schema=False, use_dictionary=plain,
                                  write_statistics=False, compression=compression, memory_pool=_POOL)
    else:
        # Batches of 8192 rows: a quarter faster than the default 1024 on the K710 train list.
        options = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none", batch_size=1 << 13)
        writer = pcsv.CSVWriter(path, first.schema, write_options=options, memory_pool=_POOL)
    with writer:
        writer.write_table(first)
        for table in tables:
            writer.write_table(table)


@contextmanager
def _output_writer(out_dir: Path):
    """Yield write(name, table or bytes), which writes that output to a temporary name in a thread
    (pyarrow writes without holding the GIL) while the caller goes on. All outputs are renamed only when
    the block ends and every write has succeeded, report.json last. On failure no output is left; a
    failure of the caller (bad input) also removes the folder if this build made it."""
    made_here, caller_failed = not out_dir.exists(), False
    try:
        with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
            # ExitStack renames in reverse order of entry: report.json, entered first, appears last. The
            # pool closes first, so nothing is renamed before every write has finished. The temporary
            # names (and the folder) are made with the first output.
            tmp, jobs = {}, []

            def write(name, value):
                if not tmp:
                    tmp.update({n: stack.enter_context(atomic_path(out_dir / n)) for n in reversed(OUTPUTS)})
                jobs.append(pool.submit(_write_output, name, value, tmp[name]))
            try:
                yield write
            except BaseException:
                caller_failed = True
                raise
            for job in jobs:
                job.result()
    finally:
        if caller_failed and made_here and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


# ------------------------------------------------------------------------------------------------ summary

def format_summary(report: dict) -> str:
    """A short human-readable account of a build report."""
    lines = ["Kinetics-710 build"]
    for version, splits in report["inputs"].items():
        lines.append(f"  in   {version}: " + ", ".join(f"{s} {x['rows']:,}" for s, x in splits.items()))
    for note in report["skipped"]:
        lines.append(f"  skipped  {note}")
    labels = report["labels"]
    by_how = {}
    for m in labels["mapped"]:
        by_how.setdefault(m["how"], [0, 0])
        by_how[m["how"]][0] += 1
        by_how[m["how"]][1] += m["rows"]
    if by_how:
        lines.append("  labels mapped: " + ", ".join(f"{how} {n} names ({rows:,} rows)"
                                                     for how, (n, rows) in sorted(by_how.items())))
    if labels["unknown"]:
        lines.append(f"  unknown labels: {len({u['label'] for u in labels['unknown']})} names, "
                     f"{labels['unknown_rows_dropped']:,} rows dropped")
    dup = report["duplicates"]
    lines.append(f"  duplicates removed: {dup['rows_removed']:,} ("
                 + ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in dup["by_origin"].items()) + ")")
    lines.append("    by kind: " + ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in dup["by_kind"].items()))
    within = sum(dup["ids_repeated_within_a_file"].values())
    if within:
        lines.append(f"    IDs repeated within one file: {within:,} rows")
    lines.append(f"  val rows removed because the video is in train: {report['val_in_train_removed']:,}")
    lines.append(f"  label conflicts (kept the winning row's class): {report['label_conflicts']:,}")
    leak = report["test_leakage"]["rows"]
    lines.append("  test leakage (kept, see report.json): " + ", ".join(f"{s} {n:,}" for s, n in leak.items()))
    lines.append("  out  " + ", ".join(f"{s} {n:,} rows / {report['classes_present'][s]} classes"
                                        for s, n in report["rows_out"].items()))
    lines.append(f"  wrote {Path(report['outputs']['report.json']).parent}/: {', '.join(OUTPUTS)}")
    return "\n".join(lines)
