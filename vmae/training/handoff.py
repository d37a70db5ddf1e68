"""How DataLoader workers hand their batches to the main process: through shared-memory batch buffers that
each worker keeps and reuses, instead of a fresh shared buffer per batch.

A fresh buffer is paid page by page: the worker's first write into it faults in and zero-fills every page, a
sizeable share of the work per view when one decode gives several views (benchmarks/README.md, bench_loader
section 2). A reused buffer is faulted in once.

A buffer is rewritten only once nothing in the main process refers to it any more, so batches stay the
caller's to keep, as with plain DataLoader batches: each buffer has a busy flag in shared memory, set by the
worker when it takes the buffer and cleared by `Loader` once the batch's memory is gone from the main process
(at once for a pinned batch, which is a copy; else when the caller has dropped every tensor of it, checked at
each draw). A worker whose buffers are all still held takes a fresh one, as before.
"""
import math

import torch
from torch.multiprocessing.reductions import StorageWeakRef

SLOT_KEY = "_handoff_slot"


def shared_empty(shape: tuple) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory (as default_collate allocates in a worker)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class BufferPool:
    """Up to `size` reusable batch buffers per worker of a DataLoader with `workers` workers. Made in the main
    process before the workers start (they inherit the flags); the buffers themselves are made and kept by each
    worker."""

    def __init__(self, workers: int, size: int):
        self.busy = torch.zeros(max(workers, 1), size, dtype=torch.uint8).share_memory_()
        self.buffers = {}  # slot -> buffer, in a worker process

    def take(self, worker: int, shape: tuple) -> tuple[torch.Tensor, int | None]:
        """A shared uint8 buffer of `shape` and its slot: the first slot the main process does not hold (its
        buffer made on first use), or a fresh untracked buffer (slot None) when it holds them all."""
        flags = self.busy[worker].numpy()
        for slot in range(len(flags)):
            if not flags[slot]:
                buffer = self.buffers.get(slot)
                if buffer is None or buffer.shape != shape:
                    buffer = self.buffers[slot] = shared_empty(shape)
                flags[slot] = 1
                return buffer, slot
        return shared_empty(shape), None


class Loader(torch.utils.data.DataLoader):
    """A DataLoader over a dataset whose workers write their batches into `pool` (batches carry their slot
    under SLOT_KEY, removed here): frees each slot once the main process no longer refers to its batch's
    memory. One pass at a time, as a DataLoader with persistent workers."""

    def __init__(self, dataset, pool: BufferPool, **options):
        super().__init__(dataset, **options)
        self.pool = pool
        self.held = []  # (worker, slot, weak reference to the batch's shared storage), across passes

    def __iter__(self):
        for batch in super().__iter__():
            self.held = [entry for entry in self.held if not self._released(entry)]
            slot = batch.pop(SLOT_KEY, None)  # (worker, slot); a list once pinned
            if slot is not None:
                worker, index = slot
                if batch["video"].is_pinned():  # the pin-memory thread copied it and dropped the shared buffer
                    self.pool.busy[worker, index] = 0
                else:
                    self.held.append((worker, index, StorageWeakRef(batch["video"].untyped_storage())))
            yield batch

    def _released(self, entry) -> bool:
        worker, slot, storage = entry
        if not storage.expired():
            return False
        self.pool.busy[worker, slot] = 0
        return True
