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
- Outputs in OUT/: train.parquet and val.parquet (manifest schema, stride 4, key
  `{video_id}_{start:06d}_{end:06d}` made safe), labels.txt (label_map_k710.txt byte for byte, so label_id
  = line number), train.csv and val.csv in the VideoMAE V2 finetune list format (`path label_id`, paths from
  the template; `{label}` is written with '_' for spaces because the list is space-separated), and
  report.json. All are written under temporary names and renamed only once everything has succeeded.
- Bad input (missing columns, non-numeric or reversed times, empty IDs or labels, IDs with whitespace, an
  empty or non-UTF-8 file, a folder with no CSV) stops the build with the file and line, before any output.

Speed: each CSV is parsed once by pyarrow (labels dictionary-encoded while parsing), labels are resolved on
their distinct values, and the IDs of every file are hashed in one pass; everything after is numpy.
"""
import codecs
import csv
import difflib
import io
import json
import re
import string
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
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
_TYPES = {"label": pa.dictionary(pa.int32(), pa.string()), "youtube_id": pa.string(),
          "time_start": pa.float64(), "time_end": pa.float64()}
_OFFICIAL_HEADER = "label,youtube_id,time_start,time_end,split (K400 adds is_cc; test files have no label)"
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[list(b" \t\n\r\v\f")] = True
_UNSAFE = np.ones(256, bool)  # bytes make_key would replace
_UNSAFE[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")] = False
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


def render(template: str, columns: Mapping, n: int, known: Mapping = None) -> pa.Array:
    """Format template for n rows; columns are pyarrow string arrays, _Texts or numpy number arrays.

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
    return _join(pieces, n)


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
    options = pcsv.ConvertOptions(include_columns=list(need), column_types={c: _TYPES[c] for c in need},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        # pyarrow reads the file itself (and skips a BOM): no copy of it in Python memory.
        table = pcsv.read_csv(str(path), convert_options=options)
    except pa.ArrowInvalid as e:
        raise _first_problem(path, _contents(path), header, split, fallback=str(e)) from None
    if _has_problem(table, split):
        raise _first_problem(path, _contents(path), header, split, fallback="invalid values")
    return table


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
    pos: np.ndarray      # row number within its file (0-based, data rows)
    video_id: pa.Array
    start: np.ndarray
    end: np.ndarray
    raw: np.ndarray      # code of the label as written, into raw_names
    raw_names: list

    def take(self, keep: np.ndarray) -> "_Rows":
        return _Rows(self.files, self.fid[keep], self.pos[keep], self.video_id.filter(pa.array(keep)),
                     self.start[keep], self.end[keep], self.raw[keep], self.raw_names)


def _priority(file) -> tuple:
    version, split, _ = file
    return SPLITS.index(split), -VERSIONS.index(version)


def _concat(tables: dict) -> _Rows:
    files = sorted(((v, s, p) for (v, s), (p, _) in tables.items() if s in SPLITS), key=_priority)
    parts = [tables[(v, s)][1] for v, s, _ in files]
    sizes = [t.num_rows for t in parts]
    table = pa.concat_tables(parts)
    label = table["label"].unify_dictionaries()
    # Small integer types: these arrays have a row per input row and are gathered many times.
    return _Rows(files=files, fid=np.repeat(np.arange(len(files), dtype=np.int16), sizes),
                 pos=np.concatenate([np.arange(n, dtype=np.int32) for n in sizes]),
                 video_id=table["youtube_id"].combine_chunks(),
                 start=table["time_start"].to_numpy(), end=table["time_end"].to_numpy(),
                 raw=np.concatenate([c.indices.to_numpy() for c in label.chunks] or [np.zeros(0, np.int32)]),
                 raw_names=label.chunk(0).dictionary.to_pylist() if label.num_chunks else [])


def _resolve_labels(rows: _Rows, config: BuildK710Config):
    """K710 id per row (-1 = unknown) and the label part of the report."""
    k710 = label_maps.class_ids("k710")
    resolved = [resolve_label(raw, config.label_aliases) for raw in rows.raw_names]
    id_of_raw = np.array([k710[name] if name else -1 for name, _ in resolved], dtype=np.int16)
    label_id = id_of_raw[rows.raw]
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


def _packed_ids(arrays) -> np.ndarray | None:
    """IDs as two 64-bit words each (zero-padded bytes) when all have one width of at most 16 bytes."""
    parts = [_string_bytes(a) for a in arrays if len(a)]
    widths = {int(offsets[1] - offsets[0]) for _, offsets in parts}
    if len(widths) != 1 or not 0 < (width := widths.pop()) <= 16:
        return None
    if any((np.diff(offsets) != width).any() for _, offsets in parts):
        return None
    padded = np.zeros((sum(len(o) - 1 for _, o in parts), 16), np.uint8)
    row = 0
    for values, offsets in parts:
        n = len(offsets) - 1
        padded[row:row + n, :width] = values[offsets[0]:offsets[-1]].reshape(n, width)
        row += n
    return padded.view(np.uint64)


def _first_of_hash(hashes: np.ndarray) -> np.ndarray:
    """For every row, the position of the first row with the same hash.

    The rows are split into 64 partitions by their top hash bits first, so that each hash table stays
    small enough for the CPU cache; that halves the time of one big table on a million IDs."""
    bucket = (hashes >> np.uint64(58)).astype(np.uint8)
    order = np.argsort(bucket, kind="stable")
    ordered = hashes[order]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=64))])
    first = np.empty(len(hashes), np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        codes, _ = pd.factorize(ordered[lo:hi])
        first[lo:hi] = order[lo + _first_rows(codes)[codes]]  # stable order: the earliest row of the group
    result = np.empty_like(first)
    result[order] = first
    return result


def first_row_of_id(arrays) -> np.ndarray:
    """For every row of the concatenated string arrays, the position of the first row with the same ID.

    YouTube IDs all have 11 bytes: equal-width IDs of up to 16 bytes are packed into two 64-bit words and
    hashed with numpy; the grouping is then checked word for word, so it is exact. Other IDs (or a hash
    collision) take pyarrow's general string hashing."""
    words = _packed_ids(arrays)
    if words is not None:
        first = _first_of_hash(words[:, 0] ^ (words[:, 1] * np.uint64(0x9E3779B97F4A7C15)))
        twins = np.flatnonzero(first != np.arange(len(first)))
        if (words[first[twins]] == words[twins]).all():
            return first
    encoded = pc.dictionary_encode(pa.chunked_array(arrays, pa.string()))
    codes = np.concatenate([c.indices.to_numpy() for c in encoded.chunks] or [np.zeros(0, np.int32)])
    return _first_rows(codes)[codes]


def _dedup(rows: _Rows, first_of: np.ndarray, label_id: np.ndarray):
    """Mask of surviving rows and the duplicates part of the report; first_of from first_row_of_id."""
    keep = first_of == np.arange(len(first_of))
    lost = np.flatnonzero(~keep)
    win = first_of[lost]
    split_of_file = np.array([SPLITS.index(s) for _, s, _ in rows.files])
    origin = np.where(rows.fid[lost] == rows.fid[win], 0,
                      np.where(split_of_file[rows.fid[lost]] > split_of_file[rows.fid[win]], 2, 1))
    same_segment = (rows.start[lost] == rows.start[win]) & (rows.end[lost] == rows.end[win])
    kind = np.where(label_id[lost] != label_id[win], 3,
                    np.where(~same_segment, 2, np.where(rows.raw[lost] != rows.raw[win], 1, 0)))
    table = np.bincount(origin * len(KINDS) + kind, minlength=len(ORIGINS) * len(KINDS)).reshape(len(ORIGINS), -1)
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
    return keep, report


def _format_numbers(values: np.ndarray, format_one) -> "_Texts":
    """format_one(v) for every value, computed once per distinct value.

    Whole seconds (the official times) are grouped by table lookup instead of hashing."""
    ints = values.astype(np.int64)
    if len(values) and (ints == values).all() and ints.min() >= 0 and ints.max() < 1 << 22:
        present = np.zeros(int(ints.max()) + 1, bool)
        present[ints] = True
        used = np.flatnonzero(present)
        position = np.zeros(len(present), np.int64)
        position[used] = np.arange(len(used))
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

    @cached_property
    def matrix(self):
        """(rows, width) bytes when all texts have one width in bytes, else None."""
        encoded = [t.encode("utf-8") for t in self.texts]
        widths = {len(e) for e in encoded} or {0}
        if len(widths) > 1:
            return None
        table = np.frombuffer(b"".join(encoded), np.uint8).reshape(len(encoded), widths.pop())
        return table[self.index]


def _byte_matrix(piece, n: int):
    """(n, width) bytes of a literal, a _Texts or a pyarrow string array of one width; else None."""
    if isinstance(piece, str):
        data = np.frombuffer(piece.encode("utf-8"), np.uint8)
        return np.broadcast_to(data, (n, len(data)))
    if isinstance(piece, _Texts):
        return piece.matrix
    values, offsets = _string_bytes(piece)
    width = int(offsets[1] - offsets[0]) if n else 0
    if (np.diff(offsets) != width).any():
        return None
    return values[offsets[0]:offsets[-1]].reshape(n, width)


def _join(pieces, n: int, prefix: np.ndarray = None) -> pa.Array:
    """Row-wise concatenation of pieces (literals, pyarrow string arrays, _Texts); prefix: rows that get '_'.

    Pieces of one width each (YouTube IDs, zero-padded times) are laid side by side in one numpy byte
    matrix, several times faster than pyarrow's binary_join_element_wise, which does any other case."""
    matrices = [_byte_matrix(p, n) for p in pieces]
    width = sum(m.shape[1] for m in matrices if m is not None)
    if all(m is not None for m in matrices) and (n + 1) * (width + 1) < 2**31:
        out = np.empty((n, width), np.uint8)
        column = 0
        for m in matrices:
            out[:, column:column + m.shape[1]] = m
            column += m.shape[1]
        data, offsets = out.reshape(-1), np.arange(n + 1, dtype=np.int32) * np.int32(width)
        if prefix is not None:
            # A '_' before each prefixed row: stitch the runs between them (no full-size mask or index).
            cuts = [0, *(np.flatnonzero(prefix) * width).tolist(), len(data)]
            underscore = np.frombuffer(b"_", np.uint8)
            runs = [data[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
            data = np.concatenate([runs[0]] + [part for run in runs[1:] for part in (underscore, run)])
            offsets[1:] += np.cumsum(prefix, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    arrays = [p.array() if isinstance(p, _Texts) else p for p in pieces]
    if prefix is not None:
        arrays.insert(0, pa.array(["", "_"], pa.string()).take(pa.array(prefix.astype(np.int8))))
    return pc.binary_join_element_wise(*arrays, "")


def _take_strings(array: pa.Array, idx: np.ndarray) -> pa.Array:
    """array.take(idx); equal-width strings (YouTube IDs) are gathered as a numpy byte matrix."""
    matrix = _byte_matrix(array, len(array))
    if matrix is None or not len(array) or (len(idx) + 1) * matrix.shape[1] >= 2**31:
        return array.take(pa.array(idx))
    width = matrix.shape[1]
    offsets = np.arange(len(idx) + 1, dtype=np.int64) * width
    return pa.StringArray.from_buffers(len(idx), pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(np.ascontiguousarray(matrix[idx])))


def _nulls(n: int) -> dict:
    """An all-null array of n rows per schema type, sharing one zeroed buffer (zero validity bits = null)."""
    zeros, empty = pa.py_buffer(np.zeros(8 * (n + 1), np.uint8)), pa.py_buffer(b"")
    return {t: pa.Array.from_buffers(t, n, [zeros, zeros, empty] if pa.types.is_string(t) else [zeros, zeros],
                                     null_count=n) for t in {f.type for f in SCHEMA}}


def _time_text(value) -> str:
    """Key piece of a time: 6-digit whole seconds, or a safe decimal ('12.5' -> '000012_500')."""
    return f"{int(value):06d}" if float(value).is_integer() else make_key(f"{value:010.3f}")


def _keys(video_id: pa.Array, start_text: "_Texts", end_text: "_Texts") -> pa.Array:
    """make_key(video_id, start, end) per row for unique IDs, vectorised for IDs made of safe characters."""
    values, offsets = _string_bytes(video_id)
    body = values[offsets[0]:offsets[-1]]
    n = len(video_id)
    if _UNSAFE[body].any():  # not YouTube IDs: the general path
        safe = pa.array([make_key(v) for v in video_id.to_pylist()], pa.string())
        return _unique_keys(_join([safe, "_", start_text, "_", end_text], n))
    dash = body[offsets[:-1] - offsets[0]] == ord("-")  # make_key puts '_' before a leading '-'
    keys = _join([video_id, "_", start_text, "_", end_text], n, prefix=dash if dash.any() else None)
    lengths = np.diff(offsets)
    # Only IDs of different lengths can meet once prefixed ('-x' and '_-x'); YouTube IDs all have 11.
    return _unique_keys(keys) if dash.any() and lengths.min() != lengths.max() else keys


def _unique_keys(keys: pa.Array) -> pa.Array:
    if pc.count_distinct(keys).as_py() != len(keys):
        counts = pc.value_counts(keys)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ManifestError(f"two YouTube IDs give the same key {twice!r} (make_key replaces characters other "
                            "than letters, digits, '_' and '-'); fix the IDs in the input")
    return keys


def _split_tables(rows: _Rows, idx: np.ndarray, split: str, label_id: np.ndarray, config: BuildK710Config):
    """(manifest table, list table) of the rows idx of one split."""
    n = len(idx)
    video_id = _take_strings(rows.video_id, idx)
    start, end, ids = rows.start[idx], rows.end[idx], label_id[idx]
    names = label_maps.class_names("k710")
    # label, source and split stay dictionary-encoded: Parquet stores them so anyway, and the file is
    # written without the Arrow schema, so readers see the manifest schema's plain strings.
    source = pa.DictionaryArray.from_arrays(pa.array(rows.fid[idx], pa.int32()),
                                            pa.array([v for v, _, _ in rows.files], pa.string()))
    label = pa.DictionaryArray.from_arrays(pa.array(ids, pa.int32()), pa.array(names, pa.string()))
    split_column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([split], pa.string()))
    start_text, end_text = _format_numbers(start, _time_text), _format_numbers(end, _time_text)
    key = _keys(video_id, start_text, end_text)
    label_column = pa.array(ids, pa.int64())
    columns = {"key": key, "source": source, "video_id": video_id, "start_sec": pa.array(start, pa.float64()),
               "end_sec": pa.array(end, pa.float64()), "label": label, "label_id": label_column,
               "split": split_column, "stride": pa.array(np.full(n, config.stride, np.int64))}
    nulls = _nulls(n)
    manifest = pa.table([columns[f.name] if f.name in columns else nulls[f.type] for f in SCHEMA], names=SCHEMA.names)
    fields = {"video_id": video_id, "start": start, "end": end, "label_id": ids, "key": key,
              "source": _Texts([v for v, _, _ in rows.files], rows.fid[idx]), "split": _Texts([split], np.zeros(n, int))}
    if "label" in {name for _, name, _, _ in string.Formatter().parse(config.path_template)}:
        # The list is space-separated: class names go into paths with '_' for ' '.
        fields["label"] = _Texts([name.replace(" ", "_") for name in names], ids)
    # The key's time texts are what {start:06d} / {end:06d} give for whole seconds: reuse them.
    known = {("start", "06d"): start_text, ("end", "06d"): end_text} if (
        (np.round(start) == start).all() and (np.round(end) == end).all()) else {}
    paths = render(config.path_template, fields, n, known)
    return manifest, pa.table({"path": paths, "label_id": label_column})


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


def merge_k710(tables: dict, config: BuildK710Config):
    """The pure core. tables: {(version, split): (path, table)} as read_annotation returns them.

    Returns ({split: manifest table}, {split: list table}, report); the manifest tables have the manifest
    columns, with label, source and split dictionary-encoded."""
    rows = _concat(tables)
    label_id, label_report = _resolve_labels(rows, config)
    known = label_id >= 0
    if not known.all():
        rows, label_id = rows.take(known), label_id[known]
    tests = {v: t["youtube_id"].combine_chunks() for (v, s), (_, t) in tables.items() if s == "test"}
    first_of = first_row_of_id([rows.video_id, *tests.values()])
    n = len(rows.fid)
    bounds = np.cumsum([n] + [len(ids) for ids in tests.values()])
    test_first = {v: first_of[lo:hi] for v, lo, hi in zip(tests, bounds[:-1], bounds[1:])}
    keep, dup_report = _dedup(rows, first_of[:n], label_id)
    split_of_row = np.array([SPLITS.index(s) for _, s, _ in rows.files], dtype=np.int8)[rows.fid]
    version_of_file = np.array([VERSIONS.index(v) for v, _, _ in rows.files])
    names = label_maps.class_names("k710")
    manifests, lists, out_idx, present = {}, {}, {}, {}
    for i, split in enumerate(SPLITS):
        idx = np.flatnonzero(keep & (split_of_row == i))
        # Output order: K400, K600, K700, each in its file's order.
        idx = idx[np.argsort(version_of_file[rows.fid[idx]], kind="stable")]
        manifests[split], lists[split] = _split_tables(rows, idx, split, label_id, config)
        out_idx[split] = idx
        present[split] = np.bincount(label_id[idx], minlength=len(names)) > 0
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
    with ThreadPoolExecutor(2) as pool:  # pyarrow parses without the GIL; errors surface in file order
        parsed = list(pool.map(lambda key: read_annotation(located[key], key[1]), order))
    tables = {key: (located[key], table) for key, table in zip(order, parsed)}
    manifests, lists, merged = merge_k710(tables, config)
    report = {"inputs": {v: {s: {"file": str(p), "rows": t.num_rows} for (v2, s), (p, t) in tables.items() if v2 == v}
                         for v in folders},
              "skipped": skipped, **merged,
              "outputs": {name: str(out_dir / name) for name in OUTPUTS},
              "config": {**asdict(config), "label_aliases": dict(config.label_aliases)}}
    _write_outputs(out_dir, manifests, lists, report)
    return report


def _write_outputs(out_dir: Path, manifests: dict, lists: dict, report: dict) -> None:
    """Write every output under a temporary name; rename them only when all are written (report.json last)."""
    list_options = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        # ExitStack renames in reverse order of entry: report.json, entered first, appears last. The pool
        # closes first, so nothing is renamed before every write has finished.
        tmp = {name: stack.enter_context(atomic_path(out_dir / name)) for name in reversed(OUTPUTS)}
        # pyarrow writes without holding the GIL: the files are written side by side.
        # No statistics and no dictionary for the unique key/video_id: a fifth faster, the same size.
        plain = [c for c in SCHEMA.names if c not in ("key", "video_id")]
        jobs = [pool.submit(pq.write_table, manifests[split], tmp[f"{split}.parquet"], store_schema=False,
                            use_dictionary=plain, write_statistics=False) for split in SPLITS]
        jobs += [pool.submit(pcsv.write_csv, lists[split], tmp[f"{split}.csv"], write_options=list_options)
                 for split in SPLITS]
        tmp["labels.txt"].write_bytes(label_maps.data_file("label_map_k710.txt").read_bytes())
        tmp["report.json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for job in jobs:
            job.result()


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
