"""VideoMAE V2 dual-masking pretraining straight from WebDataset shards, in one loop read top to bottom.

config -> process group -> model -> optimiser -> resume -> stream -> for each step (engine.Stepper): per-step
lr; for each micro-batch normalise on the device, draw masks on the device, targets, forward (encoder under
autocast, decoder and loss in fp32), backward; unscale + clip, optimiser step; log, checkpoint.

Step = one optimiser step (accum_steps micro-batches). Masks come from a generator reseeded at every
micro-step from (seed, rank, step, micro-step), so they need no saved state and a resumed run draws the same
masks an uninterrupted one would. The exact stream (vmae.training.progress) goes epoch by epoch; a checkpoint
records the epoch and the samples spent in it, and a resumed run trains on exactly the rest (a deterministic
run replays the epoch to where it stopped, bit for bit). A resampled stream is opened in numbered segments of
one epoch's length; a resumed run opens the next segment with a fresh seed instead of re-reading the samples.
"""
import logging
from pathlib import Path

import torch

from vmae.training import engine, run_folder
from vmae.config import to_dict
from vmae.training.config import PretrainConfig
from vmae.training.data import StreamConfig, make_loader
from vmae.training.losses import pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks, mask_counts
from vmae.training.models import create_model
from vmae.training.optim import make_optimizer
from vmae.training.progress import open_epochs
from vmae.training.transforms import normalize

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without a warning.
RESUMABLE_CHANGES = {"resume", "max_steps", "output_dir", "workers", "log_every", "save_every_steps", "keep_last",
                     "tensorboard", "device", "compile", "shards", "index", "record_samples"}


def stream_config(cfg: PretrainConfig, segment: int = 0) -> StreamConfig:
    """The loader settings: the exact stream, or resampled segment `segment` (its own seed, so segments
    differ)."""
    if not cfg.loader_resampled:
        return StreamConfig.from_run(cfg, mode="pretrain", workers=cfg.loader_workers, resampled=False)
    return StreamConfig.from_run(cfg, mode="pretrain", workers=cfg.loader_workers, resampled=True,
                                 seed=engine.step_seed(cfg.seed, segment) % 2**31)


class Resampled:
    """A resampled stream's batches (endless), from segment `segment` of the run: a resumed run opens the next
    segment, with a fresh seed, rather than re-read the samples it began with."""

    def __init__(self, loader, segment: int):
        self.batches, self.segment = iter(loader), segment

    def __next__(self) -> dict:
        return next(self.batches)

    def state(self, device) -> dict:
        return {"stream": "resampled", "segment": self.segment}

    def close(self) -> None:
        self.batches = None  # its workers stop


def config_changes(saved: dict, cfg: PretrainConfig) -> list[str]:
    now = to_dict(cfg)
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in sorted(now)
            if k not in RESUMABLE_CHANGES and k in saved and _plain(saved[k]) != _plain(now[k])]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining as configured; returns a report (steps, loss, checkpoint, ...)."""
    with engine.process_group(cfg.device) as info, run_folder.claim(cfg.output_dir, cfg.resume, info) as resume_path:
        device, out = info.device, Path(cfg.output_dir)
        engine.seed_everything(cfg.seed, info.rank)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the fp32 decoder
            torch.backends.cudnn.benchmark = not cfg.deterministic
        model = create_model(cfg.model, num_frames=cfg.num_frames, img_size=cfg.input_size,
                             tubelet_size=cfg.tubelet_size, decoder_depth=cfg.decoder_depth,
                             drop_path_rate=cfg.drop_path,
                             checkpoint_activations=cfg.checkpoint_activations).to(device)
        optimizer = make_optimizer(model, lr=0.0, weight_decay=cfg.weight_decay, betas=cfg.opt_betas,
                                   eps=cfg.opt_eps)
        amp = engine.Amp(cfg.amp, device)
        state = engine.resume(resume_path, info, model, optimizer, amp)
        start_step, data = int(state.get("step", 0)), state.get("data") or {}
        # a resumed resampled stream opens the next segment rather than re-read the same samples
        segment = int(data.get("segment", -1)) + 1 if cfg.loader_resampled and resume_path is not None else 0
        changes = config_changes(state.get("config") or {}, cfg)
        if changes and info.is_main:
            log.warning("resuming with changed settings: %s", "; ".join(changes))

        # Epochs count the shard set's videos; a step consumes accum_steps batches per process.
        loader, loader_steps = make_loader(stream_config(cfg, segment), info.rank, info.world_size)
        sched = engine.make_schedule(cfg, loader_steps, info.world_size)
        engine.start_run(
            cfg, info, amp, start_step,
            f"global batch {sched.global_batch} clips = {cfg.batch_size} videos x {cfg.num_sample} views x "
            f"{info.world_size} processes x {cfg.accum_steps} accumulation steps",
            f"lr {sched.lr:.4g} = base {cfg.base_lr:.3g} x {sched.global_batch} / 256 (min lr {sched.min_lr:.3g}); "
            f"{sched.steps_per_epoch} steps per epoch, {cfg.epochs} epochs (the paper's "
            f"{cfg.epochs * cfg.num_sample}e), {sched.warmup_steps} warmup steps, {sched.total_steps} steps in all",
            *([f"resumed from {resume_path} at step {start_step}"] if start_step else []))

        stepper = engine.Stepper(model, optimizer, amp, info, cfg, sched, skipped=int(data.get("skipped", 0)))
        stream = (Resampled(loader, segment) if cfg.loader_resampled else
                  open_epochs(loader, cfg, info, data, start_step, sched.steps_per_epoch))
        masks_rng = torch.Generator(device=device)
        # every sample has these token counts: the forward and the loss need no host sync (static shapes)
        counts = mask_counts(model.grid, cfg.mask_ratio, cfg.decoder_mask_ratio)

        def forward(train_model, step, micro):
            video = normalize(stepper.next_batch(stream)["video"].to(device, non_blocking=True))  # uint8 -> float
            masks_rng.manual_seed(engine.step_seed(cfg.seed, info.rank, step, micro))
            mask, decode_mask = make_masks(video.shape[0], model.grid, cfg.mask_ratio, cfg.decoder_mask_ratio,
                                           masks_rng, device)
            targets = pretrain_targets(video, model.patch_size, model.tubelet_size, cfg.normalize_target)
            pred = train_model(video, mask, decode_mask, amp_dtype=amp.dtype, counts=counts)
            return pretrain_loss(pred, targets, mask, decode_mask, num_decoded=counts[1])

        logger = engine.RunLogger(out, info.is_main, sched.end_step, start_step, cfg.tensorboard, desc="pretrain")
        metrics, checkpoint_path, step = {}, None, start_step
        model.train()
        try:
            while step < sched.end_step:
                stop = min((step // cfg.save_every_steps + 1) * cfg.save_every_steps, sched.end_step)
                metrics = stepper.run(forward, step, stop, logger)
                step = stop
                ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": amp.state_dict(), "step": step, "epoch": step // sched.steps_per_epoch,
                        "config": to_dict(cfg), "rng": engine.gather_rng_state(), "world_size": info.world_size,
                        "replica_digests": engine.check_replicas(model, step),
                        "data": {**stream.state(device), "skipped": stepper.skipped_total}}
                checkpoint_path = engine.save(out, step, ckpt, cfg.keep_last, info)
        finally:
            stream.close()
            logger.close()
        return {"output_dir": str(out), "steps": step, "start_step": start_step, "total_steps": sched.total_steps,
                "global_batch": sched.global_batch, "lr": sched.lr, "loss": metrics.get("loss"),
                "skipped": stepper.skipped_total, "checkpoint": str(checkpoint_path) if checkpoint_path else None,
                "world_size": info.world_size, "rank": info.rank}
