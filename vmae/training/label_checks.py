"""Labels that do not fit the classifier's head, found before the first step instead of as an index error deep
inside mixup or the loss: from the label counts a shard set's shards.json records (`totals.labels`), and, for
shards without that record (remote, foreign or older sets), in the first batch that brings one."""
import json
from pathlib import Path

from vmae.errors import ConfigError, VmaeError

SCHEMES = ("http:", "https:", "s3:", "gs:", "pipe:", "hf:")


def _fix(num_classes: int, needed: int, option: str) -> str:
    return (f"--num-classes is {num_classes}: pass --num-classes {needed} (or more), or {option} with labels below "
            f"{num_classes}")


def shard_folders(shards: str) -> list[Path]:
    """The local folders a shard pattern reads from (a folder itself, or the folder of a file pattern)."""
    folders = []
    for part in shards.split("::"):
        if part.startswith(SCHEMES):
            continue
        path = Path(part.removeprefix("file:"))
        folder = path if path.is_dir() else path.parent
        if folder not in folders:
            folders.append(folder)
    return folders


def check_shards(shards: str | None, num_classes: int, option: str = "--shards") -> None:
    """Raise ConfigError when a local shard set's shards.json records a label id outside [0, num_classes)."""
    for folder in shard_folders(shards or ""):
        try:
            labels = json.loads((folder / "shards.json").read_text())["totals"]["labels"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no record: the batch check below stops at the first label that does not fit
        ids = [int(k) for k in labels]
        if ids and (min(ids) < 0 or max(ids) >= num_classes):
            outside = sum(n for k, n in labels.items() if not 0 <= int(k) < num_classes)
            raise ConfigError(f"{folder / 'shards.json'}: {outside} sample(s) have label ids outside "
                              f"0..{num_classes - 1} (ids {min(ids)}..{max(ids)}); "
                              f"{_fix(num_classes, max(ids) + 1, option)}")


def check_batch(batch: dict, num_classes: int, option: str = "--shards") -> None:
    """Raise VmaeError naming the first samples of `batch` whose label does not fit a head of num_classes."""
    labels = batch["label"]
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten().tolist()
    if bad:
        keys = sorted({f"{batch['key'][i]} (label {int(labels[i])})" for i in bad})
        raise VmaeError(f"samples {', '.join(keys[:5])} of {option} have labels outside 0..{num_classes - 1}; "
                        f"{_fix(num_classes, int(labels.max()) + 1, option)}")
