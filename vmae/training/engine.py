"""Run plumbing shared by every training loop: seeding, mixed precision, logging, checkpoint wrappers."""
import hashlib
import json
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vmae.atomic import write_text
from vmae.errors import VmaeError
from vmae.training import checkpoint, distributed

log = logging.getLogger(__name__)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch with seed + rank (each rank draws differently, reproducibly)."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, step, ...): hashing int tuples is stable across processes."""
    return hash(tuple(int(p) for p in parts)) & (2**63 - 1)


class NonFiniteLossError(VmaeError, RuntimeError):
    """The loss became NaN or infinite: training stops rather than write broken weights."""


def check_finite(value: float, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss is {value} at step {step}: stopping before anything else is saved. Resume from the last "
            "checkpoint with a lower --base-lr, a --clip-grad, or --amp bf16 instead of fp16.")


class Amp:
    """Mixed precision: an autocast dtype, plus a GradScaler only for fp16 (bf16 needs none).

    mode "auto" is bf16 on a GPU and off on a CPU.
    """

    def __init__(self, mode: str = "auto", device="cpu"):
        self.device = torch.device(device)
        if mode == "auto":
            mode = "bf16" if self.device.type == "cuda" else "off"
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
        if mode not in dtypes:
            raise ValueError(f"amp mode {mode!r} must be one of auto, bf16, fp16, off")
        self.mode = mode
        self.dtype = dtypes[mode]
        self.scaler = torch.amp.GradScaler(self.device.type) if mode == "fp16" else None

    def autocast(self):
        """Context for a forward pass in the chosen precision (a no-op when off)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer, parameters, clip_grad: float | None = None) -> torch.Tensor:
        """Unscale, clip (or only measure) the gradient norm, step the optimiser. Returns the norm (a tensor,
        so no device sync here); with fp16 a non-finite norm means the scaler skipped this step."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        params = [p for p in parameters if p.grad is not None]
        if clip_grad is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class Throughput:
    """Clips per second and the share of wall time spent waiting for the loader, over one log interval."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.clips = 0
        self.data_time = 0.0

    def add(self, clips: int, data_time: float) -> None:
        self.clips += clips
        self.data_time += data_time

    def read(self, world_size: int = 1) -> dict:
        """Rates since the last read (clips/s over all ranks, assuming they run alike), then reset."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rates = {"clips_per_s": self.clips * world_size / elapsed, "data_wait": self.data_time / elapsed}
        self.reset()
        return rates


class RunLogger:
    """Rank 0 shows a tqdm bar and writes `log.jsonl` (one JSON object per log call) and TensorBoard events
    under `tb/`; other ranks write nothing. Resuming at `start_step` drops records of later steps that a killed
    run left behind, so the log reads as one run."""

    BAR_KEYS = ("loss", "lr", "clips_per_s", "data_wait")

    def __init__(self, output_dir, is_main: bool, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, desc: str = "train"):
        self.is_main = is_main
        self.bar = self.writer = self.file = None
        if not is_main:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "log.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a")
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True, unit="step")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(out / "tb"), purge_step=start_step or None)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, metrics: dict) -> None:
        """Record `metrics` (plain numbers/strings) at `step` in every sink."""
        if not self.is_main:
            return
        record = {"step": step, **metrics, "time": round(time.time(), 3)}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"train/{key}", value, step)
        shown = {k: metrics[k] for k in self.BAR_KEYS if k in metrics}
        self.bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in shown.items()},
                             refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()


def weights_digest(state_dict: dict) -> str:
    """sha256 over a state dict's names and tensor bytes: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_replicas(model, step: int) -> list[str]:
    """Every rank's weights digest; raises if DDP replicas have drifted apart (they must stay bit-identical)."""
    digests = distributed.all_gather_object(weights_digest(model.state_dict()))
    if len(set(digests)) > 1:
        raise RuntimeError(f"the {len(digests)} replicas' weights differ at step {step} (digests by rank: "
                           f"{[d[:12] for d in digests]}): gradients were not averaged the same way on every "
                           "rank; check that every rank runs the same model, options and number of steps")
    return digests


def gather_rng_state() -> list:
    """Every rank's RNG state (rank order), weights_only-safe, for the checkpoint."""
    return distributed.all_gather_object(checkpoint.rng_state())


def restore_rng_state(states: list | None, rank: int, world_size: int) -> None:
    """Restore this rank's entry of `gather_rng_state()`; skipped (with a note) if the world size changed."""
    if not states:
        return
    if len(states) != world_size:
        log.warning("checkpoint holds RNG state for %d ranks, this run has %d: RNG state not restored",
                    len(states), world_size)
        return
    checkpoint.set_rng_state(states[rank])


def save(output_dir, step: int, state: dict, keep: int, info) -> Path | None:
    """Rank 0 writes `checkpoint-{step:08d}.pth` atomically and prunes to the newest `keep`; all ranks wait."""
    if info.is_main:
        checkpoint.save_checkpoint(output_dir, step, state, keep)
    distributed.barrier()
    return Path(output_dir) / f"checkpoint-{step:08d}.pth"


def find_resume(resume: str | None, output_dir) -> Path | None:
    """The checkpoint to resume from: None (fresh start), "auto" (newest complete file in output_dir, or a
    fresh start when there is none) or an explicit path (which must exist)."""
    if resume is None:
        return None
    if resume == "auto":
        return checkpoint.latest_checkpoint(output_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file (use --resume auto to continue "
                                "from the newest checkpoint in --output-dir)")
    return path


def load_resume(path) -> dict:
    """A checkpoint loaded with weights_only=True (tensors land on the CPU)."""
    return checkpoint.load_checkpoint_file(path)
