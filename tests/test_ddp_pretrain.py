"""Two processes under torchrun (gloo on CPU) through the real command line: DDP keeps both replicas
bit-identical, the global batch and lr count both processes, each rank reads its own data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pretrain_data import make_shards

from vmae.training.checkpoint import load_checkpoint_file
from vmae.training.engine import weights_digest


@pytest.mark.slow
def test_two_process_gloo_run_keeps_replicas_identical(tmp_path):
    shards = make_shards(tmp_path / "data", videos=8)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
           str(Path(sys.executable).parent / "vmae-train"), "pretrain", "--shards", shards, "--output-dir", str(run),
           "--model", "pretrain_videomae_test", "--num-frames", "4", "--input-size", "64", "--batch-size", "2",
           "--num-sample", "2", "--accum-steps", "2", "--workers", "1", "--device", "cpu", "--epochs", "4",
           "--warmup-epochs", "1", "--base-lr", "0.2", "--save-every-steps", "2", "--log-every", "1",
           "--no-tensorboard"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # 8 videos / (2 per process x 2 processes) = 2 batches per process per epoch; accum 2 -> 1 step per epoch
    assert "global batch 16 clips = 2 videos x 2 views x 2 processes x 2 accumulation steps" in done.stderr
    ckpt = load_checkpoint_file(run / "checkpoint-00000004.pth")
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # each rank hashed its own weights at every save; both equal the saved model
    first, second = ckpt["replica_digests"]
    assert first == second == weights_digest(ckpt["model"])
    assert load_checkpoint_file(run / "checkpoint-00000002.pth")["replica_digests"][0] != first  # it trained
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # rank 0 alone writes the log
