"""VideoMAE V2 dual-masking pretraining straight from WebDataset shards, in one loop read top to bottom.

config -> process group -> model -> optimiser -> resume -> stream -> for each step: normalise on the device,
draw masks on the device, targets, forward (encoder under autocast, decoder and loss in fp32), backward with
gradient accumulation, unscale + clip, optimiser step, per-step lr, log, checkpoint.

Step = one optimiser step (accum_steps micro-batches). Masks come from a generator reseeded at every
micro-step from (seed, rank, step, micro-step), so they need no saved state and a resumed run draws the same
masks an uninterrupted one would. The stream is opened in numbered segments (one pass over the shards, or
one resampled epoch); a checkpoint records the segment and the batches consumed in it. A deterministic run
(one worker, no resampling) reopens that segment and skips what was consumed, so it replays exactly; a
resampled run opens the next segment with a fresh seed instead of re-reading the same samples.
"""
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from vmae.training import distributed, engine
from vmae.training.config import PretrainConfig, save_config, to_dict
from vmae.training.data import StreamConfig, make_loader
from vmae.training.losses import pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks
from vmae.training.models import create_model
from vmae.training.optim import apply_lr, lr_at, make_optimizer, scaled_lr
from vmae.training.transforms import normalize

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without a warning.
RESUMABLE_CHANGES = {"resume", "max_steps", "output_dir", "workers", "log_every", "save_every_steps", "keep_last",
                     "tensorboard", "device", "compile", "shards"}


def stream_config(cfg: PretrainConfig, segment: int) -> StreamConfig:
    """The loader settings for stream segment `segment` (its own seed, so segments differ)."""
    options = dict(shards=cfg.shards, mode="pretrain", num_frames=cfg.num_frames, input_size=cfg.input_size,
                   batch_size=cfg.batch_size, num_sample=cfg.num_sample, workers=cfg.loader_workers,
                   seed=engine.step_seed(cfg.seed, segment) % 2**31, resampled=cfg.loader_resampled)
    if cfg.decoder is not None:
        options["decoder"] = cfg.decoder
    if cfg.shuffle_buffer is not None:
        options["shuffle_buffer"] = cfg.shuffle_buffer
    return StreamConfig(**options)


def micro_batches(cfg: PretrainConfig, info, segment: int, skip: int):
    """Yield (segment, position, batch) forever, opening segment after segment; the first `skip` batches of
    the first segment are read and dropped (deterministic resume)."""
    while True:
        loader, _ = make_loader(stream_config(cfg, segment), info.rank, info.world_size)
        position = 0
        for batch in loader:
            position += 1
            if position > skip:
                yield segment, position, batch
        if position == 0:
            raise RuntimeError(f"the stream {cfg.shards!r} gave rank {info.rank} no batch at all: it needs at least "
                               f"batch_size={cfg.batch_size} decodable samples per process (check with "
                               "`vmae-data verify`, or lower --batch-size)")
        segment, skip = segment + 1, 0


def config_changes(saved: dict, cfg: PretrainConfig) -> list[str]:
    now = to_dict(cfg)
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in sorted(now)
            if k not in RESUMABLE_CHANGES and k in saved and _plain(saved[k]) != _plain(now[k])]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining as configured; returns a report (steps, loss, checkpoint, ...)."""
    info = distributed.init_distributed(cfg.device)
    try:
        with logging_redirect_tqdm():
            return _pretrain(cfg, info)
    finally:
        distributed.cleanup()


def _pretrain(cfg: PretrainConfig, info) -> dict:
    out = Path(cfg.output_dir)
    device = info.device
    engine.seed_everything(cfg.seed, info.rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the fp32 decoder
        torch.backends.cudnn.benchmark = not cfg.deterministic
    amp = engine.Amp(cfg.amp, device)

    # Model and optimiser, then whatever a checkpoint restores into them.
    model = create_model(cfg.model, num_frames=cfg.num_frames, img_size=cfg.input_size,
                         tubelet_size=cfg.tubelet_size, decoder_depth=cfg.decoder_depth,
                         drop_path_rate=cfg.drop_path, checkpoint_activations=cfg.checkpoint_activations).to(device)
    optimizer = make_optimizer(model, lr=0.0, weight_decay=cfg.weight_decay, betas=cfg.opt_betas, eps=cfg.opt_eps)
    start_step, segment, skip, skipped_total = 0, 0, 0, 0
    resume_path = engine.find_resume(cfg.resume, out)
    if cfg.resume == "auto":  # rank 0's pick, so all ranks resume from the same file even while a save lands
        resume_path = distributed.broadcast_object(resume_path)
    if resume_path is not None:
        ckpt = engine.load_resume(resume_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        amp.load_state_dict(ckpt.get("scaler") or {})
        engine.restore_rng_state(ckpt.get("rng"), info.rank, info.world_size)
        start_step = int(ckpt["step"])
        data = ckpt.get("data") or {}
        skipped_total = int(data.get("skipped", 0))
        if cfg.deterministic:
            segment, skip = int(data.get("segment", 0)), int(data.get("position", 0))
        else:
            segment = int(data.get("segment", -1)) + 1
        changes = config_changes(ckpt.get("config") or {}, cfg)
        if changes and info.is_main:
            log.warning("resuming with changed settings: %s", "; ".join(changes))
        del ckpt

    # Schedule: epochs count the shard set's videos; a step consumes accum_steps batches per process.
    _, loader_steps = make_loader(stream_config(cfg, segment), info.rank, info.world_size)
    batches_per_epoch = cfg.steps_per_epoch or loader_steps
    if not batches_per_epoch:
        raise ValueError(f"cannot tell the epoch length of {cfg.shards!r}: its shards.json was not found; pass "
                         "--steps-per-epoch (batches per process per epoch)")
    steps_per_epoch = max(1, batches_per_epoch // cfg.accum_steps)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    end_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    global_batch = cfg.global_batch(info.world_size)
    peak_lr, min_lr = scaled_lr(cfg.base_lr, global_batch), scaled_lr(cfg.min_lr, global_batch)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
        log.info("pretrain %s on %d process(es), %s, amp %s", cfg.model, info.world_size, device, amp.mode)
        log.info("global batch %d clips = %d videos x %d views x %d processes x %d accumulation steps",
                 global_batch, cfg.batch_size, cfg.num_sample, info.world_size, cfg.accum_steps)
        log.info("lr %.4g = base %.3g x %d / 256 (min lr %.3g); %d steps per epoch, %d epochs (the paper's %de), "
                 "%d warmup steps, %d steps in all", peak_lr, cfg.base_lr, global_batch, min_lr, steps_per_epoch,
                 cfg.epochs, cfg.epochs * cfg.num_sample, warmup_steps, total_steps)
        if start_step:
            log.info("resumed from %s at step %d", resume_path, start_step)

    train_model = distributed.wrap_ddp(model, info)
    if cfg.compile:
        train_model = torch.compile(train_model)
    stream = micro_batches(cfg, info, segment, skip)
    logger = engine.RunLogger(out, info.is_main, end_step, start_step, cfg.tensorboard, desc="pretrain")
    meter = engine.Throughput()
    masks_rng = torch.Generator(device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    loss_count = skipped = 0
    metrics, checkpoint_path = {}, None

    model.train()
    step = start_step
    while step < end_step:
        lr = lr_at(step, peak_lr, min_lr, warmup_steps, total_steps)
        apply_lr(optimizer, lr)
        for micro in range(cfg.accum_steps):
            t0 = time.perf_counter()
            segment, position, batch = next(stream)
            data_time = time.perf_counter() - t0
            skipped += int(batch.get("skipped", 0))
            video = normalize(batch["video"].to(device, non_blocking=True))  # uint8 -> float on the device
            masks_rng.manual_seed(engine.step_seed(cfg.seed, info.rank, step, micro))
            mask, decode_mask = make_masks(video.shape[0], model.grid, cfg.mask_ratio, cfg.decoder_mask_ratio,
                                           masks_rng, device)
            targets = pretrain_targets(video, model.patch_size, model.tubelet_size, cfg.normalize_target)
            # DDP averages gradients only on the last micro-step of an accumulation
            last = micro == cfg.accum_steps - 1
            with nullcontext() if last or not info.distributed else train_model.no_sync():
                pred = train_model(video, mask, decode_mask, amp_dtype=amp.dtype)
                loss = pretrain_loss(pred, targets, mask, decode_mask)
                amp.backward(loss / cfg.accum_steps)
            loss_sum += loss.detach()
            loss_count += 1
            meter.add(video.shape[0], data_time)
        grad_norm = amp.step(optimizer, train_model.parameters(), cfg.clip_grad)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        logger.advance()

        save_now = step % cfg.save_every_steps == 0 or step == end_step
        if step % cfg.log_every == 0 or save_now:
            # one small all-reduce per interval (not a device sync per step); checked before any save
            totals = distributed.all_reduce_sum(torch.stack([
                loss_sum, loss_sum.new_tensor(loss_count), loss_sum.new_tensor(skipped)]))
            mean_loss = (totals[0] / totals[1]).item()
            engine.check_finite(mean_loss, step)
            if skipped:
                log.warning("rank %d: %d sample(s) skipped for decode errors in the last interval (see the "
                            "stream's messages above for keys and shards)", info.rank, skipped)
            skipped_total += int(totals[2].item())
            metrics = {"loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                       "epoch": round(step / steps_per_epoch, 4), "skipped": skipped_total,
                       **meter.read(info.world_size)}
            if device.type == "cuda":
                metrics["mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            logger.log(step, metrics)
            loss_sum.zero_()
            loss_count = skipped = 0
        if save_now:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": amp.state_dict(),
                     "step": step, "epoch": step // steps_per_epoch, "config": to_dict(cfg),
                     "rng": engine.gather_rng_state(), "world_size": info.world_size,
                     "replica_digests": engine.check_replicas(model, step),
                     "data": {"segment": segment, "position": position, "skipped": skipped_total}}
            checkpoint_path = engine.save(out, step, state, cfg.keep_last, info)

    stream.close()
    logger.close()
    return {"output_dir": str(out), "steps": step, "start_step": start_step, "total_steps": total_steps,
            "global_batch": global_batch, "lr": peak_lr, "loss": metrics.get("loss"), "skipped": skipped_total,
            "checkpoint": str(checkpoint_path) if checkpoint_path else None, "world_size": info.world_size,
            "rank": info.rank}
