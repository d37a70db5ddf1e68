"""A picture of what the pretrained model does: input, visible patches, reconstruction, target.

For each clip, four rows over the temporal slots (first frame of each tubelet): the input frames; what the
encoder sees (hidden patches grey); the reconstruction (hidden patches predicted, de-normalised with each
patch's own mean and std when the target was normalised, visible patches from the input); the target (the
hidden patches' true pixels, visible ones grey). The decoder is queried at every hidden position (the
VideoMAE v1 query set): each position is a running-cell query in some phase, so this stays in distribution.
"""
from pathlib import Path

import torch
from matplotlib.figure import Figure

from vmae.atomic import atomic_path
from vmae.errors import ConfigError
from vmae.training.checkpoint import extract_state_dict, load_checkpoint_file, recorded_config
from vmae.training.data import StreamConfig, make_loader
from vmae.training.losses import TARGET_EPS, patchify
from vmae.training.masking import tube_mask
from vmae.training.models import create_model
from vmae.training.transforms import denormalize, normalize

GREY = 0.5


def unpatchify(tokens: torch.Tensor, grid: tuple, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """Inverse of `losses.patchify`: [B, N, tubelet*p*p, C] -> [B, C, T, H, W]."""
    t, gh, gw = grid
    B, _, _, C = tokens.shape
    x = tokens.reshape(B, t, gh, gw, tubelet_size, patch_size, patch_size, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # B, C, t, tubelet, gh, p, gw, p
    return x.reshape(B, C, t * tubelet_size, gh * patch_size, gw * patch_size)


def reconstruct(pred: torch.Tensor, video: torch.Tensor, mask: torch.Tensor, patch_size: int, tubelet_size: int,
                normalized_target: bool) -> torch.Tensor:
    """Pixel patches [B, N, tubelet*p*p, 3] in [0, 1]: the input's, with the hidden ones replaced by `pred`
    ([B, N_hidden, tubelet*p*p*3], channel fastest), de-normalised with each patch's own statistics."""
    pixels = patchify(denormalize(video.float()), patch_size, tubelet_size)  # [B, N, P, 3]
    hidden = pixels[mask]  # [B*N_hidden, P, 3]
    guess = pred.float().reshape(hidden.shape)
    if normalized_target:
        mean = hidden.mean(dim=1, keepdim=True)
        std = hidden.var(dim=1, unbiased=True, keepdim=True).sqrt()
        guess = guess * (std + TARGET_EPS) + mean
    out = pixels.clone()
    out[mask] = guess
    return out.clamp(0, 1)


def _model_settings(ckpt: dict, model_name: str | None) -> dict:
    cfg = recorded_config(ckpt)
    name = model_name or cfg.get("model")
    if name is None:
        raise ConfigError("the checkpoint names no model (no vmae config, no official args): pass --model")
    return {"model": name, "num_frames": cfg.get("num_frames", 16), "input_size": cfg.get("input_size", 224),
            "tubelet_size": cfg.get("tubelet_size", 2), "decoder_depth": cfg.get("decoder_depth", 4),
            "mask_ratio": cfg.get("mask_ratio", 0.9), "normalize_target": cfg.get("normalize_target", True)}


def visualize(checkpoint, shards: str, out, num: int = 4, model_name: str | None = None,
              mask_ratio: float | None = None, seed: int = 0, decoder: str | None = None) -> Path:
    """Write the reconstruction grid of `num` clips from `shards` to the PNG `out`; returns its path."""
    ckpt = load_checkpoint_file(checkpoint)
    s = _model_settings(ckpt, model_name)
    model = create_model(s["model"], num_frames=s["num_frames"], img_size=s["input_size"],
                         tubelet_size=s["tubelet_size"], decoder_depth=s["decoder_depth"])
    model.load_state_dict(extract_state_dict(ckpt))
    model.eval()
    options = dict(shards=shards, mode="pretrain", num_frames=s["num_frames"], input_size=s["input_size"],
                   batch_size=num, num_sample=1, workers=0, seed=seed, resampled=False)
    if decoder is not None:
        options["decoder"] = decoder
    loader, _ = make_loader(StreamConfig(**options))
    batch = next(iter(loader), None)
    if batch is None:
        raise ConfigError(f"{shards}: fewer than {num} decodable clips; lower --num")
    video = normalize(batch["video"])
    generator = torch.Generator().manual_seed(seed)
    mask = tube_mask(video.shape[0], model.grid, mask_ratio or s["mask_ratio"], generator, "cpu")
    with torch.no_grad():
        pred = model(video, mask, None)  # queries at every hidden position
    p, tub = model.patch_size, model.tubelet_size
    recon = reconstruct(pred, video, mask, p, tub, s["normalize_target"])
    pixels = patchify(denormalize(video), p, tub).clamp(0, 1)
    visible, target = pixels.clone(), pixels.clone()
    visible[mask] = GREY
    target[~mask] = GREY
    rows = [("input", pixels), ("visible", visible), ("reconstruction", recon), ("target", target)]
    return _draw(rows, model.grid, p, tub, batch.get("key"), Path(out))


def _draw(rows, grid, patch_size, tubelet_size, keys, out: Path) -> Path:
    clips = [(name, unpatchify(tokens, grid, patch_size, tubelet_size)) for name, tokens in rows]
    B, _, T = clips[0][1].shape[:3]
    cols = T // tubelet_size
    fig = Figure(figsize=(1.2 * cols, 1.2 * B * len(rows)))
    axes = fig.subplots(B * len(rows), cols, squeeze=False)
    for b in range(B):
        for r, (name, video) in enumerate(clips):
            for c in range(cols):
                ax = axes[b * len(rows) + r, c]
                ax.imshow(video[b, :, c * tubelet_size].permute(1, 2, 0).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    label = f"{keys[b]}\n{name}" if keys is not None and r == 0 else name
                    ax.set_ylabel(label, fontsize=6)
    fig.tight_layout(pad=0.2)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out
