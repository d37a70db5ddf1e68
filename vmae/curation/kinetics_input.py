"""The inputs of the K710 build: the official Kinetics annotation CSVs (found, read, checked row by row) and
the labels written in them (placed on the 710 K710 classes).

Files: one folder per version with the CVDF files train.csv, val.csv (or validate.csv) and optionally
test.csv; DeepMind's names (kinetics-400_val.csv, kinetics_700_train.csv, ...) are found too. Columns are
read by name: label, youtube_id, time_start, time_end; split and is_cc are ignored (the split is the file's).
Test files need only youtube_id.

Rows are checked before anything is built, and the first bad row stops the build with its file and line:
- youtube_id: letters, digits, '_', '-' and single dots between them, at most MAX_ID_LENGTH characters
  (YouTube IDs are 11 characters of [A-Za-z0-9_-]). IDs become keys, file names and template-filled
  paths, so no path separator, whitespace or '..' may reach them.
- time_start, time_end: finite numbers with 0 <= start < end <= MAX_TIME_SEC, seconds into the video.
  The bound is far above any YouTube video and keeps keys short (a time of 1e300 would make a
  620-character key, too long for a file name).
- label: not blank.
"""
import codecs
import csv
import difflib
import io
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from vmae.manifests import ManifestError
from vmae.manifests import labels as label_maps

MAX_ID_LENGTH = 64
MAX_TIME_SEC = 24 * 3600
COLUMNS = {"train": ("label", "youtube_id", "time_start", "time_end"),
           "val": ("label", "youtube_id", "time_start", "time_end"),
           "test": ("youtube_id",)}
_TYPES = {"label": pa.string(), "youtube_id": pa.string(), "time_start": pa.float64(), "time_end": pa.float64()}
_OFFICIAL_HEADER = "label,youtube_id,time_start,time_end,split (K400 adds is_cc; test files have no label)"
_ID = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


# ------------------------------------------------------------------------------------------------ files

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
    """The columns COLUMNS[split] of one official Kinetics CSV (IDs and labels as strings, times as float64).

    Raises ManifestError naming the file and line of the first bad row."""
    path = Path(path)
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if not data or data.isspace():
        raise ManifestError(f"the file is empty; expected the official header {_OFFICIAL_HEADER}", path, line=1)
    try:
        header = next(csv.reader([io.BytesIO(data).readline().rstrip(b"\r\n").decode("utf-8")]))
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text; re-save the file as UTF-8", path, line=1) from None
    columns = COLUMNS[split]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ManifestError(f"missing column(s) {missing}; found {header}; the official header is "
                            f"{_OFFICIAL_HEADER}", path, line=1)
    options = pcsv.ConvertOptions(include_columns=list(columns), column_types={c: _TYPES[c] for c in columns},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        table = pcsv.read_csv(pa.BufferReader(data), convert_options=options)
    except pa.ArrowInvalid as e:
        raise _first_problem(path, data, header, split, fallback=str(e)) from None
    if not _all_rows_ok(table):
        raise _first_problem(path, data, header, split, fallback="invalid values")
    return table


def _all_rows_ok(table: pa.Table) -> bool:
    """The row checks (see the module notes) on whole columns; _first_problem then explains a failure."""
    ids = table["youtube_id"]
    if pc.any(pc.invert(pc.match_substring_regex(ids, _ID))).as_py() or pc.any(
            pc.greater(pc.utf8_length(ids), MAX_ID_LENGTH)).as_py():
        return False
    if "label" not in table.column_names:
        return True
    if any(not name.strip() for name in pc.unique(table["label"]).to_pylist()):
        return False
    # Empty and 'nan' times are read as nulls: NaN here.
    start, end = (table[c].to_numpy() for c in ("time_start", "time_end"))
    with np.errstate(invalid="ignore"):
        return bool(((start >= 0) & (end > start) & (end <= MAX_TIME_SEC)).all())


def _row_problem(row: dict, split: str):
    """Why one row (a dict of strings) is unusable, or None; the slow twin of _all_rows_ok."""
    video = row["youtube_id"]
    if not video.strip():
        return "empty youtube_id"
    if any(ch.isspace() for ch in video):
        return f"youtube_id {video!r} contains whitespace"
    if len(video) > MAX_ID_LENGTH:
        return f"youtube_id {video[:20]!r}... has {len(video)} characters (at most {MAX_ID_LENGTH})"
    if not re.fullmatch(_ID, video):
        return (f"youtube_id {video!r} is not a YouTube ID: use letters, digits, '_', '-' and single dots "
                "between them (no path separators, no '..')")
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
        if times[name] > MAX_TIME_SEC:
            return (f"{name} {text} is beyond {MAX_TIME_SEC} s (24 h); times are seconds into the video "
                    f"(youtube_id {video!r})")
    if times["time_start"] < 0:
        return f"time_start {row['time_start']} is negative (youtube_id {video!r})"
    if times["time_end"] <= times["time_start"]:
        return f"time_end {row['time_end']} is not after time_start {row['time_start']} (youtube_id {video!r})"
    return None


def _first_problem(path, data: bytes, header, split: str, fallback: str) -> ManifestError:
    """Scan the file row by row (only after the column checks failed) for the first bad row; count bad rows."""
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

    The rules in order: (1) the label is a K710 name ("exact"); (2) the rename table
    k710_identical_label_merge.json ("renamed"); (3) the same two ignoring case, spacing and underscores
    ("case_or_spacing", or "renamed"); (4) the user's aliases {label: K710 name} ("alias"). Because (1)
    comes first, 'throwing ball' stays its own K710 class although the rename table lists it (the official
    label maps keep it too)."""
    name, how = _builtin_label(raw)
    if name is None and aliases:
        folded = {_fold(k): v for k, v in aliases.items()}
        name = aliases.get(raw, folded.get(_fold(raw)))
        how = "alias" if name is not None else None
    return name, how


def closest_names(name: str) -> str:
    """' (closest K710 names: ...)' for a message, or ''."""
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
            problems.append(f"{old!r} -> {new!r}: {new!r} is not a K710 class name{closest_names(new)}")
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
