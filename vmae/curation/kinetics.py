"""Kinetics-710 ("LabeledHybrid"): merge the official K400/K600/K700 annotation lists into one
deduplicated 710-class set, as the VideoMAE V2 paper describes.

The annotation files are found, read and checked by vmae.curation.kinetics_input: a version or split that
is absent is reported and skipped, a bad row stops the build with its file and line before any output.

Decisions:
- Labels become K710 names by resolve_label's rules. A label none of them places is an error that lists
  each label with its file and row count, unless on_unknown_label="drop", which drops those rows before
  deduplication and reports them.
- Deduplication: see DEDUP_RULE. Every removed row is counted by where its twin was (same file, another
  version of the same split, a val row whose video is in train) and by how it differed (nothing, only the
  label's spelling, the segment, the K710 class).
- Test leakage: surviving videos whose ID is in any version's test file are counted, not removed.
- Outputs in OUT/: train.parquet and val.parquet (manifest schema, the columns always filled stored as
  required ones; stride 4, key `{video_id}_{start:06d}_{end:06d}` made safe), labels.txt
  (label_map_k710.txt byte for byte, so label_id = line number), train.csv and val.csv in the VideoMAE V2
  finetune list format (`path label_id`, paths from the template; `{label}` is written with '_' for spaces
  because the list is space-separated), and report.json. All are made in memory first, written under
  temporary names, checked, and renamed only once every write has succeeded: a failed build leaves OUT as
  it was.
"""
import io
import json
import string
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from vmae.atomic import atomic_path
from vmae.config import option
from vmae.curation.kinetics_input import (check_aliases, closest_names, find_annotation_files,
                                          load_label_aliases, read_annotation, resolve_label)
from vmae.curation.templates import CVDF_TEMPLATE
from vmae.errors import OutputError
from vmae.manifests import SCHEMA, ManifestError
from vmae.manifests import labels as label_maps

__all__ = ["BuildK710Config", "build_k710", "merge_k710", "format_summary", "load_label_aliases",
           "resolve_label", "check_template", "DEDUP_RULE", "OUTPUTS"]

VERSIONS = ("k400", "k600", "k700")  # oldest first: a newer version wins a tie
SPLITS = ("train", "val")
TEMPLATE_FIELDS = ("video_id", "start", "end", "label", "label_id", "source", "split", "key")
OUTPUTS = ("train.parquet", "val.parquet", "train.csv", "val.csv", "labels.txt", "report.json")
DEDUP_RULE = ("One row per YouTube ID survives across all versions and splits: a train row beats any val row "
              "(so a val video that is in any train list leaves val), then the newest version wins "
              "(K700 > K600 > K400), then the first row in its file. The survivor keeps its own segment and "
              "label.")
ORIGINS = ("within_file", "across_versions", "val_in_train")
KINDS = ("same_segment_same_label", "same_segment_renamed_label", "different_segment", "label_conflict")

_SAMPLE_ROW = {"video_id": "abcdefghijk", "start": 17, "end": 27, "label": "abseiling", "label_id": 341,
               "source": "k400", "split": "train", "key": "abcdefghijk_000017_000027"}
_UNSAFE_KEY_CHARACTERS = r"[^A-Za-z0-9_-]"  # as make_key
# Row groups, dictionaries, encodings and compression as every vmae build has written them, so that a
# rebuild of the same lists gives the same bytes (checksums of a published build stay valid). The unique
# columns (keys, IDs, times) gain nothing from a dictionary or compression.
_UNIQUE_COLUMNS = ("key", "video_id", "start_sec", "end_sec")
_PARQUET_OPTIONS = dict(row_group_size=1 << 17, store_schema=False, write_statistics=False,
                        use_dictionary=[c for c in SCHEMA.names if c not in _UNIQUE_COLUMNS],
                        compression={c: "none" if c in _UNIQUE_COLUMNS else "snappy" for c in SCHEMA.names})
_LIST_FORMAT = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")


@dataclass(frozen=True)
class BuildK710Config:
    """How a build merges and writes; a field with help is also an option of `vmae-data build-k710`."""
    label_aliases: Mapping[str, str] = field(default_factory=dict)  # {label in a CSV: K710 name}
    on_unknown_label: str = option("error", "A label with no K710 class stops the build (error) or its rows are "
                                             "dropped and reported.", choices=("error", "drop"))
    path_template: str = option(CVDF_TEMPLATE, "Path of each clip in train.csv/val.csv; fields {video_id} {start} "
                                               "{end} {label} {label_id} {source} {split} {key}, Python format specs "
                                               "allowed; {label} is written with '_' for spaces.", metavar="TEMPLATE")
    stride: int = 4

    def __post_init__(self):
        if self.on_unknown_label not in ("error", "drop"):
            raise ManifestError(f"on_unknown_label must be 'error' or 'drop', not {self.on_unknown_label!r}")
        check_template(self.path_template)
        check_aliases(self.label_aliases)


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
                            f"example: {CVDF_TEMPLATE!r}") from None
    if any(ch.isspace() for ch in template):
        raise ManifestError(f"path template {template!r} has whitespace; the list format is space-separated")
    if not {"video_id", "key"} & set(names):
        raise ManifestError(f"path template {template!r} gives every clip the same path; use {{video_id}} or {{key}}")


def _distinct(column):
    """(distinct values as Python values, the position of each row's value among them) of a numpy or
    pyarrow array. Whole-second floats become ints, so that `{start:06d}` works on the official times."""
    column = pa.array(column)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values = column.dictionary.to_pylist()
    return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values], column.indices


def _formatted(column, format_one) -> pa.Array:
    """format_one(value) for every row, computed once per distinct value."""
    values, index = _distinct(column)
    return pa.array([format_one(v) for v in values], pa.string()).take(index)


def _paths(template: str, fields: Mapping) -> pa.Array:
    """The template filled in for every row (fields: {name: column}, see _distinct)."""
    pieces = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        if literal:
            pieces.append(literal)
        if name is None:
            continue
        if name in ("video_id", "key") and not spec and conv in (None, "s"):
            pieces.append(fields[name])  # IDs are checked when read, keys are made safe
            continue
        fmt = "{0" + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        values, index = _distinct(fields[name])
        try:
            texts = [fmt.format(v) for v in values]
        except (ValueError, TypeError) as e:
            raise ManifestError(f"path template {template!r} cannot format {name} values ({e}); "
                                "non-integer times need a float format such as {start:09.3f}") from None
        for text in texts:
            if any(ch.isspace() for ch in text):
                raise ManifestError(f"path template {template!r} puts whitespace into {name}; "
                                    "the list format is space-separated")
            # A field must not move a path out of the folder its template puts it in.
            if "/" in text or "\\" in text or text in (".", ".."):
                raise ManifestError(f"path template {template!r} puts {text!r} into {name}; a field may not "
                                    "hold a path separator or be '.' or '..'")
        pieces.append(pa.array(texts, pa.string()).take(index))
    return pc.binary_join_element_wise(*pieces, "")


# ------------------------------------------------------------------------------------------------ merge

@dataclass
class _Rows:
    """The labelled rows of every train and val file, files in priority order (DEDUP_RULE: train before
    val, newer versions first), each file's rows in its order: the first row of an ID is the one that stays."""
    files: list          # [(version, split, path)]
    fid: np.ndarray      # file of each row, an index into files
    video_id: pa.Array
    start: np.ndarray
    end: np.ndarray
    raw: np.ndarray      # the label as written, an index into raw_names
    raw_names: list
    label_id: np.ndarray  # the K710 class, -1 where no rule places the label

    def take(self, keep: np.ndarray) -> "_Rows":
        return _Rows(self.files, self.fid[keep], self.video_id.filter(pa.array(keep)), self.start[keep],
                     self.end[keep], self.raw[keep], self.raw_names, self.label_id[keep])


def _labelled_rows(tables: dict, config: BuildK710Config):
    """(_Rows, resolve_label's (K710 name, how) for each of rows.raw_names)."""
    files = sorted(((v, s, p) for (v, s), (p, _) in tables.items() if s in SPLITS),
                   key=lambda f: (SPLITS.index(f[1]), -VERSIONS.index(f[0])))
    parts = [tables[(v, s)][1] for v, s, _ in files]
    table = pa.concat_tables(parts)
    labels = pc.dictionary_encode(table["label"].combine_chunks())
    raw_names = labels.dictionary.to_pylist()
    resolved = [resolve_label(raw, config.label_aliases) for raw in raw_names]
    k710 = label_maps.class_ids("k710")
    raw = labels.indices.to_numpy()
    rows = _Rows(files=files, fid=np.repeat(np.arange(len(files)), [t.num_rows for t in parts]),
                 video_id=table["youtube_id"].combine_chunks(), start=table["time_start"].to_numpy(),
                 end=table["time_end"].to_numpy(), raw=raw, raw_names=raw_names,
                 label_id=np.array([k710[name] if name else -1 for name, _ in resolved], np.int64)[raw])
    return rows, resolved


def _label_report(rows: _Rows, resolved: list, config: BuildK710Config) -> dict:
    """The labels part of the report; an error listing the unknown labels unless on_unknown_label="drop"."""
    counts = np.bincount(rows.raw, minlength=len(rows.raw_names)).tolist()
    mapped = [{"label": raw, "k710": name, "how": how, "rows": n}
              for raw, (name, how), n in zip(rows.raw_names, resolved, counts) if name and how != "exact"]
    bad = rows.label_id < 0
    unknown = []
    if bad.any():
        pairs, n = np.unique(np.stack([rows.fid[bad], rows.raw[bad]]), axis=1, return_counts=True)
        unknown = [{"label": rows.raw_names[r], "file": str(rows.files[f][2]), "rows": k}
                   for (f, r), k in zip(pairs.T.tolist(), n.tolist())]
    if unknown and config.on_unknown_label == "error":
        raise ManifestError(_unknown_message(unknown))
    return {"mapped": sorted(mapped, key=lambda m: (m["how"], m["label"])), "unknown": unknown,
            "unknown_rows_dropped": int(bad.sum())}


def _unknown_message(unknown, limit: int = 40) -> str:
    names = {u["label"] for u in unknown}
    lines = [f"{len(names)} label(s) have no K710 class (matched exactly, through the rename table, ignoring "
             "case/spacing/underscores, then through --label-aliases):"]
    for u in unknown[:limit]:
        lines.append(f"  {u['label']!r} in {u['file']}: {u['rows']} row(s){closest_names(u['label'])}")
    if len(unknown) > limit:
        lines.append(f"  ... and {len(unknown) - limit} more (label, file) pairs")
    lines.append("Fix: map each to a K710 name in a JSON file {\"label\": \"K710 name\"} passed with "
                 "--label-aliases FILE.json, or pass --on-unknown-label drop to drop these rows "
                 "(they are counted in report.json).")
    return "\n".join(lines)


def _duplicates(rows: _Rows, codes: np.ndarray, winner: np.ndarray) -> dict:
    """The duplicates part of the report: each row that does not survive is counted by where and how it
    differs from the row that does (winner[row]); codes: the ID of each row as a number."""
    lost = np.flatnonzero(winner != np.arange(len(winner)))
    win = winner[lost]
    split_of_file = np.array([SPLITS.index(s) for _, s, _ in rows.files])
    origin = np.select([rows.fid[lost] == rows.fid[win], split_of_file[rows.fid[lost]] == split_of_file[rows.fid[win]]],
                       [0, 1], 2)  # ORIGINS
    kind = np.select([rows.label_id[lost] != rows.label_id[win],
                      (rows.start[lost] != rows.start[win]) | (rows.end[lost] != rows.end[win]),
                      rows.raw[lost] != rows.raw[win]], [3, 2, 1], 0)  # KINDS
    table = np.bincount(origin * len(KINDS) + kind, minlength=len(ORIGINS) * len(KINDS)).reshape(len(ORIGINS), -1)
    # IDs listed more than once inside one file, whichever row wins them: rows minus distinct IDs per file.
    pairs = np.sort((rows.fid.astype(np.int64) << 32) | codes)  # (file, ID) as one number
    file_of_distinct = np.concatenate([pairs[:1], pairs[1:][pairs[1:] != pairs[:-1]]]) >> 32
    repeated = (np.bincount(rows.fid, minlength=len(rows.files))
                - np.bincount(file_of_distinct, minlength=len(rows.files)))
    names = label_maps.class_names("k710")

    def describe(i):
        version, split, _ = rows.files[rows.fid[i]]
        return {"source": version, "split": split, "label": names[rows.label_id[i]],
                "label_as_written": rows.raw_names[rows.raw[i]], "start": float(rows.start[i]),
                "end": float(rows.end[i])}
    return {
        "rule": DEDUP_RULE,
        "rows_removed": len(lost),
        "by_origin": {o: int(table[i].sum()) for i, o in enumerate(ORIGINS)},
        "by_kind": {k: int(table[:, j].sum()) for j, k in enumerate(KINDS)},
        "by_origin_and_kind": {o: {k: int(table[i, j]) for j, k in enumerate(KINDS)} for i, o in enumerate(ORIGINS)},
        "ids_repeated_within_a_file": {f"{v} {s}": n for (v, s, _), n in zip(rows.files, repeated.tolist())},
        "label_conflict_examples": [{"video_id": rows.video_id[i].as_py(), "kept": describe(winner[i]),
                                     "removed": describe(i)} for i in lost[kind == 3][:20].tolist()],
    }


def _time_text(value) -> str:
    """Key piece of a time: 6-digit whole seconds, or a safe decimal (12.5 -> '000012_500')."""
    return f"{value:06d}" if isinstance(value, int) else f"{value:010.3f}".replace(".", "_")


def _keys(video_id: pa.Array, start: np.ndarray, end: np.ndarray) -> pa.Array:
    """make_key(video_id, start, end) for every row."""
    safe = pc.replace_substring_regex(video_id, _UNSAFE_KEY_CHARACTERS, "_")
    keys = pc.binary_join_element_wise(safe, _formatted(start, _time_text), _formatted(end, _time_text), "_")
    return pc.if_else(pc.starts_with(keys, "-"), pc.binary_join_element_wise("_", keys, ""), keys)


def _split_tables(rows: _Rows, idx: np.ndarray, split: str, config: BuildK710Config):
    """(manifest table, list table) of the rows idx, which form one split."""
    n = len(idx)
    names = label_maps.class_names("k710")
    version = np.array([VERSIONS.index(v) for v, _, _ in rows.files])[rows.fid[idx]]
    label_id, start, end, video_id = rows.label_id[idx], rows.start[idx], rows.end[idx], rows.video_id.take(idx)
    key = _keys(video_id, start, end)
    # label, source and split are handed over dictionary-encoded, their dictionaries holding every name
    # (see _PARQUET_OPTIONS); the file is written without the Arrow schema, so readers see plain strings.
    columns = {"key": key, "source": pa.DictionaryArray.from_arrays(version, VERSIONS),
               "video_id": video_id, "start_sec": pa.array(start), "end_sec": pa.array(end),
               "label": pa.DictionaryArray.from_arrays(label_id, names),
               "label_id": pa.array(label_id, pa.int64()),
               "split": pa.DictionaryArray.from_arrays(np.zeros(n, np.int8), [split]),
               "stride": pa.array(np.full(n, config.stride, np.int64))}
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in SCHEMA]
    # The columns filled here are never null: declared so, Parquet stores them as required columns.
    # read_manifest reads them back in the manifest schema all the same.
    schema = pa.schema([pa.field(f.name, a.type, nullable=f.name not in columns) for f, a in zip(SCHEMA, arrays)])
    manifest = pa.Table.from_arrays(arrays, schema=schema)
    fields = {"video_id": video_id, "key": key, "start": start, "end": end, "label_id": label_id,
              # The list is space-separated: class names go into paths with '_' for ' '.
              "label": pa.DictionaryArray.from_arrays(label_id, [name.replace(" ", "_") for name in names]),
              "source": columns["source"], "split": columns["split"]}
    listing = pa.table({"path": _paths(config.path_template, fields),
                        "label_id": pc.cast(columns["label_id"], pa.string())})
    return manifest, listing


def _leakage(manifests: dict, tests: dict) -> dict:
    """Surviving rows whose video is in a test list ({version: IDs}): counted by split and file, not removed."""
    report = {"rule": "rows kept; their YouTube ID is also in a test file", "rows": {}, "by_test_file": {},
              "examples": []}
    in_any = {split: np.zeros(manifests[split].num_rows, bool) for split in SPLITS}
    for version, ids in tests.items():
        report["by_test_file"][version] = {}
        for split in SPLITS:
            hit = pc.is_in(manifests[split]["video_id"], value_set=ids).to_numpy(zero_copy_only=False)
            report["by_test_file"][version][split] = int(hit.sum())
            in_any[split] |= hit
    for split in SPLITS:
        report["rows"][split] = int(in_any[split].sum())
        first = np.flatnonzero(in_any[split])[:5]
        report["examples"] += [f"{split} {v}" for v in manifests[split]["video_id"].take(first).to_pylist()]
    return report


def merge_k710(tables: dict, config: BuildK710Config):
    """The build without files. tables: {(version, split): (path, table)}, the tables as read_annotation
    returns them. Returns ({split: manifest table}, {split: list table (path, label_id as text)}, report)."""
    rows, resolved = _labelled_rows(tables, config)
    label_report = _label_report(rows, resolved, config)
    if label_report["unknown_rows_dropped"]:
        rows = rows.take(rows.label_id >= 0)
    # Dictionary codes number the IDs in order of first appearance; as the rows are in priority order, the
    # first row of each code is the one that survives (DEDUP_RULE).
    codes = pc.dictionary_encode(rows.video_id).indices.to_numpy()
    winner = np.unique(codes, return_index=True)[1][codes]
    survives = winner == np.arange(len(codes))
    version = np.array([VERSIONS.index(v) for v, _, _ in rows.files])[rows.fid]
    split_of_row = np.array([SPLITS.index(s) for _, s, _ in rows.files])[rows.fid]
    manifests, lists, present = {}, {}, {}
    for i, split in enumerate(SPLITS):
        idx = np.flatnonzero(survives & (split_of_row == i))
        idx = idx[np.argsort(version[idx], kind="stable")]  # output: K400, K600, K700, each in its file's order
        manifests[split], lists[split] = _split_tables(rows, idx, split, config)
        present[split] = np.bincount(rows.label_id[idx], minlength=len(label_maps.class_names("k710"))) > 0
    keys = pa.chunked_array([manifests[s]["key"].combine_chunks() for s in SPLITS])
    if len(pc.unique(keys)) != len(keys):
        counts = pc.value_counts(keys)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ManifestError(f"two YouTube IDs give the same key {twice!r} (make_key replaces characters other "
                            "than letters, digits, '_' and '-'); fix the IDs in the input")
    duplicates = _duplicates(rows, codes, winner)
    tests = {v: t["youtube_id"].combine_chunks() for (v, s), (_, t) in tables.items() if s == "test"}
    names = label_maps.class_names("k710")
    report = {"labels": label_report, "duplicates": duplicates,
              "val_in_train_removed": duplicates["by_origin"]["val_in_train"],
              "label_conflicts": duplicates["by_kind"]["label_conflict"],
              "test_leakage": _leakage(manifests, tests),
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
    tables = {key: (located[key], read_annotation(located[key], key[1])) for key in order}
    inputs = {v: {s: {"file": str(p), "rows": t.num_rows} for (v2, s), (p, t) in tables.items() if v2 == v}
              for v in folders}
    manifests, lists, merged = merge_k710(tables, config)
    report = {"inputs": inputs, "skipped": skipped, **merged,
              "outputs": {name: str(out_dir / name) for name in OUTPUTS},
              "config": {**asdict(config), "label_aliases": dict(config.label_aliases)}}
    outputs = {"labels.txt": label_maps.data_file("label_map_k710.txt").read_bytes(),
               "report.json": (json.dumps(report, indent=2) + "\n").encode("utf-8")}
    for split in SPLITS:
        parquet, listing = io.BytesIO(), io.BytesIO()
        pq.write_table(manifests[split], parquet, **_PARQUET_OPTIONS)
        pcsv.write_csv(lists[split], listing, write_options=_LIST_FORMAT)
        outputs[f"{split}.parquet"], outputs[f"{split}.csv"] = parquet.getbuffer(), listing.getbuffer()
    _write_all(out_dir, outputs)
    return report


def _write_all(out_dir: Path, outputs: dict) -> None:
    """Write {name: bytes} into out_dir under temporary names, check each file's size, then rename them all
    (report.json last). On any failure nothing is renamed and a folder made here is removed again; a folder
    that cannot take the outputs is an OutputError (vmae.atomic)."""
    made_here = not out_dir.exists()
    try:
        with ExitStack() as stack:
            # ExitStack renames in reverse order of entry: report.json, entered first, appears last.
            for name in reversed(OUTPUTS):
                tmp = stack.enter_context(atomic_path(out_dir / name))
                tmp.write_bytes(outputs[name])
                if tmp.stat().st_size != len(outputs[name]):
                    raise OutputError.at(out_dir, f"{name} came out short")
    except Exception:
        if made_here and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


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
