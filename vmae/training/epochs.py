"""The exact epoch: which reader reads which samples, so that an epoch shows every sample once.

Epoch e puts the shard set's N samples in an order: the shards permuted by (seed, e), each shard's samples
in file order from a start drawn by (seed, e), wrapping round (the stream's shuffle buffer mixes them
further). Position p of the epoch is the p-th sample of that order. The random start keeps a sample from
sitting at the same place of every epoch when readers get few shards each (a big run: ~2-3). The epoch has `slots` = N rounded up to whole optimiser steps of every rank (ranks x batch_size x
accum_steps); the slots past N repeat the first positions (padding, as torch's DistributedSampler pads).
Readers, rank-major then DataLoader worker, take contiguous runs of the slots: every rank the same number of
whole batches, its workers as even as whole batches allow. Fewer shards than readers simply means that a
shard is shared by several readers, each reading its own range of samples.

A resumed epoch deals the positions not yet spent the same way, padded again to whole steps.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Range:
    """Samples [start, stop) of shard `shard` (its index in the shard list), at epoch positions pos, pos + 1,
    ...; `repeat` marks padding (positions dealt a second time)."""
    shard: int
    start: int
    stop: int
    pos: int
    repeat: bool = False


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    samples: int  # N, the shard set's samples
    spent: int  # positions spent before this pass (a resumed epoch)
    padding: int  # slots that repeat a position
    batches: int  # batches per rank in this pass
    workers: int
    readers: tuple  # per reader (rank-major, then worker): a tuple of Range

    def ranges(self, rank: int, worker: int) -> tuple:
        return self.readers[rank * self.workers + worker]


def shard_order(sizes, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(the order in which epoch `epoch` visits the shards, the sample each shard starts from)."""
    sizes = np.asarray(sizes, np.int64)
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(len(sizes)), rng.integers(np.maximum(sizes, 1))


def epoch_slots(samples: int, ranks: int, batch_size: int, accum_steps: int = 1) -> int:
    """`samples` rounded up to whole optimiser steps of every rank."""
    unit = ranks * batch_size * accum_steps
    return -(-samples // unit) * unit


def plan_epoch(sizes, seed: int, epoch: int, ranks: int, workers: int, batch_size: int, accum_steps: int = 1,
               spent: np.ndarray | None = None) -> EpochPlan:
    """Deal epoch `epoch` of shards with `sizes` samples over ranks x workers readers.

    spent: a bool array over the epoch's positions, True where a position was already trained on (a resumed
    epoch); only the others are dealt."""
    sizes = np.asarray(sizes, np.int64)
    total = int(sizes.sum())
    if total == 0:
        raise ValueError("the shard set has no samples")
    if spent is not None and len(spent) != total:
        raise ValueError(f"the record of spent positions covers {len(spent)} samples, the shard set has {total}")
    left = np.arange(total) if spent is None else np.flatnonzero(~np.asarray(spent, bool))
    slots = epoch_slots(len(left), ranks, batch_size, accum_steps)
    sequence = np.concatenate([left, np.resize(left, slots - len(left))])
    order, starts = shard_order(sizes, seed, epoch)
    batches = slots // (ranks * batch_size)
    per_worker = [(batches // workers + (w < batches % workers)) * batch_size for w in range(workers)]
    readers, start = [], 0
    for _ in range(ranks):
        for count in per_worker:
            readers.append(_ranges(sequence[start:start + count], start, len(left), order, starts, sizes))
            start += count
    return EpochPlan(epoch=epoch, samples=total, spent=total - len(left), padding=slots - len(left),
                     batches=batches, workers=workers, readers=tuple(readers))


def _ranges(positions: np.ndarray, first_slot: int, unique: int, order: np.ndarray, starts: np.ndarray,
            sizes: np.ndarray) -> tuple:
    """Runs of consecutive samples of one shard at consecutive positions, as Ranges; slots from `unique` on
    are padding."""
    if len(positions) == 0:
        return ()
    ends = np.cumsum(sizes[order])
    slot = np.searchsorted(ends, positions, side="right")  # which shard of the epoch's order
    shard = order[slot]
    sample = (positions - (ends[slot] - sizes[shard]) + starts[shard]) % sizes[shard]
    repeat = np.arange(first_slot, first_slot + len(positions)) >= unique
    cuts = np.flatnonzero((np.diff(positions) != 1) | (np.diff(slot) != 0) | (np.diff(sample) != 1)
                          | (np.diff(repeat) != 0)) + 1
    return tuple(Range(int(shard[a]), int(sample[a]), int(sample[a]) + b - a, int(positions[a]), bool(repeat[a]))
                 for a, b in zip([0, *cuts], [*cuts, len(positions)]))
