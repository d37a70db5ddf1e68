"""How far a run is into its exact epoch: the positions spent, for checkpoints, and the record of samples.

Every batch of an exact stream carries its videos' epoch positions (`pos`). Each rank marks them spent; a
checkpoint stores the union over ranks as a bitmap (N/8 bytes), so a resumed run deals only the positions not
yet spent, whatever the number of loader workers. With `record`, each rank appends the keys it trained on, one
per line in order, to OUTPUT_DIR/samples/epoch-E-rank-R.txt; a checkpoint stores every file's size, and a
resumed run cuts what was written after it, so the files hold exactly what the resumed model trained on.
"""
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from vmae.training import distributed

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
RECORD_RE = re.compile(r"^epoch-(\d+)-rank-(\d+)\.txt$")


def record_path(output_dir, epoch: int, rank: int) -> Path:
    return Path(output_dir) / SAMPLES_DIR / f"epoch-{epoch}-rank-{rank}.txt"


class EpochProgress:
    """One rank's account of the epoch in progress, over a shard set of `samples` samples; batches hold
    `views` rows per video."""

    def __init__(self, output_dir, rank: int, samples: int, views: int = 1, record: bool = False):
        self.output_dir, self.rank, self.samples, self.views, self.record = output_dir, rank, samples, views, record
        self.epoch, self.spent, self.file = None, None, None

    def begin(self, epoch: int, spent: np.ndarray | None = None) -> None:
        """Start (or, with `spent`, continue) epoch `epoch`."""
        self.close()
        self.epoch = epoch
        self.spent = np.zeros(self.samples, bool) if spent is None else spent.copy()
        if self.record:
            path = record_path(self.output_dir, epoch, self.rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a")

    def consume(self, batch: dict) -> None:
        """Count a batch the model trained on."""
        self.spent[batch["pos"][::self.views].numpy()] = True
        if self.file is not None:
            self.file.write("".join(f"{key}\n" for key in batch["key"][::self.views]))

    @property
    def done(self) -> bool:
        return bool(self.spent.all())

    def state(self, device) -> dict:
        """The checkpoint's record of the epoch (plain data and one uint8 tensor). Collective: every rank calls
        it at the same step."""
        spent = torch.from_numpy(self.spent.astype(np.uint8)).to(device)
        spent = distributed.all_reduce_max(spent).cpu().numpy().astype(bool)
        size = None
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            size = self.file.tell()
        return {"epoch": self.epoch, "samples": self.samples, "spent": torch.from_numpy(np.packbits(spent)),
                "records": distributed.all_gather_object(size)}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def spent_positions(state: dict) -> np.ndarray:
    """The bool array over the epoch's positions that `EpochProgress.state` packed."""
    return np.unpackbits(state["spent"].numpy(), count=state["samples"]).astype(bool)


def cut_records(output_dir, state: dict | None) -> None:
    """Make OUTPUT_DIR/samples hold what the checkpoint's model trained on: files of later epochs go, and the
    checkpoint's epoch's files are cut to the sizes it recorded (a file of a rank it does not know goes). Rank 0
    calls it before any rank writes; state None (a fresh start) removes every record."""
    folder = Path(output_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return
    sizes = (state or {}).get("records") or []
    for path in sorted(folder.iterdir()):
        match = RECORD_RE.match(path.name)
        if match is None:
            continue
        epoch, rank = int(match[1]), int(match[2])
        if state is None or epoch > state["epoch"] or (epoch == state["epoch"] and
                                                        (rank >= len(sizes) or sizes[rank] is None)):
            path.unlink()
        elif epoch == state["epoch"]:
            os.truncate(path, sizes[rank])
