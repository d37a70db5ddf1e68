"""Pixels: eval's views and fine-tuning's validation view equal the reference's test pipeline, written here
independently from the reference's description (spec section 4.5): its frame indices, its short-side resize
(OpenCV INTER_LINEAR: bilinear, pixel centres aligned, no antialiasing) and its crops."""
import numpy as np
import pytest
import torch
import webdataset as wds

from videos import write_video
from vmae.shards.format import encode_sample
from vmae.training.config import EvalConfig, FinetuneConfig
from vmae.training.data import make_loader
from vmae.training.decode import get_decoder
from vmae.training.evaluate import stream_config
from vmae.training.finetune import val_stream

SIZE = 224


# --------------------------------------------------------------------- the reference, written independently

def linear_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2.resize(img, (out_w, out_h), interpolation=INTER_LINEAR) in float64: source coordinate
    (dst + 0.5) * in / out - 0.5, clamped to the first and last pixel; rounded to whole grey levels."""
    def taps(n_in, n_out):
        x = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), x - np.floor(x)

    y0, y1, fy = taps(img.shape[0], out_h)
    x0, x1, fx = taps(img.shape[1], out_w)
    im = img.astype(np.float64)
    fx, fy = fx[None, :, None], fy[:, None, None]
    rows = lambda y: im[y][:, x0] * (1 - fx) + im[y][:, x1] * fx  # noqa: E731
    return np.round(rows(y0) * (1 - fy) + rows(y1) * fy)


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """The reference's get_resize_sizes: the shorter side becomes `size`, the other int(size * long / short)."""
    return (int(size * h / w), size) if w < h else (size, int(size * w / h))


def reference_test_views(frames: np.ndarray, stride=4, clip_len=16, segments=5, crops=3) -> list[np.ndarray]:
    """The reference's dense test mode, view (segment, crop) in segment-major order, each [T, S, S, 3]."""
    n = len(frames)
    index = list(range(0, n, stride))
    while len(index) < clip_len:
        index.append(index[-1])
    strided = frames[index]
    oh, ow = short_side_size(*frames.shape[1:3], SIZE)
    resized = np.stack([linear_resize(f, oh, ow) for f in strided])
    views = []
    for chunk in range(segments):
        t0 = int(chunk * max((len(index) - clip_len) / (segments - 1), 0))
        for split in range(crops):
            s0 = int(split * (max(oh, ow) - SIZE) / (crops - 1))
            part = resized[t0:t0 + clip_len]
            views.append(part[:, s0:s0 + SIZE] if oh >= ow else part[:, :, s0:s0 + SIZE])
    return views


def reference_val_view(frames: np.ndarray, stride=4, clip_len=16) -> np.ndarray:
    """The reference's validation view: the centred dense window, short-side resize, CenterCrop."""
    n, span = len(frames), clip_len * stride
    end = (span + n) // 2
    index = np.clip(np.linspace(end - span, end, num=clip_len), end - span, end - 1).astype(np.int64)
    oh, ow = short_side_size(*frames.shape[1:3], SIZE)
    resized = np.stack([linear_resize(f, oh, ow) for f in frames[index]])
    top, left = int(round((oh - SIZE) / 2.0)), int(round((ow - SIZE) / 2.0))
    return resized[:, top:top + SIZE, left:left + SIZE]


# ------------------------------------------------------------------------------------------------ helpers

def textured_frames(n: int, h: int, w: int) -> np.ndarray:
    """Frames that differ from each other and carry detail at every scale (so resampling choices show)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    frames = [np.clip(base + 60 * np.sin((x + 7 * t) / 5.0)[..., None] + 40 * np.cos((y - 3 * t) / 3.0)[..., None]
                      + rng.integers(-25, 25, (h, w, 3)), 0, 255) for t in range(n)]
    return np.stack(frames).astype(np.uint8)


def one_video_shard(tmp_path, frames) -> tuple[str, np.ndarray]:
    """A one-sample shard of `frames` encoded as H.264, and the frames as decoded (what both pipelines read)."""
    video = write_video(tmp_path / "v.mp4", frames, gop=32)
    with wds.TarWriter(str(tmp_path / "t-000000.tar")) as sink:
        sink.write(encode_sample({"key": "v", "label_id": 1, "stride": 4}, video.read_bytes(), labeled=True))
    with get_decoder().open(video.read_bytes()) as reader:
        decoded = reader.get_frames(np.arange(reader.num_frames))
    return str(tmp_path / "t-000000.tar"), decoded


def as_thwc(view: torch.Tensor) -> np.ndarray:
    return view.permute(1, 2, 3, 0).numpy().astype(np.int64)  # [3, T, S, S] -> [T, S, S, 3]


# -------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("antialias", [False, True])
def test_eval_views_equal_the_reference_test_pipeline(tmp_path, antialias):
    """150 frames at 240x428: windows start at strided frames 0, 5, 11, 16, 22 (int of 5.5 steps), the frames
    are resized to 224x399 and the crops start at x = 0, 87, 175. Every pixel within one grey level;
    antialiasing (the option) departs from it."""
    shards, decoded = one_video_shard(tmp_path, textured_frames(150, 240, 428))
    cfg = EvalConfig(shards=shards, checkpoint="unused.pth", views="5x3", workers=0, antialias=antialias)
    (batch,) = list(make_loader(stream_config(cfg))[0])
    ours = batch["video"][0]
    assert ours.shape == (15, 3, 16, SIZE, SIZE)
    diffs = [np.abs(as_thwc(view) - ref).max() for view, ref in zip(ours, reference_test_views(decoded))]
    if antialias:
        assert max(diffs) > 8
    else:
        assert max(diffs) <= 1, diffs


def test_finetune_val_view_equals_the_reference_validation_pipeline(tmp_path):
    """A portrait 100-frame video (428x240): frames 18..81 of the centred window, resized to 399x224, centre
    crop from row round(87.5) = 88 (half to even, as the reference's CenterCrop; 87 would fail)."""
    shards, decoded = one_video_shard(tmp_path, textured_frames(100, 428, 240))
    cfg = FinetuneConfig(shards=shards, val_shards=shards, output_dir=str(tmp_path / "run"), workers=0)
    (batch,) = list(make_loader(val_stream(cfg))[0])
    assert batch["video"].shape == (1, 3, 16, SIZE, SIZE)
    assert np.abs(as_thwc(batch["video"][0]) - reference_val_view(decoded)).max() <= 1


def test_the_independent_resize_is_opencvs():
    """The numpy resize above against OpenCV itself (the reference's library), shrinking and enlarging."""
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (240, 428, 3), dtype=np.uint8)
    for h, w in [(224, 399), (224, 224), (120, 214), (300, 535)]:
        ours = linear_resize(img, h, w)
        theirs = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(ours - theirs).max() <= 1, (h, w)
