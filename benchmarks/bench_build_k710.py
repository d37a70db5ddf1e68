"""Benchmark `vmae-data build-k710` on full-size synthetic Kinetics annotation files.

Generates K400/K600/K700 train/val/test CSVs shaped like the real ones (250k/390k/545k train rows,
20k/30k/34k val rows, 40k/60k/64k test rows; later versions re-list most videos of earlier ones, some
with another segment, the old class name or, rarely, another class; a few IDs twice in one file; some
val videos in train; some test videos in train), then prints the build time as a ratio to the time
pandas needs just to read the same CSVs (`pd.read_csv` with defaults, every file, measured in the same
run; best of --repeats for both), and the peak RSS of the build.

Both sides are timed alike: each repeat runs in a fresh Python process that first imports what it needs and
then times one pass (the read of every CSV, or one build) with the files in the page cache, as a user's
command meets them. (A warm process reads faster: timing pandas in the long-lived parent, where the
generator had already touched its memory, favoured it by about a fifth.)

It also prints a floor: the time to parse the same CSVs and write the same outputs with no merge in
between (pyarrow, two threads, as the build does), so that the ratio can be read as floor + merge.

The build runs in a fresh child process per repeat, so its peak RSS (VmHWM of that child) is the build
alone plus the interpreter and its imports, not the generator's memory. (Not ru_maxrss: on Linux a child
inherits its parent's peak through fork and exec, so it would report the generator's memory.)

    .venv/bin/python benchmarks/bench_build_k710.py            # full size (the issue fixes it)
    .venv/bin/python benchmarks/bench_build_k710.py --scale 0.1
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vmae.manifests import labels

TARGET_RATIO = 2.0
TARGET_RSS_GIB = 3.0
SIZES = {  # version: (train, val, test) rows at scale 1
    "k400": (250_000, 20_000, 40_000),
    "k600": (390_000, 30_000, 60_000),
    "k700": (545_000, 34_000, 64_000),
}
_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)


def new_ids(rng, n):
    """n random 11-character YouTube-style IDs."""
    return _ALPHABET[rng.integers(0, 64, (n, 11))].view("S11").ravel().astype(str)


def version_classes(version):
    """K710 ids of a version's classes and the name each version's CSV uses for them."""
    if version == "k400":
        ids = np.array(labels.head_map(400))
    elif version == "k600":
        ids = np.array(labels.head_map(600))
    else:
        ids = np.array(labels.head_map(700))
    names = np.array(labels.class_names("k710"), dtype=object)[ids]
    if version == "k400":
        # The real K400 CSVs carry the old names of renamed classes ("dying hair", "drinking", ...).
        old = {new: o for o, new in labels.rename_table().items() if o not in labels.class_ids("k710")}
        names = np.array([old.get(n, n) for n in names], dtype=object)
    return ids, names


def pick(rng, pool, n):
    return pool[rng.choice(len(pool), size=min(n, len(pool)), replace=False)]


def generate(root: Path, scale: float = 1.0, seed: int = 0) -> dict:
    """Write root/k{400,600,700}/{train,val,test}.csv; return {path: rows}."""
    rng = np.random.default_rng(seed)
    n = {v: tuple(int(x * scale) for x in sizes) for v, sizes in SIZES.items()}
    # One true video pool: id -> (K710 class, start). Later versions re-list earlier videos.
    videos = {}  # version -> split -> DataFrame(youtube_id, cls, start)

    def fresh(version, count):
        cls_ids, _ = version_classes(version)
        return pd.DataFrame({"youtube_id": new_ids(rng, count), "cls": rng.choice(cls_ids, count),
                             "start": rng.integers(0, 900, count)})

    def relist(version, frame, count):
        cls_ids, _ = version_classes(version)
        frame = frame[frame["cls"].isin(cls_ids)]
        return frame.iloc[rng.choice(len(frame), size=min(count, len(frame)), replace=False)].copy()

    videos["k400"] = {"train": fresh("k400", n["k400"][0]), "val": fresh("k400", n["k400"][1])}
    old_train = videos["k400"]["train"]
    videos["k600"] = {
        "train": pd.concat([relist("k600", old_train, int(n["k600"][0] * 0.56)),
                            relist("k600", videos["k400"]["val"], int(n["k600"][0] * 0.01))]),
        "val": pd.concat([relist("k600", videos["k400"]["val"], int(n["k600"][1] * 0.4)),
                          relist("k600", old_train, int(n["k600"][1] * 0.03))])}
    all_train = pd.concat([old_train, videos["k600"]["train"]]).drop_duplicates("youtube_id")
    videos["k700"] = {
        "train": relist("k700", all_train, int(n["k700"][0] * 0.6)),
        "val": pd.concat([relist("k700", videos["k600"]["val"], int(n["k700"][1] * 0.45)),
                          relist("k700", all_train, int(n["k700"][1] * 0.03))])}
    for version in ("k600", "k700"):
        for split, target in zip(("train", "val"), n[version][:2]):
            frame = videos[version][split]
            videos[version][split] = pd.concat([frame, fresh(version, max(target - len(frame), 0))])
    written = {}
    for version in ("k400", "k600", "k700"):
        cls_ids, csv_names = version_classes(version)
        name_of = dict(zip(cls_ids.tolist(), csv_names.tolist()))
        for split in ("train", "val"):
            frame = videos[version][split].reset_index(drop=True)
            m = len(frame)
            # Re-listed videos: mostly the same segment, some moved, a few relabelled.
            moved = rng.random(m) < 0.04
            frame.loc[moved, "start"] = (frame.loc[moved, "start"] + rng.integers(1, 30, moved.sum())) % 900
            relabel = rng.random(m) < 0.002
            frame.loc[relabel, "cls"] = rng.choice(cls_ids, relabel.sum())
            # A few IDs twice in one file with another segment, as in the real lists.
            twice = frame.iloc[rng.choice(m, size=m // 1000, replace=False)].copy()
            twice["start"] = (twice["start"] + 300) % 900
            frame = pd.concat([frame, twice])
            frame["label"] = frame["cls"].map(name_of)
            frame = frame.sort_values("label", kind="stable")  # the real lists are sorted by label
            label = frame["label"]
            quoted = label.where(~label.str.contains(" "), '"' + label + '"')
            out = pd.DataFrame({"label": quoted, "youtube_id": frame["youtube_id"],
                                "time_start": frame["start"], "time_end": frame["start"] + 10, "split": split})
            if version == "k400":
                out["is_cc"] = rng.integers(0, 2, len(out))
            path = root / version / f"{split}.csv"
            _write(out, path)
            written[str(path)] = len(out)
        # Test lists: label-less; some of their videos were later put into another version's train list.
        count = n[version][2]
        later_train = pd.concat([videos[v]["train"] for v in ("k600", "k700") if v != version])
        test_ids = np.concatenate([new_ids(rng, count - count // 50),
                                   later_train["youtube_id"].to_numpy()[rng.choice(len(later_train), count // 50)]])
        starts = rng.integers(0, 900, count)
        out = pd.DataFrame({"youtube_id": test_ids, "time_start": starts, "time_end": starts + 10, "split": "test"})
        path = root / version / "test.csv"
        _write(out, path)
        written[str(path)] = len(out)
    return written


def _write(frame, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = frame[frame.columns[0]].astype(str)
    for column in frame.columns[1:]:
        lines = lines + "," + frame[column].astype(str)
    path.write_text(",".join(frame.columns) + "\n" + "\n".join(lines.tolist()) + "\n", encoding="utf-8")


def read_child(root: str) -> None:
    """Child process: time pandas reading every CSV once; print wall and CPU seconds as JSON."""
    files = sorted(Path(root).glob("k*/*.csv"))
    start, cpu = time.perf_counter(), time.process_time()
    for f in files:
        pd.read_csv(f)
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}))


def _peak_rss_kib() -> int:
    """This process's own peak RSS in KiB: VmHWM, which restarts at exec (ru_maxrss does not)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def build_child(root: str, out: str) -> None:
    """Child process: run one build, print its time and this process's peak RSS as JSON."""
    from vmae.curation.kinetics import build_k710
    start, cpu = time.perf_counter(), time.process_time()
    report = build_k710(Path(root) / "k400", Path(root) / "k600", Path(root) / "k700", Path(out))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    rss_kib = _peak_rss_kib()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "rss_bytes": rss_kib * 1024,
                      "rows_out": report["rows_out"]}))


def floor_child(root: str, out: str) -> None:
    """Child process: parse every CSV and write the build's four tables, with nothing in between; print the time.

    The tables to write are made by an untimed build first."""
    from concurrent.futures import ThreadPoolExecutor

    from vmae.curation import kinetics
    files = [(path, path.stem) for path in sorted(Path(root).glob("k*/*.csv"))]
    files.sort(key=lambda f: -f[0].stat().st_size)
    tables = {(path.parent.name, split): (path, kinetics.read_annotation(path, split)) for path, split in files}
    outputs = {}
    kinetics.merge_k710(tables, kinetics.BuildK710Config(), on_output=outputs.__setitem__)
    Path(out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: kinetics.read_annotation(*f), files))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: kinetics._write_output(name, outputs[name], Path(out) / name), outputs))
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _child(mode: str, *args: Path) -> dict:
    # The page cache is flushed to disk first, so that no child pays for the writeback of what the
    # generator or an earlier build wrote.
    os.sync()
    child = subprocess.run([sys.executable, __file__, mode, *map(str, args)], check=True, capture_output=True,
                           text=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="input size relative to the real lists")
    parser.add_argument("--repeats", type=int, default=9,
                        help="runs of each side, alternating; the best of each counts (a shared VM is noisy)")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--read-child", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_child:
        return read_child(args.read_child)
    if args.child:
        return build_child(*args.child)
    if args.floor_child:
        return floor_child(*args.floor_child)
    with tempfile.TemporaryDirectory(prefix="bench_k710_") as tmp:
        root = Path(tmp) / "in"
        t0 = time.perf_counter()
        written = generate(root, args.scale)
        print(f"generated {sum(written.values()):,} rows in {len(written)} CSVs "
              f"({time.perf_counter() - t0:.1f} s): " + ", ".join(
                  f"{Path(p).parent.name}/{Path(p).name} {n:,}" for p, n in written.items()))
        files = sorted(written)
        reads, builds, rss, floors = [], [], [], []
        for r in range(args.repeats):
            read = _child("--read-child", root)
            reads.append((read["seconds"], read["cpu_seconds"]))
            result = _child("--child", root, Path(tmp) / f"out{r}")
            builds.append((result["seconds"], result["cpu_seconds"]))
            rss.append(result["rss_bytes"])
            floors.append(_child("--floor-child", root, Path(tmp) / f"floor{r}")["seconds"])
        read_s, read_cpu = min(w for w, _ in reads), min(c for _, c in reads)
        build_s, build_cpu = min(w for w, _ in builds), min(c for _, c in builds)
        ratio, peak = build_s / read_s, max(rss)
        print(f"rows out: {result['rows_out']}")
        print(f"pandas read_csv of the same {len(files)} CSVs: {read_s:.3f} s wall, {read_cpu:.3f} s CPU "
              f"(best of {args.repeats})")
        print(f"build-k710: {build_s:.3f} s wall, {build_cpu:.3f} s CPU (best of {args.repeats}; wall: "
              + ", ".join(f"{b:.3f}" for b, _ in builds) + ")")
        print(f"ratio build / read, wall time: {ratio:.2f} (target <= {TARGET_RATIO})  "
              f"{'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}")
        print(f"ratio build / read, CPU time (all threads; less sensitive to other load): {build_cpu / read_cpu:.2f}")
        print(f"floor, parse the CSVs + write the same outputs with no merge between (in a process that has "
              f"built once): {min(floors):.3f} s wall, {min(floors) / read_s:.2f} x the pandas read "
              f"(best of {args.repeats})")
        print(f"peak RSS of the build process (VmHWM of the child that ran only the build): "
              f"{peak / 2**30:.2f} GiB (target < {TARGET_RSS_GIB} GiB)  "
              f"{'OK' if peak < TARGET_RSS_GIB * 2**30 else 'OVER TARGET'}")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
