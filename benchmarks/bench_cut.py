"""Clips per second per core: `vmae-data download --from-dir` (adopt + cut + probe, through the library,
one worker, one ffmpeg thread) against the identical ffmpeg cut commands (media.cut_command) run straight
from the shell on the same files in the same run. Target: ratio >= 0.9 (download's overhead under 10%).

Per core means per CPU-second: the CPU time of this process and its children (ffmpeg, ffprobe, bash),
which other jobs on a shared machine do not inflate. Wall-clock figures are printed too.

    python benchmarks/bench_cut.py            # 8 clips of 10 s at 640x360 (Kinetics-like), 2 rounds
    python benchmarks/bench_cut.py --full     # 64 clips, 3 rounds
"""
import argparse
import resource
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from vmae import media
from vmae.curation.download import DownloadConfig, download
from vmae.curation.templates import CVDF_TEMPLATE, fill_template
from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest

SHORT_SIDE, GOP = 320, 16


def make_sources(folder: Path, n: int, seconds: float, size: str) -> list:
    """n mirror-style clips: moving test patterns, each with its own offset so no two files are equal."""
    rows = []
    for i in range(n):
        row = {"key": f"clip_{i:04d}", "video_id": f"vid{i:04d}", "start_sec": 10.0 * i,
               "end_sec": 10.0 * i + seconds}
        path = folder / fill_template(CVDF_TEMPLATE, row)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
                        "-vf", f"hue=h={i * 37 % 360}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        rows.append(row)
    return rows


def cpu_seconds() -> float:
    """CPU time so far of this process and every child it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn, *args):
    """(wall seconds, CPU seconds) of fn(*args)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def run_shell(sources: list, out: Path):
    """All cuts as one shell script: the fastest a plain ffmpeg loop can do the same work."""
    out.mkdir(parents=True)
    lines = [shlex.join(media.cut_command(src, out / f"{i}.mp4", short_side=SHORT_SIDE, gop=GOP, threads=1))
             + " >/dev/null" for i, src in enumerate(sources)]
    script = out / "cut.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    subprocess.run(["bash", str(script)], check=True)


def run_library(df, mirror: Path, out: Path):
    cfg = DownloadConfig(from_dir=str(mirror), short_side=SHORT_SIDE, gop=GOP, threads=1)
    report = download(df, out, cfg, ExecutorConfig(workers=1), progress=False)
    assert report.counts == {"ok": len(df)}, report.lines()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="64 clips and 3 rounds")
    parser.add_argument("--clips", type=int, help="number of clips (default 8, --full 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--size", default="640x360", help="source frame size")
    args = parser.parse_args()
    n = args.clips or (64 if args.full else 8)
    rounds = 3 if args.full else 2

    with tempfile.TemporaryDirectory(prefix="bench-cut-") as tmp:
        tmp = Path(tmp)
        mirror = tmp / "mirror"
        mirror.mkdir()
        rows = make_sources(mirror, n, args.seconds, args.size)
        df = empty_manifest(n)
        for col in ("key", "video_id", "start_sec", "end_sec"):
            df[col] = [r[col] for r in rows]
        df["source"] = "bench"
        sources = [mirror / fill_template(CVDF_TEMPLATE, r) for r in rows]

        run_library(df.head(1), mirror, tmp / "warm-up")  # imports and first-call costs stay out of the count
        shell, library = [], []
        for r in range(rounds):  # alternate, so that load from other processes hits both alike
            shell.append(measured(run_shell, sources, tmp / f"shell{r}"))
            library.append(measured(run_library, df, mirror, tmp / f"lib{r}"))
            shutil.rmtree(tmp / f"shell{r}")
            shutil.rmtree(tmp / f"lib{r}")

    (shell_wall, shell_cpu), (lib_wall, lib_cpu) = (min(x[0] for x in shell), min(x[1] for x in shell)), \
        (min(x[0] for x in library), min(x[1] for x in library))
    print(f"bench_cut: {n} clips of {args.seconds:g}s {args.size} -> short side {SHORT_SIDE}, gop {GOP}, "
          f"1 worker, 1 ffmpeg thread; best of {rounds} rounds")
    print(f"  ffmpeg from the shell   {n / shell_cpu:7.3f} clips per CPU-second  "
          f"({shell_cpu:.2f} CPU-s, {shell_wall:.2f}s wall)")
    print(f"  download --from-dir     {n / lib_cpu:7.3f} clips per CPU-second  "
          f"({lib_cpu:.2f} CPU-s, {lib_wall:.2f}s wall; adopt + cut + probe)")
    print(f"  ratio {shell_cpu / lib_cpu:.3f} per core (target >= 0.9); wall-clock ratio {shell_wall / lib_wall:.3f}")


if __name__ == "__main__":
    main()
