"""Supervised fine-tuning (`vmae-train finetune`), also the loop `vmae-train distill` runs.

One optimiser step: a batch of uint8 clips from the stream's train mode (RandAugment identical across a
clip's frames, random resized crop, flip, `num_sample` views per decode) -> device -> ImageNet normalisation
-> cube random erasing -> Mixup/CutMix on the batch viewed as (B, C*T, H, W) -> forward under autocast ->
loss -> AdamW with layer-wise lr decay, per-step warmup + cosine, optional clipping and model EMA.
After every epoch: single-view validation (top-1/top-5 over all ranks, merged by key as in eval), an epoch
checkpoint (newest `keep_last` kept, resumable) and `checkpoint-best.pth` when validation top-1 improves.
"""
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from tqdm.contrib.logging import logging_redirect_tqdm

from vmae.training import checkpoint, distributed, engine
from vmae.training.config import FinetuneConfig, save_config, to_dict
from vmae.training.data import StreamConfig, make_loader
from vmae.training.evaluate import merge_results, predict, score
from vmae.training.models import create_model
from vmae.training.optim import apply_lr, lr_at, make_optimizer, scaled_lr
from vmae.training.transforms import normalize, random_erase_cube

log = logging.getLogger(__name__)

BEST = "checkpoint-best.pth"


def classification_loss(cfg: FinetuneConfig) -> Callable:
    """The reference's criterion: soft-target CE after mixup (smoothing folded into the targets), else
    label-smoothing CE, else plain CE. Called as loss(logits, inputs, targets)."""
    if cfg.uses_mixup:
        criterion = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    return lambda logits, inputs, targets: criterion(logits.float(), targets)


def make_mixup(cfg: FinetuneConfig):
    """timm Mixup/CutMix per batch (None when off). It draws from numpy's global RNG, seeded per rank."""
    if not cfg.uses_mixup:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.smoothing,
                 num_classes=cfg.num_classes)


def mix_clips(mixup, video: torch.Tensor, labels: torch.Tensor):
    """Mixup/CutMix on [B, C, T, H, W] viewed as (B, C*T, H, W), so a CutMix box covers every frame."""
    b, c, t, h, w = video.shape
    mixed, targets = mixup(video.reshape(b, c * t, h, w), labels)
    return mixed.reshape(b, c, t, h, w), targets


def build_model(cfg: FinetuneConfig):
    """The fine-tune model of `cfg`, freshly initialised (head scaled by init_scale)."""
    return create_model(cfg.model, num_classes=cfg.num_classes, num_frames=cfg.num_frames,
                        img_size=cfg.input_size, tubelet_size=cfg.tubelet_size, drop_path_rate=cfg.drop_path,
                        head_drop_rate=cfg.head_drop, init_scale=cfg.init_scale,
                        checkpoint_activations=cfg.checkpoint_activations)


def train_stream(cfg: FinetuneConfig, seed: int):
    """The stream's train mode: endless (resampled shards), num_sample augmented clips per decoded video."""
    options = dict(shards=cfg.shards, mode="train", num_frames=cfg.num_frames, input_size=cfg.input_size,
                   batch_size=cfg.batch_size, num_sample=cfg.num_sample, workers=cfg.workers, seed=seed,
                   resampled=True, sparse=cfg.sparse, flip=cfg.flip, randaug=cfg.randaug)
    return StreamConfig(**_optional(options, cfg, ("decoder", "shuffle_buffer", "stride")))


def val_stream(cfg: FinetuneConfig):
    """The stream's val mode: one centre view per video, each video once over all ranks."""
    options = dict(shards=cfg.val_shards, mode="val", num_frames=cfg.num_frames, input_size=cfg.input_size,
                   batch_size=cfg.val_batch_size or cfg.batch_size, workers=cfg.workers, sparse=cfg.sparse)
    return StreamConfig(**_optional(options, cfg, ("decoder", "stride")))


def _optional(options: dict, cfg, names) -> dict:
    return {**options, **{n: getattr(cfg, n) for n in names if getattr(cfg, n) is not None}}


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


def make_schedule(cfg: FinetuneConfig, loader_steps: int | None, world_size: int) -> Schedule:
    batches = cfg.steps_per_epoch or loader_steps  # per process per epoch
    if not batches:
        raise ValueError(f"{cfg.shards}: the sample count is unknown (no shards.json with totals.samples next to "
                         "the shards); pass --steps-per-epoch (batches per process per epoch)")
    per_epoch = max(1, batches // cfg.accum_steps)
    total = per_epoch * cfg.epochs
    end = min(total, cfg.max_steps) if cfg.max_steps is not None else total
    batch = cfg.global_batch(world_size)
    return Schedule(per_epoch, total, end, per_epoch * cfg.warmup_epochs, scaled_lr(cfg.base_lr, batch),
                    scaled_lr(cfg.min_lr, batch), batch)


def validate(model, loader, device, amp, num_classes: int) -> dict:
    """Single-view top-1/top-5 over every rank's videos (records merged by key, as eval does)."""
    was_training = model.training
    model.eval()
    records, skipped = predict(model, loader, device, amp)
    model.train(was_training)
    parts = distributed.all_gather_object((records, skipped))
    merged, _ = merge_results(part[0] for part in parts)
    result = score(merged, num_classes)
    return {"top1": result["top1"], "top5": result["top5"], "videos": result["videos"],
            "skipped": sum(part[1] for part in parts)}


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune `cfg.model` on `cfg.shards`; returns the run report (also in the log)."""
    return run(cfg, lambda info: classification_loss(cfg))


def run(cfg: FinetuneConfig, make_loss: Callable) -> dict:
    """The training loop shared by finetune and distill. `make_loss(info)`, called once the process group
    exists, returns `loss(logits, inputs, targets)` (distill loads its teacher there)."""
    info = distributed.init_distributed(cfg.device)
    try:
        with logging_redirect_tqdm():
            return _run(cfg, make_loss(info), info)
    finally:
        distributed.cleanup()


def _run(cfg: FinetuneConfig, loss_fn: Callable, info) -> dict:
    engine.seed_everything(cfg.seed, info.rank)
    out = Path(cfg.output_dir)
    model = build_model(cfg)
    init_note = str(checkpoint.load_pretrained(model, cfg.init, model_key=cfg.model_key)) if cfg.init else None
    model.to(info.device)
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay) if cfg.model_ema else None
    optimizer = make_optimizer(model, lr=0.0, weight_decay=cfg.weight_decay, betas=cfg.opt_betas,
                               eps=cfg.opt_eps, layer_decay=cfg.layer_decay)
    amp = engine.Amp(cfg.amp, info.device)

    step, best, skipped_total = 0, None, 0
    resume_path = engine.find_resume(cfg.resume, out)
    if resume_path is not None:
        state = engine.load_resume(resume_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        amp.load_state_dict(state.get("scaler") or {})
        if ema is not None and "model_ema" in state:
            ema.module.load_state_dict(state["model_ema"])
        step, best, skipped_total = int(state["step"]), state.get("best_top1"), int(state.get("skipped", 0))
        engine.restore_rng_state(state.get("rng"), info.rank, info.world_size)
        del state

    # A resumed run draws a fresh stream (its own seed), so it does not replay the first epoch's clips.
    stream_seed = cfg.seed if step == 0 else engine.step_seed(cfg.seed, step) % 2**31
    loader, loader_steps = make_loader(train_stream(cfg, stream_seed), rank=info.rank, world_size=info.world_size)
    sched = make_schedule(cfg, loader_steps, info.world_size)
    val_loader = None
    if cfg.val_shards:
        val_loader, _ = make_loader(val_stream(cfg), rank=info.rank, world_size=info.world_size)

    report = {"output_dir": str(out), "global_batch_videos": sched.global_batch,
              "global_batch_clips": sched.global_batch * cfg.num_sample, "lr": sched.lr, "min_lr": sched.min_lr,
              "steps_per_epoch": sched.steps_per_epoch, "total_steps": sched.total_steps, "end_step": sched.end_step,
              "warmup_steps": sched.warmup_steps, "init": init_note,
              "resumed_from": str(resume_path) if resume_path else None, "rank": info.rank}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
        log.info("%s %s on %d process(es), %s, amp %s", type(cfg).__name__, cfg.model, info.world_size,
                 info.device, amp.mode)
        if init_note:
            log.info("init: %s", init_note)
        log.info("global batch %d videos (%d clips) = %d videos x %d processes x %d accumulation steps, x%d views",
                 sched.global_batch, sched.global_batch * cfg.num_sample, cfg.batch_size, info.world_size,
                 cfg.accum_steps, cfg.num_sample)
        log.info("lr %.4g = base %.3g x %d / 256 (min lr %.3g); %d steps per epoch, %d epochs, %d warmup steps, "
                 "%d steps in all", sched.lr, cfg.base_lr, sched.global_batch, sched.min_lr, sched.steps_per_epoch,
                 cfg.epochs, sched.warmup_steps, sched.total_steps)

    train_model = distributed.wrap_ddp(model, info)
    if cfg.compile:
        train_model = torch.compile(train_model)
    mixup = make_mixup(cfg)
    erase_gen = torch.Generator(device=info.device)
    logger = engine.RunLogger(out, info.is_main, sched.end_step, start_step=step,
                              tensorboard=cfg.tensorboard, desc=type(cfg).__name__.replace("Config", "").lower())
    meter = engine.Throughput()
    batches = iter(loader)
    last_val, skipped, loss_count = None, 0, 0
    loss_sum = torch.zeros((), device=info.device, dtype=torch.float64)
    model.train()
    try:
        while step < sched.end_step:
            lr = lr_at(step, sched.lr, sched.min_lr, sched.warmup_steps, sched.total_steps)
            apply_lr(optimizer, lr)
            for micro in range(cfg.accum_steps):
                t0 = time.perf_counter()
                batch = next(batches)
                data_time = time.perf_counter() - t0
                skipped += int(batch.get("skipped", 0))
                video = normalize(batch["video"].to(info.device, non_blocking=True))  # [B*num_sample, 3, T, S, S]
                targets = batch["label"].to(info.device, non_blocking=True)
                if cfg.reprob > 0:
                    erase_gen.manual_seed(engine.step_seed(cfg.seed, info.rank, step, micro))
                    video = random_erase_cube(video, cfg.reprob, erase_gen)
                if mixup is not None:
                    video, targets = mix_clips(mixup, video, targets)
                # DDP all-reduces gradients only on the last micro-step of an accumulation
                last = micro == cfg.accum_steps - 1
                with nullcontext() if last or not info.distributed else train_model.no_sync():
                    with amp.autocast():
                        logits = train_model(video)
                    loss = loss_fn(logits, video, targets)
                    amp.backward(loss / cfg.accum_steps)
                loss_sum += loss.detach()
                loss_count += 1
                meter.add(video.shape[0], data_time)
            grad_norm = amp.step(optimizer, train_model.parameters(), cfg.clip_grad)
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step=step)
            step += 1
            logger.advance()
            epoch_end = step % sched.steps_per_epoch == 0 or step == sched.end_step
            if step % cfg.log_every == 0 or epoch_end:
                # one small all-reduce per interval, checked before anything is saved
                totals = distributed.all_reduce_sum(torch.stack([
                    loss_sum, loss_sum.new_tensor(loss_count), loss_sum.new_tensor(skipped)]))
                mean_loss = (totals[0] / totals[1]).item()
                engine.check_finite(mean_loss, step)
                skipped_total += int(totals[2].item())
                logger.log(step, {"loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                                  "epoch": round(step / sched.steps_per_epoch, 4), "skipped": skipped_total,
                                  **meter.read(info.world_size)})
                loss_sum.zero_()
                loss_count = skipped = 0
            if epoch_end:
                last_val, best = end_of_epoch(cfg, info, model, ema, optimizer, amp, val_loader, logger, step,
                                              (step - 1) // sched.steps_per_epoch, best, skipped_total)
    finally:
        logger.close()
    report.update(steps=step, skipped=skipped_total, val=last_val, best_top1=best,
                  best_checkpoint=str(out / BEST) if (out / BEST).exists() else None,
                  last_checkpoint=str(checkpoint.latest_checkpoint(out)))
    return report


def end_of_epoch(cfg, info, model, ema, optimizer, amp, val_loader, logger, step, epoch, best, skipped):
    """Validate, save the epoch checkpoint and, on a new best top-1, checkpoint-best.pth. -> (val, best)."""
    val = None
    if val_loader is not None:
        val = validate(model, val_loader, info.device, amp, cfg.num_classes)
        if ema is not None:
            ema_val = validate(ema.module, val_loader, info.device, amp, cfg.num_classes)
            val.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"])
        logger.log(step, {"epoch": epoch, **{f"val_{k}": v for k, v in val.items()}})
    improved = val is not None and (best is None or val["top1"] > best)
    if improved:
        best = val["top1"]
    plain = checkpoint.unwrap(model)
    weights = {k: v.detach().cpu() for k, v in plain.state_dict().items()}
    state = {"model": weights, "optimizer": optimizer.state_dict(), "scaler": amp.state_dict(), "step": step,
             "epoch": epoch, "best_top1": best, "val": val, "skipped": skipped, "config": to_dict(cfg),
             "rng": engine.gather_rng_state(), "world_size": info.world_size}
    if ema is not None:
        state["model_ema"] = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
    engine.save(cfg.output_dir, step, state, cfg.keep_last, info)
    if improved and info.is_main:
        checkpoint.save_file(Path(cfg.output_dir) / BEST, {"model": weights, "epoch": epoch, "step": step,
                                                           "val": val, "config": to_dict(cfg)})
    return val, best
