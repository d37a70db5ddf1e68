"""UnlabeledHybrid: the per-source manifests in one, each source's stride set, duplicate keys dropped,
and the clip counts set against the paper's Table 2."""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vmae.manifests import ManifestError, manifest_base, read_manifest, resolve_path, write_manifest
from vmae.manifests.schema import MIXTURE_SOURCES as SOURCES
from vmae.manifests.validate import REJECT_COLUMNS, write_rejects

# VideoMAE V2, Table 2: clips per source of UnlabeledHybrid (1.35M in all).
PAPER_CLIPS = {"k710": 658_000, "ssv2": 169_000, "ava": 21_000, "webvid": 250_000, "instagram": 250_000}
PAPER_TOTAL = 1_350_000
DEFAULT_STRIDES = {"k710": 4, "ssv2": 2, "ava": 4, "webvid": 4, "instagram": 4}


@dataclass(frozen=True)
class SourceCount:
    source: str
    manifest: str
    rows: int
    ok: int
    duplicates: int
    stride: int
    other_splits: dict = field(default_factory=dict)   # split -> rows, for splits other than train/empty
    paths: int = 0                                       # rows with a clip path


@dataclass(frozen=True)
class HybridReport:
    out: str
    counts: tuple                     # SourceCount per given source, in SOURCES order
    rejects_file: str | None
    excluded: dict = field(default_factory=dict)   # reason -> rows dropped by --exclude

    @property
    def total(self) -> int:
        return sum(c.rows for c in self.counts)

    def lines(self) -> list:
        head = f"{'source':<10} {'clips':>10} {'status ok':>10} {'paper':>10} {'clips/paper':>11} {'stride':>6}"
        out = [f"UnlabeledHybrid -> {self.out}", head, "-" * len(head)]
        given = {c.source: c for c in self.counts}
        for name in SOURCES:
            c = given.get(name)
            rows, ok = (c.rows, c.ok) if c else (0, 0)
            stride = str(c.stride) if c else "-"
            out.append(f"{name:<10} {rows:>10,} {ok:>10,} {PAPER_CLIPS[name]:>10,} "
                       f"{rows / PAPER_CLIPS[name]:>11.1%} {stride:>6}" + ("" if c else "  (not given)"))
        ok = sum(c.ok for c in self.counts)
        out += ["-" * len(head),
                f"{'total':<10} {self.total:>10,} {ok:>10,} {PAPER_TOTAL:>10,} {self.total / PAPER_TOTAL:>11.1%}"]
        for c in self.counts:
            if c.duplicates:
                out.append(f"dropped {c.duplicates} {c.source} rows whose key was already taken")
            if c.rows and not c.paths:
                out.append(f"warning: {c.source} ({c.manifest}) has no clip paths: it is a list, not clips; pass "
                           "the manifest `vmae-data download` wrote (OUT/manifest.parquet), since the shard step "
                           "skips rows without a clip")
            if c.other_splits:
                out.append(f"warning: {c.source} has rows of split(s) {c.other_splits} - pretraining on "
                           "validation/test videos leaks them into evaluation; pass the train manifest")
        if self.excluded:
            out.append("dropped by --exclude: " + ", ".join(f"{n} {r}" for r, n in sorted(self.excluded.items())))
        if self.rejects_file:
            out.append(f"dropped rows: {self.rejects_file}")
        return out


def mix_unlabeled_hybrid(inputs: dict, out, strides: dict | None = None,
                         exclude: dict | None = None) -> HybridReport:
    """Concatenate the given per-source manifests (name -> path) into `out`.

    Every row keeps its columns except `stride`, which is set per source (2 for ssv2, 4 otherwise, or
    `strides[name]`). Rows of every status are kept; the shard step takes the usable ones. A key seen
    before (earlier in SOURCES order, or earlier in the same manifest) drops the later row, and so does a
    key of `exclude` (key -> (reason, message), from vmae.curation.dedup.read_exclusions). Relative paths
    are made absolute from their manifest's folder, so that they hold wherever `out` is.
    """
    inputs = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(inputs) - set(SOURCES)) + sorted(set(strides or {}) - set(SOURCES))
    if unknown:
        raise ManifestError(f"unknown source(s) {unknown}; the sources are {SOURCES}")
    if not inputs:
        raise ManifestError(f"no manifest given; pass at least one of --{' --'.join(SOURCES)}")
    strides = {**DEFAULT_STRIDES, **(strides or {})}
    bad = [f"{k}={v}" for k, v in strides.items() if int(v) < 1]
    if bad:
        raise ManifestError(f"strides must be at least 1: {bad}")

    parts, counts, dropped, seen, excluded = [], [], [], {}, Counter()
    for name in SOURCES:
        if name not in inputs:
            continue
        df = read_manifest(inputs[name])
        base = manifest_base(inputs[name])
        df["path"] = [resolve_path(p, base) if isinstance(p, str) else p for p in df["path"]]
        dup, gone = [], []
        for i, key in enumerate(df["key"]):
            if exclude and key in exclude:
                gone.append(i)
                excluded[exclude[key][0]] += 1
                dropped.append({"file": str(inputs[name]), "line": i, "key": key, "reason": exclude[key][0]})
            elif key in seen:
                dup.append(i)
                dropped.append({"file": str(inputs[name]), "line": i, "key": key,
                                "reason": f"duplicate key (kept the earlier {seen[key]} row)"})
            else:
                seen[key] = name
        df = df.drop(index=dup + gone).reset_index(drop=True)
        df["stride"] = pd.array([int(strides[name])] * len(df), dtype="Int64")
        splits = df["split"].dropna()
        other = splits[splits != "train"].value_counts().to_dict()
        counts.append(SourceCount(source=name, manifest=str(inputs[name]), rows=len(df),
                                  ok=int((df["status"] == "ok").sum()), duplicates=len(dup),
                                  stride=int(strides[name]), other_splits=other,
                                  paths=int(df["path"].notna().sum())))
        parts.append(df)
    write_manifest(pd.concat(parts, ignore_index=True), out)
    rejects_file = write_rejects(pd.DataFrame(dropped, columns=REJECT_COLUMNS), out)
    return HybridReport(out=str(Path(out)), counts=tuple(counts),
                        rejects_file=rejects_file, excluded=dict(excluded))
