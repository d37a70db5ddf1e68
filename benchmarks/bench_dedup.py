"""Benchmark `vmae-data fingerprint` and `vmae-data dedup`: match quality on generated clips with real edits,
fingerprint speed against decoding the same frames alone, and dedup time and memory at UnlabeledHybrid scale.

1. quality: DISTINCT clips of varied generated content (lavfi mandelbrot, life, cellauto, gradients,
   sierpinski, testsrc2: random parameters, a moving inset of a second scene, blends, hue shifts; half of
   them cut from two such scenes) and edited copies of the first EDITED of them, one per edit kind (scale,
   crop, pad, trim, hflip, re-encode at another CRF and GOP, drawbox, overlay, and combinations). The first
   half of the distinct clips is the reference set ("eval"); the pretraining set ("train") holds the other
   half and every copy. Prints recall per edit kind (copy found as a leak of its original), recall between
   copies of one original, and false positives among pairs of clips of different origin; then again with the
   reference set fingerprinted densely (`fingerprint --dense`, DENSE).
   Targets: recall >= 0.95 overall, false positives <= 0.1% of distinct pairs.
2. candidates: the same frames hashed by other perceptual hashes (imagehash pHash/dHash 64-bit, perception
   PHash 256-bit) and matched by the same rule, each at the threshold that keeps false positives within the
   target; and the CPU time per frame of each hasher.
3. speed: fingerprint CPU time per clip against decoding the same frames alone (plain PyAV: open, demux,
   decode in order up to the last chosen picture, as one every 0.2 s leaves little to skip; no scaling, no
   hashing). Target ratio (clips per CPU-second) >= 0.8.
4. scale: dedup of N synthetic pretraining fingerprints (random PDQ-like hashes and motion signatures, 1% of
   them noisy copies of other clips, 1% noisy copies of reference clips) against 100k reference ones, N from
   100k to 1.35M; each size in a fresh process: wall time and peak memory. Target at 1.35M: under 2 minutes and 4 GiB.

    .venv/bin/python benchmarks/bench_dedup.py                   # everything; clips cached in --work
    .venv/bin/python benchmarks/bench_dedup.py --only quality speed
    .venv/bin/python benchmarks/bench_dedup.py --only scale --sizes 100000 1350000
"""
import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vmae import media
from vmae.curation.dedup import NO_MATCH, DedupConfig, dedup, is_duplicate, match_frames
from vmae.curation import temporal_signature
from vmae.curation.fingerprint import CROP_AT, DENSE, FP_SCHEMA, FingerprintConfig, border_box, fingerprint, \
    pdq_hashes, pick_frames
from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest, write_manifest

SIZES = ((320, 240), (426, 240), (240, 320), (320, 180))
EDITS = ("scale", "crop", "pad", "trim", "hflip", "reencode", "drawbox", "overlay",
         "crop+scale+reencode", "hflip+trim+drawbox", "pad+overlay+reencode", "trim+crop+hflip+overlay")
MANDELBROT_POINTS = ((-0.743643887, 0.131825904), (-0.7453, 0.1127), (-1.25066, 0.02012), (-0.16, 1.0405),
                     (0.2549870375, 0.0005), (-1.7687788, 0.0017389), (-0.10109636, 0.95628651),
                     (0.001643721971153, 0.822467633298876), (-0.77568377, 0.13646737), (-1.401155, 0.0))


# ------------------------------------------------------------------ generated clips

def _color(rng) -> str:
    return "0x%02x%02x%02x" % tuple(rng.integers(0, 256, 3))


def scene(rng, w: int, h: int, fps: int, seconds: float, label: str) -> str:
    """A filtergraph chain producing one scene into [label]: a random source, maybe with a moving inset of
    another source and a hue shift."""
    def source(sw, sh):
        kind = rng.choice(["mandelbrot", "life", "cellauto", "gradients", "sierpinski", "testsrc2"])
        if kind == "mandelbrot":
            x, y = MANDELBROT_POINTS[rng.integers(len(MANDELBROT_POINTS))]
            start = float(rng.uniform(0.5, 3.0)) * 10.0 ** -rng.integers(0, 3)
            return (f"mandelbrot=s={sw}x{sh}:r={fps}:start_x={x + rng.normal(0, start / 20)}:"
                    f"start_y={y + rng.normal(0, start / 20)}:start_scale={start}:"
                    f"end_scale={start * rng.uniform(0.3, 0.8)}:end_pts={int(seconds * fps * 2)}:maxiter=128,"
                    f"hue=h={rng.integers(0, 360)}")
        if kind == "life":
            cell = int(rng.integers(8, 20))
            return (f"life=s={sw // cell}x{sh // cell}:r={int(rng.integers(1, 5))}:ratio={rng.uniform(0.1, 0.6):.2f}:"
                    f"seed={rng.integers(1 << 30)}:mold={int(rng.integers(0, 40))}:life_color={_color(rng)}:"
                    f"death_color={_color(rng)}:mold_color={_color(rng)},scale={sw}:{sh}:flags=neighbor,fps={fps},"
                    f"gblur=sigma={rng.uniform(0.5, 3):.1f}")
        if kind == "cellauto":
            cell = int(rng.integers(6, 16))
            return (f"cellauto=s={sw // cell}x{sh // cell}:r={int(rng.integers(2, 8))}:rule={rng.integers(1, 255)}:"
                    f"random_fill_ratio={rng.uniform(0.2, 0.8):.2f}:random_seed={rng.integers(1 << 30)},"
                    f"scale={sw}:{sh}:flags=neighbor,fps={fps},format=rgb24,"
                    f"colorchannelmixer=rr={rng.uniform(0.2, 1):.2f}:gg={rng.uniform(0.2, 1):.2f}:"
                    f"bb={rng.uniform(0.2, 1):.2f}:rb={rng.uniform(0, 0.5):.2f}")
        if kind == "gradients":
            # Its colours are random on every run whatever the seed (ffmpeg's default): drawn here, so that the
            # clips are the same on every run (of one ffmpeg build: encoders differ between versions).
            n = int(rng.integers(3, 8))
            colors = ":".join(f"c{k}={_color(rng)}" for k in range(n))
            return (f"gradients=s={sw}x{sh}:r={fps}:n={n}:{colors}:seed={rng.integers(1 << 30)}:"
                    f"speed={rng.uniform(0.005, 0.02):.3f}")
        if kind == "sierpinski":
            return (f"sierpinski=s={sw // 2}x{sh // 2}:r={fps}:seed={rng.integers(1 << 30)}:"
                    f"jump={int(rng.integers(1, 8))}:type={rng.choice(['carpet', 'triangle'])},scale={sw}:{sh},"
                    f"hue=h={rng.integers(0, 360)}:s={rng.uniform(1, 4):.1f}")
        return (f"testsrc2=s={sw}x{sh}:r={fps},hue=h={rng.integers(0, 360)},"
                f"rotate={rng.uniform(-0.5, 0.5):.2f}:fillcolor={_color(rng)}")

    chain = f"{source(w, h)},scale={w}:{h},setsar=1,format=yuv420p,trim=duration={seconds},setpts=PTS-STARTPTS"
    if rng.random() < 0.7:
        iw, ih = int(w * rng.uniform(0.25, 0.5)) // 2 * 2, int(h * rng.uniform(0.25, 0.5)) // 2 * 2
        vx, vy = rng.uniform(-25, 25, 2)
        x0, y0 = rng.uniform(0, w - iw), rng.uniform(0, h - ih)
        inset = f"{source(iw, ih)},format=yuv420p,trim=duration={seconds},setpts=PTS-STARTPTS"
        return (f"{chain}[{label}bg];{inset}[{label}fg];[{label}bg][{label}fg]overlay="
                f"x='mod({x0:.0f}+{vx:.1f}*t+{w},{w - iw})':y='mod({y0:.0f}+{vy:.1f}*t+{h},{h - ih})',"
                f"setsar=1[{label}]")
    return f"{chain}[{label}]"


def make_distinct(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    w, h = SIZES[rng.integers(len(SIZES))]
    fps = int(rng.choice([25, 30]))
    seconds = float(rng.uniform(5, 9))
    if rng.random() < 0.5:
        cut = seconds * rng.uniform(0.3, 0.7)
        graph = (f"{scene(rng, w, h, fps, cut, 's0')};{scene(rng, w, h, fps, seconds - cut, 's1')};"
                 "[s0][s1]concat=n=2:v=1[v]")
    else:
        graph = scene(rng, w, h, fps, seconds, "v")
    _ffmpeg(["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
             "-g", "16", "-pix_fmt", "yuv420p", "-t", f"{seconds:.2f}"], path)
    return path


def edit_command(kind: str, src: Path, rng, duration: float) -> list:
    """ffmpeg arguments (inputs, filter graph, encoder) of one edit kind; kinds join with '+'."""
    pre, filters, logo, enc = [], [], None, ["-crf", "23"]
    for part in kind.split("+"):
        if part == "scale":
            f = rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.3, 2.0)])
            filters.append(f"scale=trunc(iw*{f:.2f}/2)*2:trunc(ih*{f:.2f}/2)*2")
        elif part == "crop":
            fw, fh = rng.uniform(0.88, 0.96, 2)
            filters.append(f"crop=trunc(iw*{fw:.2f}/2)*2:trunc(ih*{fh:.2f}/2)*2:"
                           f"(iw-ow)*{rng.random():.2f}:(ih-oh)*{rng.random():.2f}")
        elif part == "pad":
            color = "black"
            if rng.random() < 0.5:   # letterbox to a taller frame ...
                filters.append(f"pad=iw:trunc((ih+iw*{rng.uniform(0.2, 0.4):.2f})/2)*2:0:(oh-ih)/2:{color}")
            else:                    # ... or pillarbox to a wider one
                filters.append(f"pad=trunc((iw+ih*{rng.uniform(0.3, 0.6):.2f})/2)*2:ih:(ow-iw)/2:0:{color}")
        elif part == "trim":
            start = rng.uniform(0.5, 2.0)
            pre += ["-ss", f"{start:.2f}", "-t", f"{max(2.0, duration - start - rng.uniform(0, 1.5)):.2f}"]
        elif part == "hflip":
            filters.append("hflip")
        elif part == "reencode":
            enc = ["-crf", str(int(rng.integers(32, 39))), "-g", str(int(rng.choice([48, 120, 250])))]
        elif part == "drawbox":
            x, y = rng.choice(["0.03*iw", "0.8*iw"]), rng.choice(["0.03*ih", "0.8*ih"])
            filters.append(f"drawbox=x={x}:y={y}:w=0.16*iw:h=0.14*ih:color={_color(rng)}@0.85:t=fill")
        elif part == "overlay":  # a caption bar across the bottom and a moving logo in a top corner
            filters.append("drawbox=x=0:y=0.84*ih:w=iw:h=0.12*ih:color=black@0.6:t=fill")
            logo = rng.choice(["W-w-8:8", "8:8"])
        else:
            raise ValueError(part)
    graph = f"[0:v]{','.join(filters + ['scale=trunc(iw/2)*2:trunc(ih/2)*2'])}"
    inputs = [*pre, "-i", str(src)]
    if logo:
        inputs += ["-f", "lavfi", "-i", "testsrc=s=56x42:r=25"]
        graph += f"[base];[base][1:v]overlay={logo}:shortest=1"
    return [*inputs, "-filter_complex", graph + "[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast",
            *enc, "-pix_fmt", "yuv420p"]


def make_copy(src: Path, path: Path, kind: str, seed: int) -> Path:
    _ffmpeg(edit_command(kind, src, np.random.default_rng(seed), media.probe(src)["duration"]), path)
    return path


def _ffmpeg(args, path: Path):
    """Run ffmpeg with args, writing `path` under a temporary name; an existing path is kept (the cache).
    One thread: with more, a loaded machine now and then encoded a frame differently, and the set must be the
    same on every run (clips are made `workers` at a time instead)."""
    if path.exists():
        return
    tmp = path.with_name("tmp-" + path.name)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-filter_threads", "1", *args, "-threads", "1", "-an", str(tmp)],
                   check=True)
    tmp.rename(path)


def generate(work: Path, distinct: int, edited: int, workers: int, seed: int = 0) -> pd.DataFrame:
    """Clips under work/clips (kept between runs: another seed needs another work folder); one row per clip: key,
    path, origin, kind."""
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = [{"key": f"d{i:04d}", "path": clips / f"d{i:04d}.mp4", "origin": i, "kind": "distinct"}
            for i in range(distinct)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda r: make_distinct(r["path"], seed + 1000 + r["origin"]), rows))
        copies = [{"key": f"c{i:04d}_{k}", "path": clips / f"c{i:04d}_{k}.mp4", "origin": i, "kind": kind}
                  for i in range(edited) for k, kind in enumerate(EDITS)]
        list(pool.map(lambda r: make_copy(rows[r["origin"]]["path"], r["path"], r["kind"],
                                          seed + 7919 * r["origin"] + EDITS.index(r["kind"])), copies))
    return pd.DataFrame(rows + copies)


def manifest(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    df = empty_manifest(len(rows))
    df["key"], df["path"] = rows["key"].to_numpy(), [str(p) for p in rows["path"]]
    df["source"], df["status"] = source, "ok"
    return df


# ------------------------------------------------------------------ 1. quality

def split_sets(clips: pd.DataFrame, distinct: int):
    """(reference rows, pretraining rows): the first half of the distinct clips is the reference set."""
    is_ref = (clips["kind"] == "distinct") & (clips["origin"] < distinct // 2)
    return clips[is_ref], clips[~is_ref]


def score(pairs: pd.DataFrame, clips: pd.DataFrame, distinct: int) -> dict:
    """Recall per edit kind (copy found as a leak of its original), recall between copies of one original,
    and false positives among pairs of clips of different origin."""
    origin = dict(zip(clips["key"], clips["origin"]))
    kind = dict(zip(clips["key"], clips["kind"]))
    found = {frozenset(p) for p in zip(pairs["key_a"], pairs["key_b"])}
    copies = clips[clips["kind"] != "distinct"]
    recall = {k: float(np.mean([frozenset((c, f"d{origin[c]:04d}")) in found for c in group["key"]]))
              for k, group in copies.groupby("kind", sort=False)}
    recall = {k: recall[k] for k in EDITS if k in recall}
    found_copies = sum(origin[a] == origin[b] and kind[a] != "distinct" and kind[b] != "distinct"
                       for a, b in map(tuple, found))
    per_origin = copies.groupby("origin").size()
    within_total = int((per_origin * (per_origin - 1) // 2).sum())
    false = sum(origin[a] != origin[b] for a, b in map(tuple, found))
    refs, mix = split_sets(clips, distinct)
    n_mix, n_ref = len(mix), len(refs)
    same_origin = within_total + len(copies)      # copy-copy pairs, copy-original pairs
    distinct_pairs = n_mix * (n_mix - 1) // 2 + n_mix * n_ref - same_origin
    return {"recall": recall, "overall": float(np.mean([frozenset((c, f"d{origin[c]:04d}")) in found
                                                          for c in copies["key"]])),
            "within": found_copies / max(within_total, 1), "false": int(false), "distinct_pairs": distinct_pairs}


def print_score(name: str, s: dict):
    print(f"{name}: recall overall {s['overall']:.3f}; copies of one original found together {s['within']:.3f}; "
          f"false positives {s['false']} of {s['distinct_pairs']} distinct pairs "
          f"({s['false'] / s['distinct_pairs']:.4%})")
    print("  recall per edit: " + ", ".join(f"{k} {v:.2f}" for k, v in s["recall"].items()))


def bench_quality(work: Path, clips: pd.DataFrame, distinct: int, workers: int, fp_cfg, dd_cfg) -> dict:
    refs, mix = split_sets(clips, distinct)
    write_manifest(manifest(refs, "eval"), work / "eval.parquet")
    write_manifest(manifest(mix, "train"), work / "train.parquet")
    ex = ExecutorConfig(workers=workers)
    for name, cfg in (("eval", replace(fp_cfg, crops=True)), ("train", fp_cfg)):  # as docs/data.md advises
        out = work / f"{name}-fp.parquet"
        report = fingerprint(work / f"{name}.parquet", out, cfg=cfg, executor=ex, progress=False)
        print(report.lines()[0])
    t = time.perf_counter()
    report = dedup(work / "train-fp.parquet", work / "dups", [work / "eval-fp.parquet"], dd_cfg, plot=True,
                   progress=False)
    print(f"dedup of the quality set: {time.perf_counter() - t:.1f}s")
    for line in report.lines():
        print("  " + line)
    s = score(pd.read_parquet(work / "dups" / "pairs.parquet"), clips, distinct)
    print_score("quality (vmae fingerprint + dedup: PDQ and motion signature)", s)
    # The reference set fingerprinted as docs/data.md advises for the evaluation sets (--dense).
    report = fingerprint(work / "eval.parquet", work / "eval-dense-fp.parquet", cfg=replace(fp_cfg, **DENSE),
                         executor=ex, progress=False)
    print(report.lines()[0])
    dedup(work / "train-fp.parquet", work / "dups-dense", [work / "eval-dense-fp.parquet"], dd_cfg,
          progress=False)
    dense = score(pd.read_parquet(work / "dups-dense" / "pairs.parquet"), clips, distinct)
    print_score(f"quality, the reference set fingerprinted with --dense {DENSE}", dense)
    limit = dense["distinct_pairs"] // 1000
    print(f"quality targets, the reference set as docs/data.md advises for evaluation sets (--dense): recall "
          f"{dense['overall']:.3f} (target >= 0.95: {'met' if dense['overall'] >= 0.95 else 'NOT met'}), false "
          f"positives {dense['false']} (target <= {limit}: {'met' if dense['false'] <= limit else 'NOT met'}); "
          f"with --crops, where dedup must fit in 4 GiB: recall {s['overall']:.3f}")
    return s


# ------------------------------------------------------------------ 2. candidate hashes, one rule

def frames_of(clips: pd.DataFrame, cfg: FingerprintConfig):
    """Per clip the grey frames fingerprint hashes (cut to the same border box) and their PDQ quality."""
    frames = []
    for path in clips["path"]:
        _, _, grey = media.grab_frames(str(path), partial(pick_frames, cfg=cfg), (cfg.size, cfg.size))
        top, bottom, left, right = border_box(grey)
        frames.append(grey[:, top:cfg.size - bottom, left:cfg.size - right])
    return frames, [pdq_hashes(f, (0, 0, 0, 0))[2] for f in frames]


def hashers():
    """name -> (bits, function grey frame -> packed bits); a candidate whose package is missing is left out
    with a note (pip install imagehash perception to compare all)."""
    out = {"pdq (pdqhash, vmae's)": (256, lambda f: pdq_hashes(f[None], (0, 0, 0, 0))[0][0])}
    try:
        import imagehash
        from PIL import Image
    except ImportError:
        print("candidates: imagehash is not installed, left out")
    else:
        out["phash 64 (imagehash)"] = (64, lambda f: np.packbits(imagehash.phash(Image.fromarray(f)).hash.ravel()))
        out["dhash 64 (imagehash)"] = (64, lambda f: np.packbits(imagehash.dhash(Image.fromarray(f)).hash.ravel()))
    try:
        import perception.hashers as ph
    except ImportError:
        print("candidates: perception is not installed, left out")
    else:
        phash256 = ph.PHash(hash_size=16)
        out["phash 256 (perception)"] = (256, lambda f: np.packbits(
            phash256.compute(np.repeat(f[:, :, None], 3, axis=2), hash_format="vector").astype(bool)))
    return out


def pair_distances(codes: list, pairs: np.ndarray, chunk: int = 8192):
    """Frame distances of clip pairs, both orientations of the first clip: two uint16 [pairs, k, k] arrays.
    codes: per clip (hashes [n, bytes], mirrored hashes [n, bytes]) as uint8."""
    k = max(len(c[0]) for c in codes)
    nbytes = codes[0][0].shape[1]
    padded = np.zeros((2, len(codes), k, nbytes), np.uint8)
    for i, (h, m) in enumerate(codes):
        padded[0, i, :len(h)], padded[1, i, :len(m)] = h, m
    out = [np.empty((len(pairs), k, k), np.uint16) for _ in range(2)]
    for lo in range(0, len(pairs), chunk):
        a, b = pairs[lo:lo + chunk, 0], pairs[lo:lo + chunk, 1]
        for side in (0, 1):
            x = padded[side, a][:, :, None] ^ padded[0, b][:, None]
            out[side][lo:lo + chunk] = np.bitwise_count(x).sum(axis=3, dtype=np.uint16)
    return out


def rule_on_matrices(dists, present, pairs, threshold: int, dd_cfg) -> np.ndarray:
    """The dedup rule (vmae.curation.dedup.verify's: the better orientation, then is_duplicate)."""
    mask = ~(present[pairs[:, 0]][:, :, None] & present[pairs[:, 1]][:, None, :])
    stats = []
    for d in dists:
        d = np.where(mask, NO_MATCH, d)
        stats.append(match_frames(d, threshold))
    (a0, b0, m0), (a1, b1, m1) = stats
    flip = (a1 + b1 > a0 + b0) | ((a1 + b1 == a0 + b0) & (m1 < m0))
    frames = present.sum(axis=1)
    return is_duplicate(np.where(flip, a1, a0), frames[pairs[:, 0]], np.where(flip, b1, b0), frames[pairs[:, 1]],
                        dd_cfg)


def bench_candidates(clips: pd.DataFrame, distinct: int, fp_cfg, dd_cfg):
    frames, quality = frames_of(clips, fp_cfg)
    k = max(len(f) for f in frames)
    present = np.zeros((len(frames), k), bool)
    for i, q in enumerate(quality):
        present[i, :len(q)] = np.asarray(q) >= dd_cfg.min_quality
    refs, mix = split_sets(clips, distinct)
    pos = {key: i for i, key in enumerate(clips["key"])}
    m, r = np.array([pos[x] for x in mix["key"]]), np.array([pos[x] for x in refs["key"]])
    iu, ju = np.triu_indices(len(m), 1)
    pairs = np.concatenate([np.stack([m[iu], m[ju]], 1), np.stack(np.meshgrid(m, r, indexing="ij"), -1).reshape(-1, 2)])
    origin, kind = clips["origin"].to_numpy(), clips["kind"].to_numpy()
    same = origin[pairs[:, 0]] == origin[pairs[:, 1]]
    leak = same & (kind[pairs[:, 1]] == "distinct")
    budget = int(0.001 * (~same).sum())
    for name, (bits, fn) in hashers().items():
        t = time.process_time()
        codes = [(np.array([fn(f) for f in fr]), np.array([fn(np.ascontiguousarray(f[:, ::-1])) for f in fr]))
                 for fr in frames]
        per_frame = (time.process_time() - t) / (2 * sum(len(f) for f in frames))
        dists = pair_distances(codes, pairs)
        rows = []
        for frac in np.arange(0.04, 0.31, 0.02):
            threshold = int(round(frac * bits))
            dup = rule_on_matrices(dists, present, pairs, threshold, dd_cfg)
            rows.append((threshold, float(dup[leak].mean()), int((dup & ~same).sum())))
        ok = [row for row in rows if row[2] <= budget] or rows[:1]
        best = max(ok, key=lambda row: row[1])
        print(f"candidate {name}: {per_frame * 1e3:.3f} ms CPU per frame hash; at {best[0]} of {bits} bits "
              f"(the best within {budget} false positives of {(~same).sum()} distinct pairs): recall {best[1]:.3f}, "
              f"{best[2]} false positives")
        print("  threshold/recall/false positives: " + ", ".join(f"{t}/{rc:.3f}/{f}" for t, rc, f in rows))


# ------------------------------------------------------------------ 3. speed

def plain_decode(path: str, cfg: FingerprintConfig) -> int:
    """Decode the frames fingerprint picks (PDQ's and the motion signature's, one every 0.2 s) the plain PyAV
    way, nothing else: so dense a pick leaves no group of pictures to skip, so every frame up to the last
    chosen one is decoded in order. Returns the chosen frames seen."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        packets = [p for p in container.demux(stream) if p.size]
        shown = sorted(p.pts for p in packets)
        times = (np.array(shown, float) - shown[0]) * float(stream.time_base)
        chosen = {shown[i] for i in np.union1d(pick_frames(times, cfg), temporal_signature.pick_steps(times))}
        last, seen = max(chosen), 0
        container.seek(shown[0], stream=stream, backward=True)
        for frame in container.decode(stream):
            seen += frame.pts in chosen
            if frame.pts is not None and frame.pts >= last:
                break
    return seen


def bench_speed(paths: list, cfg: FingerprintConfig, rounds: int = 3):
    from vmae.curation.fingerprint import fingerprint_clip

    sides = {"fingerprint": lambda p: fingerprint_clip(p, cfg),
             "decode the same frames (plain PyAV)": lambda p: plain_decode(p, cfg),
             "vmae decode + scale alone": lambda p: media.grab_frames(p, partial(pick_frames, cfg=cfg),
                                                                       (cfg.size, cfg.size), thumbs=THUMBS)}
    best = {name: float("inf") for name in sides}
    for _ in range(rounds):  # alternate, so that load from other work on the machine hits every side alike
        for name, fn in sides.items():
            t = time.process_time()
            for p in paths:
                fn(str(p))
            best[name] = min(best[name], time.process_time() - t)
    grabbed = [media.grab_frames(str(p), partial(pick_frames, cfg=cfg), (cfg.size, cfg.size), thumbs=THUMBS)[1:]
               for p in paths]
    t = time.process_time()
    for _, g, steps, small in grabbed:
        box = border_box(g)
        pdq_hashes(g, box)
        temporal_signature.signatures(steps, small, box, cfg.size)
    hashing = time.process_time() - t
    n = len(paths)
    frames = sum(len(g[1]) for g in grabbed)
    base = best["decode the same frames (plain PyAV)"]
    print(f"speed: {n} clips, {frames / n:.1f} frames per clip; CPU ms per clip: " +
          ", ".join(f"{k} {v / n * 1e3:.1f}" for k, v in best.items())
          + f", PDQ + bars + motion signature alone {hashing / n * 1e3:.1f}")
    print(f"speed: fingerprint clips per CPU-second {n / best['fingerprint']:.1f} vs decoding the same frames "
          f"{n / base:.1f}: ratio {base / best['fingerprint']:.2f} (target >= 0.8); hashing is "
          f"{hashing / best['fingerprint']:.0%} of the fingerprint time")


# ------------------------------------------------------------------ 4. scale (synthetic fingerprints)

THUMBS = (temporal_signature.pick_steps, (temporal_signature.THUMB,) * 2)
SCALE_SOURCES = (("k710", 0.49), ("ssv2", 0.125), ("ava", 0.015), ("webvid", 0.185), ("instagram", 0.185))
NOISE_BITS = 0.05     # share of bits flipped in a planted copy's frames (about 13 of 256)
MOTION_NOISE = 0.3    # noise added to a planted copy's motion signature (units of its spread)


def _list_array(values: pa.Array, lengths: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _blobs(hashes: np.ndarray, lengths: np.ndarray, width: int = 32) -> pa.ChunkedArray:
    """One binary value per clip: its frames' `width`-byte rows (hashes, motion steps), concatenated
    (fingerprint's layout); in chunks of under 2 GiB (a binary array's 32-bit offsets), as a fingerprint
    table concatenated from its units holds a large crop column."""
    ends = np.concatenate([[0], np.cumsum(lengths) * width]).astype(np.int64)
    step = max(1, (2 ** 31 - 1) // max(int(lengths.max(initial=0)) * width, 1))   # clips per chunk
    flat, chunks = hashes.reshape(-1), []
    for lo in range(0, len(lengths), step):
        hi = min(lo + step, len(lengths))
        offsets = pa.py_buffer((ends[lo:hi + 1] - ends[lo]).astype(np.int32))
        chunks.append(pa.BinaryArray.from_buffers(pa.binary(), hi - lo, [None, offsets,
                                                                          pa.py_buffer(flat[ends[lo]:ends[hi]])]))
    return pa.chunked_array(chunks, pa.binary())


def _motion_steps(frames, every: float = 0.5):
    """Motion signature steps of clips with this many hashed frames (one per `every` seconds)."""
    return (np.asarray(frames) * every / temporal_signature.STEP).astype(np.int64)


def synthetic(n: int, seed: int, set_name: str, copy_from=None, crops: bool = False, smooth: int = 1,
              dense: bool = False):
    """(table, hashes, lengths, motion, every) of n random clips of 4-16 frames (mean 14) with random motion
    signatures, each step the sum of `smooth` independent ones (and random crop windows' hashes with crops,
    as `fingerprint --crops` gives; with dense, 64 frames of 8 s, the windows and the shifted motion signatures
    of DENSE instead).
    With copy_from=(hashes, lengths, motion, every, share): that share of the clips are noisy copies (two frames
    trimmed, bits flipped, noise on the motion) of copy_from's clips, and as many are noisy copies of other clips
    of this table."""
    rng = np.random.default_rng(seed)
    # As --every 0.5 gives UnlabeledHybrid: 16 frames for 8 s and longer, fewer for short (SSV2) clips.
    lengths = np.full(n, DENSE["max_frames"]) if dense else np.where(rng.random(n) < 0.8, 16, rng.integers(4, 16, n))
    windows = len(CROP_AT) * (len(DENSE["crop_scales"]) if dense else 1)
    every = DENSE["every"] if dense else 0.5
    shifted = DENSE["motion_phases"] - 1 if dense else 0   # the motion signature on shifted grids
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    hashes = rng.integers(0, 256, (int(lengths.sum()), 32), dtype=np.uint8)
    mirrors = rng.integers(0, 256, hashes.shape, dtype=np.uint8)
    # Motion signatures: a step every STEP seconds of the clip's lengths * every s, normalised changes as fingerprint
    # stores them (about unit spread, clipped at 3 units).
    steps = _motion_steps(lengths, every)
    level = temporal_signature.LEVEL
    raw = rng.normal(0, level / np.sqrt(smooth), (int(steps.sum()) + smooth - 1, temporal_signature.CHANNELS))
    motion = np.clip(sum(raw[k:len(raw) - smooth + 1 + k] for k in range(smooth)), -3 * level, 3 * level
                     ).astype(np.int8)
    motion_start = np.concatenate([[0], np.cumsum(steps)[:-1]])

    def plant(dst, src, src_hashes, src_lengths, src_motion, src_every):
        src_start = np.concatenate([[0], np.cumsum(src_lengths)[:-1]])
        src_motion_end = np.cumsum(_motion_steps(src_lengths, src_every))
        for d, s in zip(dst, src):
            k = int(min(lengths[d], max(src_lengths[s] - 2, 2)))
            noise = np.packbits(rng.random((k, 256)) < NOISE_BITS, axis=1)
            end = src_start[s] + src_lengths[s]
            hashes[start[d]:start[d] + k] = src_hashes[end - k:end] ^ noise
            if src_motion is not None:  # the same trim in motion, plus noise
                m = int(_motion_steps(k, src_every))
                piece = src_motion[src_motion_end[s] - m:src_motion_end[s]].astype(np.float32)
                piece += rng.normal(0, MOTION_NOISE * level, piece.shape)
                motion[motion_start[d]:motion_start[d] + m] = np.clip(piece, -3 * level, 3 * level)

    if copy_from is not None:
        ref_hashes, ref_lengths, ref_motion, ref_every, share = copy_from
        m = int(n * share)
        plant(np.arange(m), rng.integers(0, len(ref_lengths), m), ref_hashes, ref_lengths, ref_motion, ref_every)
        plant(np.arange(m, 2 * m), n // 2 + np.arange(m), hashes, lengths, motion, every)
    sources = rng.choice([s for s, _ in SCALE_SOURCES], n, p=[p for _, p in SCALE_SOURCES])
    frames = len(hashes)
    within = np.concatenate([np.arange(k) for k in lengths]).astype(np.float32)
    table = pa.Table.from_arrays([
        pa.array([f"{set_name}{i:08d}" for i in range(n)]), pa.array([set_name] * n), pa.array(sources),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()), pa.nulls(n, pa.int64()),
        pa.array(["ok"] * n), pa.nulls(n, pa.string()), pa.array(lengths.astype(float)), pa.array(np.full(n, 25.0)),
        pa.array(np.full(n, 320)), pa.array(np.full(n, 240)),
        _list_array(pa.array(within), lengths), _list_array(pa.array(np.full(frames, 100, np.uint8)), lengths),
        _blobs(hashes, lengths), _blobs(mirrors, lengths), _blobs(motion, steps, temporal_signature.CHANNELS),
        _blobs(rng.integers(0, 256, (int(lengths.sum()) * windows, 32), dtype=np.uint8), lengths * windows)
        if crops else _blobs(np.zeros(0, np.uint8), np.zeros(n, np.int64)),
        _blobs(rng.normal(0, level, (int(steps.sum()) * shifted, temporal_signature.CHANNELS)).clip(
            -3 * level, 3 * level).astype(np.int8), steps * shifted, temporal_signature.CHANNELS),
    ], schema=FP_SCHEMA)
    return table, hashes, lengths, motion, every


def scale_files(work: Path, n: int, refs: int, smooth: int, dense: bool = False):
    """Write (once) the synthetic reference table and the pretraining table of n clips; return their paths."""
    tag = (f"-smooth{smooth}" if smooth > 1 else "") + ("-dense" if dense else "")
    ref_path, mix_path = work / f"eval-{refs}-crops{tag}.parquet", work / f"train-{n}-{refs}{tag}.parquet"
    if not ref_path.exists() or not mix_path.exists():
        ref, *copy_from = synthetic(refs, 1, "eval", crops=True, smooth=smooth, dense=dense)
        pq.write_table(ref, ref_path, row_group_size=1 << 16)
        mix = synthetic(n, 2, "train", copy_from=(*copy_from, 0.01), smooth=smooth)[0]
        pq.write_table(mix, mix_path, row_group_size=1 << 16)
    return ref_path, mix_path


def scale_child(work: Path, n: int, refs: int, smooth: int, dense: bool):
    """Run in a fresh process: dedup of n synthetic clips against refs; print one JSON line."""
    ref_path, mix_path = scale_files(Path(work), n, refs, smooth, dense)
    t, cpu = time.perf_counter(), time.process_time()
    report = dedup(mix_path, Path(work) / f"dups-{n}", [ref_path], progress=False)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": n, "seconds": seconds, "cpu": cpu, "peak": peak, "candidates": report.candidates,
                      "dropped": report.within["dropped"], "leaked": report.leakage["eval"]["clips"],
                      "planted": int(n * 0.01)}))


def bench_scale(work: Path, sizes: list, refs: int, smooth: int, dense: bool):
    work.mkdir(parents=True, exist_ok=True)
    print(f"scale: dedup of N synthetic pretraining fingerprints (4-16 frames, mean 14; motion steps the sums of "
          f"{smooth}) against {refs} reference ones" + (f" fingerprinted with {DENSE}" if dense else "")
          + ", each in a fresh process (time includes reading the files)")
    rows = []
    for n in sizes:
        scale_files(work, n, refs, smooth, dense)
        out = subprocess.run([sys.executable, __file__, "--scale-child", str(n), "--refs", str(refs),
                              "--smooth", str(smooth), "--work", str(work.parent)]
                             + (["--dense"] if dense else []),
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"  N={n:>9,}: {r['seconds']:6.1f} s ({r['cpu']:.1f} CPU-s), peak memory {r['peak'] / 2**30:.2f} GiB; "
              f"{r['candidates']:,} "
              f"candidate pairs; found {r['leaked']:,} of {r['planted']:,} planted leaks and {r['dropped']:,} of "
              f"{r['planted']:,} planted duplicates")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"scale: {last['n'] / first['n']:.1f}x the clips took {last['seconds'] / first['seconds']:.1f}x the time "
              f"and {last['peak'] / first['peak']:.1f}x the memory; at N={last['n']:,}: {last['seconds']:.0f} s "
              f"(target < 120), {last['peak'] / 2**30:.2f} GiB (target < 4)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["quality", "candidates", "speed", "scale"],
                        default=["quality", "candidates", "speed", "scale"])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "vmae-bench-dedup"),
                        help="Folder for the generated clips (kept between runs) and outputs.")
    parser.add_argument("--distinct", type=int, default=240)
    parser.add_argument("--edited", type=int, default=40, help="Distinct clips that get edited copies.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0,
                        help="Shifts every clip's and edit's seed: another draw of the quality set, in another --work.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000, 1_350_000])
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--smooth", type=int, default=1,
                        help="Scale: each synthetic motion step is the sum of this many independent ones (real "
                             "motion lasts longer than one 0.2 s step: 2 gives the demo clips' autocorrelation).")
    parser.add_argument("--dense", action="store_true",
                        help="Scale: reference clips as DENSE fingerprints them (64 frames, 36 crop windows each); "
                             "--refs 5300: UCF101's and HMDB51's test splits; 67000: K710 val.")
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.scale_child:
        return scale_child(work / "scale", args.scale_child, args.refs, args.smooth, args.dense)
    fp_cfg, dd_cfg = FingerprintConfig(), DedupConfig()
    if {"quality", "candidates", "speed"} & set(args.only):
        t = time.perf_counter()
        clips = generate(work, args.distinct, args.edited, args.workers, args.seed)
        print(f"clips: {args.distinct} distinct, {len(clips) - args.distinct} edited copies of {args.edited} "
              f"({len(EDITS)} edit kinds) in {work / 'clips'} ({time.perf_counter() - t:.0f}s)")
    if "quality" in args.only:
        bench_quality(work, clips, args.distinct, args.workers, fp_cfg, dd_cfg)
    if "candidates" in args.only:
        bench_candidates(clips, args.distinct, fp_cfg, dd_cfg)
    if "speed" in args.only:
        bench_speed(list(clips["path"][: min(len(clips), 120)]), fp_cfg)
    if "scale" in args.only:
        bench_scale(work / "scale", args.sizes, args.refs, args.smooth, args.dense)


if __name__ == "__main__":
    main()
