"""The files that describe a shard set, and reading single samples through them.

DIR/.NAME-%06d.json  sidecar of one shard, written by its unit right after the tar (plan hash, members, ...)
DIR/index.parquet    one row per tar member: key, shard, member, offset (of the data), size
DIR/skipped.parquet  every manifest row that was not written, with its reason
DIR/shards.json      per shard file, samples, bytes, sha256, sources; totals; name, seed, options.
                     Written last: its presence means the set is complete.
"""
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vmae.atomic import TEMP_SUFFIX, atomic_path, write_text

INDEX = "index.parquet"
SKIPPED = "skipped.parquet"
SHARDS_JSON = "shards.json"
FORMAT_VERSION = 1

INDEX_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("member", pa.string()),
                          ("offset", pa.int64()), ("size", pa.int64())])
SKIPPED_SCHEMA = pa.schema([(c, pa.string()) for c in ("key", "source", "path", "reason", "error")])


def sidecar_path(out_dir, file: str) -> Path:
    return Path(out_dir) / f".{Path(file).stem}.json"


def read_sidecar(out_dir, file: str):
    """The sidecar of shard `file`, or None when it is missing or unreadable (the shard is then redone)."""
    try:
        return json.loads(sidecar_path(out_dir, file).read_text())
    except (OSError, ValueError):
        return None


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _remove_leftovers(out_dir: Path, name: str, files: set, started: float) -> list:
    """Delete what killed runs and earlier plans left: temporary files older than this run (younger ones may
    belong to another slice finishing at the same moment), and NAME-*.tar shards (with their sidecars) that
    the current plan does not have. Returns the names removed."""
    shard = re.compile(rf"^{re.escape(name)}-\d{{6}}\.tar$")
    finals = "|".join(map(re.escape, (INDEX, SKIPPED, SHARDS_JSON)))
    temp = re.compile(rf"^\.+({re.escape(name)}-\d{{6}}\.(tar|json)|{finals}){TEMP_SUFFIX}$")
    removed = []
    for path in sorted(out_dir.iterdir()):
        stale = shard.match(path.name) and path.name not in files
        try:
            leftover = temp.match(path.name) and path.stat().st_mtime < started
        except FileNotFoundError:  # renamed or removed meanwhile by the run that wrote it
            continue
        if stale or leftover:
            path.unlink(missing_ok=True)
            removed.append(path.name)
            if stale:
                sidecar_path(out_dir, path.name).unlink(missing_ok=True)
    return removed


def finalize(out_dir, name: str, sidecars: list, skipped: pd.DataFrame, options: dict, started: float) -> dict:
    """Write skipped.parquet, index.parquet and, last, shards.json from the shards' sidecars; `started` is
    when this run began (time.time()), see _remove_leftovers."""
    out_dir = Path(out_dir)
    _remove_leftovers(out_dir, name, {s["file"] for s in sidecars}, started)
    late = [row for s in sidecars for row in s["skipped"]]
    all_skipped = pd.concat([skipped, pd.DataFrame(late, columns=SKIPPED_SCHEMA.names)], ignore_index=True)
    all_skipped = all_skipped.astype(object).where(all_skipped.notna(), None)
    _write_parquet(pa.Table.from_pandas(all_skipped, schema=SKIPPED_SCHEMA, preserve_index=False),
                   out_dir / SKIPPED)
    rows = [(key, s["file"], member, offset, size) for s in sidecars for key, member, offset, size in s["members"]]
    columns = list(zip(*rows)) if rows else [[]] * 5
    _write_parquet(pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, INDEX_SCHEMA)],
                                        schema=INDEX_SCHEMA), out_dir / INDEX)
    shards = [{k: s[k] for k in ("file", "samples", "bytes", "sha256", "sources")} for s in sidecars]
    sources = sum((Counter(s["sources"]) for s in shards), Counter())
    summary = {
        "format": FORMAT_VERSION, "name": name, "seed": options.get("seed"), "options": options,
        "shards": shards,
        "totals": {"shards": len(shards), "samples": sum(s["samples"] for s in shards),
                   "bytes": sum(s["bytes"] for s in shards), "sources": dict(sorted(sources.items()))},
        "skipped": {"rows": len(all_skipped),
                    "reasons": dict(sorted(Counter(all_skipped["reason"]).items()))},
    }
    write_text(out_dir / SHARDS_JSON, json.dumps(summary, indent=1) + "\n")
    return summary


def read_shards_json(shard_dir) -> dict:
    path = Path(shard_dir) / SHARDS_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the shard set is incomplete or not a vmae shard folder "
                                "(rerun `vmae-data shard` with the same options to finish it)")
    return json.loads(path.read_text())


def read_index(shard_dir, filters=None) -> pd.DataFrame:
    path = Path(shard_dir) / INDEX
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: rerun `vmae-data shard` with the same options to finish it")
    return pq.read_table(path, filters=filters).to_pandas()


def read_skipped(shard_dir) -> pd.DataFrame:
    return pq.read_table(Path(shard_dir) / SKIPPED).to_pandas()


def read_members(shard_dir, rows: pd.DataFrame):
    """Yield (row, bytes) for index rows, reading each by seek + read (one open per shard, in file order)."""
    rows = rows.sort_values(["shard", "offset"])
    for shard, group in rows.groupby("shard", sort=False):
        with open(Path(shard_dir) / shard, "rb") as f:
            for row in group.itertuples(index=False):
                f.seek(row.offset)
                data = f.read(row.size)
                if len(data) != row.size:
                    raise OSError(f"{Path(shard_dir) / shard}: member {row.member} is truncated "
                                  f"({len(data)} of {row.size} bytes); run `vmae-data verify`")
                yield row, data


def read_sample(shard_dir, key: str) -> dict:
    """One sample by key, without scanning: {"__key__", "mp4", "json"[, "cls"]} as bytes (the same dict
    vmae.shards.format.encode_sample made, so decode_sample reads it)."""
    rows = read_index(shard_dir, filters=[("key", "==", key)])
    if rows.empty:
        raise KeyError(f"key {key!r} is not in {Path(shard_dir) / INDEX}")
    sample = {"__key__": key}
    for row, data in read_members(shard_dir, rows):
        sample[row.member[len(key) + 1:]] = data
    return sample
