"""Labeled shards whose classes a tiny model can learn in a few dozen CPU steps: the class is the colour
of the clip (red, green, blue), under per-pixel noise and a moving grey square, so crops, flips, erasing and
mixup leave it recognisable. Written with webdataset's TarWriter and the project's sample format, plus the
index.parquet the stream reads its epochs from. Cached per test session (encoding costs a few seconds).
"""
import json
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from videos import write_video
from vmae.shards.format import encode_sample
from vmae.shards.index import index_tars, write_index
from vmae.training.models import create_model

COLOURS = ((200, 40, 40), (40, 190, 40), (40, 60, 210))
_CACHE: dict = {}


def colour_clip(n: int, colour, rng: np.random.Generator, size=(64, 64)) -> np.ndarray:
    h, w = size
    frames = rng.integers(-40, 40, (n, h, w, 3)) + np.array(colour)
    side = h // 4
    for t in range(n):
        y = (t * 3) % (h - side)
        x = (t * 5 + int(rng.integers(w - side))) % (w - side)
        frames[t, y:y + side, x:x + side] = 128
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_labeled_shards(out_dir, name: str, videos_per_shard, seed: int, frames: int = 24, size=(64, 64),
                         stride: int = 2) -> str:
    """Shards NAME-%06d.tar under out_dir (class of video i = i % 3), shards.json and index.parquet; returns the
    pattern."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, number = [], 0
    for s, count in enumerate(videos_per_shard):
        tar = out / f"{name}-{s:06d}.tar"
        with wds.TarWriter(str(tar)) as sink:
            for _ in range(count):
                label = number % len(COLOURS)
                key = f"{name}_{number:04d}"
                mp4 = write_video(out / "tmp.mp4", colour_clip(frames, COLOURS[label], rng, size))
                row = {"key": key, "source": "synthetic", "label": f"colour{label}", "label_id": label,
                       "stride": stride, "frames": frames, "width": size[1], "height": size[0]}
                sink.write(encode_sample(row, mp4.read_bytes(), labeled=True))
                number += 1
        entries.append({"file": tar.name, "samples": count})
    (out / "tmp.mp4").unlink()
    (out / "shards.json").write_text(json.dumps({"name": name, "shards": entries,
                                                 "totals": {"samples": number}}))
    write_index(out, index_tars([str(out / e["file"]) for e in entries]))
    last = len(videos_per_shard) - 1
    return str(out / f"{name}-{{000000..{last:06d}}}.tar")


def labeled_shards(tmp_path_factory, name: str, videos_per_shard, seed: int, **kw) -> str:
    """write_labeled_shards once per session for the same arguments."""
    key = (name, tuple(videos_per_shard), seed, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = write_labeled_shards(tmp_path_factory.mktemp(name), name, videos_per_shard, seed, **kw)
    return _CACHE[key]


def classifier_checkpoint(path, num_classes=len(COLOURS), seed=0):
    """A vit_test classifier saved as finetune writes it (weights + config naming the model), with confident,
    input-dependent logits (the head's init scale is 0.001)."""
    torch.manual_seed(seed)
    model = create_model("vit_test", num_classes=num_classes, num_frames=4, img_size=32)
    with torch.no_grad():
        model.head.weight.mul_(3000)
    torch.save({"model": model.state_dict(), "config": {"model": "vit_test"}}, path)
    return path
