"""Import any video collection: a folder tree (`class_name/video.ext`, as UCF101 and HMDB51 ship) or a
CSV/TSV list of `path[,label]` -> a manifest plus its class list, ready for probing and sharding.

Keys are the source name plus the video's relative path made safe. Two paths that become the same key
("a b/x.mp4" and "a_b/x.mp4", or "x.mp4" and "x.avi") both get a short hash of their path appended, so
the result does not depend on which one was listed first.
"""
import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from vmae.atomic import write_text
from vmae.executors import ExecutorConfig, run_units
from vmae.manifests import ManifestError, key_problem, labels, make_key, write_manifest
from vmae.manifests.schema import settle_keys
from vmae.manifests.validate import REJECT_COLUMNS, excluded_lines, write_rejects
from vmae.media import UNKNOWN, MediaError, probe

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts", ".ogv"}
LABELS_FROM = ("folders", "csv", "none")
PROBE_CHUNK = 64


@dataclass(frozen=True, kw_only=True)
class ListReport:
    """What a manifest made from a list of videos reports (import, ssv2): its head line and notes, the listed
    videos that are not there, the probe's statuses and the rows left out."""
    out: str
    rows: int
    missing: int
    rejects_file: str | None
    probed: dict | None = None                   # status -> count when --probe ran
    reasons: dict = field(default_factory=dict)  # rows left out, by reason

    def head(self) -> str:
        raise NotImplementedError

    def notes(self) -> list:
        return []

    def lines(self) -> list:
        missing = [f"  {self.missing} listed videos are not there (status missing-file)"] if self.missing else []
        return ([self.head(), *self.notes(), *missing] + probed_lines(self.probed)
                + excluded_lines(self.reasons, self.rejects_file))


@dataclass(frozen=True, kw_only=True)
class ImportReport(ListReport):
    source: str
    input: str
    classes: int
    classes_file: str | None
    labels_from: str
    ignored_files: int = 0                      # non-video files in a folder tree
    collisions: tuple = ()                      # (key, relative paths) resolved by hashing

    def head(self) -> str:
        return (f"{self.source}: {self.rows} videos from {self.input} -> {self.out} "
                f"({self.classes} classes, labels from {self.labels_from})")

    def notes(self) -> list:
        notes = [f"  class list (label_id = line number from 0): {self.classes_file}"] if self.classes_file else []
        if self.ignored_files:
            notes.append(f"  ignored {self.ignored_files} files without a video extension")
        return notes + [f"  key collision {key}: {', '.join(paths)} -> path hash appended to each"
                        for key, paths in self.collisions]


@dataclass
class _Entry:
    line: int | None     # file line of a list row; None for a folder scan
    rel: str             # path relative to the root (or a URL without its scheme): the key's basis
    path: str | None
    url: str | None
    label: str | None


def import_videos(src, source: str, out, labels_from: str | None = None, stride: int = 4, split: str | None = None,
                  root=None, class_list=None, probe: bool = False,
                  executor: ExecutorConfig = ExecutorConfig()) -> ImportReport:
    """Import a folder tree or a path list as manifest `out` and its class list `NAME.classes.txt`."""
    src = Path(src).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found; pass a folder of videos or a CSV/TSV list")
    if make_key(source) != source:
        raise ManifestError(f"--source {source!r} must use only letters, digits, '_' and '-'")
    if stride < 1:
        raise ManifestError(f"--stride must be at least 1 (got {stride})")
    bad, ignored = [], 0
    if src.is_dir():
        labels_from = labels_from or "folders"
        if labels_from == "csv":
            raise ManifestError("--labels-from csv needs a CSV/TSV list, not a folder; use folders or none", src)
        entries, ignored, bad = scan_folder(src)
    else:
        entries, bad, has_label = read_list(src, Path(root).resolve() if root else src.parent)
        labels_from = labels_from or ("csv" if has_label else "none")
        if labels_from == "csv" and not has_label:
            raise ManifestError("--labels-from csv but the list has no label column; add one or use "
                                "--labels-from folders|none", src)
    if labels_from not in LABELS_FROM:
        raise ManifestError(f"--labels-from must be one of {LABELS_FROM}")

    entries, label_bad = _assign_labels(entries, labels_from, src)
    bad += label_bad
    fixed = _read_class_list(class_list) if class_list else None
    classes = fixed or _sorted_classes({e.label for e in entries if e.label is not None})
    ids = {name: i for i, name in enumerate(classes)}
    if fixed:
        bad += [(e.line, e.rel, f"class {e.label!r} is not in {class_list}") for e in entries
                if e.label is not None and e.label not in ids]
        entries = [e for e in entries if e.label is None or e.label in ids]

    keys, collisions = unique_keys(source, [e.rel for e in entries])
    problems = ["its key clashes with another even with a hash appended; rename the file" if k is None
                else key_problem(k) for k in keys]
    bad += [(e.line, e.rel, p) for e, p in zip(entries, problems) if p]
    entries = [e for e, p in zip(entries, problems) if not p]
    keys = [k for k, p in zip(keys, problems) if not p]
    df = pd.DataFrame({
        "key": keys, "source": source, "video_id": [e.rel for e in entries],
        "url": [e.url for e in entries], "path": [e.path for e in entries],
        "label": [e.label for e in entries], "label_id": [ids.get(e.label) for e in entries],
        "split": split, "stride": stride,
    })
    missing = [e.url is None and not Path(e.path).is_file() for e in entries]
    df["status"] = ["missing-file" if m else None for m in missing]
    df["error"] = [f"{e.path} does not exist" if m else None for e, m in zip(entries, missing)]
    probed = None
    if probe:
        df = probe_paths(df, executor)
        probed = status_counts(df)

    write_manifest(df, out)
    classes_file = None
    if labels_from != "none":
        classes_file = Path(out).with_suffix(".classes.txt")
        write_text(classes_file, "".join(f"{c}\n" for c in classes))
    rejects = pd.DataFrame([{"file": str(src), "line": line, "key": rel, "reason": reason}
                            for line, rel, reason in bad], columns=REJECT_COLUMNS)
    return ImportReport(source=source, input=str(src), rows=len(df), classes=len(classes) if classes_file else 0,
                        missing=sum(missing), out=str(out), classes_file=None if classes_file is None
                        else str(classes_file), rejects_file=write_rejects(rejects, out),
                        labels_from=labels_from, ignored_files=ignored, collisions=tuple(collisions),
                        probed=probed, reasons=_reason_counts(bad))


def scan_folder(root: Path):
    """Every video file under root (sorted, hidden files skipped) -> (entries, number of other files, bad
    rows). A broken symbolic link with a video extension is a bad row (line None), not a silent gap."""
    entries, ignored, bad = [], 0, []
    for path in sorted(p for p in root.rglob("*") if p.is_file() or (p.is_symlink() and not p.exists())):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            ignored += path.is_file()
            continue
        if not path.is_file():
            bad.append((None, rel.as_posix(), f"broken symbolic link (to {os.readlink(path)})"))
            continue
        entries.append(_Entry(line=None, rel=rel.as_posix(), path=str(path), url=None, label=None))
    return entries, ignored, bad


def read_list(path: Path, root: Path):
    """A CSV/TSV of `path[,label]` (header optional) -> (entries, bad rows, whether labels are given).

    Relative paths are taken from `root`. A row that cannot be read goes to bad rows with its line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text; re-save the list as UTF-8", path) from None
    reader = csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise ManifestError("the list is empty; expected rows of path[,label]", path)
    path_col, label_col = 0, 1
    header = [c.lower() for c in rows[0][1]]
    if "path" in header:
        path_col = header.index("path")
        label_col = header.index("label") if "label" in header else None
        rows = rows[1:]
        width = len(header)
    else:
        width = None
    entries, bad, seen = [], [], {}
    for line, cells in rows:
        if (width is None and len(cells) > 2) or (width is not None and len(cells) != width):
            bad.append((line, None, f"expected {width or 'path[,label]'} fields, found {len(cells)}: {cells}"))
            continue
        raw = cells[path_col]
        label = cells[label_col] if label_col is not None and label_col < len(cells) else None
        if not raw:
            bad.append((line, None, "empty path"))
            continue
        entry = _list_entry(line, raw, label or None, root)
        if entry.rel in seen:
            bad.append((line, entry.rel, f"listed twice (first at line {seen[entry.rel]})"))
            continue
        seen[entry.rel] = line
        entries.append(entry)
    has_label = label_col is not None and any(len(c) > label_col for _, c in rows)
    return entries, bad, has_label


def unique_keys(source: str, rels: list):
    """Safe unique keys for relative paths -> (keys, [(key, [rel, ...])] for each resolved collision); see
    vmae.manifests.schema.settle_keys (None: a clash no hash settles)."""
    return settle_keys([make_key(source, str(PurePosixPath(r).with_suffix(""))) for r in rels], rels)


def probe_paths(df: pd.DataFrame, executor: ExecutorConfig = ExecutorConfig()) -> pd.DataFrame:
    """Probe every row with a local path and no status yet: probe facts and status ok, or the failure reason."""
    df = df.copy()
    todo = [(i, p) for i, p, s in zip(df.index, df["path"], df["status"]) if isinstance(p, str) and pd.isna(s)]
    chunks = [tuple(todo[i:i + PROBE_CHUNK]) for i in range(0, len(todo), PROBE_CHUNK)]
    for col in ("fps", "frames", "width", "height", "duration", "codec"):
        if col not in df.columns:
            df[col] = None
    df = df.astype({c: object for c in ("fps", "frames", "width", "height", "duration", "codec")})
    for _, results in run_units(_probe_chunk, chunks, executor):
        for i, facts, status, error in results:
            for col, value in facts.items():
                df.at[i, col] = value
            df.at[i, "status"], df.at[i, "error"] = status, error
    return df


def status_counts(df: pd.DataFrame) -> dict:
    """status -> rows after probe_paths (rows it left without a status count as unprobed)."""
    return df["status"].fillna("unprobed").value_counts().to_dict()


def probed_lines(probed: dict | None) -> list:
    """The report line of a probe (status -> count), none when no probe ran."""
    return ["  probe: " + ", ".join(f"{s} {n}" for s, n in sorted(probed.items()))] if probed else []


def _probe_chunk(chunk) -> list:
    out = []
    for i, path in chunk:
        try:
            out.append((i, probe(path), "ok", None))
        except MediaError as e:
            out.append((i, {}, e.reason, e.message))
        except Exception as e:  # one unreadable file is one bad row (a permission, an I/O error)
            out.append((i, {}, UNKNOWN, f"{path}: {type(e).__name__}: {e}"))
    return out


def _list_entry(line: int, raw: str, label, root: Path) -> _Entry:
    if raw.startswith(("http://", "https://")):
        return _Entry(line=line, rel=raw.split("://", 1)[1], path=None, url=raw, label=label)
    p = Path(raw)
    full = p if p.is_absolute() else root / p
    try:
        rel = full.relative_to(root).as_posix()
    except ValueError:
        rel = full.as_posix().lstrip("/")
    return _Entry(line=line, rel=PurePosixPath(rel).as_posix(), path=str(full), url=None, label=label)


def _assign_labels(entries: list, labels_from: str, src: Path):
    """Set each entry's label per --labels-from; entries that need a label and have none become bad rows."""
    good, bad = [], []
    for e in entries:
        if labels_from == "none":
            e.label = None
        elif labels_from == "folders":
            parts = PurePosixPath(e.rel).parts
            e.label = (parts[0] if src.is_dir() else PurePosixPath(e.rel).parent.name) if len(parts) > 1 else None
            if e.label is None:
                bad.append((e.line, e.rel, "not inside a class folder (expected class_name/video.ext)"))
                continue
        elif e.label is None:
            bad.append((e.line, e.rel, "empty label"))
            continue
        good.append(e)
    return good, bad


def _sorted_classes(names: set) -> list:
    # Numeric class names sort as numbers ("2" before "10"); anything else alphabetically.
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _read_class_list(path) -> list:
    """A class list file, or the name of an official label map (k400, k600, k700, k710: its ids)."""
    if str(path) in labels.VERSIONS:
        return list(labels.class_names(str(path)))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: class list not found")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if not names or dup:
        raise ManifestError(f"a class list needs one unique name per line (duplicates: {dup})", path)
    return names


def _reason_counts(bad: list) -> dict:
    counts = defaultdict(int)
    for _, _, reason in bad:
        counts[reason.split(" (")[0].split(":")[0]] += 1
    return dict(counts)
