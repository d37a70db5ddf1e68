"""Seeded random samples of WebVid2M and Instagram lists (250k clips each in UnlabeledHybrid).

Keys are settled before sampling: ids that become the same key once made safe ('vidé' and 'vid✓', 'ig two'
and 'ig_two') all get a short hash of their id appended, and an id too long for a key is rejected, so every
usable row can be drawn. Determinism: usable rows are sorted by id (string order) and each gets a uniform
random key from numpy's PCG64 stream, whose bits NumPy keeps stable across versions and platforms; the
sample is the n rows with the smallest keys. So the same seed gives the same sample on any machine and for
any input row order, and a larger n with the same seed returns a superset of a smaller one.
"""
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vmae.manifests import ManifestError, key_problem, make_key, write_manifest
from vmae.manifests.io import jsonl_records
from vmae.manifests.schema import settle_keys
from vmae.manifests.validate import MAX_SECONDS, REJECT_COLUMNS, excluded_lines, id_problem, write_rejects

SOURCES = ("webvid", "instagram")
STRIDE = 4
WEBVID_COLUMNS = ("videoid", "contentUrl", "duration")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


@dataclass(frozen=True)
class SampleReport:
    source: str
    metadata: str
    rows: int                       # data rows read from the metadata file
    usable: int
    sampled: int
    seed: int
    out: str
    rejects_file: str | None
    reasons: dict = field(default_factory=dict)   # reject reason -> count

    def lines(self) -> list:
        out = [f"{self.source}: {self.rows} rows in {self.metadata}, {self.usable} usable, "
               f"sampled {self.sampled} with seed {self.seed} -> {self.out}"]
        return out + excluded_lines(self.reasons, self.rejects_file)


def parse_iso_duration(text) -> float | None:
    """Seconds of an ISO-8601 duration such as 'PT00H00M11S' (WebVid's format); None if it does not parse."""
    if text is None:
        return None
    text = str(text).strip()
    m = _ISO_DURATION.match(text)
    if m is None or text.endswith("T") or not any(m.groupdict().values()):
        return None
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def read_webvid(path):
    """WebVid metadata CSV -> (candidates, rejects). Candidates: one dict per usable row, with its file line."""
    path = Path(path)
    rows = _read_rows(path)
    missing = [c for c in WEBVID_COLUMNS if rows and c not in rows[0][1]]
    if not rows or missing:
        raise ManifestError(f"needs the WebVid columns {list(WEBVID_COLUMNS)} (missing {missing or 'all rows'}); "
                            "pass the metadata CSV as released (results_2M_train.csv)", path)
    good, bad = [], []
    for line, row in rows:
        vid, url = _text(row.get("videoid")), _text(row.get("contentUrl"))
        seconds = parse_iso_duration(_text(row.get("duration")))
        reason = None
        if not vid:
            reason = "empty videoid"
        elif not url:
            reason = "no contentUrl"
        elif seconds is None:
            reason = f"duration {row.get('duration')!r} is not ISO-8601 (like PT00H00M11S)"
        elif not 0 < seconds <= MAX_SECONDS:
            reason = f"duration {row.get('duration')!r} is " + ("not positive" if seconds <= 0 else "over a week")
        else:
            reason = id_problem(vid)
        if reason:
            bad.append((line, vid, reason))
        else:
            good.append({"line": line, "video_id": vid, "url": url, "path": None, "duration": seconds})
    return _drop_duplicates(good, bad, path)


def read_instagram(path):
    """Instagram list (CSV/TSV/JSONL with `id` and `url` and/or `path`) -> (candidates, rejects)."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise ManifestError("no rows; expected a CSV or JSONL list with columns id and url (or path)", path)
    good, bad = [], []
    for line, row in rows:
        vid, url, local = _text(row.get("id")), _text(row.get("url")), _text(row.get("path"))
        if not vid:
            bad.append((line, vid, "empty id"))
        elif not url and not local:
            bad.append((line, vid, "neither url nor path"))
        elif problem := id_problem(vid):
            bad.append((line, vid, problem))
        else:
            if local and not Path(local).is_absolute():
                local = str((path.parent / local).resolve())
            good.append({"line": line, "video_id": vid, "url": url, "path": local, "duration": None})
    return _drop_duplicates(good, bad, path)


def sample_rows(candidates: list, n: int, seed: int) -> list:
    """The seeded sample of n candidates, returned in id order (see the module docstring)."""
    if n > len(candidates):
        raise ManifestError(f"asked for {n} rows but only {len(candidates)} are usable; pass --n {len(candidates)} "
                            "or fewer (the excluded rows are listed in the rejects file)")
    ordered = sorted(candidates, key=lambda c: c["video_id"])
    keys = np.random.Generator(np.random.PCG64(seed)).random(len(ordered))
    chosen = np.sort(np.argsort(keys, kind="stable")[:n])
    return [ordered[i] for i in chosen]


def sample_source(source: str, metadata, n: int, seed: int, out) -> SampleReport:
    """Read a WebVid or Instagram list, sample n usable rows with `seed`, write the manifest (and rejects)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    if n < 1:
        raise ManifestError(f"--n must be at least 1 (got {n})")
    read = read_webvid if source == "webvid" else read_instagram
    candidates, rejects = read(metadata)
    candidates, rejects = with_keys(source, candidates, rejects, metadata)
    chosen = sample_rows(candidates, n, seed)
    df = pd.DataFrame({
        "key": [c["key"] for c in chosen],
        "source": source,
        "video_id": [c["video_id"] for c in chosen],
        "url": [c["url"] for c in chosen],
        "path": [c["path"] for c in chosen],
        "duration": [c["duration"] for c in chosen],
        "split": "train",
        "stride": STRIDE,
    })
    write_manifest(df, out)
    return SampleReport(source=source, metadata=str(metadata), rows=len(candidates) + len(rejects),
                        usable=len(candidates), sampled=len(chosen), seed=seed, out=str(out),
                        rejects_file=write_rejects(rejects, out),
                        reasons=_reason_counts(rejects))


def with_keys(source: str, candidates: list, rejects: pd.DataFrame, path):
    """Give every candidate its key (settling clashes, see the module notes) before sampling; a candidate
    whose key cannot be used moves to the rejects."""
    keys, _ = settle_keys([make_key(source, c["video_id"]) for c in candidates], [c["video_id"] for c in candidates])
    good, bad = [], []
    for c, key in zip(candidates, keys):
        problem = "its key clashes with another id's even with a hash appended" if key is None else key_problem(key)
        if problem:
            bad.append({"file": str(path), "line": c["line"], "key": c["video_id"], "reason": problem})
        else:
            good.append(dict(c, key=key))
    if bad:
        rejects = pd.concat([rejects, pd.DataFrame(bad, columns=REJECT_COLUMNS)]).sort_values("line")
    return good, rejects.reset_index(drop=True)


def _read_rows(path: Path) -> list:
    """[(file line, {column: text})] from a CSV, TSV or JSONL file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text; re-save the file as UTF-8", path) from None
    if path.suffix in (".jsonl", ".ndjson"):
        return jsonl_records(text, path)
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
    return [(reader.line_num, row) for row in reader]


def _text(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _drop_duplicates(good: list, bad: list, path: Path):
    """Keep the first row of each id (file order); later ones become rejects naming the first line."""
    first, unique = {}, []
    for c in good:
        if c["video_id"] in first:
            bad.append((c["line"], c["video_id"], f"duplicate id (first at line {first[c['video_id']]})"))
        else:
            first[c["video_id"]] = c["line"]
            unique.append(c)
    rejects = pd.DataFrame([{"file": str(path), "line": line, "key": vid, "reason": reason}
                            for line, vid, reason in sorted(bad, key=lambda b: b[0])], columns=REJECT_COLUMNS)
    return unique, rejects


def _reason_counts(rejects: pd.DataFrame) -> dict:
    # Group "duplicate id (first at line 12)" and "duplicate id (first at line 40)" under one reason.
    return rejects["reason"].str.replace(r" \(first at line \d+\)", "", regex=True).value_counts().to_dict()
