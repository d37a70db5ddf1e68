"""Pretraining step time: the reference's way against ours at its best, per model size (issue 14).

Reference mode: our model run as the reference's pretraining script runs it (videomaev2-reference.md sections
1.7, 5.2, 5.3): fp16 autocast over the whole forward and the loss with a GradScaler, eager attention math (the
[B, heads, N, N] scores kept for backward), the data-dependent token gather (a host sync in every forward),
torch's default (unfused) AdamW, `loss.item()` after every step, no compile, 32 videos x 4 views = 128 clips
per GPU, activation checkpointing for ViT-g (the scripts' --with_checkpoint). The reference script also wraps
the model in torch.compile under torch 2; the issue's baseline is the eager run.

Ours: SDPA attention, bf16 autocast of the encoder only (the training default) or of the whole model, fused
AdamW, the token counts passed in (static shapes, no host sync), then torch.compile of the blocks or of the
whole forward + loss, with and without CUDA graphs (mode reduce-overhead), each timed at the reference's batch
(the first step, compile included, reported apart); the largest per-GPU batch that fits with and without
activation checkpointing (peak memory fitted on two batches, then probed), timed there.

Per size: step ms and clips/s, ratio ours / reference (target >= 3 for ViT-B), model FLOPs utilisation against
the card's dense bf16 peak (target >= 35 % for ViT-B; FLOPs of one step counted by torch.utils.flop_counter,
recomputation not counted), peak memory. ViT-g: peak memory at the reference's batch with checkpointing, against
80 and 40 GB cards. With --shards: the stream alone with --workers workers (clips/s per loader core), then the
fastest setup fed by it (pinned memory, non-blocking copies): data-wait share and clips/s.

  python benchmarks/bench_pretrain_step.py --quick       # CPU, tiny model: the code paths, no targets (a test runs it)
  python benchmarks/bench_pretrain_step.py               # GPU: ViT-B, ViT-S, ViT-g memory, ViT-L, within --budget
  python benchmarks/bench_pretrain_step.py --masking     # dual masking against VideoMAE v1 (ViT-B; CPU: 16x160)

benchmarks/gpu_run.sh runs it on a lent GPU with the loader (see benchmarks/README.md).
"""
import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from vmae.training import engine
from vmae.training.losses import pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks, mask_counts
from vmae.training.models import PRETRAIN_MODELS, create_model, set_attention
from vmae.training.models import SIZES as MODEL_SIZES
from vmae.training.optim import make_optimizer
from vmae.training.transforms import normalize

# Dense bf16 tensor-core peaks (FLOP/s); the first name contained in the device's name wins.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("A100", 312e12), ("L40S", 362e12), ("A10", 125e12)]
MASK_RATIO, DECODER_MASK_RATIO = 0.9, 0.5
REFERENCE_BATCH = 32 * 4  # videos x num_sample per GPU in every reference pretraining script
TARGETS = {"base": (3.0, 0.35)}  # size: (ours / reference, MFU), applied on a GPU
# Peak allocated memory that fits a card: its usable memory less ~1.5 GiB for the CUDA context and allocator slack.
CARDS = {"80 GB": 78 * 2**30, "40 GB": 38 * 2**30}


@dataclass(frozen=True)
class Size:
    label: str
    model: str
    frames: int = 16
    img: int = 224
    clip_grad: float | None = None
    reference_checkpointing: bool = False
    memory_only: bool = False  # ViT-g: the issue asks for its memory at the reference's batch


SIZES = {
    "small": Size("ViT-S", "pretrain_videomae_small_patch16_224"),
    "base": Size("ViT-B", "pretrain_videomae_base_patch16_224"),
    "large": Size("ViT-L", "pretrain_videomae_large_patch16_224"),
    "giant": Size("ViT-g", "pretrain_videomae_giant_patch14_224", clip_grad=0.02, reference_checkpointing=True,
                  memory_only=True),
    "test": Size("tiny test model", "pretrain_videomae_test", frames=4, img=64),
}


@dataclass(frozen=True)
class Setup:
    """How one step runs: attention kernel, precision and its scope, optimiser, compile, batch."""
    name: str
    attention: str = "sdpa"
    amp: str = "bf16"
    whole_model_autocast: bool = False  # False: encoder under autocast, decoder and loss in fp32 (our default)
    fused_adamw: bool = True
    static: bool = True  # token counts passed in: no host sync, static shapes
    compile: str | None = None  # "blocks": each block; "step": normalise + targets + forward + loss as one
    cudagraphs: bool = False  # with compile: mode "reduce-overhead"
    checkpoint: bool = False
    sync_every_step: bool = False  # loss.item() after each step, as the reference logs it
    batch: int = REFERENCE_BATCH
    decoder_mask_ratio: float = DECODER_MASK_RATIO

    def describe(self) -> str:
        parts = [f"{self.amp} {'whole model' if self.whole_model_autocast else 'encoder'}", f"{self.attention} attn",
                 "fused AdamW" if self.fused_adamw else "default AdamW", "static" if self.static else "host sync"]
        if self.compile:
            parts.append(f"compile {self.compile}" + (" + CUDA graphs" if self.cudagraphs else ""))
        if self.checkpoint:
            parts.append("checkpointing")
        return ", ".join(parts)


REFERENCE = Setup("reference", attention="eager", amp="fp16", whole_model_autocast=True, fused_adamw=False,
                  static=False, sync_every_step=True)
DEFAULT = Setup("ours: training default")


class Runner:
    """One setup of one model size on the device: model, optimiser, precision, compiled parts."""

    def __init__(self, size: Size, setup: Setup, device: torch.device, compile_backend: str = "inductor"):
        self.size, self.setup, self.device = size, setup, device
        torch.manual_seed(0)
        with device:  # initialised on the device: a billion parameters take long on a CPU
            self.model = create_model(size.model, num_frames=size.frames, img_size=size.img,
                                      checkpoint_activations=setup.checkpoint)
        self.model.to(device)  # the position tables are built on the CPU
        set_attention(self.model, setup.attention)
        self.optimizer = make_optimizer(self.model, lr=1e-4, weight_decay=0.05, fused=setup.fused_adamw)
        self.amp = engine.Amp(setup.amp, device)
        self.counts = mask_counts(self.model.grid, MASK_RATIO, setup.decoder_mask_ratio) if setup.static else None
        self.masks_rng = torch.Generator(device=device)
        self.forward_loss = self._forward_loss
        if setup.compile:
            options = dict(backend=compile_backend, mode="reduce-overhead" if setup.cudagraphs else None)
            if setup.compile == "blocks":
                for block in [*self.model.encoder.blocks, *self.model.decoder.blocks]:
                    block.compile(**options)
            else:
                self.forward_loss = torch.compile(self._forward_loss, **options)

    def _forward_loss(self, video_u8, mask, decode_mask):
        video = normalize(video_u8)
        targets = pretrain_targets(video, self.model.patch_size, self.model.tubelet_size)
        whole = self.setup.whole_model_autocast
        with self.amp.autocast() if whole else nullcontext():
            pred = self.model(video, mask, decode_mask, amp_dtype=None if whole else self.amp.dtype,
                              counts=self.counts)
            return pretrain_loss(pred, targets, mask, decode_mask, None if self.counts is None else self.counts[1])

    def forward_backward(self, video_u8, i: int) -> torch.Tensor:
        if self.setup.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        self.masks_rng.manual_seed(i)
        masks = make_masks(video_u8.shape[0], self.model.grid, MASK_RATIO, self.setup.decoder_mask_ratio,
                           self.masks_rng, self.device)
        loss = self.forward_loss(video_u8, *masks)
        self.amp.backward(loss)
        return loss

    def step(self, video_u8, i: int) -> None:
        loss = self.forward_backward(video_u8, i)
        self.amp.step(self.optimizer, self.model.parameters(), self.size.clip_grad)
        self.optimizer.zero_grad(set_to_none=True)
        if self.setup.sync_every_step:
            loss.item()


def random_video(batch: int, size: Size, device) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size.frames, size.img, size.img), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(batch)).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(runner: Runner, video, warmup: int, steps: int) -> dict:
    """Seconds of the first step (compile included), mean seconds of `steps` after `warmup`, peak memory."""
    device = runner.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    runner.step(video, 0)
    sync(device)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        runner.step(video, i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        runner.step(video, warmup + i)
    sync(device)
    seconds = (time.perf_counter() - t0) / steps
    gpu = device.type == "cuda"
    return {"first_step_s": first, "step_s": seconds, "peak_bytes": torch.cuda.max_memory_allocated(device) if gpu
            else None, "reserved_bytes": torch.cuda.max_memory_reserved(device) if gpu else None}


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_setup(size: Size, setup: Setup, device, args, batch: int | None = None) -> dict:
    """Time one setup (a fresh model); an out-of-memory or a failure is recorded, not raised."""
    batch = batch or setup.batch
    result = {"setup": setup.name, "describe": setup.describe(), "batch": batch, "setup_fields": asdict(setup)}
    try:
        runner = Runner(size, setup, device, args.compile_backend)
        result.update(timed(runner, random_video(batch, size, device), args.warmup, args.steps))
        result["clips_per_s"] = batch / result["step_s"]
    except torch.OutOfMemoryError:
        result["error"] = "out of memory"
    except Exception as err:  # one failing candidate (a compile error) must not end a one-shot GPU run
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    runner = None
    free(device)
    return result


def count_flops(runner: Runner, video_u8) -> int:
    """FLOPs of one forward + backward, counted by torch. Attention runs as eager matmuls while counting: the
    counter may not know every fused SDPA kernel (CPU flash, or a newer GPU backend) and would leave it out."""
    set_attention(runner.model, "eager")
    try:
        with FlopCounterMode(display=False) as counter:
            runner.forward_backward(video_u8, 0)
    finally:
        set_attention(runner.model, runner.setup.attention)
        runner.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def flops_per_clip(size: Size, device) -> float:
    """FLOPs of one training step per clip (forward + backward, no recomputation), counted at batch 2."""
    runner = Runner(size, replace(DEFAULT, amp="off" if device.type == "cpu" else "bf16"), device)
    flops = count_flops(runner, random_video(2, size, device)) / 2
    runner = None
    free(device)
    return flops


def peak_flops(device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_BF16 if k in name), None)


def largest_batch(peak_of, limit: int, step: int = 8, probes: int = 4) -> tuple[int, int | None]:
    """(largest batch found, its peak bytes): fit peak memory = a + b x batch on two small batches, try the
    batch that fills 95 % of `limit`, then 10 % smaller until one fits. `peak_of(batch)` returns the peak
    bytes of a step, or None when it ran out of memory."""
    low, high = step * 2, step * 4
    p_low, p_high = peak_of(low), peak_of(high)
    if p_low is None or p_high is None:
        return (low, p_low) if p_low is not None else (0, None)
    per_clip = max((p_high - p_low) / (high - low), 1)
    guess = int((0.95 * limit - (p_low - per_clip * low)) / per_clip) // step * step
    best = (high, p_high)
    for _ in range(probes):
        if guess <= best[0]:
            break
        peak = peak_of(guess)
        if peak is not None:
            return guess, peak
        guess = int(guess * 0.9) // step * step
    return best


def search_batch(size: Size, setup: Setup, device, args) -> dict:
    """The largest batch that fits for `setup` (found uncompiled: compiled code needs no more memory), timed."""
    runner = Runner(size, replace(setup, compile=None, cudagraphs=False), device, args.compile_backend)
    limit = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else args.cpu_memory_limit

    def peak_of(batch: int) -> int | None:
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                runner.step(random_video(batch, size, device), 0)
                return torch.cuda.max_memory_allocated(device)
            return saved_activation_bytes(runner, random_video(batch, size, device)) + weights_bytes(runner)
        except torch.OutOfMemoryError:
            runner.optimizer.zero_grad(set_to_none=True)
            return None
        finally:
            free(device)

    batch, peak = largest_batch(peak_of, limit, step=args.batch_step)
    runner = None
    free(device)
    if batch == 0:
        return {"setup": setup.name, "describe": setup.describe(), "error": "not even a small batch fits"}
    # large batches: fewer steps timed
    result = run_setup(size, setup, device, argparse.Namespace(**{**vars(args), "warmup": 1, "steps": 3}), batch)
    result["search_peak_bytes"] = peak
    return result


def saved_activation_bytes(runner: Runner, video_u8) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward (views of one storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = runner.forward_backward(video_u8, 0)
    runner.optimizer.zero_grad(set_to_none=True)
    del loss
    params = {p.untyped_storage().data_ptr() for p in runner.model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def weights_bytes(runner: Runner) -> int:
    """fp32 weights, gradients and the two AdamW moments."""
    return 4 * 4 * sum(p.numel() for p in runner.model.parameters())


def candidates(device) -> list[Setup]:
    """Ours: the training default, whole-model bf16, then compiled (on a CPU only the step, to stay quick)."""
    eager = [DEFAULT, replace(DEFAULT, name="ours: whole-model autocast", whole_model_autocast=True)]
    compiled = [("ours: compile step", "step", False)]
    if device.type == "cuda":
        compiled = [("ours: compile blocks", "blocks", False), *compiled,
                    ("ours: compile step + CUDA graphs", "step", True)]
    return eager + [Setup(name, compile=how, cudagraphs=graphs) for name, how, graphs in compiled]


class Budget:
    """Seconds left for the whole run; work that would start after it is skipped (and said so)."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def bench_size(key: str, device, args, budget: Budget, report: dict) -> dict:
    size = SIZES[key]
    batch = args.batch or (REFERENCE_BATCH if device.type == "cuda" else 4)
    out = {"size": size.label, "model": size.model, "batch": batch, "setups": []}
    report["sizes"][key] = out
    patch = MODEL_SIZES[PRETRAIN_MODELS[size.model]].patch_size
    visible, decoded = mask_counts((size.frames // 2, size.img // patch, size.img // patch), MASK_RATIO,
                                   DECODER_MASK_RATIO)
    print(f"\n{size.label} ({size.model}, {size.frames}x{size.img}, {visible} visible and {decoded} decoded tokens "
          f"per clip), batch {batch} clips", flush=True)
    reference = args.precision(replace(REFERENCE, batch=batch, checkpoint=size.reference_checkpointing))
    if size.memory_only:
        for setup in (reference, args.precision(replace(DEFAULT, name="ours: training default + checkpointing",
                                                        batch=batch, checkpoint=True))):
            result = run_setup(size, setup, device, argparse.Namespace(**{**vars(args), "warmup": 1, "steps": 1}))
            out["setups"].append(result)
            print_result(result, None, None)
        return out
    out["flops_per_clip"] = flops = flops_per_clip(size, device)
    _, peak = peak_flops(device)
    print(f"  {flops / 1e9:.4g} GFLOP per clip and step (forward + backward, counted by torch)")
    ref = run_setup(size, reference, device, args)
    out["setups"].append(ref)
    print_result(ref, flops, peak)
    ours = []
    setups = [args.precision(replace(s, batch=batch)) for s in candidates(device)]
    if args.no_compile:
        setups = [s for s in setups if not s.compile]
    for setup in setups:
        if budget.left() <= 0 and ours:
            print(f"  {setup.name}: skipped (time budget spent)")
            continue
        if setup.compile:  # compiled candidates take the autocast scope that ran faster
            fastest = min((r for r in ours if "step_s" in r and not r["setup_fields"]["compile"]),
                          key=lambda r: r["step_s"], default=None)
            setup = replace(setup, whole_model_autocast=fastest is not None
                            and fastest["setup_fields"]["whole_model_autocast"])
        result = run_setup(size, setup, device, args)
        ours.append(result)
        print_result(result, flops, peak, ref)
    out["setups"] += ours
    timed_ok = [r for r in ours if "step_s" in r]
    if not timed_ok:
        return out
    best = max(timed_ok, key=lambda r: r["clips_per_s"])
    best_setup = Setup(**best["setup_fields"])
    for checkpoint in (False, True):
        if budget.left() <= 0 or args.no_search:
            print(f"  largest batch{' with checkpointing' if checkpoint else ''}: skipped")
            continue
        setup = replace(best_setup, name=f"ours: largest batch{', checkpointing' if checkpoint else ''}",
                        checkpoint=checkpoint, compile=None, cudagraphs=False)
        result = search_batch(size, setup, device, args)
        out["setups"].append(result)
        print_result(result, flops, peak, ref)
    everything = [r for r in out["setups"][1:] if "clips_per_s" in r]
    out["best"] = max(everything, key=lambda r: r["clips_per_s"])["setup"]
    return out


def print_result(result: dict, flops: float | None, peak: float | None, ref: dict | None = None) -> None:
    if "error" in result:
        print(f"  {result['setup']:42s} ({result['describe']}): {result['error']}", flush=True)
        return
    line = (f"  {result['setup']:42s} batch {result['batch']:5d}: step {result['step_s'] * 1000:9.1f} ms, "
            f"{result['clips_per_s']:8.1f} clips/s")
    if flops:
        tflops = flops * result["clips_per_s"] / 1e12
        result["tflops"] = tflops
        line += f", {tflops:7.3g} TFLOP/s"
        if peak:
            result["mfu"] = flops * result["clips_per_s"] / peak
            line += f", MFU {result['mfu']:5.1%}"
    if result["peak_bytes"] is not None:
        line += f", peak {result['peak_bytes'] / 2**30:6.2f} GiB"
    if ref and "clips_per_s" in ref:
        result["ratio"] = result["clips_per_s"] / ref["clips_per_s"]
        line += f", x{result['ratio']:.2f} reference"
    if result["first_step_s"] > 2 * result["step_s"] + 1:
        line += f", first step {result['first_step_s']:.1f} s"
    print(line + f"  [{result['describe']}]", flush=True)


def summary(report: dict, gpu: bool) -> None:
    print("\n| size | reference: step ms, clips/s, MFU, peak GiB | ours: setup, batch | step ms | clips/s | MFU "
          "| peak GiB | ours / reference |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for key, out in report["sizes"].items():
        ref = out["setups"][0] if out["setups"] else {}
        if out.get("setups") and SIZES[key].memory_only:
            for r in out["setups"]:
                peak, text = r.get("peak_bytes"), r.get("error") or "n/a (CPU)"
                if peak:
                    fits = ", ".join(f"fits {card} {'yes' if peak <= limit else 'no'}" for card, limit in CARDS.items())
                    text = (f"{peak / 2**30:.1f} GiB allocated ({r['reserved_bytes'] / 2**30:.1f} reserved) at batch "
                            f"{r['batch']}: {fits}")
                print(f"| {out['size']} memory, {r['setup']} ({r['describe']}) | {text} | | | | | | |")
            continue
        best = next((r for r in out["setups"] if r.get("setup") == out.get("best")), None)
        if best is None or "step_s" not in ref:
            print(f"| {out['size']} | {ref.get('error', 'not measured')} | | | | | | |")
            continue

        def cell(r):
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a"
            mem = f"{r['peak_bytes'] / 2**30:.1f}" if r.get("peak_bytes") else "n/a"
            return mfu, mem

        (ref_mfu, ref_mem), (mfu, mem) = cell(ref), cell(best)
        print(f"| {out['size']} | {ref['step_s'] * 1000:.1f}, {ref['clips_per_s']:.1f}, {ref_mfu}, {ref_mem} | "
              f"{best['setup']} [{best['describe']}], {best['batch']} | {best['step_s'] * 1000:.1f} | "
              f"{best['clips_per_s']:.1f} | {mfu} | {mem} | {best['clips_per_s'] / ref['clips_per_s']:.2f} |")
        if gpu and key in TARGETS:
            ratio_target, mfu_target = TARGETS[key]
            ratio = best["clips_per_s"] / ref["clips_per_s"]
            print(f"  targets {out['size']}: ours / reference {ratio:.2f} (>= {ratio_target}: "
                  f"{'met' if ratio >= ratio_target else 'NOT met'}), MFU "
                  + (f"{best['mfu']:.1%} (>= {mfu_target:.0%}: {'met' if best['mfu'] >= mfu_target else 'NOT met'})"
                     if "mfu" in best else "unknown (no peak for this device)"))


def bench_loader(report: dict, device, args) -> None:
    """The stream alone on --workers workers, then the fastest setup at the reference's batch of ViT-B (else the
    first size measured) fed by it: 32 videos x 4 views per batch, resampled (endless)."""
    from vmae.training.data import StreamConfig, make_loader

    key = next((k for k in ("base", "test", "small", "large") if report["sizes"].get(k, {}).get("best")), None)
    if key is None:
        print("loader: no measured setup to feed")
        return
    out = report["sizes"][key]
    best = max((r for r in out["setups"][1:] if "clips_per_s" in r and r["batch"] == out["batch"]),
               key=lambda r: r["clips_per_s"])
    num_sample = 4 if best["batch"] % 4 == 0 else 1
    cfg = StreamConfig(shards=args.shards, mode="pretrain", num_frames=SIZES[key].frames, input_size=SIZES[key].img,
                       batch_size=best["batch"] // num_sample, num_sample=num_sample, workers=args.workers, seed=0,
                       resampled=True)
    loader, _ = make_loader(cfg)
    batches = iter(loader)
    next(batches)  # workers started and warm
    t0, clips = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.loader_seconds:
        clips += len(next(batches)["video"])
    stream_rate = clips / (time.perf_counter() - t0)
    runner = Runner(SIZES[key], Setup(**best["setup_fields"]), device, args.compile_backend)
    for i in range(args.warmup):
        runner.step(next(batches)["video"].to(device, non_blocking=True), i)
    sync(device)
    wait, t0 = 0.0, time.perf_counter()
    for i in range(args.loader_steps):
        t = time.perf_counter()
        video = next(batches)["video"]
        wait += time.perf_counter() - t
        runner.step(video.to(device, non_blocking=True), args.warmup + i)
    sync(device)
    elapsed = time.perf_counter() - t0
    fed = best["batch"] * args.loader_steps / elapsed
    report["loader"] = {"size": SIZES[key].label, "setup": best["setup"], "workers": args.workers,
                        "stream_clips_per_s": stream_rate, "clips_per_s_per_worker": stream_rate / args.workers,
                        "workers_for_best": best["clips_per_s"] / (stream_rate / args.workers),
                        "fed_clips_per_s": fed, "synthetic_clips_per_s": best["clips_per_s"],
                        "data_wait_share": wait / elapsed}
    print(f"\nloader ({args.workers} workers, {cfg.batch_size} videos x {num_sample} views per batch): stream alone "
          f"{stream_rate:.1f} clips/s (views) = {stream_rate / args.workers:.1f} per worker core; the "
          f"{best['clips_per_s']:.0f} clips/s of '{best['setup']}' ({SIZES[key].label}) need "
          f"{report['loader']['workers_for_best']:.1f} workers. "
          f"Fed by the stream: {fed:.1f} clips/s, data wait {wait / elapsed:.1%} of the step time (target < 5%)")
    del loader, batches, runner
    free(device)


def masking_comparison(device, args) -> None:
    """Dual masking (decoder mask 0.5) against VideoMAE v1 (decoder mask 0) on ViT-B: the two alternate step by
    step, median step time of each (target: dual / v1 <= 0.8). CPU: 16 x 160 px, batch 2, fp32."""
    gpu = device.type == "cuda"
    size = replace(SIZES["base"], img=224 if gpu else 160)
    batch = args.batch or (32 if gpu else 2)
    amp = "bf16" if gpu else "off"
    runners = {name: Runner(size, Setup(name, amp=amp, batch=batch, decoder_mask_ratio=ratio), device)
               for name, ratio in (("v1   (decoder mask 0)  ", 0.0), ("dual (decoder mask 0.5)", 0.5))}
    print(f"ViT-B/16, {size.frames} frames x {size.img} px, encoder mask 0.9, batch {batch}, {device}, amp {amp}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per mode, alternating")
    video = random_video(batch, size, device)
    times, peaks = {name: [] for name in runners}, {name: 0 for name in runners}
    for i in range(args.warmup + args.steps):
        for name, runner in runners.items():
            sync(device)
            if gpu:
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            runner.step(video, i)
            sync(device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) if gpu else 0)
    results = {}
    for name, runner in runners.items():
        memory = saved_activation_bytes(runner, video)
        results[name] = statistics.median(times[name]), memory, count_flops(runner, video)
        print(f"{name}: step {results[name][0] * 1000:9.1f} ms (median), {batch / results[name][0]:8.2f} clips/s, "
              f"activations saved for backward {memory / 2**30:6.2f} GiB, {results[name][2] / 1e12:7.3f} TFLOP "
              "forward+backward" + (f", peak GPU memory {peaks[name] / 2**30:.2f} GiB" if gpu else ""))
    (v1_s, v1_mem, v1_flops), (dual_s, dual_mem, dual_flops) = results.values()
    ratio = dual_s / v1_s
    print(f"step-time ratio dual / v1: {ratio:.3f} (target <= 0.8: {'met' if ratio <= 0.8 else 'NOT met'}); "
          f"memory ratio {dual_mem / v1_mem:.3f}; FLOP ratio {dual_flops / v1_flops:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, batch 4, 1 + 2 steps (CPU check)")
    parser.add_argument("--masking", action="store_true", help="dual masking against VideoMAE v1 instead")
    parser.add_argument("--sizes", default=None, help="comma-separated from small, base, large, giant, test "
                        "[GPU: base,small,giant,large; CPU: test]")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help=f"clips per step [GPU {REFERENCE_BATCH}, the reference's]")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setup [GPU 8, CPU 2]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first [GPU 3, CPU 1]")
    parser.add_argument("--budget", type=float, default=360, help="seconds for the step timings; later setups "
                        "are skipped once spent (the reference of each size is always measured)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile candidates")
    parser.add_argument("--no-search", action="store_true", help="leave out the largest-batch search")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: quick check)")
    parser.add_argument("--batch-step", type=int, default=16, help="batch granularity of the search")
    parser.add_argument("--cpu-memory-limit", type=int, default=6 * 2**20, help=argparse.SUPPRESS)
    parser.add_argument("--shards", help="a pretraining shard folder or pattern: measure the loader feeding the step")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="loader workers")
    parser.add_argument("--loader-seconds", type=float, default=20, help="seconds of the stream alone")
    parser.add_argument("--loader-steps", type=int, default=20, help="training steps fed by the stream")
    parser.add_argument("--fp32", action=argparse.BooleanOptionalAction, default=None,
                        help="every setup without mixed precision [on for a CPU run, whose fp16/bf16 matmuls are "
                        "emulated and slow; off with --quick, which checks the GPU's precision paths]")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; 1 keeps timings steady on a shared machine, 0 = torch's default")
    parser.add_argument("--json", help="write every measured figure to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads and not gpu:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (5 if args.masking else 2 if args.quick or not gpu else 8)
    args.warmup = args.warmup or (1 if args.quick or not gpu else 3)
    fp32 = args.fp32 if args.fp32 is not None else not (gpu or args.quick)
    args.precision = (lambda setup: replace(setup, amp="off")) if fp32 else (lambda setup: setup)
    if args.quick:
        args.batch_step = min(args.batch_step, 2)
        if not gpu:
            args.compile_backend = "aot_eager"  # inductor's C++ build takes minutes on a small CPU
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.masking:
        masking_comparison(device, args)
        return
    keys = (args.sizes or ("test" if args.quick or not gpu else "base,small,giant,large")).split(",")
    unknown = [k for k in keys if k not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    name, peak = peak_flops(device)
    print(f"device {name} (dense bf16 peak {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}), torch "
          f"{torch.__version__}, {args.warmup} warm-up + {args.steps} timed steps per setup, budget {args.budget:.0f} s"
          + ("" if gpu else f", {torch.get_num_threads()} CPU thread(s); CPU: no targets")
          + (", fp32 (no mixed precision)" if fp32 else ""))
    report = {"device": name, "torch": torch.__version__, "peak_bf16": peak, "sizes": {}}
    budget = Budget(args.budget)
    for key in keys:
        bench_size(key, device, args, budget, report)
        save(report, args.json)  # a run cut short keeps what it measured
    if args.shards:
        bench_loader(report, device, args)
        save(report, args.json)
    summary(report, gpu)
    if not gpu:
        print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def save(report: dict, path: str | None) -> None:
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=1, default=str)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv[1:])
