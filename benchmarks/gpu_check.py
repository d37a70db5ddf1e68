"""The GPU paths, checked and timed on a lent GPU (CI has none): mixed precision, attention kernels, NCCL.

Needs only torch and timm (and this checkout on PYTHONPATH), so it runs on a bare GPU image:

    PYTHONPATH=. python3 benchmarks/gpu_check.py

1. Pretraining step of ViT-B/16 (16 x 224, batch 8): the loss under bf16 and fp16 autocast against fp32 on
   the same weights and batch, and a few optimiser steps in each precision (fp16 through the GradScaler)
   that must stay finite and lower the loss.
2. The fused attention kernels: forward + backward of the pretraining and fine-tuning models with SDPA
   restricted to flash attention (the fp32 pretraining decoder: memory-efficient), then to memory-efficient
   attention, under bf16 and fp16; the time of each.
3. NCCL: a one-rank process group, the fine-tuning model in DistributedDataParallel for one bf16 step, and
   an all_reduce.
Exits non-zero when a check fails.
"""
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel

from vmae.training import engine
from vmae.training.losses import pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks
from vmae.training.models import create_model
from vmae.training.optim import make_optimizer
from vmae.training.transforms import normalize

DEVICE = torch.device("cuda", 0)
FRAMES, SIZE, BATCH = 16, 224, 8


def test_video() -> torch.Tensor:
    """Clips of drifting gradients plus a little noise: structure the pretraining loss can learn."""
    t, y, x = torch.meshgrid(torch.arange(FRAMES), torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    clips = [((x * (1 + b % 3) + y * (b % 2) + 4 * t * (b + 1)) % 256) for b in range(BATCH)]
    video = torch.stack([torch.stack([c, c.flip(-1), 255 - c]) for c in clips]).float()
    video += torch.randn(video.shape, generator=torch.Generator().manual_seed(0)) * 4
    return video.clamp(0, 255).to(torch.uint8).to(DEVICE)


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pretrain_step(model, video_u8, amp: engine.Amp, seed: int = 0):
    video = normalize(video_u8)
    masks = make_masks(video.shape[0], model.grid, 0.9, 0.5, torch.Generator(device=DEVICE).manual_seed(seed), DEVICE)
    pred = model(video, *masks, amp_dtype=amp.dtype)
    return pretrain_loss(pred, pretrain_targets(video, model.patch_size, model.tubelet_size), *masks)


def check_precision(video_u8) -> list:
    problems = []
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_base_patch16_224", num_frames=FRAMES, img_size=SIZE).to(DEVICE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = pretrain_step(model, video_u8, engine.Amp("off", DEVICE)).item()
    for mode in ("bf16", "fp16"):
        model.load_state_dict(state)
        amp = engine.Amp(mode, DEVICE)
        with torch.no_grad():
            loss = pretrain_step(model, video_u8, amp).item()
        optimizer = make_optimizer(model, lr=1.5e-4, weight_decay=0.05)
        losses = []
        for step in range(12):
            step_loss = pretrain_step(model, video_u8, amp, seed=step % 2)
            amp.backward(step_loss)
            norm = amp.step(optimizer, model.parameters(), 0.02)
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss.item())
        seconds = timed(lambda: amp.backward(pretrain_step(model, video_u8, amp)))
        relative = abs(loss - reference) / reference
        print(f"pretrain {mode}: loss {loss:.5f} vs fp32 {reference:.5f} (rel. {relative:.1e}); "
              f"12 steps {losses[0]:.4f} -> {losses[-1]:.4f}, last grad norm {float(norm):.3g}; "
              f"forward+backward {seconds * 1000:.1f} ms for {BATCH} clips")
        if abs(loss - reference) > 0.02 * reference:
            problems.append(f"{mode} loss {loss} far from fp32 {reference}")
        if not all(map(torch.isfinite, map(torch.tensor, losses))) or losses[-1] >= losses[0]:
            problems.append(f"{mode} steps did not lower the loss: {losses}")
    return problems


def check_attention_kernels(video_u8) -> list:
    problems = []
    pretrain = create_model("pretrain_videomae_base_patch16_224", num_frames=FRAMES, img_size=SIZE).to(DEVICE)
    finetune = create_model("vit_base_patch16_224", num_frames=FRAMES, img_size=SIZE, num_classes=710).to(DEVICE)
    video = normalize(video_u8)
    for mode in ("bf16", "fp16"):
        amp = engine.Amp(mode, DEVICE)

        def finetune_step():
            with amp.autocast():
                logits = finetune(video)
            amp.backward(logits.float().logsumexp(-1).mean())
        # The pretraining decoder runs in fp32 (see PretrainVisionTransformer.forward), where flash attention
        # has no kernel: it may fall back to the memory-efficient one, the encoder may not.
        for name, pretrain_backends, finetune_backends in (
                ("flash", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], [SDPBackend.FLASH_ATTENTION]),
                ("memory-efficient", [SDPBackend.EFFICIENT_ATTENTION], [SDPBackend.EFFICIENT_ATTENTION])):
            try:
                with sdpa_kernel(pretrain_backends):
                    pre = timed(lambda: amp.backward(pretrain_step(pretrain, video_u8, amp)))
                with sdpa_kernel(finetune_backends):
                    fine = timed(finetune_step)
                print(f"attention {name:16s} {mode}: pretrain step {pre * 1000:.1f} ms, "
                      f"fine-tune step {fine * 1000:.1f} ms ({BATCH} clips)")
            except RuntimeError as e:
                problems.append(f"{name} attention under {mode}: {e}")
    return problems


def check_nccl(video_u8) -> list:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        model = create_model("vit_base_patch16_224", num_frames=FRAMES, img_size=SIZE, num_classes=710).to(DEVICE)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0], broadcast_buffers=False)
        amp = engine.Amp("bf16", DEVICE)
        optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.05)
        with amp.autocast():
            loss = torch.nn.functional.cross_entropy(ddp(normalize(video_u8)).float(),
                                                     torch.arange(BATCH, device=DEVICE))
        amp.backward(loss)
        amp.step(optimizer, model.parameters(), None)
        total = torch.ones(4, device=DEVICE)
        dist.all_reduce(total)
        print(f"nccl {torch.cuda.nccl.version()}: one DDP bf16 step, loss {loss.item():.4f}; "
              f"all_reduce {total.tolist()}")
        return [] if torch.isfinite(loss) and total.sum().item() == 4 else ["DDP step or all_reduce wrong"]
    finally:
        dist.destroy_process_group()


def main():
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(DEVICE)}, CUDA {torch.version.cuda}")
    video_u8 = test_video()
    problems = check_precision(video_u8) + check_attention_kernels(video_u8) + check_nccl(video_u8)
    print("all GPU checks passed" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
