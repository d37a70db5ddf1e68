"""Something-Something V2: the official JSON annotations and 174-class label file -> a manifest of the
`.webm` videos (stride 2 in UnlabeledHybrid; labels kept for fine-tuning).

The class name of a video is its template with the brackets removed ("Holding [something] next to
[something]" -> "Holding something next to something"), which is how the label file spells it.
"""
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vmae.curation.importer import ListReport, probe_paths, status_counts
from vmae.executors import ExecutorConfig
from vmae.manifests import ManifestError, make_key, write_manifest
from vmae.manifests.validate import REJECT_COLUMNS, write_rejects

SOURCE = "ssv2"
STRIDE = 2
_SPLIT_WORDS = {"train": "train", "training": "train", "validation": "val", "val": "val", "test": "test"}


@dataclass(frozen=True, kw_only=True)
class Ssv2Report(ListReport):
    annotations: str
    split: str
    entries: int
    unlabeled: int
    classes_seen: int
    classes: int

    def head(self) -> str:
        return (f"ssv2 {self.split}: {self.entries} annotations -> {self.rows} rows in {self.out} "
                f"({self.classes_seen} of {self.classes} classes present)")

    def notes(self) -> list:
        return [f"  {self.unlabeled} rows have no template (label left empty)"] if self.unlabeled else []


def template_name(template: str) -> str:
    """The label-file spelling of a template: brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_labels(path) -> dict:
    """The label file {"class name": "id"} -> {name: int id}; ids must be 0..N-1, each once."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise ManifestError('expected a JSON object {"class name": "id", ...} (labels.json as released)', path)
    labels = {}
    for name, value in data.items():
        try:
            labels[name] = int(value)
        except (TypeError, ValueError):
            raise ManifestError(f"class {name!r} has id {value!r}, not an integer", path) from None
    if sorted(labels.values()) != list(range(len(labels))):
        raise ManifestError(f"class ids must be 0..{len(labels) - 1}, each used once", path)
    return labels


def split_from_name(path) -> str | None:
    """train / val / test from a file name like something-something-v2-validation.json; None if unclear."""
    words = {_SPLIT_WORDS[w] for w in re.split(r"[^a-z]+", Path(path).stem.lower()) if w in _SPLIT_WORDS}
    return words.pop() if len(words) == 1 else None


def ssv2_manifest(annotations, labels, videos, out, split: str | None = None, ext: str = "webm",
                  probe: bool = False, executor: ExecutorConfig = ExecutorConfig()) -> Ssv2Report:
    """Build the SSV2 manifest of one annotation file and write it (and its rejects) to `out`."""
    annotations, videos = Path(annotations), Path(videos).resolve()
    split = split or split_from_name(annotations)
    if split is None:
        raise ManifestError("cannot tell the split from the file name; pass --split train|val|test", annotations)
    if not videos.is_dir():
        raise FileNotFoundError(f"{videos}: video folder not found; pass --videos with the extracted .webm files")
    classes = read_labels(labels)
    entries = _load_json(annotations)
    if not isinstance(entries, list):
        raise ManifestError("expected a JSON list of {id, label, template, placeholders} objects", annotations)

    present = {e.name for e in os.scandir(videos) if e.is_file()}
    rows, bad, seen, kinds = [], [], {}, Counter()
    for i, entry in enumerate(entries):
        row, kind, reason = _entry_row(entry, classes, split, videos, ext, present)
        if kind is None and row["video_id"] in seen:
            kind, reason = "duplicate id", f"duplicate id {row['video_id']!r} (first at entry {seen[row['video_id']]})"
        if kind is not None:
            kinds[kind] += 1
            bad.append({"file": str(annotations), "line": i, "key": None if row is None else row["key"],
                        "reason": reason})
            continue
        seen[row["video_id"]] = i
        rows.append(row)
    df = pd.DataFrame(rows, columns=["key", "source", "video_id", "path", "label", "label_id", "split",
                                     "stride", "status", "error"])
    probed = None
    if probe:
        df = probe_paths(df, executor)
        probed = status_counts(df)
    write_manifest(df, out)
    rejects = pd.DataFrame(bad, columns=REJECT_COLUMNS)
    return Ssv2Report(annotations=str(annotations), split=split, entries=len(entries), rows=len(df),
                      missing=int((df["status"] == "missing-file").sum()), unlabeled=int(df["label"].isna().sum()),
                      classes_seen=int(df["label_id"].nunique()), classes=len(classes), out=str(out),
                      rejects_file=write_rejects(rejects, out), probed=probed,
                      reasons=dict(kinds))


def _entry_row(entry, classes: dict, split: str, videos: Path, ext: str, present: set):
    """One annotation entry -> (row, None, None), or (row or None, kind, message) when it is unusable."""
    if not isinstance(entry, dict):
        return None, "not an object", "entry is not a JSON object"
    vid = str(entry.get("id", "")).strip()
    if not vid:
        return None, "no id", "entry has no id"
    key = make_key(SOURCE, vid)
    template = entry.get("template")
    label = label_id = None
    if template is not None:
        label = template_name(str(template))
        if label not in classes:
            return {"key": key}, "unknown template", f"template {template!r} is not in the label file"
        label_id = classes[label]
    name = f"{vid}.{ext}"
    found = name in present
    return {"key": key, "source": SOURCE, "video_id": vid, "path": str(videos / name),
            "label": label, "label_id": label_id, "split": split, "stride": STRIDE,
            "status": None if found else "missing-file",
            "error": None if found else f"{videos / name} does not exist"}, None, None


def _load_json(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"not valid JSON ({e}); pass the file as released", path) from None
