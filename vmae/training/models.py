"""VideoMAE V2 models with the official parameter names and shapes, so released checkpoints load strictly.

`create_model(name, **options)` builds
- pretrain models (`PretrainVisionTransformer`: tube-masked encoder, decoder queried at the running-cell
  positions): pretrain_videomae_{small,base,large,huge}_patch16_224, pretrain_videomae_giant_patch14_224;
- finetune models (`VisionTransformer`: mean-pooled `fc_norm` + linear head): vit_{small,base,large,huge}_patch16_224,
  vit_giant_patch14_224;
- tiny test variants pretrain_videomae_test and vit_test (width 32, depth 2, 2 heads, decoder 16 wide, 1 head,
  depth 1), and the same with ViT-g's 14-pixel patches (`*_test_patch14`).

Departures from the reference that leave the checkpoint format untouched: the fixed sinusoid position tables
are non-persistent buffers (built for any frame count and image size, moved by `.to()`, never saved, never
copied per forward); attention goes through `F.scaled_dot_product_attention` (`set_attention(model, "eager")`
computes it step by step as the reference, for benchmarks/bench_pretrain_step.py's reference-mode baseline);
activation checkpointing is non-reentrant; the pretrain forward can run the encoder under autocast with the
decoder in fp32 (the paper's split), and takes the visible/decoded token counts so it needs no host sync
(static shapes, for torch.compile and CUDA graphs); the reference's unused Identity modules (`encoder.head`,
the finetune `norm`) are left out (no keys either way).

timm registry: timm already ships image ViTs named vit_{small,base,large}_patch16_224 and vit_giant_patch14_224,
and registering a name again replaces that model for everyone in the process. So the pretrain names (absent
from timm) are registered as they are, the finetune ones only as `videomae_v2_vit_*` (e.g.
`timm.create_model("videomae_v2_vit_base_patch16_224", num_classes=400)`), and an existing registry entry is
never replaced (importing twice is harmless). `create_model` here takes the plain official names.
"""
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_
from timm.models import register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from vmae.errors import ConfigError
from vmae.training.masking import first_indices
from vmae.training.model_names import FINETUNE_MODELS, PRETRAIN_MODELS

__all__ = ["FINETUNE_MODELS", "PRETRAIN_MODELS", "SIZES", "Attention", "Block", "PatchEmbed",
           "PretrainVisionTransformer", "Size", "VisionTransformer", "create_model", "set_attention",
           "sinusoid_table", "token_indices"]

LN_EPS = 1e-6


@dataclass(frozen=True)
class Size:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    decoder_embed_dim: int
    decoder_num_heads: int
    decoder_depth: int = 4  # the class default in the reference is 8, but every official run used 4


SIZES = {
    "small": Size(16, 384, 12, 6, 4.0, 192, 3),
    "base": Size(16, 768, 12, 12, 4.0, 384, 6),
    "large": Size(16, 1024, 24, 16, 4.0, 512, 8),
    "huge": Size(16, 1280, 32, 16, 4.0, 512, 8),
    # the decoder shares mlp_ratio 48/11, so its MLP is int(512*48/11) = 2234 wide (6144 in the encoder)
    "giant": Size(14, 1408, 40, 16, 48 / 11, 512, 8),
    "test": Size(16, 32, 2, 2, 4.0, 16, 1, decoder_depth=1),
    "test_patch14": Size(14, 32, 2, 2, 4.0, 16, 1, decoder_depth=1),  # ViT-g's patch geometry (e.g. 266 px)
}

TIMM_PREFIX = "videomae_v2_"


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D table over the flattened token index: channel j uses pos / 10000^(2*(j//2)/dim), sin on even
    channels and cos on odd ones (interleaved). Computed in float64 on the CPU as the reference does, returned
    as float32 [1, num_positions, dim]."""
    pos = torch.arange(num_positions, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(dim, device="cpu")
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float().unsqueeze(0)


def _drop_path_rates(rate: float, depth: int) -> list:
    return torch.linspace(0, rate, depth, device="cpu").tolist()


def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpoint_activations: bool) -> torch.Tensor:
    for blk in blocks:
        if checkpoint_activations and torch.is_grad_enabled():
            x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = blk(x)
    return x


def _init_pretrain(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_finetune(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PatchEmbed(nn.Module):
    """Conv3d over (tubelet, p, p) cubes; tokens in raster order t, then rows, then columns."""

    def __init__(self, img_size=224, patch_size=16, num_frames=16, tubelet_size=2, in_chans=3, embed_dim=768):
        super().__init__()
        h, w = to_2tuple(img_size)
        if h % patch_size or w % patch_size or num_frames % tubelet_size:
            raise ValueError(f"img_size {h}x{w} must divide by patch_size {patch_size} and num_frames "
                             f"{num_frames} by tubelet_size {tubelet_size}")
        self.input_shape = (num_frames, h, w)
        self.grid = (num_frames // tubelet_size, h // patch_size, w // patch_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[2:]) != self.input_shape:
            t, h, w = self.input_shape
            raise ValueError(f"the model was built for clips of {t} frames at {h}x{w}; got {list(x.shape)} "
                             f"(pass num_frames= and img_size= to create_model)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, T, H, W] -> [B, N, E]
        self._check(x)
        return self.proj(x).flatten(2).transpose(1, 2)

    def forward_tokens(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # [B, K] -> [B, K, E]
        """The embeddings of the tokens at `index` (raster positions) only, equal to forward(x) gathered there.

        With kernel = stride the conv is one linear map per cube, so only the picked cubes are read and
        multiplied: a tenth of the work when the encoder sees 10 % of the tokens."""
        self._check(x)
        b, c = x.shape[:2]
        (t, h, w), (kt, kh, kw) = self.grid, self.proj.kernel_size
        cubes = x.view(b, c, t, kt, h, kh, w, kw).permute(0, 2, 4, 6, 1, 3, 5, 7)  # a view: nothing copied
        rows = torch.arange(b, device=x.device).unsqueeze(1)
        picked = cubes[rows, index // (h * w), index // w % h, index % w]  # [B, K, C, kt, kh, kw]
        return F.linear(picked.flatten(2), self.proj.weight.flatten(1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention with the official layout: qkv weight without bias, separate q_bias and v_bias,
    k bias fixed at zero and never stored. `fused` (default) runs SDPA; off, the reference's eager
    softmax(q * scale @ k^T) @ v, which keeps the [B, heads, N, N] scores for backward."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} must divide by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x))). `drop` is
    the reference's dropout after the attention projection and after fc2 (none after the activation)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        # int() as the reference: 2234 for giant's decoder
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), drop=(0.0, drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _blocks(dim, depth, num_heads, mlp_ratio, drop_path_rate, drop=0.0) -> nn.ModuleList:
    rates = _drop_path_rates(drop_path_rate, depth)
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, rates[i], drop) for i in range(depth))


class PretrainEncoder(nn.Module):
    def __init__(self, img_size, patch_size, num_frames, tubelet_size, embed_dim, depth, num_heads, mlp_ratio,
                 drop_path_rate, checkpoint_activations):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, num_frames, tubelet_size, 3, embed_dim)
        self.register_buffer("pos_embed", sinusoid_table(self.patch_embed.num_patches, embed_dim), persistent=False)
        self.blocks = _blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.checkpoint_activations = checkpoint_activations
        self.apply(_init_pretrain)

    def forward(self, video: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:  # -> [B, N_vis, E]
        """visible: [B, N_vis] indices of the tokens the encoder sees, in raster order (see `token_indices`)."""
        x = self.patch_embed.forward_tokens(video, visible) + self.pos_embed[0][visible]
        x = _run_blocks(self.blocks, x, self.checkpoint_activations)
        return self.norm(x)


class PretrainDecoder(nn.Module):
    def __init__(self, embed_dim, depth, num_heads, mlp_ratio, out_dim, drop_path_rate, checkpoint_activations):
        super().__init__()
        self.blocks = _blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.head = nn.Linear(embed_dim, out_dim)
        self.checkpoint_activations = checkpoint_activations
        self.apply(_init_pretrain)

    def forward(self, x: torch.Tensor, num_queries: int) -> torch.Tensor:  # [B, N_vis+N_dec, D] -> [B, N_dec, out]
        x = _run_blocks(self.blocks, x, self.checkpoint_activations)
        return self.head(self.norm(x[:, -num_queries:]))


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # [B, N, C], [B, K] -> [B, K, C]
    # advanced indexing keeps a [B, K] index, where take_along_dim would expand it to [B, K, C]
    return x[torch.arange(x.shape[0], device=x.device).unsqueeze(1), index]


def token_indices(mask: torch.Tensor, decode_vis: torch.Tensor, num_patches: int, counts: tuple | None = None
                  ) -> tuple:
    """Raster-ordered indices of the encoder-visible tokens (~mask) and of the decoded tokens (decode_vis), as
    [B, N_vis] and [B, N_dec]. Every sample must have the same counts (tube and running-cell masks do), since a
    batch of token sequences cannot be ragged. Without `counts` (N_vis, N_dec) one host sync reads and checks
    them; with them (`masking.mask_counts`) nothing is read back, so the shapes are static and the call can
    run inside a CUDA graph, but masks with other counts are not detected."""
    if counts is not None:
        return first_indices(~mask, counts[0]), first_indices(decode_vis, counts[1])
    batch = mask.shape[0]
    for name, m in (("mask", mask), ("decode_mask", decode_vis)):
        if m.dtype != torch.bool or tuple(m.shape) != (batch, num_patches):
            raise ValueError(f"{name} must be a bool tensor [{batch}, {num_patches}]; got {m.dtype} {list(m.shape)}")
    visible_counts, decoded_counts = torch.stack(((~mask).sum(1), decode_vis.sum(1))).tolist()
    if len(set(visible_counts)) > 1 or len(set(decoded_counts)) > 1:
        raise ValueError("every sample must hide the same number of tokens and decode the same number of tokens "
                         f"(tube and running-cell masks do); visible per sample {visible_counts}, decoded "
                         f"per sample {decoded_counts}")
    return first_indices(~mask, visible_counts[0]), first_indices(decode_vis, decoded_counts[0])


class PretrainVisionTransformer(nn.Module):
    """VideoMAE V2 pretraining model (encoder + decoder) with dual masking."""

    def __init__(self, img_size=224, patch_size=16, num_frames=16, tubelet_size=2, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6,
                 drop_path_rate=0.0, checkpoint_activations=False):
        super().__init__()
        self.encoder = PretrainEncoder(img_size, patch_size, num_frames, tubelet_size, embed_dim, depth, num_heads,
                                       mlp_ratio, drop_path_rate, checkpoint_activations)
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.grid = self.encoder.patch_embed.grid
        self.num_patches = self.encoder.patch_embed.num_patches
        self.embed_dim = embed_dim
        self.decoder_embed_dim = decoder_embed_dim
        self.out_dim = 3 * tubelet_size * patch_size * patch_size
        self.decoder = PretrainDecoder(decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, self.out_dim,
                                       drop_path_rate, checkpoint_activations)
        # the reference never initialises this layer itself: it keeps PyTorch's default (kaiming-uniform)
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        self.register_buffer("pos_embed", sinusoid_table(self.num_patches, decoder_embed_dim), persistent=False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.checkpoint_activations = self.decoder.checkpoint_activations = enable

    def no_weight_decay(self) -> set:
        return {"mask_token"}

    def forward(self, video: torch.Tensor, mask: torch.Tensor, decode_mask: torch.Tensor | None = None,
                amp_dtype: torch.dtype | None = None, counts: tuple | None = None) -> torch.Tensor:
        """video [B,3,T,H,W] normalised; mask [B,N] True = hidden from the encoder; decode_mask [B,N] True = not
        reconstructed (None: reconstruct exactly the hidden tokens, VideoMAE v1). Returns [B, N_dec, 3*tubelet*p*p]
        in the raster order of the reconstructed tokens. With amp_dtype the encoder runs under autocast and the
        decoder in fp32; without it, any autocast around the call applies to the whole model. counts: (N_vis, N_dec)
        per sample when known (`masking.mask_counts`): no host sync (see `token_indices`)."""
        decode_vis = mask if decode_mask is None else ~decode_mask
        visible, decoded = token_indices(mask, decode_vis, self.num_patches, counts)
        device_type = video.device.type
        with torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            x_vis = self.encoder(video, visible)  # [B, N_vis, E]
        with torch.autocast(device_type, enabled=False) if amp_dtype is not None else nullcontext():
            if amp_dtype is not None:
                x_vis = x_vis.float()
            x_vis = self.encoder_to_decoder(x_vis)  # [B, N_vis, D]
            pos = self.pos_embed[0]  # [N, D]
            pos_vis, pos_dec = pos[visible], pos[decoded]  # [B, N_vis, D], [B, N_dec, D]
            # visible tokens stay in raster order; the queries carry their location through pos_dec only
            x = torch.cat([x_vis + pos_vis, self.mask_token + pos_dec], dim=1)  # [B, N_vis + N_dec, D]
            return self.decoder(x, pos_dec.shape[1])


class VisionTransformer(nn.Module):
    """VideoMAE V2 fine-tuning model: encoder, mean pooling over all tokens, fc_norm, linear head."""

    def __init__(self, img_size=224, patch_size=16, num_frames=16, tubelet_size=2, num_classes=400, embed_dim=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, head_drop_rate=0.0,
                 init_scale=0.001, checkpoint_activations=False):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, num_frames, tubelet_size, 3, embed_dim)
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.grid = self.patch_embed.grid
        self.num_patches = self.patch_embed.num_patches
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.register_buffer("pos_embed", sinusoid_table(self.num_patches, embed_dim), persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = _blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate, drop_rate)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.checkpoint_activations = checkpoint_activations
        self.apply(_init_finetune)
        if num_classes > 0:
            with torch.no_grad():
                self.head.weight.mul_(init_scale)
                self.head.bias.mul_(init_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.checkpoint_activations = enable

    def get_num_layers(self) -> int:
        return len(self.blocks)

    def no_weight_decay(self) -> set:
        return set()

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:  # [B,3,T,H,W] -> [B, E]
        x = self.pos_drop(self.patch_embed(video) + self.pos_embed)
        x = _run_blocks(self.blocks, x, self.checkpoint_activations)
        return self.fc_norm(x.mean(1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # -> [B, num_classes]
        return self.head(self.head_drop(self.forward_features(video)))


def set_attention(model: nn.Module, impl: str) -> nn.Module:
    """Every attention layer of `model` through SDPA ("sdpa", the default) or the reference's eager math
    ("eager": same results up to rounding, more memory and time; the benchmarks' reference mode)."""
    if impl not in ("sdpa", "eager"):
        raise ConfigError(f"attention {impl!r} must be 'sdpa' or 'eager'")
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused = impl == "sdpa"
    return model


_COMMON_OPTIONS = {"num_frames", "img_size", "tubelet_size", "drop_path_rate", "checkpoint_activations",
                   "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"}
_PRETRAIN_OPTIONS = _COMMON_OPTIONS | {"decoder_depth", "decoder_embed_dim", "decoder_num_heads"}
_FINETUNE_OPTIONS = _COMMON_OPTIONS | {"num_classes", "init_scale", "drop_rate", "head_drop_rate"}


def create_model(name: str, **options) -> nn.Module:
    """Build an official-layout model by name. Options: num_frames=16, img_size=224, tubelet_size=2,
    drop_path_rate=0.0, checkpoint_activations=False; pretrain: decoder_depth (4); finetune: num_classes=400,
    init_scale=0.001, drop_rate=0.0, head_drop_rate=0.0; size overrides (for tiny models): patch_size,
    embed_dim, depth, num_heads, mlp_ratio, decoder_embed_dim, decoder_num_heads."""
    pretrain = name in PRETRAIN_MODELS
    if not pretrain and name not in FINETUNE_MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(PRETRAIN_MODELS) + sorted(FINETUNE_MODELS)}")
    size = asdict(SIZES[PRETRAIN_MODELS[name] if pretrain else FINETUNE_MODELS[name]])
    allowed = _PRETRAIN_OPTIONS if pretrain else _FINETUNE_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    if not pretrain:
        for key in ("decoder_embed_dim", "decoder_num_heads", "decoder_depth"):
            del size[key]
    size.update(options)
    return PretrainVisionTransformer(**size) if pretrain else VisionTransformer(**size)


def _timm_entrypoint(name: str, registered: str):
    def entrypoint(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **options):
        if pretrained:
            raise ValueError(f"{registered}: no hub weights; load an official or vmae checkpoint with "
                             "vmae.training.checkpoint.load_pretrained")
        return create_model(name, **options)

    entrypoint.__name__ = entrypoint.__qualname__ = registered
    entrypoint.__doc__ = f"VideoMAE V2 {name} (vmae.training.models.create_model)."
    return entrypoint


def _register_in_timm() -> None:
    names = [(n, n) for n in PRETRAIN_MODELS] + [(n, TIMM_PREFIX + n) for n in FINETUNE_MODELS]
    for name, registered in names:
        if timm.is_model(registered):
            continue
        fn = _timm_entrypoint(name, registered)
        # timm appends each entrypoint's name to this module's __all__, so the name must exist here
        globals()[registered] = register_model(fn)


_register_in_timm()
