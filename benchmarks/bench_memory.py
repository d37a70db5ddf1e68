"""Fine-tuning memory at 64 frames x 266 px (the paper's larger-input ViT-g fine-tune), with and without
activation checkpointing: measured on a tiny model, computed for ViT-g.

Measured: the bytes autograd keeps for the backward pass after one training forward under bf16 autocast
(every distinct storage handed to the saved-tensor hooks, parameters excluded) of a tiny fine-tune model
(width 64, depth 2, 2 heads, patch 14) on one 64x266 clip, on the CPU.

Computed: per block, a pre-norm ViT block under bf16 autocast keeps, per token, 20 E + 4 H bytes (the fp32
inputs of both LayerNorms, 8 E; the bf16 inputs of qkv, proj and fc1, 6 E; the bf16 qkv output, 6 E; the
bf16 fc1 and GELU outputs, 4 H) plus 16 + 4 x heads (LayerNorm statistics, attention log-sum-exp); with
checkpointing only each block's fp32 input (4 E per token) stays, and the block being recomputed adds its own
20 E + 4 H once. The clip itself is kept in bf16 by the patch embedding. The script prints the tiny model's
measured figure against this rule, then the rule for ViT-g/14 (E 1408, H 6144, 40 blocks, 16 heads) at
16x224 and 64x266, with the static memory of AdamW training (fp32 weights, gradients and two moments, 16 bytes
per parameter, plus 2 for the bf16 weight copies autocast makes) and how many clips fit next to it on an
80 GiB GPU.

    .venv/bin/python benchmarks/bench_memory.py
"""
import torch

from vmae.training.models import SIZES, create_model

GiB = 2 ** 30
TINY = dict(embed_dim=64, depth=2, num_heads=2, patch_size=14)


def tokens(frames: int, size: int, patch: int, tubelet: int = 2) -> int:
    return frames // tubelet * (size // patch) ** 2


def block_bytes(n: int, width: int, hidden: int, heads: int) -> int:
    """Bytes one block keeps for backward under bf16 autocast, per clip (see the module notes)."""
    return n * (20 * width + 4 * hidden + 16 + 4 * heads)


def activation_bytes(frames, size, patch, width, hidden, depth, heads, checkpointing: bool) -> int:
    """Peak bytes of activations kept for backward, per clip: the clip, then every block (or, with
    checkpointing, every block's fp32 input and one block recomputed)."""
    n = tokens(frames, size, patch)
    clip = 3 * frames * size * size * 2
    if checkpointing:
        return clip + depth * n * width * 4 + block_bytes(n, width, hidden, heads)
    return clip + depth * block_bytes(n, width, hidden, heads)


def measured_saved_bytes(model, clip) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(clip)
    return sum(storages.values())


def main():
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 64, 266, 266)
    hidden = TINY["embed_dim"] * 4
    print("tiny model (width 64, depth 2, patch 14), one 64x266 clip, bf16 autocast on the CPU:")
    for checkpointing in (False, True):
        model = create_model("vit_test", num_classes=400, num_frames=64, img_size=266,
                             checkpoint_activations=checkpointing, **TINY)
        measured = measured_saved_bytes(model, clip)
        # The forward pass alone holds no recomputed block: the rule's figure without that term.
        rule = activation_bytes(64, 266, 14, TINY["embed_dim"], hidden, TINY["depth"], TINY["num_heads"], checkpointing)
        if checkpointing:
            rule -= block_bytes(tokens(64, 266, 14), TINY["embed_dim"], hidden, TINY["num_heads"])
        print(f"  checkpointing {'on ' if checkpointing else 'off'}: saved for backward {measured / 2**20:7.1f} MiB, "
              f"rule {rule / 2**20:7.1f} MiB (measured / rule {measured / rule:.3f})")

    g = SIZES["giant"]
    g_hidden = int(g.embed_dim * g.mlp_ratio)
    with torch.device("meta"):  # shapes only: nothing allocated
        giant = create_model("vit_giant_patch14_224", num_classes=400)
    count = sum(p.numel() for p in giant.parameters())
    static = count * 18
    print(f"ViT-g/14 fine-tune model: {count / 1e9:.3f} B parameters; weights + gradients + AdamW moments + bf16 "
          f"copies {static / GiB:.1f} GiB")
    for frames, size in ((16, 224), (64, 266)):
        for checkpointing in (False, True):
            per_clip = activation_bytes(frames, size, g.patch_size, g.embed_dim, g_hidden, g.depth, g.num_heads,
                                        checkpointing)
            fits = int((80 * GiB - static) // per_clip)
            print(f"  {frames}x{size} ({tokens(frames, size, g.patch_size)} tokens), checkpointing "
                  f"{'on ' if checkpointing else 'off'}: {per_clip / GiB:6.2f} GiB per clip; "
                  f"{fits} clips per 80 GiB GPU")


if __name__ == "__main__":
    main()
