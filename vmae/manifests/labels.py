"""The official VideoMAE V2 label files, shipped byte for byte, and small accessors over them.

Class id = 0-based line number of label_map_k{400,600,700,710}.txt. Quirk kept on purpose: the rename
table maps K400's 'hugging' and 'opening bottle' to K710 names other than the ones label_710to400.json
uses ('hugging baby', 'opening wine bottle'); head conversion follows the JSON maps exactly, as the
official code does.
"""
import json
from functools import lru_cache
from importlib import resources

VERSIONS = ("k400", "k600", "k700", "k710")


def data_file(name: str):
    return resources.files("vmae.manifests") / "data" / name


@lru_cache(maxsize=None)
def class_names(version: str) -> tuple:
    """The class names of a Kinetics version, in official order (index = class id)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown label map {version!r}; choose one of {VERSIONS}")
    return tuple(data_file(f"label_map_{version}.txt").read_text(encoding="utf-8").split("\n"))


@lru_cache(maxsize=None)
def class_ids(version: str) -> dict:
    """Name -> class id."""
    return {name: i for i, name in enumerate(class_names(version))}


@lru_cache(maxsize=None)
def rename_table() -> dict:
    """Older or alternative Kinetics class names -> the name kept in K710 (15 entries)."""
    return json.loads(data_file("k710_identical_label_merge.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def head_map(num_classes: int) -> tuple:
    """For num_classes in (400, 600, 700): element i = the K710 id of class i of that version."""
    if num_classes not in (400, 600, 700):
        raise ValueError(f"no 710->{num_classes} map; choose 400, 600 or 700")
    return tuple(json.loads(data_file(f"label_710to{num_classes}.json").read_text(encoding="utf-8")))
