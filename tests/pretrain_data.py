"""Tiny pretraining shards for the pretrain, DDP and visualize tests: real H.264 clips written by the project's
own shard writer. Each clip is a slowly fading linear colour ramp in its own direction: after the per-patch target
normalisation every hidden patch is the same ramp, whose direction the visible patches reveal, so a tiny model
can learn to reconstruct it in a few dozen steps."""
from pathlib import Path

import numpy as np
import pandas as pd
from videos import write_video

from vmae.executors import ExecutorConfig
from vmae.manifests import conform
from vmae.shards.writer import ShardConfig, write_shards

SIZE = (64, 80)  # H, W: larger than the 64-px crop, so the multi-scale crop has room
# A tiny run: pretrain_videomae_test (width 32, depth 2), 4 frames of 64 px -> 2 x 4 x 4 tokens.
TINY = dict(model="pretrain_videomae_test", num_frames=4, input_size=64, batch_size=2, num_sample=2,
            workers=0, amp="off", device="cpu", tensorboard=False, log_every=1, seed=0)


def ramp_frames(n: int, seed: int, size=SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    colour = rng.uniform(0.4, 1.0, 3)
    frames = [(0.1 + 0.8 * ramp)[..., None] * colour * (1 - 0.01 * i) * 255 for i in range(n)]
    return np.stack(frames).astype(np.uint8)


def make_shards(root: Path, videos: int = 8, frames: int = 24, per_shard: int = 4, corrupt: int = 0) -> str:
    """Write `videos` good clips (+ `corrupt` truncated ones, which look like MP4 but do not decode) into
    uh-%06d.tar shards with shards.json; returns the brace pattern."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(videos + corrupt):
        path = write_video(root / "clips" / f"v{i:03d}.mp4", ramp_frames(frames, seed=i))
        if i >= videos:
            data = path.read_bytes()
            path.write_bytes(data[:len(data) // 3])  # moov atom lost: undecodable
        rows.append({"key": f"v{i:03d}", "source": "k400", "video_id": f"v{i:03d}", "path": str(path),
                     "stride": 4, "fps": 30.0, "frames": frames, "width": SIZE[1], "height": SIZE[0],
                     "status": "ok"})
    out = root / "shards"
    report = write_shards(conform(pd.DataFrame(rows)), out, ShardConfig(name="uh", max_count=per_shard),
                          ExecutorConfig(workers=1), progress=False)
    assert report.complete and report.samples == videos + corrupt, report
    return str(out / f"uh-{{000000..{report.shards - 1:06d}}}.tar")
