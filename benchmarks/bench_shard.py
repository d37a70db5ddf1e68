"""Benchmark `vmae-data shard` against the tools it wraps, measured in the same run on the same files.

1. copy: MB/s of write_shards(--transcode none) against `tar -cf` of the same files (target ratio >= 0.8).
2. transcode: clips/s of write_shards(--transcode short-side=320) against the same ffmpeg commands
   (vmae.media.cut_command) run directly with the same parallelism (target ratio >= 0.9).
3. keyframes: for each keyframe interval, the bytes of the transcoded clips and the CPU time (one thread,
   so other work on the machine does not skew it) to decode 16 frames at stride 4 from a random start,
   with plain PyAV (seek to the keyframe, decode forward) and with the project's decoder
   (vmae.training.decode). This is the measurement behind the default gop (benchmarks/README.md).

Clips are synthetic (ffmpeg testsrc2 with temporal noise, 640x360, 30 fps), made at run time.
    .venv/bin/python benchmarks/bench_shard.py          # 300 MB copied, 16 5-s clips transcoded, 4 x 12 windows
    .venv/bin/python benchmarks/bench_shard.py --full     # 1.2 GB, 48 clips, 6 x 30 keyframe windows
    .venv/bin/python benchmarks/bench_shard.py --only keyframes
"""
import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest
from vmae.media import cut_command
from vmae.shards.writer import TRANSCODE_THREADS, ShardConfig, Transcode, write_shards


def make_source(path: Path, seconds: float, seed: int, size="640x360") -> Path:
    """A synthetic clip with motion and sensor-like noise (pure test patterns compress unrealistically well)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=30:duration={seconds}",
                    "-vf", f"noise=alls=12:allf=t:all_seed={seed}", "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "20", "-g", "250", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def manifest_of(paths) -> pd.DataFrame:
    df = empty_manifest(len(paths))
    df["key"] = [f"clip{i:05d}" for i in range(len(paths))]
    df["source"] = ["bench"] * len(paths)
    df["path"] = [str(p) for p in paths]
    df["status"] = ["ok"] * len(paths)
    return df


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(runs: int, *fns, prepare=None) -> list:
    """(smallest wall time, smallest CPU time) of each fn over `runs` rounds. The fns alternate within a round,
    so a burst of other work on the machine hits both sides alike; CPU time does not count waiting for a
    core, which makes it the steadier figure on a busy machine. `prepare` runs untimed before each fn."""
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, times):
            if prepare is not None:
                prepare()
            t, c = time.perf_counter(), _cpu_seconds()
            fn()
            out.append((time.perf_counter() - t, _cpu_seconds() - c))
    return [(min(w for w, _ in t), min(c for _, c in t)) for t in times]


def bench_copy(work: Path, total_mb: int, runs: int) -> dict:
    base = [make_source(work / f"base{i}.mp4", 10, i) for i in range(4)]
    files = work / "files"
    files.mkdir()
    paths, total = [], 0
    while total < total_mb * 1e6:
        # Real copies, not links: tar stores a hard link as a link, without its data.
        p = files / f"c{len(paths):05d}.mp4"
        shutil.copyfile(base[len(paths) % len(base)], p)
        paths.append(p)
        total += p.stat().st_size
    (work / "list.txt").write_text("\n".join(p.name for p in paths) + "\n")
    df = manifest_of(paths)

    out = work / "out"

    def prepare():
        # Like for like: both write new files into the same empty folder (no time spent deleting the last
        # round's output, and ext4 does not start writeback on close as it does for a file truncated and
        # rewritten), with no dirty pages left from the other side's run to be written back meanwhile.
        # The inputs stay in the page cache.
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        os.sync()

    def run_tar():
        subprocess.run(["tar", "-cf", str(out / "baseline.tar"), "-C", str(files), "-T", str(work / "list.txt")],
                       check=True)

    def run_shard():
        write_shards(df, out / "shards", ShardConfig(max_size=10**9), ExecutorConfig(workers=1), progress=False)

    (t_tar, c_tar), (t_shard, c_shard) = best_of(runs, run_tar, run_shard, prepare=prepare)
    mb = total / 1e6
    return {"files": len(paths), "MB": mb, "tar_MBps": mb / t_tar, "shard_MBps": mb / t_shard,
            "tar_MB_per_cpu_s": mb / c_tar, "shard_MB_per_cpu_s": mb / c_shard}


def bench_transcode(work: Path, clips: int, seconds: float, workers: int, gop: int) -> dict:
    base = [make_source(work / f"tsrc{i}.mp4", seconds, 100 + i) for i in range(min(clips, 4))]
    srcs = []
    for i in range(clips):
        p = work / f"t{i:04d}.mp4"
        shutil.copyfile(base[i % len(base)], p)
        srcs.append(p)
    out = work / "direct"
    out.mkdir()

    def run_direct():
        cmds = [cut_command(src, out / src.name, short_side=320, gop=gop, threads=TRANSCODE_THREADS)
                for src in srcs]
        with ThreadPoolExecutor(workers) as pool:
            for r in pool.map(lambda c: subprocess.run(c, capture_output=True), cmds):
                r.check_returncode()

    def run_shard():
        dst = work / "tshards"
        shutil.rmtree(dst, ignore_errors=True)
        # Two clips per shard: many more units than workers, as in a real run (a pool of workers then ends
        # together, as the thread pool of direct commands does).
        cfg = ShardConfig(max_count=2, transcode=Transcode(320, gop))
        write_shards(manifest_of(srcs), dst, cfg, ExecutorConfig(workers=workers), progress=False)

    (t_direct, _), (t_shard, _) = best_of(2, run_direct, run_shard)
    return {"clips": clips, "workers": workers, "ffmpeg_clips_per_s": clips / t_direct,
            "shard_clips_per_s": clips / t_shard}


def pyav_window(data: bytes, start: int, indices) -> float:
    """Plain PyAV: seek to the keyframe at or before frame `start`, decode forward to the last index."""
    import av

    t = time.process_time()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        step = int(round(1 / (stream.average_rate * stream.time_base)))  # pts ticks per frame (CFR)
        first = stream.start_time or 0
        container.seek(first + start * step, stream=stream, backward=True, any_frame=False)
        wanted, got = {first + i * step for i in indices}, 0
        for frame in container.decode(stream):
            if frame.pts in wanted:
                frame.to_ndarray(format="rgb24")
                got += 1
            if frame.pts >= first + indices[-1] * step:
                break
    assert got == len(indices), (got, len(indices))
    return time.process_time() - t


def project_window(data: bytes, start: int, indices) -> float:
    from vmae.training.decode import get_decoder

    t = time.process_time()
    with get_decoder("pyav").open(data) as reader:
        reader.get_frames(indices)
    return time.process_time() - t


def bench_keyframes(work: Path, gops, clips: int, seconds: float, windows: int, workers: int) -> pd.DataFrame:
    srcs = [make_source(work / f"k{i}.mp4", seconds, 200 + i) for i in range(clips)]
    rng = np.random.default_rng(0)
    rows = []
    for gop in gops:
        dsts = [work / f"k-{src.stem}-g{gop}.mp4" for src in srcs]
        cmds = [cut_command(src, dst, short_side=320, gop=gop, threads=TRANSCODE_THREADS)
                for src, dst in zip(srcs, dsts)]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda c: subprocess.run(c, check=True, capture_output=True), cmds))
        encoded = [dst.read_bytes() for dst in dsts]
        starts = rng.integers(0, int(seconds * 30) - 64, size=(clips, windows))  # the same windows for every gop
        plain, project = [], []
        for data, clip_starts in zip(encoded, starts):
            for s in clip_starts.tolist():
                indices = list(range(s, s + 64, 4))  # 16 frames at stride 4
                plain.append(pyav_window(data, s, indices))
                project.append(project_window(data, s, indices))
        rows.append({"gop": gop, "MB_per_clip": np.mean([len(d) for d in encoded]) / 1e6,
                     "pyav_seek_cpu_ms": 1e3 * np.median(plain), "project_decoder_cpu_ms": 1e3 * np.median(project)})
    table = pd.DataFrame(rows).set_index("gop")
    ref = table.loc[16] if 16 in table.index else table.iloc[0]
    table["bytes_vs_gop16"] = table["MB_per_clip"] / ref["MB_per_clip"]
    table["pyav_time_vs_gop16"] = table["pyav_seek_cpu_ms"] / ref["pyav_seek_cpu_ms"]
    return table


def peak_rss_mb() -> str:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"peak RSS: this process {me:.0f} MB, largest child (worker / ffmpeg / tar) {kids:.0f} MB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="larger sizes")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", choices=["copy", "transcode", "keyframes"], help="run one part")
    ap.add_argument("--workdir", help="where to make the clips (default: a temporary folder)")
    args = ap.parse_args(argv)
    # (MB copied, clips transcoded, their seconds, keyframe clips, their seconds, windows per clip)
    total_mb, clips, seconds, kf_clips, kf_seconds, windows = (
        (1200, 48, 10, 6, 10, 30) if args.full else (300, 16, 5, 4, 5, 12))
    parts = [args.only] if args.only else ["copy", "transcode", "keyframes"]
    with tempfile.TemporaryDirectory(prefix="bench-shard-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if "copy" in parts:
            (work / "copy").mkdir()
            r = bench_copy(work / "copy", total_mb, runs=5)
            print(f"copy: {r['files']} files, {r['MB']:.0f} MB: tar {r['tar_MBps']:.0f} MB/s "
                  f"({r['tar_MB_per_cpu_s']:.0f} MB per CPU-s), shard --transcode none {r['shard_MBps']:.0f} MB/s "
                  f"({r['shard_MB_per_cpu_s']:.0f} MB per CPU-s)")
            print(f"RATIO copy shard/tar = {r['shard_MBps'] / r['tar_MBps']:.2f} wall, "
                  f"{r['shard_MB_per_cpu_s'] / r['tar_MB_per_cpu_s']:.2f} per CPU-second (target >= 0.8)")
        if "transcode" in parts:
            (work / "tc").mkdir()
            r = bench_transcode(work / "tc", clips, seconds, args.workers, gop=16)
            print(f"transcode: {r['clips']} clips of {seconds} s 640x360 -> short side 320, {r['workers']} at once: "
                  f"ffmpeg {r['ffmpeg_clips_per_s']:.2f} clips/s, shard {r['shard_clips_per_s']:.2f} clips/s")
            print(f"RATIO transcode shard/ffmpeg = {r['shard_clips_per_s'] / r['ffmpeg_clips_per_s']:.2f} "
                  "(target >= 0.9)")
        if "keyframes" in parts:
            (work / "kf").mkdir()
            table = bench_keyframes(work / "kf", (1, 4, 8, 16, 32, 64, 250), kf_clips, kf_seconds, windows,
                                    args.workers)
            print(f"keyframes: {kf_clips} clips of {kf_seconds} s at 320p, 16 frames at stride 4 from a random start, "
                  "CPU ms (median per window)")
            print(table.to_string(float_format=lambda x: f"{x:.3f}"))
        print(peak_rss_mb())
    return 0


if __name__ == "__main__":
    sys.exit(main())
