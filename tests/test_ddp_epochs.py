"""Exact epochs under torchrun (2 processes, gloo, 2 loader workers each) over 3 shards of uneven size: every
epoch's sample records list every key once plus the logged padding, also when the run is killed with SIGKILL
mid-epoch and resumed with --resume auto."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pretrain_data import make_shards

from vmae.training.progress import record_path

KEYS = {f"v{i:03d}" for i in range(7)}


def command(shards, run, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
            str(Path(sys.executable).parent / "vmae-train"), "pretrain", "--shards", shards, "--output-dir",
            str(run), "--model", "pretrain_videomae_test", "--num-frames", "4", "--input-size", "64",
            "--batch-size", "1", "--num-sample", "1", "--workers", "2", "--device", "cpu", "--epochs", "4",
            "--warmup-epochs", "1", "--save-every-steps", "3", "--keep-last", "10", "--log-every", "1",
            "--record-samples", "--no-tensorboard", *extra]


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, recursively (torchrun starts its workers in sessions of their own)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # not a process, or one that just ended
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def epoch_keys(run, epoch):
    return Counter(k for rank in (0, 1) for k in record_path(run, epoch, rank).read_text().split())


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_every_epoch_shows_every_key_once(tmp_path):
    shards = make_shards(tmp_path / "data", videos=7, per_shard=3)  # shards of 3, 3 and 1 videos
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # 7 videos, 2 processes x batch 1: 8 slots per epoch (1 padding) = 4 steps; 16 steps in all
    killed = subprocess.Popen(command(shards, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.time() + 240
    while not (run / "checkpoint-00000006.pth").exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for pid in [killed.pid, *descendants(killed.pid)]:  # the whole job at once, as a lost node
        with contextlib.suppress(ProcessLookupError):  # a worker that ended between the listing and now
            os.kill(pid, signal.SIGKILL)
    assert killed.wait() != 0, killed.stderr.read()[-3000:]
    assert not (run / "checkpoint-00000016.pth").exists()
    # Resume from step 3, in the middle of epoch 0: what the killed run trained on after it must not count.
    for late in run.glob("checkpoint-*.pth"):
        if late.name != "checkpoint-00000003.pth":
            late.unlink()
    assert sum(1 for _ in record_path(run, 1, 0).open()) >= 1  # the killed run had reached epoch 1
    done = subprocess.run(command(shards, run, "--resume", "auto"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resumed from" in done.stderr and "checkpoint-00000003.pth" in done.stderr
    assert re.search(r"epoch 0: 7 samples, resumed with \d already spent", done.stderr)
    assert "epoch 1: 7 samples, 1 padding (repeats) -> 4 batches of 1 per rank on 2 rank(s)" in done.stderr
    for epoch in range(4):
        keys = epoch_keys(run, epoch)
        assert set(keys) == KEYS and sum(keys.values()) == 8, (epoch, keys)  # every key once, plus 1 padding
    assert not record_path(run, 4, 0).exists()
