"""Clip transforms. Worker side: uint8 clips as torch tensors [T, 3, H, W] (a zero-copy view of the decoder's
[T, H, W, 3] array, see `as_clip`); every crop is shared by all frames of a clip. Device side: `normalize`,
`denormalize` and `random_erase_cube` on float batches [..., 3, T, H, W].

Resizing uses torch's uint8 bilinear on the channels-last frames, its fast path (planar [3, T, H, W] input
takes a slower one, so the stream crops and resizes first and transposes each view as it writes it into the
batch, `write_cthw`). Each resize follows the reference's library at that step:
- eval/val short-side resize: OpenCV INTER_LINEAR, i.e. bilinear without antialiasing (antialias=False;
  within one grey level of cv2.resize, tested);
- fine-tuning random resized crop: F.interpolate bilinear without antialiasing on normalised floats. Bilinear
  weights sum to 1, so resizing the uint8 frames and normalising afterwards gives the same values up to the
  rounding to whole grey levels (at most one, tested); the batch stays uint8 (4x less to move);
- pretraining multi-scale crop: PIL bilinear, which antialiases (antialias=True: close to PIL, and torch's
  uint8 path instead of a PIL image per frame).
"""
import functools
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from vmae.training.sampling import centre_offset, crop_offsets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)
# The reference's 13 fixed crop positions, in quarters of the free space (x, y): corners, centre, edge
# midpoints, quarter points.
_FIXED_OFFSETS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
                  (1, 1), (3, 1), (1, 3), (3, 3))


def as_clip(frames: np.ndarray) -> torch.Tensor:
    """Decoder output [T, H, W, 3] uint8 -> [T, 3, H, W] view (channels-last memory, no copy)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def write_cthw(clip: torch.Tensor, out: torch.Tensor) -> None:
    """Write a clip [T, 3, H, W] into `out` [3, T, H, W], the model's layout, in one transposing pass (numpy's
    copy, which handles uint8 transposes better than torch's)."""
    t, c, h, w = clip.shape
    if tuple(out.shape) != (c, t, h, w) or out.dtype != clip.dtype:
        raise ValueError(f"cannot write a {clip.dtype} clip {tuple(clip.shape)} into {out.dtype} "
                         f"{tuple(out.shape)}: expected ({c}, {t}, {h}, {w})")
    np.copyto(out.numpy(), clip.permute(1, 0, 2, 3).numpy())


def resize(clip: torch.Tensor, height: int, width: int, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of every frame of a uint8 clip [T, 3, H, W], pixel centres aligned (align_corners False,
    as cv2 and F.interpolate); antialias=True widens the filter when shrinking, as PIL does."""
    if clip.shape[-2:] == (height, width):
        return clip
    return F.interpolate(clip, size=(height, width), mode="bilinear", antialias=antialias, align_corners=False)


def resize_short_side(clip: torch.Tensor, short: int, antialias: bool = False) -> torch.Tensor:
    """Resize so the shorter side is `short`, keeping the aspect ratio (the longer side is truncated)."""
    h, w = clip.shape[-2:]
    if h <= w:
        return resize(clip, short, int(w * short / h), antialias)
    return resize(clip, int(h * short / w), short, antialias)


def crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return clip[..., top:top + height, left:left + width]


def centre_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """The reference's CenterCrop: offsets round((side - size) / 2), half to even (Python's round), so an odd
    margin of 175 starts at 88, not 87."""
    h, w = clip.shape[-2:]
    return crop(clip, centre_offset(h, size), centre_offset(w, size), size, size)


def spatial_crops(clip: torch.Tensor, size: int, num_crops: int) -> list[torch.Tensor]:
    """num_crops squares spread along the longer side and centred on the shorter one (the reference's test
    crops: left, centre, right, or top, centre, bottom for portrait video)."""
    h, w = clip.shape[-2:]
    if w >= h:
        return [crop(clip, centre_offset(h, size), x, size, size) for x in crop_offsets(w, size, num_crops)]
    return [crop(clip, y, centre_offset(w, size), size, size) for y in crop_offsets(h, size, num_crops)]


def multiscale_crop_box(height: int, width: int, size: int, rng: np.random.Generator,
                        scales=MULTISCALE_SCALES, max_distort: int = 1) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the reference's multi-scale crop: side lengths int(short*scale), those
    within 3 px of `size` snapped to it; a (w, h) pair whose scale indices differ by at most max_distort
    (10 pairs for 4 scales); one of 13 fixed positions."""
    base = min(height, width)
    sides = [size if abs(int(base * s) - size) < 3 else int(base * s) for s in scales]
    pairs = [(sides[i], sides[j]) for i in range(len(sides)) for j in range(len(sides))
             if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    # A source smaller than `size` would make the snapped crop exceed the frame; keep it inside.
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    qx, qy = _FIXED_OFFSETS[int(rng.integers(len(_FIXED_OFFSETS)))]
    return qy * ((height - crop_h) // 4), qx * ((width - crop_w) // 4), crop_h, crop_w


def multiscale_crop(clip: torch.Tensor, rng: np.random.Generator, size: int) -> torch.Tensor:
    """The reference's pretraining crop (GroupMultiScaleCrop, fixed offsets), resized to size x size with PIL's
    (antialiased) bilinear."""
    top, left, h, w = multiscale_crop_box(clip.shape[-2], clip.shape[-1], size, rng)
    return resize(crop(clip, top, left, h, w), size, size, antialias=True)


# The reference passes the aspect range as (0.75, 1.3333), not 4/3.
RRC_RATIO = (0.75, 1.3333)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0),
                            ratio=RRC_RATIO, attempts: int = 10) -> tuple[int, int, int, int]:
    """(top, left, h, w): area fraction uniform in `scale`, aspect log-uniform in `ratio`; after `attempts`
    misses, the largest centred box within the ratio range (as torchvision and the reference)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(clip: torch.Tensor, rng: np.random.Generator, size: int, scale=(0.08, 1.0),
                        ratio=RRC_RATIO, antialias: bool = False) -> torch.Tensor:
    """One random box for the whole clip, resized to size x size."""
    top, left, h, w = random_resized_crop_box(clip.shape[-2], clip.shape[-1], rng, scale, ratio)
    return resize(crop(clip, top, left, h, w), size, size, antialias)


def hflip(clip: torch.Tensor) -> torch.Tensor:
    return clip.flip(-1)


@functools.lru_cache(maxsize=8)
def randaugment_transform(config: str, input_size: int):
    """timm's RandAugment for `config`, as the reference configures it (cached per config)."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    # As the reference: translations scale with the crop size, bicubic resampling, timm's grey fill.
    hparams = {"translate_const": int(input_size * 0.45), "interpolation": Image.BICUBIC}
    return rand_augment_transform(config, hparams)


def randaugment_clip(clip: torch.Tensor, config: str, rng: np.random.Generator,
                     input_size: int = 224) -> torch.Tensor:
    """timm RandAugment (e.g. 'rand-m7-n4-mstd0.5-inc1') with the same ops and magnitudes on every frame.

    timm draws its choices from Python's `random` and numpy's global generator; both are re-seeded before
    each frame with one per-clip seed drawn from `rng`, so every frame gets identical draws, and restored
    afterwards so nothing else sees the change.
    """
    from PIL import Image

    augment = randaugment_transform(config, input_size)
    seed = int(rng.integers(2 ** 32))
    saved = random.getstate(), np.random.get_state()
    out = []
    try:
        for frame in clip.permute(0, 2, 3, 1).numpy():
            random.seed(seed)
            np.random.seed(seed)
            out.append(np.asarray(augment(Image.fromarray(np.ascontiguousarray(frame)))))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return as_clip(np.stack(out))


def _stats(x: torch.Tensor, dtype):
    if x.dim() < 4 or x.shape[-4] != 3:
        raise ValueError(f"expected a video [..., 3, T, H, W], got shape {tuple(x.shape)}")
    # Made per call, the tables are copied from the host, which on a GPU waits for the stream to drain (a host
    # sync in every training step): eager code keeps them per device; compiled code bakes them in.
    return (_make_stats if torch.compiler.is_compiling() else _kept_stats)(x.device, dtype)


def _make_stats(device: torch.device, dtype) -> tuple:
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(3, 1, 1, 1)
    return mean, std


@functools.lru_cache(maxsize=8)
def _kept_stats(device: torch.device, dtype) -> tuple:
    """(mean, std) of `_make_stats`, made once per device and dtype (never modified in place)."""
    with torch.inference_mode(False):  # usable in training even if first made under inference mode
        return _make_stats(device, dtype)


def normalize(video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 video [..., 3, T, H, W] (any device) -> (x/255 - mean) / std with ImageNet statistics.

    One conversion and two in-place passes (x * 1/(255 std) - mean/std) instead of the textbook expression's
    four passes and temporaries; still best done on the GPU."""
    mean, std = _stats(video, dtype)
    return video.to(dtype, copy=True).mul_(1 / (255 * std)).sub_(mean / std)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, giving floats in [0, 1] (before any clamping)."""
    mean, std = _stats(x, x.dtype)
    return x * std + mean


def random_erase_cube(video: torch.Tensor, prob: float, generator: torch.Generator, area=(0.02, 1 / 3),
                      aspect=(0.3, 1 / 0.3), attempts: int = 10) -> torch.Tensor:
    """Random erasing in cube mode, in place, on a normalised float batch [B, 3, T, H, W]: with probability
    `prob` per clip, one box (area fraction uniform in `area`, aspect log-uniform in `aspect`, up to
    `attempts` tries to fit) is filled in every frame with per-pixel standard normal noise. All draws come
    from `generator` (on the video's device to avoid copies). Returns `video`."""
    b, _, t, h, w = video.shape
    # One small transfer of all box parameters: [B, 1 + 4 * attempts] uniforms.
    draws = torch.rand((b, 1 + 4 * attempts), generator=generator, device=generator.device).tolist()
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for i, u in enumerate(draws):
        if u[0] >= prob:
            continue
        for a in range(attempts):
            ua, ur, uy, ux = u[1 + 4 * a:5 + 4 * a]
            target = (area[0] + ua * (area[1] - area[0])) * h * w
            ratio = math.exp(log_aspect[0] + ur * (log_aspect[1] - log_aspect[0]))
            eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(uy * (h - eh + 1)), int(ux * (w - ew + 1))
                noise = torch.randn((3, t, eh, ew), generator=generator, device=generator.device)
                video[i, :, :, top:top + eh, left:left + ew] = noise.to(video.device, video.dtype)
                break
    return video
