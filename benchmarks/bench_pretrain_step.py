"""Training-step time and memory: dual masking (decoder mask 0.5) against VideoMAE v1 (decoder mask 0).

Same model weights, same batch, one process; the two modes alternate step by step so background load hits
both alike, and the median step time of each is compared. Target: dual / v1 step-time ratio <= 0.8 on a
ViT-B-shaped model.

  python benchmarks/bench_pretrain_step.py            # CPU: ViT-B width/depth, 16 frames, 160 px, batch 2
  python benchmarks/bench_pretrain_step.py --full     # ViT-B 16x224 (the default on a GPU: bf16, batch 32)

Memory: on a GPU the peak allocated memory of a step; on a CPU the bytes autograd saves for the backward pass
(the activation memory masking changes; the weights and optimiser state are the same in both modes), plus the
process's peak RSS. On a GPU it also prints clips/s and model FLOPs utilisation (FLOPs of one full step
counted by torch's FlopCounterMode, against the card's dense bf16 peak).
"""
import argparse
import copy
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vmae.training import engine
from vmae.training.losses import pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks
from vmae.training.models import create_model
from vmae.training.optim import make_optimizer
from vmae.training.transforms import normalize

# Dense bf16 tensor-core peaks (FLOP/s) by device-name substring.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
# torch's counter knows the GPU attention kernels but not the CPU one: count it with the same formulas.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, **kwargs: sdpa_backward_flop_count(grad, q, k, v),
}


class Mode:
    """One training setup (model copy, optimiser, amp) for a decoder mask ratio."""

    def __init__(self, model, cfg: dict, decoder_mask_ratio: float, device):
        self.model, self.ratio, self.device = copy.deepcopy(model), decoder_mask_ratio, device
        self.optimizer = make_optimizer(self.model, lr=1e-4, weight_decay=0.05)
        self.amp = engine.Amp(cfg["amp"], device)
        self.masks_rng = torch.Generator(device=device)
        self.times, self.fb_times, self.peaks = [], [], []

    def forward_backward(self, video_u8, i: int):
        video = normalize(video_u8)
        self.masks_rng.manual_seed(i)
        mask, decode_mask = make_masks(video.shape[0], self.model.grid, 0.9, self.ratio, self.masks_rng, self.device)
        targets = pretrain_targets(video, self.model.patch_size, self.model.tubelet_size)
        pred = self.model(video, mask, decode_mask, amp_dtype=self.amp.dtype)
        loss = pretrain_loss(pred, targets, mask, decode_mask)
        self.amp.backward(loss)
        return loss

    def step(self, video_u8, i: int, sync=lambda: None) -> float:
        """One training step; returns the forward+backward share of its time."""
        t0 = time.perf_counter()
        self.forward_backward(video_u8, i)
        sync()
        forward_backward = time.perf_counter() - t0
        self.amp.step(self.optimizer, self.model.parameters(), 0.02)
        self.optimizer.zero_grad(set_to_none=True)
        return forward_backward

    def saved_activation_bytes(self, video_u8) -> int:
        """Bytes of the tensors autograd keeps for backward in one forward (views of one storage counted once)."""
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.forward_backward(video_u8, 0)
        self.optimizer.zero_grad(set_to_none=True)
        del loss
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        return sum(n for ptr, n in storages.items() if ptr not in params)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="ViT-B 16 frames x 224 px (slow on a CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="clips per step [GPU 32, CPU 2]")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; 1 keeps timings steady on a shared machine, 0 = torch's default")
    parser.add_argument("--checkpoint-activations", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    frames, size = 16, 224 if (args.full or gpu) else 160
    batch = args.batch or (32 if gpu else 2)
    amp = "bf16" if gpu else "off"
    t, g = frames // 2, size // 16
    print(f"config: ViT-B/16 (width 768, depth 12, decoder 384 x 4), {frames} frames, {size} px -> {t}x{g}x{g} = "
          f"{t * g * g} tokens, encoder mask 0.9, batch {batch} clips, device {device}, amp {amp}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per mode, alternating"
          + ("" if gpu else f", {torch.get_num_threads()} CPU thread(s)"))
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_base_patch16_224", num_frames=frames, img_size=size,
                         checkpoint_activations=args.checkpoint_activations).to(device)
    cfg = {"amp": amp}
    modes = {"v1   (decoder mask 0)  ": Mode(model, cfg, 0.0, device),
             "dual (decoder mask 0.5)": Mode(model, cfg, 0.5, device)}
    del model
    video = torch.randint(0, 256, (batch, 3, frames, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    for i in range(args.warmup + args.steps):
        for mode in modes.values():
            sync()
            if gpu:
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            forward_backward = mode.step(video, i, sync)
            sync()
            if i >= args.warmup:
                mode.times.append(time.perf_counter() - t0)
                mode.fb_times.append(forward_backward)
                mode.peaks.append(torch.cuda.max_memory_allocated(device) if gpu else 0)
    results = {}
    for name, mode in modes.items():
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            mode.step(video, 10_000)
        memory = max(mode.peaks) if gpu else mode.saved_activation_bytes(video)
        results[name] = (statistics.median(mode.times), statistics.median(mode.fb_times), memory,
                         counter.get_total_flops())
    for name, (seconds, fb_seconds, memory, flops) in results.items():
        line = (f"{name}: step {seconds * 1000:9.1f} ms (median; forward+backward {fb_seconds * 1000:.1f}), "
                f"{batch / seconds:8.2f} clips/s, "
                f"{'peak GPU memory' if gpu else 'activations saved for backward'} {memory / 2**30:6.2f} GiB, "
                f"{flops / 1e12:7.3f} TFLOP/step")
        if gpu:
            peak = next((v for k, v in PEAK_BF16.items() if k in torch.cuda.get_device_name(device)), None)
            line += f", {flops / seconds / 1e12:.1f} TFLOP/s" + (f", MFU {flops / seconds / peak:.1%}" if peak else "")
        print(line)
    (v1_s, v1_fb, v1_mem, v1_flops), (dual_s, dual_fb, dual_mem, dual_flops) = results.values()
    ratio = dual_s / v1_s
    print(f"step-time ratio dual / v1: {ratio:.3f} (target <= 0.8: {'met' if ratio <= 0.8 else 'NOT met'}); "
          f"forward+backward ratio {dual_fb / v1_fb:.3f}; memory ratio {dual_mem / v1_mem:.3f}; "
          f"FLOP ratio {dual_flops / v1_flops:.3f}")
    if gpu:
        print(f"device: {torch.cuda.get_device_name(device)}")
    else:
        print(f"process peak RSS (both modes): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
