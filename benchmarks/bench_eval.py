"""Evaluation benchmark: 5x3 multi-view testing with one decode per video against one decode per view.

Makes 300-frame 454x256 H.264 clips with ffmpeg (Kinetics-like: 10 s at 30 fps, x264's default keyframe
interval of 250, CRF 23), writes them into a labeled shard and scores them with the same model in the same run:

- ours: `vmae-train eval`'s path (the stream's test mode decodes each video once, every view is cut from
  that decode, frames resized once) -> model -> softmax averaged over the 15 views;
- the reference's way: each of the 15 views opens the video, decodes the whole video at stride 4, resizes
  every decoded frame, then takes its 16-frame window and its crop -> the same model.

Both use one process (no loader workers) and the same decoder, and must give the same probabilities (printed
as a check). Prints videos/s of each end to end and the ratio (target >= 3), and the same for the data path
alone (decode, resize, crop; no model). The default model is vit_test with 32-pixel patches (392 tokens per
view), so that on a 2-core CPU the model costs about what a real ViT costs on a GPU next to CPU decoding;
with 16-pixel patches (1568 tokens) attention dominates a CPU run and the ratio measures the model instead.

    .venv/bin/python benchmarks/bench_eval.py [--videos 8] [--model vit_test] [--patch-size 32] [--full]
"""
import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from vmae.shards.format import decode_sample, encode_sample
from vmae.training.config import EvalConfig
from vmae.training.data import make_loader
from vmae.training.decode import DEFAULT_DECODER, get_decoder
from vmae.training.engine import Amp
from vmae.training.evaluate import predict, stream_config, view_probabilities
from vmae.training.models import create_model
from vmae.training.sampling import crop_offsets, dense_test_views
from vmae.training.transforms import as_clip, normalize, resize_short_side

SOURCES = ["testsrc2=size=454x256:rate=30", "mandelbrot=size=454x256:rate=30"]
FRAMES, STRIDE, SEGMENTS, CROPS, SIZE = 16, 4, 5, 3, 224


def make_clip(path: Path, source: str, start: float) -> bytes:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-ss", str(start), "-t", "10",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path.read_bytes()


def write_shard(root: Path, count: int) -> str:
    tar = root / "bench-000000.tar"
    with wds.TarWriter(str(tar)) as sink:
        for i in range(count):
            row = {"key": f"v{i:04d}", "label_id": i % 400, "stride": STRIDE, "frames": 300}
            sink.write(encode_sample(row, make_clip(root / f"{i}.mp4", SOURCES[i % 2], 1.5 * i), labeled=True))
    (root / "shards.json").write_text(json.dumps({"shards": [{"file": tar.name, "samples": count}],
                                                 "totals": {"samples": count}}))
    return str(tar)


def reference_views(data: bytes, decoder) -> tuple[torch.Tensor, int]:
    """[15, 3, T, S, S] uint8 the reference's way (a full decode per view) and the frames decoded."""
    views, decoded = [], 0
    for segment in range(SEGMENTS):
        for crop in range(CROPS):
            with decoder.open(data) as reader:
                n = reader.num_frames
                ids = np.arange(0, n, STRIDE)
                clip = resize_short_side(as_clip(reader.get_frames(ids)), SIZE)
                decoded += len(ids)
            # the same window and offset rules as the stream (checked against the reference in the tests)
            window = dense_test_views(n, FRAMES, STRIDE, SEGMENTS)[segment] // STRIDE
            h, w = clip.shape[-2:]
            x = crop_offsets(w, SIZE, CROPS)[crop] if w >= h else (w - SIZE) // 2
            y = crop_offsets(h, SIZE, CROPS)[crop] if h > w else (h - SIZE) // 2
            views.append(clip[window, :, y:y + SIZE, x:x + SIZE].permute(1, 0, 2, 3))
    return torch.stack(views), decoded


@torch.inference_mode()
def reference_eval(model, shard: str, device, amp) -> tuple[np.ndarray, int]:
    """Probabilities [videos, classes] (None without a model) and the frames decoded, the reference's way."""
    decoder, probs, decoded = get_decoder(DEFAULT_DECODER), [], 0
    for sample in wds.DataPipeline(wds.SimpleShardList([shard]), wds.tarfile_to_samples()):
        _, data, _, _ = decode_sample(sample)
        views, count = reference_views(data, decoder)
        decoded += count
        if model is not None:
            with amp.autocast():
                logits = model(normalize(views.to(device)))
            probs.append(view_probabilities(logits[None])[0].cpu().numpy())
    return (np.stack(probs) if probs else None), decoded


def our_loader(shard: str, batch_size: int):
    cfg = EvalConfig(shards=shard, checkpoint="unused", views=f"{SEGMENTS}x{CROPS}", num_frames=FRAMES,
                     input_size=SIZE, stride=STRIDE, batch_size=batch_size, workers=0)
    return make_loader(stream_config(cfg))[0]


def our_eval(model, shard: str, device, amp, batch_size: int) -> np.ndarray:
    records, _ = predict(model, our_loader(shard, batch_size), device, amp, keep_probs=True)
    return np.stack([r["probs"] for r in sorted(records, key=lambda r: r["key"])])


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--model", default="vit_test", help="A fine-tune model name.")
    parser.add_argument("--patch-size", type=int, default=32, help="Patch size override for vit_test.")
    parser.add_argument("--full", action="store_true", help="32 videos and vit_small_patch16_224 (for a GPU).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.full:
        args.videos, args.model = 32, "vit_small_patch16_224"
    device = torch.device(args.device)
    amp = Amp("auto", device)
    torch.manual_seed(0)
    options = {"patch_size": args.patch_size} if args.model == "vit_test" else {}
    model = create_model(args.model, num_classes=400, num_frames=FRAMES, img_size=SIZE, **options)
    model = model.to(device).eval()
    n = args.videos
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        shard = write_shard(Path(tmp), n)
        print(f"made {n} clips of 300 frames at 454x256 in {time.perf_counter() - t0:.1f} s; model {args.model}"
              f"{' patch ' + str(args.patch_size) if options else ''} on {device}, {torch.get_num_threads()} "
              f"threads, decoder {DEFAULT_DECODER}")
        our_eval(model, shard, device, amp, 1)  # warm-up: first-call costs stay out of every timing
        _, t_data_ours = timed(lambda: sum(1 for _ in our_loader(shard, 2)))
        (_, decoded), t_data_ref = timed(reference_eval, None, shard, device, amp)
        ours, t_ours = timed(our_eval, model, shard, device, amp, 2)
        (ref, _), t_ref = timed(reference_eval, model, shard, device, amp)
    print(f"data path only (decode, resize, crop):  one decode per view {n / t_data_ref:6.2f} videos/s "
          f"({decoded / n:.0f} frames decoded per video), one per video {n / t_data_ours:6.2f} videos/s: "
          f"ratio {t_data_ref / t_data_ours:.2f}x")
    print(f"end to end with the model:  one decode per view (the reference's way) {n / t_ref:6.2f} videos/s, "
          f"one per video (vmae-train eval) {n / t_ours:6.2f} videos/s")
    print(f"same probabilities: max |difference| = {float(np.abs(ours - ref).max()):.2e}")
    print(f"ratio (one decode per video / one per view, end to end): {t_ref / t_ours:.2f}x  (target >= 3)")


if __name__ == "__main__":
    main()
