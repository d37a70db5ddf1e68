"""Encoder tube masks and decoder running-cell masks, drawn on the device from a torch.Generator.

Masks are bool [B, N] over the token raster (t, then rows, then columns); True = hidden from the encoder
(tube) / not reconstructed by the decoder (running cell). Made on the training device from a seeded generator
instead of the reference's float64 numpy arrays from the global RNG shipped through the DataLoader.
"""
from functools import lru_cache

import torch

RUNNING_CELL_RATIOS = (0.25, 0.5, 0.75)


def tube_mask(batch: int, grid: tuple, ratio: float, generator: torch.Generator | None,
              device: torch.device | str) -> torch.Tensor:
    """Hide int(ratio * gh*gw) random positions per frame, the same positions in every temporal slot.
    `generator` must live on `device`."""
    t, gh, gw = grid
    if not 0 <= ratio < 1:
        raise ValueError(f"tube mask ratio must be in [0, 1); got {ratio}")
    per_frame = gh * gw
    hidden = int(ratio * per_frame)
    order = torch.rand(batch, per_frame, generator=generator, device=device).argsort(dim=1)
    frame = torch.zeros(batch, per_frame, dtype=torch.bool, device=device)
    frame.scatter_(1, order[:, :hidden], True)  # a uniformly random subset of `hidden` positions
    return frame.repeat(1, t)  # [B, t*gh*gw]: the same pattern in every temporal slot


@lru_cache(maxsize=32)
def running_cell_phases(grid: tuple, hidden_per_cell: int, device: torch.device) -> torch.Tensor:
    """All 4 phases, bool [4, N]: position q (raster order inside its 2x2 cell) of temporal slot k is hidden
    in phase s iff (q + s + k + 1) mod 4 < hidden_per_cell."""
    t, gh, gw = grid
    s = torch.arange(4, device=device).view(4, 1, 1, 1)
    k = torch.arange(t, device=device).view(1, t, 1, 1)
    q = (2 * (torch.arange(gh, device=device) % 2)).view(1, 1, gh, 1) + (torch.arange(gw, device=device) % 2)
    return ((q + s + k + 1) % 4 < hidden_per_cell).reshape(4, t * gh * gw)


def running_cell_mask(batch: int, grid: tuple, ratio: float, generator: torch.Generator | None,
                      device: torch.device | str) -> torch.Tensor:
    """The reference's running-cell mask: a 2x2 cell with int(4*ratio) hidden slots that rotates by one slot per
    temporal slot, tiled over the frame; each sample draws one of the 4 phases uniformly."""
    t, gh, gw = grid
    if ratio not in RUNNING_CELL_RATIOS:
        raise ValueError(f"running-cell decoder mask ratio must be one of {RUNNING_CELL_RATIOS}; got {ratio}")
    if gh % 2 or gw % 2:
        raise ValueError(f"running-cell masking tiles 2x2 cells and needs an even token grid; got {gh}x{gw} "
                         "(choose an input size whose size/patch is even, e.g. 224 with patch 16 or 14)")
    device = torch.device(device)
    phases = running_cell_phases((int(t), int(gh), int(gw)), int(4 * ratio), device)
    pick = torch.randint(4, (batch,), generator=generator, device=device)
    return phases[pick]


def make_masks(batch: int, grid: tuple, mask_ratio: float, decoder_mask_ratio: float,
               generator: torch.Generator | None, device: torch.device | str) -> tuple:
    """(mask, decode_mask), both bool [B, N]. decoder_mask_ratio 0 gives decode_mask = ~mask: the decoder
    reconstructs exactly the hidden tokens (VideoMAE v1)."""
    mask = tube_mask(batch, grid, mask_ratio, generator, device)
    if decoder_mask_ratio == 0:
        return mask, ~mask
    return mask, running_cell_mask(batch, grid, decoder_mask_ratio, generator, device)


def mask_counts(grid: tuple, mask_ratio: float, decoder_mask_ratio: float) -> tuple:
    """(N_vis, N_dec): the tokens per sample that `make_masks` leaves visible to the encoder and has decoded, the
    same for every sample, so the model can take them without reading the masks back (static shapes)."""
    t, gh, gw = grid
    hidden = int(mask_ratio * gh * gw)
    if decoder_mask_ratio == 0:
        return t * (gh * gw - hidden), t * hidden
    return t * (gh * gw - hidden), t * gh * gw * (4 - int(4 * decoder_mask_ratio)) // 4


def first_indices(selected: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count] raster-ordered indices of the True entries of bool [B, N] (each row has `count` of them):
    a stable sort, so the result has a static shape and needs no host sync, unlike `selected.nonzero()`."""
    return torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)[:, :count]
