"""Fine-tuning view cost by source resolution: RandAugment at the decoded resolution (as the reference) against
frames first shrunk to a short side of 448 (2 crop sizes; what vmae did before matching the reference).

For each source size: CPU ms per 16-frame clip (one thread) of RandAugment + random resized crop to 224 both
ways, and how far apart the two 224-px views are with the same random draws (mean absolute difference in grey
levels; the same ops and magnitudes, but translations are in pixels, so they move a shrunk frame further).

    .venv/bin/python benchmarks/bench_randaug.py [--repeats 5]
"""
import argparse
import time

import numpy as np
import torch

from vmae.training import transforms as T

SIZES = [(320, 568), (480, 854), (720, 1280), (1080, 1920)]
CONFIG = "rand-m7-n4-mstd0.5-inc1"
SHRINK = 448


def natural_clip(h: int, w: int, frames: int = 16) -> torch.Tensor:
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([x * 255 // w, y * 255 // h, (x // 7 + y // 5) % 256], -1).astype(np.uint8)
    return T.as_clip(np.ascontiguousarray(np.repeat(frame[None], frames, 0)))


def view(clip: torch.Tensor, seed: int, shrink: bool) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    if shrink and min(clip.shape[-2:]) > SHRINK:
        clip = T.resize_short_side(clip, SHRINK, antialias=True)
    return T.random_resized_crop(T.randaugment_clip(clip, CONFIG, rng, 224), rng, 224)


def timed(fn, repeats: int) -> float:
    t0 = time.process_time()
    for seed in range(repeats):
        fn(seed)
    return (time.process_time() - t0) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    T.randaugment_transform(CONFIG, 224)
    print(f"{'source':>10} {'full res ms/clip':>17} {'shrunk ms/clip':>15} {'ratio':>6} {'mean |diff| grey':>17}")
    for h, w in SIZES:
        clip = natural_clip(h, w)
        full = timed(lambda s: view(clip, s, False), args.repeats)
        shrunk = timed(lambda s: view(clip, s, True), args.repeats)
        diff = np.mean([(view(clip, s, False).float() - view(clip, s, True).float()).abs().mean().item()
                        for s in range(args.repeats)])
        print(f"{h}x{w:<5} {full * 1000:17.0f} {shrunk * 1000:15.0f} {full / shrunk:6.2f} {diff:17.1f}")


if __name__ == "__main__":
    main()
