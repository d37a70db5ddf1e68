"""vmae-data fingerprint / dedup and --exclude: real clips made with ffmpeg, real edits of one of them (scale,
crop, pad, trim, hflip, re-encode at another CRF and GOP, drawbox, overlay; and a cropped and trimmed copy of
another), found as leaks of their original, nothing else paired; determinism over worker counts, resume after
kill -9, undecodable clips recorded."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from vmae.cli.data import data
from vmae.curation import temporal_signature
from vmae.curation.buckets import meeting, same_bucket, sort_by_key
from vmae.curation.dedup import DUPLICATE, EVAL_LEAK, DedupConfig, dedup, is_duplicate, read_exclusions
from vmae.curation.fingerprint import (CROP_AT, FingerprintConfig, border_box, fingerprint, motion_batches,
                                      ok_rows, pdq_hashes, pick_frames, read_signatures)
from vmae.errors import ConfigError, VmaeError
from vmae.executors import ExecutorConfig
from vmae.manifests import empty_manifest, read_manifest, write_manifest
from vmae.shards.writer import ShardConfig, write_shards

SIZE = "192x144"
SCENES = {  # four unrelated generated scenes, 4 s at 25 fps, each with motion
    "mandel": f"mandelbrot=s={SIZE}:r=25:start_x=-0.7436:start_y=0.1318:start_scale=0.05:end_scale=0.01:"
              "end_pts=200,hue=h=40[bg];testsrc2=s=48x36:r=25[fg];[bg][fg]overlay=x='20+10*t':y=30",
    "life": f"life=s=48x36:r=8:ratio=0.4:seed=7:mold=20:life_color=#e04020:death_color=#203080,"
            f"scale={SIZE}:flags=neighbor,fps=25",
    "cells": f"cellauto=s=64x48:r=12:rule=110:random_fill_ratio=0.5:random_seed=3,scale={SIZE}:flags=neighbor,"
             "fps=25,format=rgb24,colorchannelmixer=rr=0.9:gg=0.5:bb=0.2",
    "fractal": f"sierpinski=s={SIZE}:r=25:seed=11:jump=30:type=carpet,hue=h=200:s=3",
}
EDITS = {  # ffmpeg arguments that make an edited copy of "mandel" ({src})
    "scale": ["-i", "{src}", "-vf", "scale=96:72"],
    "crop": ["-i", "{src}", "-vf", "crop=188:140:2:2"],
    "pad": ["-i", "{src}", "-vf", "pad=192:200:0:28:color=black"],
    "trim": ["-ss", "1.0", "-i", "{src}"],
    "hflip": ["-i", "{src}", "-vf", "hflip"],
    "reencode": ["-i", "{src}", "-crf", "36", "-g", "100"],
    "drawbox": ["-i", "{src}", "-vf", "drawbox=x=8:y=8:w=40:h=24:color=red@0.9:t=fill"],
    "overlay": ["-i", "{src}", "-f", "lavfi", "-i", "testsrc=s=40x30:r=25", "-filter_complex",
                "[0:v][1:v]overlay=W-w-4:4:shortest=1"],
}


def _encode(args, path):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-an", str(path)], check=True)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup-clips")
    # "life" runs 8 s: its cropped and trimmed copy then holds enough motion codes (3.2 s each) for the index
    # to meet it.
    out = {name: _encode(["-filter_complex", graph, "-t", "8" if name == "life" else "4", "-g", "16"],
                         root / f"{name}.mp4")
           for name, graph in SCENES.items()}
    for kind, args in EDITS.items():
        out[f"copy_{kind}"] = _encode([a.format(src=out["mandel"]) for a in args], root / f"copy_{kind}.mp4")
    # PDQ's bits change with this crop; the motion signature finds the copy, at its lag.
    out["life_crop_trim"] = _encode(["-ss", "0.8", "-i", out["life"], "-vf", "crop=176:132:10:6"],
                                    root / "life_crop_trim.mp4")
    out["cells_small"] = _encode(["-i", out["cells"], "-vf", "scale=128:96", "-crf", "30"], root / "cells_small.mp4")
    bad = root / "broken.mp4"
    bad.write_bytes(open(out["life"], "rb").read()[:3000])
    out["broken"] = str(bad)
    return out


def _manifest(path, clips, names, source="train"):
    df = empty_manifest(len(names))
    df["key"], df["source"], df["status"] = names, source, "ok"
    df["path"] = [clips[n] for n in names]
    return write_manifest(df, path)


@pytest.fixture(scope="module")
def sets(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup-sets")
    mix = ["cells", "fractal", "cells_small", "broken", "life_crop_trim"] + [f"copy_{k}" for k in EDITS]
    _manifest(root / "train.parquet", clips, mix)
    _manifest(root / "eval.parquet", clips, ["mandel", "life"], source="k400")
    for name in ("train", "eval"):
        fingerprint(root / f"{name}.parquet", root / f"{name}-fp.parquet", progress=False)
    return root


def test_edited_copies_are_leaks_and_nothing_else_pairs(sets):
    report = dedup(sets / "train-fp.parquet", sets / "dups", [sets / "eval-fp.parquet"], plot=True)
    pairs = pd.read_parquet(sets / "dups" / "pairs.parquet")
    leaks = pairs[pairs["reason"] == EVAL_LEAK]
    assert set(leaks["key_a"]) == {f"copy_{k}" for k in EDITS} | {"life_crop_trim"}
    assert set(leaks["key_b"]) == {"mandel", "life"}
    assert bool(leaks.loc[leaks["key_a"] == "copy_hflip", "mirrored"].iloc[0])
    dups = pairs[pairs["reason"] == DUPLICATE]
    # The shrunk re-encode is dropped, the original kept; copies of one clip also pair among themselves.
    assert ("cells_small", "cells") in set(zip(dups["key_a"], dups["key_b"]))
    unrelated = {"fractal"}
    assert not (set(pairs["key_a"]) | set(pairs["key_b"])) & unrelated
    assert not any({a, b} & {"cells", "cells_small"} and not {a, b} <= {"cells", "cells_small"}
                   for a, b in zip(pairs["key_a"], pairs["key_b"]))
    clips = len(EDITS) + 1
    assert report.leakage["eval"] == {"videos": 2, "of": 2, "clips": clips, "by_source": {"train": clips}}
    text = "\n".join(report.lines())
    assert "leakage eval: 2 of its 2 videos (100.00%) appear in the pretraining set" in text
    assert "train: 1 clips without fingerprint (decode-error 1)" in text
    assert (sets / "dups" / "pairs.png").stat().st_size > 10_000
    assert {"key_a", "key_b", "set_a", "set_b", "distance", "matched_a", "matched_b"} <= set(pairs.columns)
    # The cropped and trimmed copy is found by its motion signature, 0.8 s later in the original.
    crop_trim = leaks[leaks["key_a"] == "life_crop_trim"].iloc[0]
    assert crop_trim["motion"] >= DedupConfig().motion_threshold
    assert abs(crop_trim["lag"] - 0.8) <= temporal_signature.STEP + 1e-6


def test_motion_signature_is_what_finds_the_cropped_trimmed_copy(sets, tmp_path):
    dedup(sets / "train-fp.parquet", tmp_path, [sets / "eval-fp.parquet"], DedupConfig(motion_threshold=1.0))
    found = set(pd.read_parquet(tmp_path / "pairs.parquet")["key_a"])
    assert "life_crop_trim" not in found and "copy_scale" in found


def test_tables_written_before_motion_and_crops_are_matched_by_pdq_alone(sets, tmp_path):
    for name in ("train", "eval"):
        table = pq.read_table(sets / f"{name}-fp.parquet")
        pq.write_table(table.drop_columns(["motion", "crops", "motion_shifted"]), tmp_path / f"{name}-old.parquet")
    dedup(tmp_path / "train-old.parquet", tmp_path / "dups", [tmp_path / "eval-old.parquet"])
    found = set(pd.read_parquet(tmp_path / "dups" / "pairs.parquet")["key_a"])
    assert "copy_scale" in found and "life_crop_trim" not in found and "fractal" not in found


def test_crop_windows_of_the_reference_find_a_copy_cropped_past_pdq(clips, tmp_path):
    """A copy that keeps 92 % of each side: its frames' PDQ bits no longer match the whole frames of the
    original, but they match the original's crop windows (fingerprint --crops on the evaluation set)."""
    paths = {"mandel": clips["mandel"], "fractal": clips["fractal"],
             "crop8": _encode(["-i", clips["mandel"], "-vf", "crop=176:132:16:12"], tmp_path / "crop8.mp4")}
    train = _manifest(tmp_path / "train.parquet", paths, ["crop8", "fractal"])
    fingerprint(train, tmp_path / "train-fp.parquet", progress=False)
    evals = _manifest(tmp_path / "eval.parquet", paths, ["mandel"], source="k400")
    pdq_only = DedupConfig(motion_threshold=1.0)
    found = {}
    for crops in (False, True):
        table = tmp_path / f"eval-{crops}.parquet"
        fingerprint(evals, table, cfg=FingerprintConfig(crops=crops), progress=False)
        row = pq.read_table(table).to_pylist()[0]
        assert len(row["crops"]) == (len(row["hashes"]) * len(CROP_AT) if crops else 0)
        dedup(tmp_path / "train-fp.parquet", tmp_path / f"dups-{crops}", [table], pdq_only)
        found[crops] = set(pd.read_parquet(tmp_path / f"dups-{crops}" / "pairs.parquet")["key_a"])
    assert found == {False: set(), True: {"crop8"}}
    result = CliRunner().invoke(data, ["fingerprint", str(evals), "--out", str(tmp_path / "cli.parquet"), "--crops",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "cli.parquet").column("crops").to_pylist() == \
        pq.read_table(tmp_path / "eval-True.parquet").column("crops").to_pylist()


def test_more_crop_scales_find_a_copy_cropped_past_the_default_windows(clips, tmp_path):
    """A copy that keeps 86 % of each side, at a corner: too far from the default 92 % windows for PDQ, close
    to an 86 % one (--crop-scales). Two reference sets with different windows per frame are read in one run."""
    paths = {"mandel": clips["mandel"], "cells": clips["cells"], "fractal": clips["fractal"],
             "crop14": _encode(["-i", clips["mandel"], "-vf", "crop=166:124:0:0"], tmp_path / "crop14.mp4")}
    train = _manifest(tmp_path / "train.parquet", paths, ["crop14", "fractal"])
    fingerprint(train, tmp_path / "train-fp.parquet", progress=False)
    pdq_only = DedupConfig(motion_threshold=1.0)
    tables = {}
    for scales in ((0.92,), (0.86, 0.92)):
        evals = _manifest(tmp_path / f"eval-{len(scales)}.parquet", paths, ["mandel", "cells"], source="k400")
        tables[scales] = tmp_path / f"eval-{len(scales)}-fp.parquet"
        fingerprint(evals, tables[scales], cfg=FingerprintConfig(crops=True, crop_scales=scales), progress=False)
        row = pq.read_table(tables[scales]).to_pylist()[0]
        assert len(row["crops"]) == len(row["hashes"]) * len(CROP_AT) * len(scales)
    found = {}
    for name, against in (("default", [tables[(0.92,)]]), ("both", list(tables.values()))):
        dedup(tmp_path / "train-fp.parquet", tmp_path / name, against, pdq_only, progress=False)
        pairs = pd.read_parquet(tmp_path / name / "pairs.parquet")
        found[name] = sorted(zip(pairs["key_a"], pairs["set_b"]))
    assert found == {"default": [], "both": [("crop14", "eval-2")]}
    cli = ["fingerprint", str(tmp_path / "eval-2.parquet"), "--out", str(tmp_path / "cli.parquet"), "--crops",
           "--no-progress"]
    result = CliRunner().invoke(data, cli + ["--crop-scales", "0.86,0.92"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "cli.parquet").column("crops").to_pylist() == \
        pq.read_table(tables[(0.86, 0.92)]).column("crops").to_pylist()
    for bad, says in (("0.9;0.8", "numbers separated by commas"), ("0.9,1.2", "must lie in [0.5, 1)")):
        result = CliRunner().invoke(data, cli + ["--crop-scales", bad])
        assert result.exit_code != 0 and says in result.output, result.output
    result = CliRunner().invoke(data, [a for a in cli if a != "--crops"] + ["--crop-scales", "0.9"])
    assert result.exit_code == 2 and "add --crops" in result.output, result.output
    # --dense is DENSE's settings; an option given with it wins.
    dense = tmp_path / "dense.parquet"
    result = CliRunner().invoke(data, cli[:3] + [str(dense), "--dense", "--crop-scales", "0.86,0.92",
                                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    row = pq.read_table(dense).to_pylist()[0]
    default_every = pq.read_table(tables[(0.86, 0.92)]).to_pylist()[0]
    assert len(row["hashes"]) // 32 == len(row["times"]) > len(default_every["times"])
    assert len(row["crops"]) == len(row["hashes"]) * len(CROP_AT) * 2
    assert len(row["motion_shifted"]) == 3 * len(row["motion"]) > 0 == len(default_every["motion_shifted"])


def _sliding_square(path, seed):
    """12 s at 15 fps of a blue square sliding down at 1 px a frame over dim noise, 64 px (the demo's kind of
    clip; the seed picks noise and start)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((180, 64, 64, 3), np.uint8)
    frames[:] = np.array([20, 30, 76], np.uint8) + rng.integers(0, 20, size=(64, 64, 3), dtype=np.uint8)
    x, y = rng.integers(8, 40, size=2)
    for i, frame in enumerate(frames):
        top = (y + i) % 48
        frame[top:top + 16, x:x + 16] = (60, 90, 230)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x64", "-r", "15",
                    "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
                   input=frames.tobytes(), check=True)
    return str(path)


def test_clips_that_only_move_alike_are_not_duplicates(tmp_path):
    paths = {name: _sliding_square(tmp_path / f"{name}.mp4", seed) for name, seed in (("one", 10), ("two", 14))}
    tables = []
    for name in paths:
        tables.append(tmp_path / f"{name}-fp.parquet")
        fingerprint(_manifest(tmp_path / f"{name}.parquet", paths, [name], source=name), tables[-1],
                    set_name=name, progress=False)
    # Their motion signatures correlate as a copy's would; no frame of one is near a frame of the other.
    signatures = read_signatures([(path, None) for path in tables], np.array([0, 1]))
    assert temporal_signature.correlate([signatures[0]], [signatures[1]])[0][0] >= DedupConfig().motion_threshold
    dedup(tables[0], tmp_path / "dups", [tables[1]])
    assert len(pd.read_parquet(tmp_path / "dups" / "pairs.parquet")) == 0


def test_motion_signature_lines_up_a_trimmed_copy_and_ignores_a_mirror():
    rng = np.random.default_rng(0)
    level = temporal_signature.LEVEL
    a = rng.normal(0, level, (60, temporal_signature.CHANNELS)).clip(-127, 127).astype(np.int8)
    copy = (a[7:50] + rng.normal(0, 0.3 * level, (43, temporal_signature.CHANNELS))).clip(-127, 127).astype(np.int8)
    other = rng.normal(0, level, (60, temporal_signature.CHANNELS)).clip(-127, 127).astype(np.int8)
    score, lag = temporal_signature.correlate([a, a, copy], [copy, other, a])
    assert score[0] > 0.9 and lag[0] == -7 and score[2] > 0.9 and lag[2] == 7
    assert score[1] < 0.5
    short = a[:temporal_signature.MIN_STEPS - 1]
    assert temporal_signature.correlate([short], [short])[0][0] == -1      # under 2 s of overlap: no match
    thumbs = rng.integers(0, 256, (5, 48, 32), dtype=np.uint8)
    chroma = thumbs[:, 32:].reshape(5, 2, 16, 16)[..., ::-1].reshape(5, 16, 32)   # U and V planes, mirrored
    mirrored = np.concatenate([thumbs[:, :32, ::-1], chroma], axis=1)
    assert np.allclose(temporal_signature.frame_statistics(thumbs, (0, 0, 0, 0), 128),
                       temporal_signature.frame_statistics(mirrored, (0, 0, 0, 0), 128), atol=1e-3)


def test_motion_index_meets_noisy_trimmed_copies_by_the_signs_of_spans():
    rng, level, ts = np.random.default_rng(0), temporal_signature.LEVEL, temporal_signature
    a = rng.normal(0, level, (40, ts.CHANNELS)).clip(-127, 127).astype(np.int8)
    _, _, _, code = ts.codes(ts.spans(a), np.array([0]), np.array([len(a)]))
    window = a[1:1 + ts.SPAN].astype(int).sum(axis=0)   # span 1 of the first code: its bits 8-15
    assert np.array_equal((code[0, 0] >> np.arange(8, 16, dtype=np.uint64)) & np.uint64(1), window > 0)
    for table in range(ts.TABLES):   # a key's bits come from spans that share no step
        span = ts.key_bits(table) // 64 * ts.WINDOW + ts.key_bits(table) % 64 // ts.CHANNELS
        assert np.all(np.diff(np.unique(span)) % ts.SPAN == 0)

    def motion(steps):  # changes that last about 4 steps, as real motion is smoother than what an edit adds
        raw = rng.normal(0, level / 2, (steps + 3, ts.CHANNELS))
        return (raw[:-3] + raw[1:-2] + raw[2:-1] + raw[3:]).clip(-127, 127).astype(np.int8)

    met, unrelated = 0, 0
    for _ in range(20):   # copies that keep 75 % of the signs of their steps
        a, other = motion(60), motion(60)
        copy = (a[5:45] + rng.normal(0, level, (40, ts.CHANNELS))).clip(-127, 127).astype(np.int8)
        pairs, _ = ts.candidate_pairs([(np.arange(3), np.concatenate([copy, a, other]), np.array([40, 60, 60]))],
                                      np.array([0, 1, 0], np.int8), 512)
        met += 1 in pairs.tolist()   # clips 0 and 1: (0 << 32) | 1
        unrelated += len(pairs) - (1 in pairs.tolist())
    assert met >= 6 and unrelated == 0   # 8 here; keyed by the signs of single steps (SPAN 1): none


def test_shifted_signatures_line_up_a_copy_trimmed_between_two_steps():
    """motion_phases: a copy trimmed by half a step samples the original's shifted grid; the index meets it
    through the reference's shifted signature (same clip id), whatever its first signature holds."""
    rng, ts = np.random.default_rng(0), temporal_signature
    times = np.arange(0, 12, 0.05)
    thumbs = np.full((len(times), ts.THUMB * 3 // 2, ts.THUMB), 128.0)
    for lo, hi, size in ((0, 16, 6), (16, 32, 6), (32, 36, 4), (36, 40, 4), (40, 44, 4), (44, 48, 4)):
        thumbs[:, lo:hi] = (128 + size * rng.normal(0, 1, len(times)).cumsum())[:, None, None]
    thumbs = thumbs.clip(0, 255).astype(np.uint8)
    full = ts.signatures(times, thumbs, (0, 0, 0, 0), 128, phases=2)
    copy = ts.signatures(times[2:] - times[2], thumbs[2:], (0, 0, 0, 0), 128)[0]   # trimmed by 0.1 s
    assert full.shape == (2, len(copy), ts.CHANNELS)
    agree = [((ts.spans(copy)[:50] > 0) == (ts.spans(phase)[:50] > 0)).mean() for phase in full]
    assert agree[1] == 1.0 and agree[0] < 0.9
    other = rng.normal(0, ts.LEVEL, full[0].shape).clip(-127, 127).astype(np.int8)
    noisy = (copy + rng.normal(0, 0.5 * ts.LEVEL, copy.shape)).clip(-127, 127).astype(np.int8)
    for signatures, ids, found in (([noisy, other], [0, 1], []), ([noisy, other, full[1]], [0, 1, 1], [1])):
        batch = (np.array(ids), np.concatenate(signatures), np.array([len(x) for x in signatures]))
        assert ts.candidate_pairs([batch], np.array([0, 1], np.int8), 512)[0].tolist() == found


def test_motion_index_reads_the_shifted_signatures_of_the_reference_side_only(sets, tmp_path):
    """fingerprint --motion-phases 3: two more signatures per clip, as long as the first; the motion index gets
    them as signatures of the same clip ids, for the reference tables only."""
    table = tmp_path / "eval3.parquet"
    fingerprint(sets / "eval.parquet", table, cfg=FingerprintConfig(motion_phases=3), progress=False)
    train = sets / "train-fp.parquet"
    before = int(ok_rows(pq.read_table(train, columns=["status"])).sum())
    steps = [len(m) // temporal_signature.CHANNELS for m in pq.read_table(table).column("motion").to_pylist()]
    batches = list(motion_batches([(train, 0), (table, 1)]))
    ids, flat, count = (np.concatenate([b[k] for b in batches]) for k in range(3))
    assert ids[-4:].tolist() == [before, before, before + 1, before + 1]
    assert count[-4:].tolist() == [steps[0], steps[0], steps[1], steps[1]] and len(flat) == count.sum()
    assert len(list(motion_batches([(table, 0)]))) == 1   # on the pretraining side: the first signatures only
    broken = pq.read_table(table)
    shifted = broken.column("motion_shifted").to_pylist()
    broken = broken.set_column(broken.schema.get_field_index("motion_shifted"), "motion_shifted",
                               pa.array([shifted[0][:-8]] + shifted[1:], pa.binary()))
    pq.write_table(broken, tmp_path / "broken.parquet")
    with pytest.raises(VmaeError, match="fingerprint the set again"):
        list(motion_batches([(tmp_path / "broken.parquet", 1)]))


def test_motion_pairs_need_two_meetings_at_one_lag_or_one_close_meeting():
    meetings = np.array([[1, 0, 5], [1, 2, 7],     # lag 5 twice: confirmed
                         [2, 0, 5], [2, 4, 2],     # lags 5 and -2: chance
                         [3, 4, 4],                # once, but close
                         [4, 0, 3], [4, 2, 6],     # lags 3 and 4: within a step
                         [5, 1, 1]])               # once, not close
    single = temporal_signature.SINGLE_BITS
    distances = np.array([20, 20, 20, 20, single, 20, 20, single + 1])
    assert temporal_signature.confirmed(np.c_[meetings, distances]).tolist() == [1, 3, 4]
    assert temporal_signature.confirmed(np.array([[6, 0, 5, 20], [6, 0, 5, 20]])).tolist() == []  # 2 tables


def test_bucket_pairs_within_one_table_and_across_two_match_all_pairs():
    rng = np.random.default_rng(0)
    keys = [rng.integers(0, 40, n).astype(np.uint32) for n in (300, 200)]
    keys[1][:30] = 7   # one bucket of the second table past max_bucket
    (a, ea), (b, eb) = (sort_by_key([k], len(k)) for k in keys)
    within, skipped = same_bucket(a, 25)
    got = {(int(ea[i]), int(ea[j])) for at, later in within for i, j in zip(at, later)}
    sizes = np.bincount(keys[0], minlength=40)
    want = {(i, j) for i in range(300) for j in range(300) if i != j and keys[0][i] == keys[0][j]
            and sizes[keys[0][i]] <= 25}
    assert {tuple(sorted(p)) for p in got} == {tuple(sorted(p)) for p in want} and len(got) == len(want) // 2
    assert skipped == int((sizes > 25).sum())
    across, skipped = meeting(a, b, 25)
    got = {(int(ea[i]), int(eb[j])) for at, there in across for i, j in zip(at, there)}
    big = np.bincount(keys[1], minlength=40) > 25
    assert got == {(i, j) for i in range(300) for j in range(200) if keys[0][i] == keys[1][j] and not big[keys[1][j]]}
    assert skipped == int(big[np.unique(keys[0])].sum()) == 1


def test_undecodable_clip_is_a_recorded_status(sets):
    fp = pd.read_parquet(sets / "train-fp.parquet").set_index("key")
    assert fp.loc["broken", "status"] == "decode-error" and "broken.mp4" in fp.loc["broken", "error"]
    assert (fp.drop(index="broken")["status"] == "ok").all()
    assert all(len(h) >= 4 for h in fp.drop(index="broken")["hashes"])


def test_exclude_drops_the_pretraining_side_in_mix_and_shard(sets, tmp_path):
    exclusions = read_exclusions(sets / "dups" / "pairs.parquet")
    assert exclusions["copy_crop"][0] == EVAL_LEAK and exclusions["cells_small"][0] == DUPLICATE
    assert "mandel" not in exclusions and "cells" not in exclusions
    runner = CliRunner()
    result = runner.invoke(data, ["mix", "unlabeled-hybrid", "--webvid", str(sets / "train.parquet"),
                                  "--out", str(tmp_path / "mix.parquet"),
                                  "--exclude", str(sets / "dups" / "pairs.parquet")])
    assert result.exit_code == 0, result.output
    assert f"dropped by --exclude: 1 {DUPLICATE}, {len(EDITS) + 1} {EVAL_LEAK}" in result.output
    kept = set(read_manifest(tmp_path / "mix.parquet")["key"])
    assert kept == {"cells", "fractal", "broken"}
    rejects = pd.read_csv(tmp_path / "mix.rejects.csv")
    assert set(rejects["reason"]) == {EVAL_LEAK, DUPLICATE}
    result = runner.invoke(data, ["shard", "unlabeled-hybrid", "--manifest", str(sets / "train.parquet"),
                                  "--out", str(tmp_path / "shards"), "--no-progress",
                                  "--exclude", str(sets / "dups" / "pairs.parquet")])
    assert result.exit_code == 0, result.output
    skipped = pq.read_table(tmp_path / "shards" / "skipped.parquet").to_pandas().set_index("key")
    assert skipped.loc["copy_trim", "reason"] == EVAL_LEAK and "eval/mandel" in skipped.loc["copy_trim", "error"]
    assert skipped.loc["cells_small", "reason"] == DUPLICATE


def test_fingerprints_from_shards_equal_those_from_files(sets, tmp_path):
    write_shards(sets / "eval.parquet", tmp_path / "shards", ShardConfig(max_count=1), progress=False)
    fingerprint(tmp_path / "shards", tmp_path / "fp.parquet", progress=False)
    from_shards = pd.read_parquet(tmp_path / "fp.parquet").set_index("key").sort_index()
    from_files = pd.read_parquet(sets / "eval-fp.parquet").set_index("key").sort_index()
    assert list(from_shards["hashes"].map(list)) == list(from_files["hashes"].map(list))
    assert list(from_shards["source"]) == ["k400", "k400"] and set(from_shards["set"]) == {"shards"}


def test_same_result_with_any_worker_count(sets, tmp_path):
    one = fingerprint(sets / "train.parquet", tmp_path / "one.parquet", cfg=FingerprintConfig(rows_per_unit=3),
                      progress=False)
    two = fingerprint(sets / "train.parquet", tmp_path / "two.parquet", cfg=FingerprintConfig(rows_per_unit=3),
                      executor=ExecutorConfig(workers=2), progress=False)
    assert one.complete and two.complete and two.units_run == 5
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(sets / "train-fp.parquet"))


def test_slurm_slices_complete_the_same_table(sets, tmp_path):
    cfg = FingerprintConfig(rows_per_unit=3)
    first = fingerprint(sets / "train.parquet", tmp_path / "fp.parquet", cfg=cfg,
                        executor=ExecutorConfig(unit_index=0, num_units=2), progress=False)
    assert not first.complete and first.units_run == 3 and not (tmp_path / "fp.parquet").exists()
    second = fingerprint(sets / "train.parquet", tmp_path / "fp.parquet", cfg=cfg,
                         executor=ExecutorConfig(unit_index=1, num_units=2), progress=False)
    assert second.complete and second.units_run == 2
    assert pq.read_table(tmp_path / "fp.parquet").equals(pq.read_table(sets / "train-fp.parquet"))


def test_resume_after_kill(sets, tmp_path):
    out = tmp_path / "fp.parquet"
    cmd = [os.path.join(os.path.dirname(sys.executable), "vmae-data"), "fingerprint", str(sets / "train.parquet"),
           "--out", str(out), "--rows-per-unit", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    units = tmp_path / ".fp.parquet.units"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(units.glob("unit-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(units.glob("unit-*.parquet")))
    assert 2 <= done < 13 and not out.exists()
    result = CliRunner().invoke(data, ["fingerprint", str(sets / "train.parquet"), "--out", str(out),
                                       "--rows-per-unit", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"skipped {done} already done" in result.output
    assert pq.read_table(out).equals(pq.read_table(sets / "train-fp.parquet"))
    # A unit written before a column existed is redone: the units then concatenate into one table.
    old = sorted(units.glob("unit-*.parquet"))[0]
    pq.write_table(pq.read_table(old).drop_columns(["motion_shifted"]), old)
    result = CliRunner().invoke(data, ["fingerprint", str(sets / "train.parquet"), "--out", str(out),
                                       "--rows-per-unit", "1", "--no-progress"])
    assert result.exit_code == 0 and "ran 1, skipped" in result.output, result.output
    assert pq.read_table(out).equals(pq.read_table(sets / "train-fp.parquet"))


def test_dedup_cli_and_set_names(sets, tmp_path):
    table = pq.read_table(sets / "eval-fp.parquet")   # the same clips again, as a second evaluation set
    renamed = table.set_column(table.schema.get_field_index("set"), "set", pa.array(["val2"] * len(table)))
    pq.write_table(renamed.replace_schema_metadata(table.schema.metadata), tmp_path / "val2-fp.parquet")
    for against in (["--against", str(sets / "eval-fp.parquet"), str(tmp_path / "val2-fp.parquet")],
                    ["--against", str(sets / "eval-fp.parquet"), "--against", str(tmp_path / "val2-fp.parquet")]):
        result = CliRunner().invoke(data, ["dedup", "--fingerprints", str(sets / "train-fp.parquet"), *against,
                                           "--out", str(tmp_path / "dups")])
        assert result.exit_code == 0, result.output
        assert "leakage eval: 2 of its 2 videos" in result.output
        assert "leakage val2: 2 of its 2 videos" in result.output
    with pytest.raises(ConfigError, match="set name 'train'"):
        dedup(sets / "train-fp.parquet", tmp_path / "x", [sets / "train-fp.parquet"])


def test_dedup_progress_goes_to_stderr_and_only_when_asked(sets, tmp_path, capsys):
    for progress in (True, False):
        dedup(sets / "train-fp.parquet", tmp_path / "dups", [sets / "eval-fp.parquet"], progress=progress)
        err = capsys.readouterr().err
        assert ("dedup: verifying" in err) == progress and ("dedup: motion index" in err) == progress


def test_pick_frames_spreads_exact_times():
    times = np.arange(250) / 25.0                       # 10 s at 25 fps
    picks = pick_frames(times, FingerprintConfig(every=1.0))
    assert np.all(np.abs(times[picks] - (np.arange(10) + 0.5)) <= 0.5 / 25 + 1e-9)
    assert len(pick_frames(times, FingerprintConfig())) == 16                 # every 0.5 s, at most 16
    assert len(pick_frames(times[:25], FingerprintConfig())) == 4             # 1 s: min_frames
    assert len(pick_frames(times[:3], FingerprintConfig())) == 3              # never more than the clip has


def test_border_box_and_mirror_hash():
    import pdqhash
    from PIL import Image
    rng = np.random.default_rng(0)
    content = rng.integers(0, 255, (3, 96, 128), dtype=np.uint8)
    boxed = np.full((3, 128, 128), 7, np.uint8)
    boxed[:, 16:112] = content
    assert border_box(boxed) == (16, 16, 0, 0)
    assert border_box(content) == (0, 0, 0, 0)
    hashes, mirrors, quality = pdq_hashes(content, (0, 0, 0, 0))
    flipped, flipped_mirrors, _ = pdq_hashes(np.ascontiguousarray(content[:, :, ::-1]), (0, 0, 0, 0))
    assert np.array_equal(mirrors, flipped) and np.array_equal(flipped_mirrors, hashes)
    assert np.array_equal(np.unpackbits(hashes[0]), pdqhash.compute(np.repeat(
        np.asarray(Image.fromarray(content[0]).resize((64, 64), Image.Resampling.BOX))[:, :, None], 3, axis=2))[0])
    assert np.array_equal(pdq_hashes(boxed, border_box(boxed))[0], hashes)


def test_clip_rule():
    cfg = DedupConfig(coverage=0.5, min_frames=2)
    # a trimmed copy: all 4 of its frames match, 4 of the original's 10
    assert is_duplicate(np.array([4]), np.array([4]), np.array([4]), np.array([10]), cfg)[0]
    # one similar frame (a title card) is not enough, even for a short clip
    assert not is_duplicate(np.array([1]), np.array([2]), np.array([1]), np.array([10]), cfg)[0]
    assert not is_duplicate(np.array([3]), np.array([10]), np.array([3]), np.array([10]), cfg)[0]
