"""What every training loop shares: the training step (`Stepper`), the schedule, resuming, seeding, mixed
precision, logging and checkpoint wrappers. A loop (pretrain, finetune, distill) brings its model, its data
and a `forward(train_model, step, micro) -> loss`; everything from the loss to the optimiser step is here.
"""
import hashlib
import json
import logging
import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vmae.config import save_config
from vmae.errors import ConfigError, VmaeError, output_fault
from vmae.training import checkpoint, distributed, run_folder
from vmae.training.optim import apply_lr, lr_at, scaled_lr

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
    """Rank 0 shows a tqdm bar and appends to `log.jsonl` (one JSON object per log call; a failed write stops
    the run with an OutputError) and TensorBoard events under `tb/`; other ranks write nothing. The log was
    cut back to `start_step` before (run_folder.rewind), so it reads as one run."""

    BAR_KEYS = ("loss", "lr", "clips_per_s", "data_wait")

    def __init__(self, output_dir, is_main: bool, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, desc: str = "train"):
        self.is_main = is_main
        self.bar = self.writer = self.file = None
        if not is_main:
            return
        out = Path(output_dir)
        self.path = out / "log.jsonl"
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
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise output_fault(e, self.path.parent) or e
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


def save(output_dir, step: int, state: dict, keep: int, info) -> Path:
    """Rank 0 writes `checkpoint-{step:08d}.pth` (checked, atomically) and prunes to the newest `keep` readable
    ones; every rank waits for it and stops with rank 0's error (a full disk) if it failed."""
    return distributed.main_only(lambda: checkpoint.save_checkpoint(output_dir, step, state, keep), info)


@contextmanager
def process_group(device: str | None):
    """The torchrun process group (or a single process) for one run, log lines kept clear of the progress bar."""
    info = distributed.init_distributed(device)
    try:
        with logging_redirect_tqdm():
            yield info
    finally:
        distributed.cleanup()


def resume(path, info, model, optimizer, amp: Amp, ema=None) -> dict:
    """Restore model, optimiser, scaler (and EMA) and this rank's RNG from checkpoint `path` (run_folder.claim's
    pick; None: a fresh start). Returns the checkpoint's other entries (step, config, ...), {} for none."""
    if path is None:
        return {}
    state = checkpoint.load_checkpoint_file(path)
    ema_weights = state.pop("model_ema", None)
    try:
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
        if ema is not None and ema_weights is not None:
            ema.module.load_state_dict(ema_weights)
    except (KeyError, RuntimeError, ValueError) as e:
        raise checkpoint.CheckpointError(
            f"{path} does not fit this run ({str(e).splitlines()[0]}): it was written with another --model or by "
            "another command. Resume with the options it was made with (its config.json), or choose a new "
            "--output-dir") from e
    amp.load_state_dict(state.pop("scaler", None) or {})
    restore_rng_state(state.pop("rng", None), info.rank, info.world_size)
    return state


@dataclass
class Schedule:
    """Optimiser steps per epoch, in the schedule and in this run (max_steps stops early; the lr schedule
    still spans every epoch), warmup steps, and the actual (scaled) learning rates."""
    steps_per_epoch: int
    total_steps: int
    end_step: int
    warmup_steps: int
    lr: float
    min_lr: float
    global_batch: int

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.lr, self.min_lr, self.warmup_steps, self.total_steps)


def make_schedule(cfg, loader_steps: int | None, world_size: int) -> Schedule:
    """The schedule of a run config: epochs of `loader_steps` batches per process (or cfg.steps_per_epoch), a step
    being accum_steps batches; the lr scaled by the config's global batch."""
    batches = cfg.steps_per_epoch or loader_steps  # per process per epoch
    if not batches:
        raise ConfigError(f"{cfg.shards}: the sample count is unknown (no index.parquet beside the shards, nor "
                          "--index); pass --steps-per-epoch (batches per process per epoch)")
    per_epoch = max(1, batches // cfg.accum_steps)
    total = per_epoch * cfg.epochs
    end = min(total, cfg.max_steps) if cfg.max_steps is not None else total
    batch = cfg.global_batch(world_size)
    return Schedule(per_epoch, total, end, per_epoch * cfg.warmup_epochs, scaled_lr(cfg.base_lr, batch),
                    scaled_lr(cfg.min_lr, batch), batch)


def start_run(cfg, info, amp: Amp, start_step: int, *lines: str) -> None:
    """Rank 0: cut the run folder back to `start_step` (run_folder.rewind), save config.json, then log what runs
    where and `lines` (batch, lr, ...). Every rank stops with rank 0's error if a write fails."""
    out = Path(cfg.output_dir)

    def prepare():
        run_folder.rewind(out, start_step)
        save_config(cfg, out / "config.json")

    distributed.main_only(prepare, info)
    if not info.is_main:
        return
    log.info("%s %s on %d process(es), %s, amp %s", type(cfg).__name__.replace("Config", "").lower(), cfg.model,
             info.world_size, info.device, amp.mode)
    for line in lines:
        log.info(line)


class Stepper:
    """The training step every loop shares: the lr of the step, then accum_steps micro-batches of forward (the
    loop's own, under its autocast) -> loss -> backward (DDP all-reduces the gradients on the last one only),
    then unscale, clip, optimiser and scaler step, zero the gradients, EMA. `run` takes a span of steps (an
    epoch, or the steps between two checkpoints) and logs what the interval saw: mean loss, lr, gradient
    norm, data wait, skipped samples."""

    def __init__(self, model, optimizer, amp: Amp, info, cfg, schedule: Schedule, ema=None, skipped: int = 0):
        self.model, self.optimizer, self.amp, self.info, self.schedule, self.ema = model, optimizer, amp, info, \
            schedule, ema
        self.accum_steps, self.clip_grad, self.log_every = cfg.accum_steps, cfg.clip_grad, cfg.log_every
        self.train_model = distributed.wrap_ddp(model, info)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.meter = Throughput()
        self.loss_sum = torch.zeros((), device=info.device, dtype=torch.float64)
        self.loss_count = self.skipped = 0
        self.skipped_total = skipped  # over all ranks, since the run began (a resumed run carries it on)
        self.lr, self.grad_norm = 0.0, None

    def next_batch(self, batches) -> dict:
        """The next batch of `batches`; its wait and the samples the stream skipped before it are counted."""
        t0 = time.perf_counter()
        batch = next(batches)
        self.meter.add(len(batch["video"]), time.perf_counter() - t0)
        self.skipped += int(batch.get("skipped", 0))
        return batch

    def step(self, forward: Callable, step: int) -> None:
        """Optimiser step `step`; `forward(train_model, step, micro)` returns micro-batch `micro`'s loss."""
        self.lr = self.schedule.lr_at(step)
        apply_lr(self.optimizer, self.lr)
        for micro in range(self.accum_steps):
            last = micro == self.accum_steps - 1
            with nullcontext() if last or not self.info.distributed else self.train_model.no_sync():
                loss = forward(self.train_model, step, micro)
                self.amp.backward(loss / self.accum_steps)
            self.loss_sum += loss.detach()
            self.loss_count += 1
        # a tensor: no device sync per step (read once per log interval)
        self.grad_norm = self.amp.step(self.optimizer, self.train_model.parameters(), self.clip_grad)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=step)

    def run(self, forward: Callable, start: int, stop: int, logger: RunLogger) -> dict:
        """Steps start..stop-1 (mae's train_one_epoch), logged every log_every steps and at `stop` (where the
        loop validates or saves); returns the last log record."""
        for step in range(start, stop):
            self.step(forward, step)
            logger.advance()
            if (step + 1) % self.log_every == 0 or step + 1 == stop:
                record = self.interval(step + 1)
                logger.log(step + 1, record)
        return record

    def interval(self, step: int) -> dict:
        """The log record of the interval that ends at `step` (one small all-reduce; a non-finite mean loss
        stops the run here, before anything is saved)."""
        totals = distributed.all_reduce_sum(torch.stack([
            self.loss_sum, self.loss_sum.new_tensor(self.loss_count), self.loss_sum.new_tensor(self.skipped)]))
        loss = (totals[0] / totals[1]).item()
        check_finite(loss, step)
        if self.skipped:
            log.warning("rank %d: %d sample(s) skipped for decode errors in the last interval (see the stream's "
                        "messages above for keys and shards)", self.info.rank, self.skipped)
        self.skipped_total += int(totals[2].item())
        metrics = {"loss": loss, "lr": self.lr, "grad_norm": float(self.grad_norm),
                   "epoch": round(step / self.schedule.steps_per_epoch, 4), "skipped": self.skipped_total,
                   **self.meter.read(self.info.world_size)}
        if self.info.device.type == "cuda":
            metrics["mem_gb"] = round(torch.cuda.max_memory_allocated(self.info.device) / 2**30, 2)
        self.loss_sum.zero_()
        self.loss_count = self.skipped = 0
        return metrics
