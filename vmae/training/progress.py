"""A training run's exact epochs: batches epoch after epoch, how far the run is into the current one (for
checkpoints), and the record of the samples it trained on.

Every batch of an exact stream carries its videos' epoch positions (`pos`). Each rank marks them spent; a
checkpoint stores the union over ranks as a bitmap (N/8 bytes), so a resumed run deals only the positions not
yet spent, whatever the number of loader workers (the set is exact; the order within the rest of the epoch
is new). A deterministic run instead replays the epoch from its start and drops the batches it had trained
on, so it ends bit-identical to an uninterrupted one. With `record`, each rank appends the keys it trained on,
one per line in order, to OUTPUT_DIR/samples/epoch-E-rank-R.txt; a checkpoint stores every file's size and a
resumed run cuts what was written after it, so the files hold exactly what the resumed model trained on.
"""
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from vmae.errors import ConfigError
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

    def consume(self, batch: dict, record: bool = True) -> None:
        """Count a batch the model trained on (with record False: one it had trained on before a resume)."""
        self.spent[batch["pos"][::self.views].numpy()] = True
        if record and self.file is not None:
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


class ExactEpochs:
    """The batches of an exact stream's loader, epoch after epoch from `epoch` on, counted in `progress`.
    The first epoch leaves out the `spent` positions, or replays its first `skip` batches without training
    on them. `replay`: this run's batches come in an order a resumed run can replay (--deterministic)."""

    def __init__(self, loader, progress: EpochProgress, unit: int, replay: bool, epoch: int, spent=None,
                 skip: int = 0):
        self.loader, self.progress, self.unit, self.replay, self.position = loader, progress, unit, replay, 0
        self.batches = self.read(epoch, spent, skip)

    def __next__(self) -> dict:
        return next(self.batches)

    def read(self, epoch: int, spent, skip: int):
        while True:
            self.loader.dataset.set_epoch(epoch, spent)
            self.progress.begin(epoch, spent)
            self.position = 0
            for batch in self.loader:
                self.position += 1
                self.progress.consume(batch, record=self.position > skip)
                if self.position > skip:
                    yield batch
            epoch, spent, skip = epoch + 1, None, 0

    def state(self, device) -> dict:
        """The checkpoint's `data` (plain data and one tensor); collective, as EpochProgress.state."""
        return {"stream": "exact", **self.progress.state(device), "position": self.position, "unit": self.unit,
                "replay": self.replay}

    def close(self) -> None:
        self.batches.close()
        self.progress.close()


def resume_point(data: dict, samples: int, unit: int, replay: bool) -> tuple[int, np.ndarray | None, int]:
    """(epoch, spent positions, batches to replay) where an exact stream goes on after a checkpoint's `data`
    (ExactEpochs.state): the next epoch when the recorded one was done; else the recorded epoch without its
    spent positions, or, with `replay` (and a checkpoint of a replayable run), from its start, dropping the
    batches the checkpoint had trained on."""
    spent = spent_positions(data)
    if data["samples"] != samples:
        raise ConfigError(f"the checkpoint's epoch has {data['samples']} samples, the shards now have {samples}: "
                          "an exact epoch resumes on the same shard set (restore it, or use --stream resampled)")
    if spent.all():
        return data["epoch"] + 1, None, 0
    if data["unit"] != unit:
        raise ConfigError(f"the checkpoint was taken mid-epoch with {data['unit']} videos per optimiser step "
                          f"(processes x batch size x accumulation steps), this run has {unit}: resume with the "
                          "same product (e.g. halve the processes and double --accum-steps), or from a checkpoint "
                          "at the end of an epoch")
    if replay and data["replay"]:
        return data["epoch"], None, data["position"]
    return data["epoch"], spent, 0


def open_epochs(loader, cfg, info, data: dict, start_step: int, steps_per_epoch: int) -> ExactEpochs:
    """The exact epochs of a run (pretrain, finetune, distill) from where its checkpoint's `data` left them:
    rank 0 first makes the sample records match that checkpoint. A checkpoint without an exact epoch (a fresh
    start, or a resampled run) starts epoch start_step // steps_per_epoch afresh."""
    unit = info.world_size * cfg.batch_size * cfg.accum_steps
    exact, replay = data.get("stream") == "exact", getattr(cfg, "deterministic", False)
    epoch, spent, skip = (resume_point(data, loader.dataset.samples, unit, replay) if exact
                          else (start_step // steps_per_epoch, None, 0))
    distributed.main_only(lambda: cut_records(cfg.output_dir, data if exact else None), info)
    progress = EpochProgress(cfg.output_dir, info.rank, loader.dataset.samples, cfg.num_sample, cfg.record_samples)
    return ExactEpochs(loader, progress, unit, replay, epoch, spent, skip)
