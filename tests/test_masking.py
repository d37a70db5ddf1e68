import numpy as np
import pytest
import torch

from vmae.training.masking import (first_indices, make_masks, mask_counts, running_cell_mask, running_cell_phases,
                                   tube_mask)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_running_cell(t, g, ratio):
    """The reference generator's procedure (spec section 3.2): a [1]*m + [0]*(4-m) queue read from a pointer
    that advances one slot before each frame, the 2x2 cell tiled over the frame; all 4 phases, [4, t, g*g]."""
    m = int(4 * ratio)
    queue = np.array([1] * m + [0] * (4 - m))
    maps = []
    for phase in range(4):
        frames = []
        for k in range(t):
            cell = queue[(np.arange(4) + phase + k + 1) % 4].reshape(2, 2)
            frames.append(np.tile(cell, (g // 2, g // 2)).flatten())
        maps.append(np.stack(frames))
    return np.stack(maps)


@pytest.mark.parametrize("grid,ratio,hidden", [((8, 14, 14), 0.9, 176), ((8, 16, 16), 0.9, 230), ((2, 4, 4), 0.75, 12)])
def test_tube_mask_counts_and_tiling(grid, ratio, hidden):
    t, gh, gw = grid
    mask = tube_mask(5, grid, ratio, gen(), "cpu")
    assert mask.dtype == torch.bool and mask.shape == (5, t * gh * gw)
    frames = mask.view(5, t, gh * gw)
    assert (frames.sum(-1) == hidden).all()
    assert (frames == frames[:, :1]).all()  # the same pattern in every temporal slot
    assert not torch.equal(frames[0, 0], frames[1, 0])  # each sample draws its own pattern


def test_tube_mask_is_deterministic_for_a_seed_and_uniform():
    assert torch.equal(tube_mask(4, (8, 14, 14), 0.9, gen(7), "cpu"), tube_mask(4, (8, 14, 14), 0.9, gen(7), "cpu"))
    assert not torch.equal(tube_mask(4, (8, 14, 14), 0.9, gen(7), "cpu"), tube_mask(4, (8, 14, 14), 0.9, gen(8), "cpu"))
    share = tube_mask(4000, (1, 4, 4), 0.5, gen(), "cpu").float().mean(0)
    assert share.sub(0.5).abs().max() < 0.04  # every position equally likely to be hidden


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("g", [14, 16])
def test_running_cell_phases_match_reference_definition(ratio, g):
    phases = running_cell_phases((8, g, g), int(4 * ratio), torch.device("cpu"))
    assert phases.dtype == torch.bool and phases.shape == (4, 8 * g * g)
    expected = reference_running_cell(8, g, ratio).reshape(4, -1)
    assert np.array_equal(phases.numpy().astype(int), expected)
    assert (phases.view(4, 8, g * g).sum(-1) == int(4 * ratio) * g * g // 4).all()


def test_running_cell_phase_zero_examples():
    p0 = running_cell_phases((8, 14, 14), 2, torch.device("cpu"))[0].view(8, 14, 14).int()
    top_left = ["".join(str(v) for v in p0[k, :2, :2].flatten().tolist()) for k in range(8)]
    assert top_left == ["1001", "0011", "0110", "1100", "1001", "0011", "0110", "1100"]
    assert p0[0, 0, :4].tolist() == [1, 0, 1, 0] and p0[0, 1, :4].tolist() == [0, 1, 0, 1]
    assert (p0.view(8, -1).sum(-1) == 98).all()


def test_running_cell_mask_draws_each_phase():
    grid = (4, 14, 14)
    phases = running_cell_phases(grid, 2, torch.device("cpu"))
    masks = running_cell_mask(400, grid, 0.5, gen(), "cpu")
    picked = [next(i for i in range(4) if torch.equal(m, phases[i])) for m in masks]  # each row is one phase
    assert sorted(set(picked)) == [0, 1, 2, 3] and min(np.bincount(picked)) > 70
    assert torch.equal(masks, running_cell_mask(400, grid, 0.5, gen(), "cpu"))


def test_running_cell_errors_say_the_fix():
    with pytest.raises(ValueError, match="even token grid; got 7x7"):
        running_cell_mask(2, (8, 7, 7), 0.5, gen(), "cpu")
    with pytest.raises(ValueError, match="one of"):
        running_cell_mask(2, (8, 14, 14), 0.6, gen(), "cpu")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        tube_mask(2, (8, 14, 14), 1.0, gen(), "cpu")


def test_make_masks_dual_and_v1():
    mask, decode_mask = make_masks(3, (8, 14, 14), 0.9, 0.5, gen(1), "cpu")
    assert mask.shape == decode_mask.shape == (3, 1568)
    assert (mask.sum(1) == 1408).all() and (decode_mask.sum(1) == 784).all()
    phases = running_cell_phases((8, 14, 14), 2, torch.device("cpu"))
    assert all(any(torch.equal(d, p) for p in phases) for d in decode_mask)
    mask_v1, decode_v1 = make_masks(3, (8, 14, 14), 0.9, 0.0, gen(1), "cpu")
    assert torch.equal(mask_v1, mask) and torch.equal(decode_v1, ~mask_v1)


@pytest.mark.parametrize("grid,ratio,decoder_ratio", [((8, 14, 14), 0.9, 0.5), ((8, 14, 14), 0.9, 0.0),
                                                      ((8, 16, 16), 0.9, 0.5), ((2, 4, 4), 0.75, 0.25),
                                                      ((3, 2, 6), 0.5, 0.75)])
def test_mask_counts_are_what_make_masks_gives_every_sample(grid, ratio, decoder_ratio):
    mask, decode_mask = make_masks(4, grid, ratio, decoder_ratio, gen(2), "cpu")
    visible, decoded = mask_counts(grid, ratio, decoder_ratio)
    assert ((~mask).sum(1) == visible).all() and ((~decode_mask).sum(1) == decoded).all()
    index = first_indices(~decode_mask, decoded)
    assert all(torch.equal(row, torch.nonzero(~d).flatten()) for row, d in zip(index, decode_mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_masks_are_made_on_the_device():
    g = torch.Generator(device="cuda").manual_seed(0)
    mask, decode_mask = make_masks(2, (8, 14, 14), 0.9, 0.5, g, "cuda")
    assert mask.is_cuda and decode_mask.is_cuda and (mask.sum(1) == 1408).all()
