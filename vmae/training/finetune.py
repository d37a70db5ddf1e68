"""Supervised fine-tuning (`vmae-train finetune`), also the loop `vmae-train distill` runs.

One optimiser step: a batch of uint8 clips from the stream's train mode (RandAugment identical across a
clip's frames, random resized crop, flip, `num_sample` views per decode) -> device -> ImageNet normalisation
-> cube random erasing -> Mixup/CutMix on the batch viewed as (B, C*T, H, W) -> forward under autocast ->
loss -> AdamW with layer-wise lr decay, per-step warmup + cosine, optional clipping and model EMA.
After every epoch: single-view validation (top-1/top-5 over all ranks, merged by key as in eval), an epoch
checkpoint (newest `keep_last` kept, resumable) and `checkpoint-best.pth` when validation top-1 improves.
"""
import logging
from pathlib import Path
from typing import Callable

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

from vmae.training import checkpoint, distributed, engine, label_checks, run_folder
from vmae.config import to_dict
from vmae.training.config import FinetuneConfig
from vmae.training.data import StreamConfig, make_loader
from vmae.training.evaluate import merge_results, predict, score
from vmae.training.models import create_model
from vmae.training.optim import make_optimizer
from vmae.training.progress import open_epochs
from vmae.training.transforms import normalize, random_erase_cube

log = logging.getLogger(__name__)

BEST = run_folder.BEST


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
                        head_drop_rate=cfg.head_drop, drop_rate=cfg.drop, init_scale=cfg.init_scale,
                        checkpoint_activations=cfg.checkpoint_activations)


def train_stream(cfg: FinetuneConfig, seed: int) -> StreamConfig:
    """The stream's train mode (exact epochs, or endless resampled shards), num_sample augmented clips per
    decoded video."""
    return StreamConfig.from_run(cfg, mode="train", seed=seed, resampled=cfg.stream == "resampled",
                                 randaug=cfg.randaug)


def val_stream(cfg: FinetuneConfig) -> StreamConfig:
    """The stream's val mode: one centre view per video, each video once over all ranks."""
    return StreamConfig.from_run(cfg, mode="val", shards=cfg.val_shards, index=None,
                                 batch_size=cfg.val_batch_size or cfg.batch_size)


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
    label_checks.check_shards(cfg.shards, cfg.num_classes)
    label_checks.check_shards(cfg.val_shards, cfg.num_classes, "--val-shards")
    with engine.process_group(cfg.device) as info, run_folder.claim(cfg.output_dir, cfg.resume, info) as resume_path:
        loss_fn = make_loss(info)
        engine.seed_everything(cfg.seed, info.rank)
        out = Path(cfg.output_dir)
        model = build_model(cfg)
        init_note = str(checkpoint.load_pretrained(model, cfg.init, model_key=cfg.model_key)) if cfg.init else None
        model.to(info.device)
        ema = ModelEmaV3(model, decay=cfg.model_ema_decay) if cfg.model_ema else None
        optimizer = make_optimizer(model, lr=0.0, weight_decay=cfg.weight_decay, betas=cfg.opt_betas,
                                   eps=cfg.opt_eps, layer_decay=cfg.layer_decay)
        amp = engine.Amp(cfg.amp, info.device)
        state = engine.resume(resume_path, info, model, optimizer, amp, ema)
        step, best = int(state.get("step", 0)), state.get("best_top1")

        # A resumed resampled stream draws afresh (its own seed) rather than replay the first epoch's clips.
        stream_seed = cfg.seed if step == 0 or cfg.stream == "exact" else engine.step_seed(cfg.seed, step) % 2**31
        loader, loader_steps = make_loader(train_stream(cfg, stream_seed), info.rank, info.world_size)
        sched = engine.make_schedule(cfg, loader_steps, info.world_size)
        val_loader = make_loader(val_stream(cfg), info.rank, info.world_size)[0] if cfg.val_shards else None
        engine.start_run(
            cfg, info, amp, step, *([f"init: {init_note}"] if init_note else []),
            f"global batch {sched.global_batch} videos ({sched.global_batch * cfg.num_sample} clips) = "
            f"{cfg.batch_size} videos x {info.world_size} processes x {cfg.accum_steps} accumulation steps, "
            f"x{cfg.num_sample} views",
            f"lr {sched.lr:.4g} = base {cfg.base_lr:.3g} x {sched.global_batch} / 256 (min lr {sched.min_lr:.3g}); "
            f"{sched.steps_per_epoch} steps per epoch, {cfg.epochs} epochs, {sched.warmup_steps} warmup steps, "
            f"{sched.total_steps} steps in all")

        stepper = engine.Stepper(model, optimizer, amp, info, cfg, sched, ema, skipped=int(state.get("skipped", 0)))
        batches = (open_epochs(loader, cfg, info, state.get("data") or {}, step, sched.steps_per_epoch)
                   if cfg.stream == "exact" else iter(loader))
        mixup, erase_gen = make_mixup(cfg), torch.Generator(device=info.device)

        def forward(train_model, step, micro):
            batch = stepper.next_batch(batches)
            label_checks.check_batch(batch, cfg.num_classes)
            video = normalize(batch["video"].to(info.device, non_blocking=True))  # [B*num_sample, 3, T, S, S]
            targets = batch["label"].to(info.device, non_blocking=True)
            if cfg.reprob > 0:
                erase_gen.manual_seed(engine.step_seed(cfg.seed, info.rank, step, micro))
                video = random_erase_cube(video, cfg.reprob, erase_gen)
            if mixup is not None:
                video, targets = mix_clips(mixup, video, targets)
            with amp.autocast():
                logits = train_model(video)
            return loss_fn(logits, video, targets)

        logger = engine.RunLogger(out, info.is_main, sched.end_step, start_step=step, tensorboard=cfg.tensorboard,
                                  desc=type(cfg).__name__.replace("Config", "").lower())
        last_val = None
        model.train()
        try:
            while step < sched.end_step:
                stop = min((step // sched.steps_per_epoch + 1) * sched.steps_per_epoch, sched.end_step)
                stepper.run(forward, step, stop, logger)
                step = stop
                data = batches.state(info.device) if cfg.stream == "exact" else {}
                last_val, best = end_of_epoch(cfg, info, model, ema, optimizer, amp, val_loader, logger, step,
                                              (step - 1) // sched.steps_per_epoch, best, stepper.skipped_total, data)
        finally:
            logger.close()
            if cfg.stream == "exact":
                batches.close()
        return {"output_dir": str(out), "global_batch_videos": sched.global_batch,
                "global_batch_clips": sched.global_batch * cfg.num_sample, "lr": sched.lr, "min_lr": sched.min_lr,
                "steps_per_epoch": sched.steps_per_epoch, "total_steps": sched.total_steps,
                "end_step": sched.end_step, "warmup_steps": sched.warmup_steps, "init": init_note,
                "resumed_from": str(resume_path) if resume_path else None, "rank": info.rank, "steps": step,
                "skipped": stepper.skipped_total, "val": last_val, "best_top1": best,
                "best_checkpoint": str(out / BEST) if (out / BEST).exists() else None,
                "last_checkpoint": str(checkpoint.latest_checkpoint(out))}


def end_of_epoch(cfg, info, model, ema, optimizer, amp, val_loader, logger, step, epoch, best, skipped, data):
    """Validate, save the epoch checkpoint (with the stream's `data`) and, on a new best top-1,
    checkpoint-best.pth. -> (val, best)."""
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
             "rng": engine.gather_rng_state(), "world_size": info.world_size, "data": data}
    if ema is not None:
        state["model_ema"] = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
    engine.save(cfg.output_dir, step, state, cfg.keep_last, info)
    if improved:
        best_state = {"model": weights, "epoch": epoch, "step": step, "val": val, "config": to_dict(cfg)}
        distributed.main_only(lambda: checkpoint.save_file(Path(cfg.output_dir) / BEST, best_state), info)
    return val, best
