"""Read and write manifests: Parquet is the format; CSV, TSV and JSONL come in and go out."""
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vmae.atomic import atomic_path
from vmae.errors import OutputError
from vmae.manifests.errors import ManifestError
from vmae.manifests.schema import COLUMNS, SCHEMA

_INT = [f.name for f in SCHEMA if pa.types.is_integer(f.type)]
_FLOAT = [f.name for f in SCHEMA if pa.types.is_floating(f.type)]
_STR = [f.name for f in SCHEMA if pa.types.is_string(f.type)]


def empty_manifest(n: int = 0) -> pd.DataFrame:
    """A manifest of n rows with every column null."""
    return conform(pd.DataFrame(index=range(n)))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return df with exactly the schema's columns, in order, with the schema's pandas dtypes."""
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise ManifestError(f"unknown manifest column(s) {unknown}; known columns are {COLUMNS}")
    out = pd.DataFrame(index=df.index)
    for col in COLUMNS:
        values = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index)
        try:
            if col in _INT:
                out[col] = pd.array(pd.to_numeric(values, errors="raise"), dtype="Int64")
            elif col in _FLOAT:
                out[col] = pd.to_numeric(values, errors="raise").astype("float64")
            else:
                out[col] = _strings(values)
        except (TypeError, ValueError) as e:
            raise ManifestError(f"column {col!r} does not fit the manifest schema ({e})") from None
    return out.reset_index(drop=True)


def _strings(values: pd.Series) -> pd.Series:
    """Object column of str or None; numbers (e.g. a numeric video_id in JSONL) become their text."""
    values = values.astype(object).where(values.notna(), None)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = values.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return values


def to_table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(conform(df), schema=SCHEMA, preserve_index=False)


def write_manifest(df: pd.DataFrame, path) -> Path:
    """Write a manifest as Parquet, atomically."""
    table = to_table(df)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        if pq.read_metadata(tmp).num_rows != table.num_rows:  # checked before it gets its name
            raise OutputError.at(Path(path).parent, f"{path} came out with missing rows")
    return Path(path)


def resolve_path(path, base) -> str:
    """A manifest's `path` value as an absolute path: relative ones start from `base`, the manifest's folder."""
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else (Path(base) / p).resolve())


def manifest_base(manifest) -> Path:
    """The folder relative paths of `manifest` (a file, or a DataFrame: the current folder) start from."""
    return Path.cwd() if isinstance(manifest, pd.DataFrame) else Path(manifest).resolve().parent


def read_manifest(path) -> pd.DataFrame:
    """Read a Parquet manifest (or CSV/TSV/JSONL, see read_table) into a conformed DataFrame."""
    path = Path(path)
    if not path.exists():
        raise ManifestError("file not found; pass the manifest written by an earlier vmae-data step", path)
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise ManifestError(f"not a readable Parquet file ({e})", path) from None
        missing = [c for c in ("key", "source") if c not in table.column_names]
        if missing:
            raise ManifestError(f"missing required column(s) {missing}", path)
        return conform(table.to_pandas())
    df, rejects = read_table(path)
    if len(rejects):
        first = rejects.iloc[0]
        raise ManifestError(f"{len(rejects)} bad row(s); first: {first['reason']}", path, line=first["line"])
    return df


def jsonl_records(text: str, path) -> list:
    """(line number, object) for every non-blank line of JSON-lines text; a bad line is an error naming it."""
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"invalid JSON ({e.msg}); fix or delete the line", path, line=n) from None
            if not isinstance(record, dict):
                raise ManifestError("expected one JSON object per line", path, line=n)
            records.append((n, record))
    return records


def read_table(path):
    """Import a CSV, TSV or JSONL file of manifest columns.

    Returns (manifest, rejects): rows whose values do not parse go to `rejects` (file, line, key,
    reason) instead of the manifest, so a bad row is reported, never silently dropped.
    """
    path = Path(path)
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            records = jsonl_records(path.read_text(encoding="utf-8"), path)
            lines = [n for n, _ in records]
            # object dtype keeps JSON integers as integers (a float column would turn 123 into 123.0)
            raw = pd.DataFrame([r for _, r in records], dtype=object)
        else:
            sep = "\t" if path.suffix == ".tsv" else ","
            # Blank lines are read as rows and dropped after, so that row i stays on line i + 2.
            text = path.read_text(encoding="utf-8")
            raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False)
            blank = [not line.strip("\r") for line in text.split("\n")[1:len(raw) + 1]]
            raw = raw[~np.array(blank + [False] * (len(raw) - len(blank)), bool)]
            lines = (raw.index + 2).tolist()
            raw = raw.reset_index(drop=True)
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text; re-save the file as UTF-8", path) from None
    except pd.errors.EmptyDataError:
        raise ManifestError("file is empty", path) from None
    unknown = [c for c in raw.columns if c not in COLUMNS]
    if unknown:
        raise ManifestError(f"unknown column(s) {unknown}; known columns are {COLUMNS}", path)
    raw = raw.replace("", None)
    bad = []
    for col in _INT + _FLOAT:
        if col in raw.columns:
            parsed = pd.to_numeric(raw[col], errors="coerce")
            wrong = parsed.isna() & raw[col].notna()
            if col in _INT:
                wrong |= parsed.notna() & (parsed != np.floor(parsed))
            for i in np.flatnonzero(wrong):
                bad.append((i, f"column {col!r}: {raw[col].iloc[i]!r} is not a number"))
            raw[col] = parsed
    bad_rows = sorted({i for i, _ in bad})
    rejects = pd.DataFrame(
        [{"file": str(path), "line": lines[i], "key": raw.get("key", pd.Series([None] * len(raw))).iloc[i],
          "reason": reason} for i, reason in sorted(bad, key=lambda b: b[0])],
        columns=["file", "line", "key", "reason"])
    good = raw.drop(index=raw.index[bad_rows]) if bad_rows else raw
    return conform(good), rejects
