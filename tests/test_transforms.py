"""Clip transforms: the reference's crop geometry, one augmentation for all frames, device-side steps."""
import random

import numpy as np
import pytest
import torch

from vmae.training import transforms as T


def rng(seed=0):
    return np.random.default_rng(seed)


def noise_clip(t=4, h=64, w=80, seed=0, same_frames=False):
    frames = np.random.default_rng(seed).integers(0, 256, (1 if same_frames else t, h, w, 3), dtype=np.uint8)
    return T.as_clip(np.repeat(frames, t, 0) if same_frames else frames)


def test_as_clip_is_a_view():
    frames = np.zeros((2, 6, 8, 3), np.uint8)
    clip = T.as_clip(frames)
    frames[1, 2, 3, 0] = 7
    assert clip.shape == (2, 3, 6, 8) and clip[1, 0, 2, 3] == 7


@pytest.mark.parametrize("height,width,expected_sides", [
    (320, 427, [320, 280, 240, 211]),   # no side near 224
    (256, 454, [256, 224, 192, 168]),
    (255, 340, [255, 224, 191, 168]),   # int(255 * .875) = 223 snaps to 224
])
def test_multiscale_crop_box_sizes_and_positions(height, width, expected_sides):
    pairs_seen, offsets_seen = set(), set()
    allowed = {(expected_sides[i], expected_sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert len(allowed) == 10
    for seed in range(3000):
        top, left, h, w = T.multiscale_crop_box(height, width, 224, rng(seed))
        assert (h, w) in allowed
        ystep, xstep = (height - h) // 4, (width - w) // 4
        assert top % max(ystep, 1) == 0 and left % max(xstep, 1) == 0
        assert 0 <= top <= height - h and 0 <= left <= width - w
        pairs_seen.add((h, w))
        if (h, w) == (expected_sides[1], expected_sides[2]):
            offsets_seen.add((top // max(ystep, 1), left // max(xstep, 1)))
    assert pairs_seen == allowed
    assert offsets_seen == {(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3),
                            (3, 1), (3, 3)}


def test_multiscale_crop_is_one_crop_for_all_frames():
    clip = noise_clip(t=4, h=96, w=128, same_frames=True)
    out = T.multiscale_crop(clip, rng(3), 48)
    assert out.shape == (4, 3, 48, 48) and out.dtype == torch.uint8
    assert all(torch.equal(out[0], out[i]) for i in range(4))
    top, left, h, w = T.multiscale_crop_box(96, 128, 48, rng(3))
    expected = T.resize(clip[..., top:top + h, left:left + w], 48, 48, antialias=True)
    assert torch.equal(out, expected)


def test_multiscale_crop_of_a_small_frame_stays_inside():
    for seed in range(50):
        top, left, h, w = T.multiscale_crop_box(200, 220, 224, rng(seed))
        assert top >= 0 and left >= 0 and top + h <= 200 and left + w <= 220


def test_random_resized_crop_box_ranges():
    for seed in range(500):
        top, left, h, w = T.random_resized_crop_box(120, 160, rng(seed))
        assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
        if (h, w) != (120, 160):
            assert 0.07 <= h * w / (120 * 160) <= 1.0
            assert 0.7 <= w / h <= 1.4
    # An extreme aspect ratio misses ten times and falls back to the largest centred box within 4:3.
    assert T.random_resized_crop_box(10, 1000, rng(0), scale=(0.99, 1.0)) == (0, 493, 10, 13)


def test_random_resized_crop_and_flip_share_the_box():
    clip = noise_clip(t=3, same_frames=True)
    out = T.hflip(T.random_resized_crop(clip, rng(1), 32))
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out[0], out[2])
    assert torch.equal(T.hflip(out), T.random_resized_crop(clip, rng(1), 32))


@pytest.mark.parametrize("seed", range(4))
def test_random_resized_crop_equals_the_references_float_resize(seed):
    """The reference normalises first and resizes the floats (F.interpolate, bilinear, no antialias); our
    uint8 resize normalised afterwards is the same within one grey level (the rounding)."""
    clip = noise_clip(t=2, h=120, w=200, seed=seed)
    ours = T.normalize(T.random_resized_crop(clip, rng(seed), 56).permute(1, 0, 2, 3))
    top, left, h, w = T.random_resized_crop_box(120, 200, rng(seed))
    normalised = T.normalize(clip.permute(1, 0, 2, 3))[..., top:top + h, left:left + w]  # [3, T, h, w]
    theirs = torch.nn.functional.interpolate(normalised, size=(56, 56), mode="bilinear", align_corners=False)
    grey_level = 1 / (255 * torch.tensor(T.IMAGENET_STD).view(3, 1, 1, 1))
    assert ((ours - theirs).abs() <= grey_level + 1e-6).all()
    antialiased = T.normalize(T.random_resized_crop(clip, rng(seed), 56, antialias=True).permute(1, 0, 2, 3))
    assert (antialiased - theirs).abs().max() > 10 * grey_level.max() or (h, w) == (56, 56)


def test_resize_short_side_and_test_crops_match_the_reference_example():
    clip = noise_clip(t=2, h=256, w=454)
    resized = T.resize_short_side(clip, 224)
    assert resized.shape[-2:] == (224, 397)
    crops = T.spatial_crops(resized, 224, 3)
    for crop, x in zip(crops, (0, 86, 173)):
        assert torch.equal(crop, resized[..., :, x:x + 224])
    portrait = T.spatial_crops(T.resize_short_side(noise_clip(t=1, h=454, w=256), 224), 224, 3)
    assert [c.shape[-2:] for c in portrait] == [(224, 224)] * 3
    assert torch.equal(T.centre_crop(resized, 224), resized[..., :, 86:310])


@pytest.fixture(scope="module")
def natural_clip():
    # Smooth content so colour and geometric ops visibly change it.
    y, x = np.mgrid[0:72, 0:96]
    frame = np.stack([x * 2, y * 3, (x + y)], -1).astype(np.uint8)
    return T.as_clip(np.repeat(frame[None], 4, 0))


def test_randaugment_is_identical_on_every_frame(natural_clip):
    changed = 0
    for seed in range(12):
        out = T.randaugment_clip(natural_clip, "rand-m7-n4-mstd0.5-inc1", rng(seed), 224)
        assert out.shape == natural_clip.shape and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[i]) for i in range(1, 4))
        changed += not torch.equal(out, natural_clip)
    assert changed >= 8  # four ops at p=0.5: most clips change


def test_randaugment_is_reproducible_and_leaves_global_generators_alone(natural_clip):
    random.seed(5)
    np.random.seed(5)
    expected = random.random(), np.random.rand()
    random.seed(5)
    np.random.seed(5)
    a = T.randaugment_clip(natural_clip, "rand-m7-n4-mstd0.5-inc1", rng(9), 224)
    assert (random.random(), np.random.rand()) == expected
    b = T.randaugment_clip(natural_clip, "rand-m7-n4-mstd0.5-inc1", rng(9), 224)
    assert torch.equal(a, b)


def test_normalize_and_denormalize():
    video = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8)
    x = T.normalize(video)
    assert x.dtype == torch.float32
    mean = torch.tensor(T.IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(T.IMAGENET_STD).view(3, 1, 1, 1)
    assert torch.allclose(x, (video.float() / 255 - mean) / std, atol=1e-6)
    assert torch.allclose(T.denormalize(x) * 255, video.float(), atol=1e-3)
    views = torch.randint(0, 256, (2, 5, 3, 4, 8, 8), dtype=torch.uint8)  # test batches [B, V, 3, T, H, W]
    assert torch.allclose(T.normalize(views)[:, 1], T.normalize(views[:, 1]))
    with pytest.raises(ValueError):
        T.normalize(torch.zeros(2, 4, 4, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_normalize_on_the_device():
    video = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8)
    assert torch.allclose(T.normalize(video.cuda()).cpu(), T.normalize(video), atol=1e-6)


def test_random_erase_cube():
    video = torch.zeros(6, 3, 4, 32, 32)
    out = T.random_erase_cube(video.clone(), 1.0, torch.Generator().manual_seed(0))
    for clip in out:
        erased = clip != 0
        assert erased.any()
        box = erased.any(0)                       # [T, H, W]
        assert all(torch.equal(box[0], box[t]) for t in range(4))
        rows, cols = box[0].any(1).nonzero(), box[0].any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert 0.015 <= h * w / (32 * 32) <= 0.34
        assert not torch.equal(clip[:, 0], clip[:, 1])  # per-pixel noise, fresh in each frame
    again = T.random_erase_cube(video.clone(), 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(T.random_erase_cube(video.clone(), 0.0, torch.Generator()), video)
    some = T.random_erase_cube(torch.zeros(200, 3, 1, 16, 16), 0.25, torch.Generator().manual_seed(1))
    share = (some.flatten(1) != 0).any(1).float().mean().item()
    assert 0.12 < share < 0.4
