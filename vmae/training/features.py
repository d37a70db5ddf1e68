"""Per-window video features for temporal action detection (`vmae-train extract-features`).

For each video: windows of `num_frames` frames, window i taking frames i*window_stride + j*frame_stride
(j < num_frames). Windows that would run past the last frame are dropped; a video shorter than one window
gives one window padded with its last frame. So a video of n frames gives
    max(1, (n - span) // window_stride + 1) windows, span = (num_frames - 1) * frame_stride + 1
(e.g. 16-frame windows every 4 frames: 100 frames -> 22 windows, 16 -> 1, 10 -> 1). Each window is the whole
frame resized to input_size x input_size, bilinear without antialiasing, and its feature is the model's pooled
`forward_features` output.

Two input conventions. By default the frames are ImageNet-normalised as in training: the encoder sees the
inputs it was trained on, and features of fine-tuned and pretrained checkpoints are comparable. The
reference's TAD script (the released THUMOS14 and FineAction features) divides by 255 and stops there;
`reference_features` reproduces it exactly (float32 /255, F.interpolate on the floats, fp32 model), for
mixing with the released features or running detectors trained on them. One `KEY.npy`
[num_windows, E] float32 per video, plus `index.parquet` with one row per input (ok, exists or failed, and
why). Under torchrun each rank takes every world_size-th video.
"""
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vmae.atomic import atomic_path
from vmae.shards.files import tar_samples
from vmae.shards.format import decode_sample
from vmae.training.config import FeatureConfig
from vmae.training.decode import DEFAULT_DECODER, DecodeError, get_decoder
from vmae.training.distributed import all_gather_object, cleanup, init_distributed
from vmae.training.engine import Amp
from vmae.training.evaluate import load_for
from vmae.training.sources import shard_urls
from vmae.training.transforms import as_clip, normalize, resize

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")


def window_starts(n: int, num_frames: int, window_stride: int, frame_stride: int) -> np.ndarray:
    """First frame of every window of an n-frame video (see the module docstring for the rule)."""
    span = (num_frames - 1) * frame_stride + 1
    if n < span:
        return np.zeros(1, np.int64)
    return np.arange(0, n - span + 1, window_stride, dtype=np.int64)


def window_indices(n: int, num_frames: int, window_stride: int, frame_stride: int) -> np.ndarray:
    """[num_windows, num_frames] frame ids, clipped to the last frame (only a too-short video needs it)."""
    starts = window_starts(n, num_frames, window_stride, frame_stride)
    ids = starts[:, None] + np.arange(num_frames, dtype=np.int64)[None, :] * frame_stride
    return np.minimum(ids, n - 1)


def window_frames(frames: np.ndarray, size: int, reference: bool) -> torch.Tensor:
    """Decoded frames [k, H, W, 3] uint8 -> the model's frames [k, 3, S, S]: uint8, resized bilinear without
    antialiasing (normalised on the device), or with `reference` the TAD script's float32 frames: /255, then
    F.interpolate bilinear on the floats, no normalisation."""
    clip = as_clip(frames)
    if reference:
        return F.interpolate(clip.float().div_(255), size=(size, size), mode="bilinear", align_corners=False)
    return resize(clip, size, size)


def video_features(model, reader, cfg: FeatureConfig, device, amp) -> np.ndarray:
    """[num_windows, E] features of one opened video, windows in batches of cfg.batch_size.

    Every frame is decoded once: the frames a batch shares with the previous one (windows overlap) are kept,
    and only the others are asked of the reader, in order, so that it goes on without seeking back."""
    ids = window_indices(reader.num_frames, cfg.num_frames, cfg.window_stride, cfg.frame_stride)
    size, reference = cfg.input_size, cfg.reference_features
    out, held_ids, held = [], np.zeros(0, np.int64), None
    for chunk in np.array_split(ids, max(1, -(-len(ids) // cfg.batch_size))):
        needed = np.unique(chunk)
        kept = np.isin(needed, held_ids)
        frames = torch.empty((len(needed), 3, size, size),  # in the order of `needed`
                             dtype=torch.float32 if reference else torch.uint8)
        if kept.any():
            frames[torch.from_numpy(kept)] = held[np.searchsorted(held_ids, needed[kept])]
        if not kept.all():
            frames[torch.from_numpy(~kept)] = window_frames(reader.get_frames(needed[~kept]), size, reference)
        held_ids, held = needed, frames
        clips = frames.to(device)[torch.from_numpy(np.searchsorted(needed, chunk)).to(device)]  # [w, T, 3, S, S]
        x = clips.permute(0, 2, 1, 3, 4)  # [w, 3, T, S, S]
        with amp.autocast():
            out.append(model.forward_features(x if reference else normalize(x)).float().cpu())
    return torch.cat(out).numpy()


def video_inputs(cfg: FeatureConfig):
    """(key, bytes loader) per input video: files under --videos (key = relative path without suffix) or
    samples of --shards (key = the sample key), in a stable order."""
    if cfg.videos is not None:
        root = Path(cfg.videos)
        if not root.is_dir():
            raise FileNotFoundError(f"--videos {root}: no such folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        for path in files:
            yield path.relative_to(root).with_suffix("").as_posix(), path.read_bytes
        return
    for url in shard_urls(cfg.shards):
        for sample in tar_samples(url):
            key, data, _, _ = decode_sample(sample)
            yield key, (lambda data=data: data)


def save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


@torch.inference_mode()
def extract_features(cfg: FeatureConfig) -> dict:
    """Write OUT/KEY.npy for every input video and OUT/index.parquet; existing .npy files are kept (a rerun
    resumes) unless cfg.overwrite. Returns a report with counts and the feature width."""
    info = init_distributed(cfg.device)
    try:
        return _extract(cfg, info)
    finally:
        cleanup()


def _extract(cfg: FeatureConfig, info) -> dict:
    model, _, note, cfg = load_for(cfg, strict=False)  # windows of the model's frames and size
    if info.is_main:
        log.info("%s", note)
    model.to(info.device).eval()
    amp = Amp("off" if cfg.reference_features else cfg.amp, info.device)
    decoder = get_decoder(cfg.decoder or DEFAULT_DECODER)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    mine = (item for i, item in enumerate(video_inputs(cfg)) if i % info.world_size == info.rank)
    for key, load in tqdm(mine, desc="features", unit="video", disable=not info.is_main):
        path = out / f"{key}.npy"
        row = {"key": key, "path": str(path), "frames": None, "fps": None, "windows": None, "status": "ok",
               "error": None}
        if path.exists() and not cfg.overwrite:
            row.update(status="exists", windows=int(np.load(path, mmap_mode="r").shape[0]))
            rows.append(row)
            continue
        try:
            with decoder.open(load()) as reader:
                row.update(frames=reader.num_frames, fps=reader.fps)
                feats = video_features(model, reader, cfg, info.device, amp)
        except (DecodeError, OSError) as e:  # a bad video is recorded, never fatal
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
            log.warning("%s: %s", key, row["error"])
            rows.append(row)
            continue
        save_npy(path, feats.astype(np.float32))
        row["windows"] = int(feats.shape[0])
        rows.append(row)
    rows = sorted((r for part in all_gather_object(rows) for r in part), key=lambda r: r["key"])
    index = pd.DataFrame(rows, columns=["key", "path", "frames", "fps", "windows", "status", "error"])
    if info.is_main:
        with atomic_path(out / "index.parquet") as tmp:
            index.to_parquet(tmp, index=False)
    return {"out": str(out), "videos": len(index), "ok": int((index.status == "ok").sum()),
            "existing": int((index.status == "exists").sum()), "failed": int((index.status == "failed").sum()),
            "windows": int(index.windows.fillna(0).sum()), "feature_dim": model.embed_dim,
            "window": f"{cfg.num_frames} frames every {cfg.frame_stride}, a window every {cfg.window_stride}",
            "model": note, "rank": info.rank}
