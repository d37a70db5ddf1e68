"""The files that describe a shard set, and reading single samples through them.

DIR/.NAME-%06d.json  sidecar of one shard, written by its unit right after the tar (plan hash, members, ...)
DIR/index.parquet    one row per tar member: key, shard, member, offset (of the data), size
DIR/skipped.parquet  every manifest row that was not written, with its reason
DIR/shards.json      per shard file, samples, bytes, sha256, sources; totals; name, seed, options.
                     Written last: its presence means the set is complete.
"""
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from webdataset.tariterators import base_plus_ext

from vmae.atomic import TEMP_SUFFIX, atomic_path, write_text
from vmae.errors import VmaeError
from vmae.lock import clear_stale
from vmae.manifests import ManifestError
from vmae.shards.files import file_name, open_file, sibling_url
from vmae.shards.tar import BLOCK

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
    """Delete what killed runs and earlier plans left: their shards' lock files, temporary files (of shards,
    sidecars, locks and the index) older than this run (younger ones may belong to another slice finishing at
    the same moment), and NAME-*.tar shards (with their sidecars) that the current plan does not have. Returns
    the names removed."""
    shard = re.compile(rf"^{re.escape(name)}-\d{{6}}\.tar$")
    finals = "|".join(map(re.escape, (INDEX, SKIPPED, SHARDS_JSON)))
    temp = re.compile(rf"^\.+({re.escape(name)}-\d{{6}}\.(tar|json|lock)|{finals}){TEMP_SUFFIX}$")
    removed = [p.name for p in clear_stale(out_dir.glob(f".{name}-*.lock"))]
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
    if not any(s["samples"] for s in sidecars):
        # No index and no shards.json: an empty set must not pass for a finished one.
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(Counter(all_skipped["reason"]).items()))
        raise ManifestError(f"no sample was written: all {len(all_skipped)} rows were skipped ({reasons or 'none'}); "
                            f"each with its reason in {out_dir / SKIPPED}")
    rows = [(key, s["file"], member, offset, size) for s in sidecars for key, member, offset, size in s["members"]]
    write_index(out_dir, _index_table(rows))
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
    if options.get("labeled") and all("labels" in s for s in sidecars):
        # label id -> samples: training checks --num-classes against it before its first step
        labels = sum((Counter(s["labels"]) for s in sidecars), Counter())
        summary["totals"]["labels"] = dict(sorted(labels.items(), key=lambda kv: int(kv[0])))
    write_text(out_dir / SHARDS_JSON, json.dumps(summary, indent=1) + "\n")
    return summary


def index_tars(urls: list[str]) -> pa.Table:
    """The index rows of tar shards written by other tools (vmae's writer records them as it writes): every
    regular member's key (as webdataset groups them), shard file name, name, data offset and size. Each tar
    is read once from start to end (a pipe, or an object store without many small requests)."""
    rows = []
    for url in urls:
        with open_file(url) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            rows += [(base_plus_ext(m.name)[0], file_name(url), m.name, m.offset_data, m.size)
                     for m in tar if m.isreg()]
    return _index_table(rows)


def _index_table(rows: list) -> pa.Table:
    """INDEX_SCHEMA's table of (key, shard, member, offset, size) rows."""
    columns = list(zip(*rows)) if rows else [[]] * 5
    return pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, INDEX_SCHEMA)], schema=INDEX_SCHEMA)


def write_index(out_dir, table: pa.Table) -> Path:
    _write_parquet(table, Path(out_dir) / INDEX)
    return Path(out_dir) / INDEX


def read_shards_json(shard_dir) -> dict:
    """The shards.json of a shard set: `shard_dir` is a local folder or the URL of one (read through fsspec)."""
    url = f"{str(shard_dir).rstrip('/')}/{SHARDS_JSON}"
    try:
        with open_file(url) as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{url} not found: the shard set is incomplete or not a vmae shard folder "
                                "(rerun `vmae-data shard` with the same options to finish it)") from err


def read_index(shard_dir, filters=None) -> pd.DataFrame:
    path = Path(shard_dir) / INDEX
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: rerun `vmae-data shard` with the same options to finish it")
    return pq.read_table(path, filters=filters).to_pandas()


class MissingIndexError(VmaeError, FileNotFoundError):
    """A shard set's index.parquet is missing or does not list a shard."""


def _sample_ends(table: pa.Table) -> dict[str, np.ndarray]:
    """shard file -> the byte offset at which each of its samples ends (its last member's data, padded to a
    whole tar block), in file order."""
    table = table.sort_by([("shard", "ascending"), ("offset", "ascending")])
    shard, key = table["shard"].combine_chunks(), table["key"].combine_chunks()
    ends = (table["offset"].to_numpy() + table["size"].to_numpy() + BLOCK - 1) // BLOCK * BLOCK
    last = np.ones(len(table), bool)  # the last member of a sample: the next row has another key or shard
    if len(table) > 1:
        last[:-1] = pc.or_(pc.not_equal(key[1:], key[:-1]),
                           pc.not_equal(shard[1:], shard[:-1])).to_numpy(zero_copy_only=False)
    names = shard.filter(pa.array(last)).to_numpy(zero_copy_only=False)
    ends = ends[last]
    cuts = np.flatnonzero(names[1:] != names[:-1]) + 1
    return {str(names[a]): ends[a:b] for a, b in zip([0, *cuts], [*cuts, len(names)]) if b > a}


def read_sample_ends(index_url: str) -> dict[str, np.ndarray]:
    """Per shard file of an index.parquet (read through fsspec): where each sample ends, see _sample_ends."""
    try:
        with open_file(index_url) as f:
            table = pq.read_table(f, columns=["key", "shard", "offset", "size"])
    except FileNotFoundError as err:
        raise MissingIndexError(f"{index_url} not found: the exact epoch stream reads each sample's byte offset "
                                "from the shard set's index.parquet (`vmae-data shard` writes it beside the "
                                "shards, `vmae-data index` makes one for shards of other tools); put it there, name "
                                "it with --index, or use --stream resampled") from err
    return _sample_ends(table)


def shard_ends(sets: list[list[str]], index: str | None = None) -> list[np.ndarray]:
    """For every shard URL of the shard sets (in order), where each of its samples ends in the file.

    Each set is looked up in the index.parquet beside its shards, or in `index`: one URL, or as many
    '::'-joined URLs as there are sets. Each index is read once."""
    indexes = index.split("::") if index else [None] * len(sets)
    if len(indexes) == 1 and len(sets) > 1:
        indexes = indexes * len(sets)
    if len(indexes) != len(sets):
        raise MissingIndexError(f"--index names {len(indexes)} index files for {len(sets)} '::'-joined shard "
                                "sets: give one per set, in the same order")
    tables, out = {}, []
    for urls, given in zip(sets, indexes):
        for url in urls:
            where = given or sibling_url(url, INDEX)
            if where is None:
                raise MissingIndexError(f"cannot tell where the index of {url!r} is (no argument of the pipe "
                                        "names a .tar file): give the shard set's index.parquet with --index")
            if where not in tables:
                tables[where] = read_sample_ends(where)
            ends = tables[where].get(file_name(url))
            if ends is None:
                raise MissingIndexError(f"{where} does not list the shard {file_name(url)} ({url}): the index "
                                        "belongs to another shard set; give the right one with --index")
            out.append(ends)
    return out


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
