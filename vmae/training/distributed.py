"""Process-group set-up for torchrun (`env://`, single or multi node), with a plain single-process fallback.

NCCL on GPUs, gloo on CPU. Every helper here also works when no process group exists, so library code
calls them unconditionally.
"""
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vmae.errors import VmaeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK, or run as one process.

    `device` forces "cpu" or "cuda"; by default a GPU is used when one is visible.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU; pass --device cpu")
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                device_id=dev if use_cuda else None)
        log.info("rank %d/%d joined the %s process group (local rank %d, %s)", rank, world_size, backend,
                 local_rank, dev)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def wrap_ddp(model, info: DistInfo, find_unused_parameters: bool = False):
    """DDP around `model` when running distributed, else `model` itself."""
    if not info.distributed:
        return model
    ids = [info.local_rank] if info.device.type == "cuda" else None
    # The models' only buffers are the fixed sinusoid position tables, equal on every rank: broadcasting
    # them before every forward (DDP's default) would only add traffic.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False,
                                                     find_unused_parameters=find_unused_parameters)


def all_gather_object(obj) -> list:
    """Every rank's `obj`, in rank order ([obj] without a process group)."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_only(fn, info: DistInfo):
    """fn() on rank 0 alone (a save, a lock), its result handed to every rank. When it raises, every rank
    raises: a user error (VmaeError, a missing file) as itself, anything else as a RuntimeError pointing at
    rank 0's traceback; so no rank waits in a later collective for one that stopped."""
    result = error = None
    if info.is_main:
        try:
            result = fn()
        except BaseException as e:  # re-raised below, once the other ranks have heard of it
            error = e
    shared = broadcast_object((result, None if error is None else _portable(error)))
    if error is not None:
        raise error
    if shared[1] is not None:
        raise shared[1]
    return shared[0]


def _portable(error: BaseException) -> BaseException:
    if isinstance(error, (VmaeError, FileNotFoundError)):
        return type(error)(str(error))
    return RuntimeError(f"rank 0 failed ({type(error).__name__}: {error}); see its traceback")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks (in place; returned for convenience)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of `tensor` over ranks (in place; returned for convenience)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
