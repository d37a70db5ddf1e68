"""Loader benchmark: the whole pretraining stream against the decoder alone, repeated augmentation, memory.

Makes 320p H.264 clips with ffmpeg (the shard writer's transcode settings: veryfast, CRF 23, keyframe every 16
frames; plus x264's default 250 for the decoder comparison), writes them into tar shards and prints:

1. clips/s per core (CPU time, one process, one thread) of the whole stream (tar read, shuffle, decode,
   sample, multi-scale crop, uint8 batches) against the decoder alone decoding the very same frames of the
   same clips in the same run (target ratio >= 0.8); then the same with the device-side steps the training
   step adds (normalise, tube + running-cell masks) on the GPU, or on this CPU when there is none; then
   through one DataLoader worker as training runs it (batches built in shared memory and handed to the main
   process; CPU time of worker + main process);
2. clip-views/s with num_sample 4 against num_sample 1, the same ways, and on the keyframe-250 clips (target
   >= 3x), and the hand-off: views per CPU-second through one worker against in-process (target ~1). Each
   extra view costs its resize, the transposing write into its batch row and, in fresh batch memory, its
   first touch (benchmarks/README.md has the figures). In-process,
   glibc recycles the 19 MB batches of num_sample 1 but maps the 77 MB ones of num_sample 4 afresh (over its
   32 MB mmap threshold), so only num_sample 4 pays that first touch there; a worker reuses its shared
   buffers once the main process has dropped them (vmae.training.handoff), so neither pays it there;
3. decord against PyAV (with and without the non-reference skip) on the same frames: CPU ms per clip, and
   resident-memory growth over 1000 decodes of 240p/320p/360p clips, each backend in a fresh process (the
   DEFAULT_DECODER choice);
4. the stream's resident memory (main process + 2 workers) over 10,000 samples (target: flat after warm-up,
   under 100 MB of growth);
5. exact epochs against resampled shards: clips/s per CPU-second of one exact epoch against the same number
   of clips from the resampled stream (target ratio >= 0.95), and how well the exact stream mixes, on 2 ranks
   x 2 workers over a mixture of four sources (tiny clips, so decoding is cheap): the per-batch share of each
   source against its share of the mixture (mean absolute difference, next to what uniformly random batches
   give), and the correlation between a sample's positions in two consecutive epochs (mean over three pairs);
   for shards mixed at write time (as `vmae-data shard` writes them) and for shards that each hold one
   source. Two shards per reader, as in a large run (1.35M samples in shards of 1000 over 64 GPUs x 8 workers
   gives 2.6).

    .venv/bin/python benchmarks/bench_loader.py [--clips 200] [--rounds 3] [--rss-samples 10000] [--decodes 1000]
                                                [--sections 1,2,3,4,5]

Throughput passes and the decoder baseline run in alternating rounds, best of each (other load on the
machine drifts over minutes).
About 15 minutes on a 2-core machine; --rss-samples 1000 --decodes 300 for a quick run.
"""
import argparse
import gc
import io
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from vmae.shards.format import encode_sample
from vmae.shards.index import index_tars, write_index
from vmae.training import data as stream_module
from vmae.training.data import StreamConfig, make_loader
from vmae.training.decode import DEFAULT_DECODER, PyAVReader, get_decoder
from vmae.training.sampling import pretrain_indices
from vmae.training.transforms import normalize

# Synthetic 320p content at the bit rates of real 320p clips (~0.7 and ~1.3 Mbit/s at CRF 23).
SOURCES = ["testsrc2=size=568x320:rate=30", "testsrc2=size=568x320:rate=30,noise=alls=4:allf=t"]
SECONDS = 10  # 300 frames, as a Kinetics clip


def make_clip(path: Path, source: str, start: float, gop: int, seconds: float = SECONDS) -> bytes:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-ss", str(start), "-t", str(seconds),
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
           "-g", str(gop), "-keyint_min", str(min(gop, 25)), "-sc_threshold", "0" if gop < 250 else "40",
           str(path)]
    subprocess.run(cmd, check=True)
    return path.read_bytes()


def encode_clip(seed: int, gop: int = 16, size=(568, 320), seconds: float = SECONDS) -> bytes:
    """A synthetic 30 fps H.264 clip encoded through PyAV, for machines without the ffmpeg program (a lent GPU):
    a drifting pattern plus temporal noise at the bit rate of real 320p clips (about 1 Mbit/s at CRF 23)."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:2 * h, 0:2 * w].astype(np.float32)
    scene = np.stack([(x * 0.8) % 256, (y * 1.1) % 256,
                      ((x // 40 + y // 40) % 2) * 80 + 60 + 40 * np.sin(x / 23 + y / 17)], -1).astype(np.uint8)
    noise = [rng.integers(-14, 15, (h, w, 3), dtype=np.int16) for _ in range(13)]
    vx, vy = rng.uniform(0.5, 2.5, 2)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={
            "preset": "veryfast", "crf": "23", "g": str(gop), "keyint_min": str(min(gop, 25)), "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(30 * seconds)):
            ox, oy = int(vx * i) % w, int(vy * i) % h
            frame = np.clip(scene[oy:oy + h, ox:ox + w] + noise[i % len(noise)], 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def write_synthetic_shards(root: Path, samples: int, distinct: int = 16) -> str:
    """`samples` samples cycling through `distinct` PyAV-encoded clips, made in parallel; the brace pattern."""
    with multiprocessing.Pool(min(distinct, os.cpu_count() or 1)) as pool:
        clips = pool.map(encode_clip, range(distinct))
    return write_shards(root, clips, samples, per_shard=16)


def make_clips(root: Path, count: int, gop: int) -> list[bytes]:
    return [make_clip(root / f"g{gop}-{i}.mp4", SOURCES[i % 2], 1.5 * i, gop) for i in range(count)]


def write_shards(root: Path, clips: list[bytes], samples: int, per_shard: int = 100, sources=None) -> str:
    """Tar shards of `samples` samples cycling through `clips` (source i: sources[i], else k400), with their
    shards.json and index.parquet; returns the brace pattern."""
    root.mkdir(parents=True, exist_ok=True)
    listed = []
    for s in range(0, samples, per_shard):
        file = f"bench-{s // per_shard:06d}.tar"
        with wds.TarWriter(str(root / file)) as sink:
            for i in range(s, min(s + per_shard, samples)):
                source = "k400" if sources is None else str(sources[i])
                row = {"key": f"c{i:06d}", "source": source, "stride": 4, "frames": 30 * SECONDS}
                sink.write(encode_sample(row, clips[i % len(clips)], False))
        listed.append({"file": file, "samples": min(per_shard, samples - s)})
    (root / "shards.json").write_text(json.dumps({"shards": listed, "totals": {"samples": samples}}))
    write_index(root, index_tars([str(root / e["file"]) for e in listed]))
    return str(root / f"bench-{{000000..{len(listed) - 1:06d}}}.tar")


class Recorder:
    """Wraps the stream's decoder to remember which frames of which bytes it decoded."""

    def __init__(self, name):
        self.decoder, self.requests = get_decoder(name), []

    def __call__(self, name):
        return self

    def open(self, data):
        reader, requests = self.decoder.open(data), self.requests

        class Recording:
            num_frames = reader.num_frames

            def get_frames(self, ids):
                requests.append((data, np.asarray(ids)))
                return reader.get_frames(ids)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                reader.close()

        return Recording()


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (DataLoader workers once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_stream(pattern: str, num_sample: int, device: torch.device | None, workers: int = 0,
               record: Recorder | None = None, resampled: bool = False, batches: int | None = None) -> float:
    """CPU seconds of one exact epoch of the pretraining stream (or of `batches` batches; one thread per
    process), opening the loader included: in this process (workers=0) or through DataLoader workers, counting
    their CPU time too. With a device, each batch is also normalised and gets its VideoMAE V2 masks there, as
    the training step does."""
    from vmae.training.masking import make_masks

    cfg = StreamConfig(shards=pattern, mode="pretrain", batch_size=8, num_sample=num_sample, workers=workers,
                       resampled=resampled, seed=0)
    original = stream_module.get_decoder
    if record is not None:
        stream_module.get_decoder = record
    try:
        start, batch = cpu_seconds(), None
        loader, _ = make_loader(cfg)
        generator = torch.Generator(device=device).manual_seed(0) if device is not None else None
        for number, batch in enumerate(loader):
            if number == batches:
                break
            if device is not None:
                video = normalize(batch["video"].to(device, non_blocking=True))
                make_masks(video.shape[0], (8, 14, 14), 0.9, 0.5, generator, device)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        # Dropping the loader shuts its persistent workers down and joins them, so their CPU time is counted.
        del loader, batch
        gc.collect()
        return cpu_seconds() - start
    finally:
        stream_module.get_decoder = original


def decode_only(requests, make_reader) -> float:
    """CPU seconds to open each clip and decode the requested frames."""
    start = time.process_time()
    for data, ids in requests:
        with make_reader(data) as reader:
            reader.get_frames(ids)
    return time.process_time() - start


def window_requests(clips: list[bytes], count: int) -> list:
    """16 frames at stride 4 from a random window of each clip, as pretraining samples them."""
    rng = np.random.default_rng(0)
    return [(clips[i % len(clips)], pretrain_indices(30 * SECONDS, 16, 4, rng)) for i in range(count)]


def rss_mb(pid="self") -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def tree_rss_mb() -> float:
    """This process and its children (the DataLoader workers)."""
    me, total = str(os.getpid()), rss_mb()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    total += rss_mb(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def decoder_rss(name: str, clip_dir: str, count: int) -> dict:
    """Run in a fresh process: RSS after 100 decodes and after `count` (random 64-frame windows of clips of
    three sizes, so the allocator sees varied buffers as with real data)."""
    clips = [p.read_bytes() for p in sorted(Path(clip_dir).glob("rss-*.mp4"))]
    decoder, marks = get_decoder(name), {}
    for i, (data, ids) in enumerate(window_requests(clips, count)):
        with decoder.open(data) as reader:
            reader.get_frames(ids)
        if i + 1 in (100, count):
            marks[i + 1] = rss_mb()
    return {"after_100": marks[100], "end": marks[count], "growth": marks[count] - marks[100]}


def stream_rss(pattern: str, samples: int, every: int) -> list[tuple[int, float]]:
    cfg = StreamConfig(shards=pattern, mode="pretrain", batch_size=8, workers=2, seed=1, resampled=True)
    loader, _ = make_loader(cfg)
    marks, seen = [], 0
    for batch in loader:
        seen += batch["video"].shape[0]
        if seen % every < 8 or seen >= samples:
            marks.append((seen, tree_rss_mb()))
        if seen >= samples:
            break
    del loader
    return marks


MIXTURE = {"k710": 0.5, "ssv2": 0.25, "ava": 0.15, "webvid": 0.10}


def mixture_shards(root: Path, clips: list[bytes], samples: int, per_shard: int, by_source: bool):
    """A four-source mixture in MIXTURE's shares: sources shuffled across the shards (as `vmae-data shard`
    writes them) or sorted, so that each shard holds one source. Returns (pattern, source of each key)."""
    sources = np.random.default_rng(0).choice(list(MIXTURE), size=samples, p=list(MIXTURE.values()))
    if by_source:
        sources = np.sort(sources)
    pattern = write_shards(root, clips, samples, per_shard, sources)
    return pattern, {f"c{i:06d}": str(sources[i]) for i in range(samples)}


def global_batches(pattern: str, epoch: int, ranks: int, workers: int, batch: int, resampled: bool = False,
                   count: int | None = None) -> list[list[str]]:
    """The keys of each global batch (rank 0's batch i, rank 1's batch i, ...) of one epoch (`count` batches
    of a resampled stream), as `ranks` DDP processes with `workers` loader workers each would see them."""
    per_rank = []
    for rank in range(ranks):
        cfg = StreamConfig(shards=pattern, mode="pretrain", num_frames=4, input_size=32, batch_size=batch,
                           workers=workers, seed=0, resampled=resampled)
        loader, _ = make_loader(cfg, rank, ranks)
        if not resampled:
            loader.dataset.set_epoch(epoch)
        keys = []
        for number, b in enumerate(loader):
            if number == count:
                break
            keys.append(b["key"])
        per_rank.append(keys)
    return [sum(step, []) for step in zip(*per_rank)]


def share_error(batches: list[list[str]], source_of: dict) -> float:
    """Mean over batches and sources of |the source's share of the batch - its share of the mixture|."""
    names = sorted(set(source_of.values()))
    overall = np.array([sum(s == n for s in source_of.values()) for n in names]) / len(source_of)
    shares = np.array([[sum(source_of[k] == n for k in keys) / len(keys) for n in names] for keys in batches])
    return float(np.abs(shares - overall).mean())


def position_correlation(first: list[list[str]], second: list[list[str]]) -> float:
    """Pearson correlation of each sample's position (first occurrence) in two epochs."""
    where = [{}, {}]
    for epoch, batches in enumerate((first, second)):
        for i, key in enumerate(k for keys in batches for k in keys):
            where[epoch].setdefault(key, i)
    keys = sorted(where[0])
    return float(np.corrcoef([where[0][k] for k in keys], [where[1][k] for k in keys])[0, 1])


def exact_vs_resampled(root: Path, pattern: str, clips: int, rounds: int) -> None:
    cpu = {}
    steps = math.ceil(clips / 8)
    for _ in range(rounds):
        for resampled in (False, True):
            seconds = run_stream(pattern, 1, None, resampled=resampled, batches=steps if resampled else None)
            cpu[resampled] = min(cpu.get(resampled, math.inf), seconds)
    exact, resampled = steps * 8 / cpu[False], steps * 8 / cpu[True]
    print(f"\n5. exact epochs vs resampled shards ({steps * 8} clips, in-process, CPU time incl. opening the loader)")
    print(f"   exact {exact:.1f} clips/s, resampled {resampled:.1f} clips/s, ratio {exact / resampled:.3f} "
          "(target >= 0.95)")
    tiny = [make_clip(root / f"tiny-{i}.mp4", "testsrc2=size=64x48:rate=30", i, 16, seconds=2) for i in range(4)]
    ranks, workers, batch, samples, per_shard = 2, 2, 16, 1024, 128
    print(f"   mixing on {ranks} ranks x {workers} workers, batches of {batch} per rank, {samples} samples in "
          f"{samples // per_shard} shards, shuffle buffer {StreamConfig.shuffle_buffer}; mixture "
          + ", ".join(f"{k} {v:.0%}" for k, v in MIXTURE.items()))
    rng = np.random.default_rng(1)
    for by_source in (False, True):
        mix, source_of = mixture_shards(root / f"mix-{by_source}", tiny, samples, per_shard, by_source)
        epochs = [global_batches(mix, e, ranks, workers, batch) for e in range(4)]
        first = epochs[0]
        resampled = global_batches(mix, 0, ranks, workers, batch, resampled=True, count=len(first))
        keys = list(source_of)
        uniform = [[keys[i] for i in rng.permutation(samples)[j:j + ranks * batch]]
                   for j in range(0, samples - ranks * batch + 1, ranks * batch)]
        what = "each shard one source" if by_source else "sources mixed at write time"
        print(f"   {what}: per-batch source share off the mixture's by {share_error(first, source_of):.3f} "
              f"(exact), {share_error(resampled, source_of):.3f} (resampled), {share_error(uniform, source_of):.3f} "
              f"(uniformly random batches); position correlation between consecutive epochs: "
              + " ".join(f"{position_correlation(a, b):+.3f}" for a, b in zip(epochs, epochs[1:])))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="samples per throughput pass (default 200)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating throughput rounds, best of each (default 3)")
    parser.add_argument("--rss-samples", type=int, default=10_000,
                        help="samples for the stream memory check (default 10000, the issue's number)")
    parser.add_argument("--decodes", type=int, default=1000, help="decodes per backend for the memory check")
    parser.add_argument("--sections", default="1,2,3,4,5", help="which sections to run (default all: 1,2,3,4,5)")
    parser.add_argument("--write-shards", metavar="DIR", help="only write --clips samples of synthetic clips "
                        "(PyAV-encoded: no ffmpeg program needed) as shards into DIR, e.g. for bench_pretrain_step.py "
                        "--shards on a GPU machine")
    parser.add_argument("--rss-decoder", help=argparse.SUPPRESS)
    parser.add_argument("--clip-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_decoder:
        print(json.dumps(decoder_rss(args.rss_decoder, args.clip_dir, args.decodes)))
        return
    if args.write_shards:
        t = time.perf_counter()
        print(write_synthetic_shards(Path(args.write_shards), args.clips),
              f"({args.clips} samples, {time.perf_counter() - t:.0f} s)")
        return

    sections = set(args.sections.split(","))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        clips16, clips250 = make_clips(root, 4, 16), make_clips(root, 4, 250)
        for i, size in enumerate(("426x240", "568x320", "640x360")):
            make_clip(root / f"rss-{i}.mp4", f"testsrc2=size={size}:rate=30", i, 16)
        rates = [len(c) * 8 / SECONDS / 1e3 for c in clips16 + clips250]
        print(f"clips: 8 x 568x320 H.264, {SECONDS} s at 30 fps, {min(rates):.0f}-{max(rates):.0f} kbit/s "
              f"(keyframe every 16 frames, and x264's default 250), made in {time.perf_counter() - t:.0f} s")
        pattern = write_shards(root / "g16", clips16, args.clips)
        pattern250 = write_shards(root / "g250", clips250, args.clips)
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

        if sections & {"1", "2"}:
            record = Recorder(DEFAULT_DECODER)
            run_stream(pattern, 1, None, record=record)  # also the warm-up: imports, allocator, page cache
            run_stream(pattern, 1, None, workers=1)  # the worker path's warm-up
            runs = [(pat, dev, num_sample, workers) for pat, dev, workers in
                    ((pattern, None, 0), (pattern, device, 0), (pattern, None, 1), (pattern250, None, 0))
                    for num_sample in (1, 4)]
            cpu, decode_cpu = {}, math.inf
            # Alternating rounds, best of each (the decoder baseline too): the same shards and frames in every
            # pass, and a slow stretch of other load on the machine cannot favour one configuration.
            for _ in range(args.rounds):
                decode_cpu = min(decode_cpu, decode_only(record.requests, get_decoder(DEFAULT_DECODER).open))
                for pat, dev, num_sample, workers in runs:
                    key = pat, dev, num_sample, workers
                    cpu[key] = min(cpu.get(key, math.inf), run_stream(pat, num_sample, dev, workers))
            clips = len(record.requests)
            loader_cpu, device_cpu = cpu[pattern, None, 1, 0], cpu[pattern, device, 1, 0]
            worker_cpu = cpu[pattern, None, 1, 1]
            print(f"\n1. stream vs decoder alone on the same frames, CPU time of one core ({clips} clips; "
                  "pretrain: 16 frames at stride 4, multi-scale crop 224)")
            print(f"   decoder alone ({DEFAULT_DECODER}): {clips / decode_cpu:.1f} clips/s")
            print(f"   stream to uint8 batches (tar read, shuffle, decode, sample, crop, collate): "
                  f"{clips / loader_cpu:.1f} clips/s, ratio {decode_cpu / loader_cpu:.2f} (target >= 0.8)")
            print(f"   + normalise and masks on {device.type}: {clips / device_cpu:.1f} clips/s, ratio "
                  f"{decode_cpu / device_cpu:.2f}" + ("" if device.type == "cuda" else
                                                      "  (no GPU here: the float path runs on this core)"))
            print(f"   through one DataLoader worker (uint8 batches in shared memory, CPU of worker + main): "
                  f"{clips / worker_cpu:.1f} clips/s, ratio {decode_cpu / worker_cpu:.2f}")

            print("\n2. repeated augmentation: clip-views/s, num_sample 4 vs 1 (one decode, 4 crops)")
            for pat, dev, workers, what in ((pattern, None, 0, "uint8 batches"),
                                            (pattern, device, 0, f"+ normalise and masks on {device.type}"),
                                            (pattern, None, 1, "through one DataLoader worker"),
                                            (pattern250, None, 0, "uint8 batches, keyframe every 250")):
                v1, v4 = clips / cpu[pat, dev, 1, workers], 4 * clips / cpu[pat, dev, 4, workers]
                print(f"   {what}: num_sample 1 {v1:.1f} views/s, num_sample 4 {v4:.1f} views/s, "
                      f"ratio {v4 / v1:.2f} (target >= 3)")
            handoff = [cpu[pattern, None, n, 0] / cpu[pattern, None, n, 1] for n in (1, 4)]
            print(f"   hand-off, views per CPU-second through one worker / in-process: num_sample 1 {handoff[0]:.2f}, "
                  f"num_sample 4 {handoff[1]:.2f} (target ~1)")

        if "3" in sections:
            print("\n3. decoders on the same frames (16 at stride 4 of a random window), CPU ms per clip")
            readers = {"pyav, skipping non-ref": PyAVReader, "pyav, no skip": lambda d: PyAVReader(d, False),
                       "decord": get_decoder("decord").open}
            for gop, clip_set in ((16, clips16), (250, clips250)):
                requests = window_requests(clip_set, min(args.clips, 150))
                line = [f"{name} {1000 * min(decode_only(requests, make) for _ in range(2)) / len(requests):.1f}"
                        for name, make in readers.items()]
                print(f"   keyframe every {gop:>3}: " + "   ".join(line))
            for name in ("pyav", "decord"):
                out = subprocess.run([sys.executable, __file__, "--rss-decoder", name, "--clip-dir", str(root),
                                      "--decodes", str(args.decodes)], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout)
                print(f"   {name:>6} resident memory (240p/320p/360p clips): {r['after_100']:.0f} MB after 100 "
                      f"decodes, {r['end']:.0f} MB after {args.decodes} ({r['growth']:+.0f} MB)")

        if "4" in sections:
            print(f"\n4. stream memory, main process + 2 workers, {args.rss_samples} samples")
            stream_pattern = write_shards(root / "rss", clips16, 1000)
            t = time.perf_counter()
            marks = stream_rss(stream_pattern, args.rss_samples, max(args.rss_samples // 10, 8))
            warm = next((m for m in marks if m[0] >= args.rss_samples // 10), marks[0])
            print("   " + "  ".join(f"{n}: {mb:.0f} MB" for n, mb in marks))
            print(f"   growth after warm-up ({warm[0]} samples): {marks[-1][1] - warm[1]:+.0f} MB (target < 100 MB), "
                  f"{marks[-1][0] / (time.perf_counter() - t):.1f} clips/s on 2 workers")
            print(f"   peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

        if "5" in sections:
            run_stream(pattern, 1, None)  # warm-up: imports, allocator, page cache
            exact_vs_resampled(root, pattern, args.clips, args.rounds)

if __name__ == "__main__":
    main()
