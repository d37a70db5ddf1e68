import math
import statistics

import pytest
import torch

from vmae.training.losses import distill_kl, pretrain_loss, pretrain_targets
from vmae.training.masking import make_masks, mask_counts
from vmae.training.models import create_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalized(raw):
    return (raw - torch.tensor(MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1, 1)


def hand_targets(raw, p, tubelet, normalize):
    """Spec section 5.1 one value at a time: token (t, h, w) in raster order; inside it pixels (time, row,
    column) with the channel fastest; optional per-token per-channel (x - mean) / (unbiased std + 1e-6)."""
    B, C, T, H, W = raw.shape
    out = []
    for b in range(B):
        tokens = []
        for ti in range(T // tubelet):
            for hi in range(H // p):
                for wi in range(W // p):
                    pixels = [[raw[b, c, ti * tubelet + dt, hi * p + r, wi * p + q].item() for c in range(C)]
                              for dt in range(tubelet) for r in range(p) for q in range(p)]
                    if normalize:
                        for c in range(C):
                            col = [px[c] for px in pixels]
                            mu, sd = statistics.fmean(col), statistics.stdev(col)
                            for px in pixels:
                                px[c] = (px[c] - mu) / (sd + 1e-6)
                    tokens.append([v for px in pixels for v in px])
        out.append(tokens)
    return torch.tensor(out)


@pytest.mark.parametrize("tubelet", [1, 2])
@pytest.mark.parametrize("normalize", [False, True])
def test_targets_match_hand_computation(tubelet, normalize):
    raw = torch.rand(2, 3, 2, 4, 6, generator=torch.Generator().manual_seed(0))  # p=2 -> grid (2/tubelet, 2, 3)
    got = pretrain_targets(normalized(raw), patch_size=2, tubelet_size=tubelet, normalize=normalize)
    assert got.shape == (2, (2 // tubelet) * 6, tubelet * 4 * 3)
    assert torch.allclose(got, hand_targets(raw, 2, tubelet, normalize), atol=1e-4)


def test_normalize_flag_changes_targets():
    video = normalized(torch.rand(1, 3, 2, 4, 4))
    plain = pretrain_targets(video, 2, 2, normalize=False)
    norm = pretrain_targets(video, 2, 2, normalize=True)
    assert plain.min() >= 0 and plain.max() <= 1 and not torch.allclose(plain, norm)
    per_channel = norm.view(1, 4, 8, 3)
    assert torch.allclose(per_channel.mean(2), torch.zeros(1, 4, 3), atol=1e-5)


def test_loss_matches_hand_computation():
    # 1 clip, 4 tokens, 2 values each; the encoder hides tokens 1, 2, 3; the decoder reconstructs 0, 1, 3
    mask = torch.tensor([[False, True, True, True]])
    decode_mask = torch.tensor([[False, False, True, False]])
    targets = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    pred = torch.tensor([[[5.0, 5.0], [1.0, 3.0], [3.0, 5.0]]])  # rows for tokens 0, 1, 3
    # token 0 is encoder-visible: weight 0; token 1: mean((0, 2)^2) = 2; token 3: mean((0, 2)^2) = 2
    assert pretrain_loss(pred, targets, mask, decode_mask).item() == pytest.approx((2 + 2) / 2)


def test_loss_is_token_weighted_over_the_batch():
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    decode_mask = torch.tensor([[False, False, True, True], [False, True, True, False]])
    targets = torch.zeros(2, 4, 1)
    pred = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # clip 0 tokens 0, 1; clip 1 tokens 0, 3
    # weighted tokens: clip 0 -> 1, 4; clip 1 -> 9 (token 3 is visible) => (1 + 4 + 9) / 3
    assert pretrain_loss(pred, targets, mask, decode_mask).item() == pytest.approx(14 / 3)


def test_v1_mode_weights_every_decoded_token():
    gen = torch.Generator().manual_seed(0)
    mask, decode_mask = make_masks(2, (2, 4, 4), 0.75, 0.0, gen, "cpu")
    targets = torch.randn(2, 32, 6, generator=gen)
    pred = torch.randn(2, 24, 6, generator=gen)
    plain_mse = (pred - targets[mask].view(2, 24, 6)).pow(2).mean()
    assert torch.allclose(pretrain_loss(pred, targets, mask, decode_mask), plain_mse)
    assert torch.allclose(pretrain_loss(pred, targets, mask, None), plain_mse)


@pytest.mark.parametrize("decoder_ratio", [0.5, 0.0])
def test_loss_from_known_counts_equals_loss_from_the_masks(decoder_ratio):
    gen = torch.Generator().manual_seed(0)
    mask, decode_mask = make_masks(3, (2, 4, 4), 0.75, decoder_ratio, gen, "cpu")
    decoded = mask_counts((2, 4, 4), 0.75, decoder_ratio)[1]
    targets, pred = torch.randn(3, 32, 6, generator=gen), torch.randn(3, decoded, 6, generator=gen)
    assert torch.equal(pretrain_loss(pred, targets, mask, decode_mask, num_decoded=decoded),
                       pretrain_loss(pred, targets, mask, decode_mask))


def test_loss_without_weighted_tokens_is_zero_not_nan():
    mask = torch.tensor([[True, False]])
    loss = pretrain_loss(torch.ones(1, 1, 3), torch.zeros(1, 2, 3), mask, torch.tensor([[True, False]]))
    assert loss.item() == 0


def test_model_targets_and_loss_backpropagate():
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", num_frames=4, img_size=64, tubelet_size=1, depth=1)
    video = normalized(torch.rand(2, 3, 4, 64, 64))
    mask, decode_mask = make_masks(2, model.grid, 0.75, 0.5, torch.Generator().manual_seed(0), "cpu")
    targets = pretrain_targets(video, model.patch_size, model.tubelet_size)
    assert targets.shape == (2, model.num_patches, model.out_dim)
    loss = pretrain_loss(model(video, mask, decode_mask), targets, mask, decode_mask)
    loss.backward()
    assert math.isfinite(loss.item()) and model.mask_token.grad.abs().sum() > 0


def test_distill_kl():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 3.0
    ps, pt = (student / T).softmax(-1), (teacher / T).softmax(-1)
    expected = (pt * (pt.log() - ps.log())).sum(-1).mean() * T * T
    assert distill_kl(student, teacher, T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distill_kl(teacher, teacher, T).item() == pytest.approx(0, abs=1e-7)
    assert distill_kl(student, teacher, T).item() > 0
