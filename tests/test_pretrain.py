"""vmae-train pretrain end to end on real shards with a tiny model: learning, logs, checkpoints, resume,
corrupt clips, the command line."""
import json
import logging

import pytest
import torch
from click.testing import CliRunner
from pretrain_data import TINY, make_shards

from vmae.cli.train import train
from vmae.training.checkpoint import latest_checkpoint, load_checkpoint_file
from vmae.training.config import pretrain_config
from vmae.training.pretrain import pretrain
from vmae.training.progress import record_path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("pt"), videos=8)


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_tiny_pretraining_lowers_the_loss_and_writes_a_loadable_checkpoint(shards, tmp_path):
    run = tmp_path / "run"
    cfg = pretrain_config(shards=shards, output_dir=str(run), epochs=20, warmup_epochs=1, base_lr=0.2,
                          clip_grad=0, save_every_steps=50, keep_last=1, **TINY)
    report = pretrain(cfg)
    # 8 videos / batch 2 = 4 steps per epoch; global batch = 2 videos x 2 views; lr = 0.2 x 4 / 256
    assert report["steps"] == report["total_steps"] == 80 and report["global_batch"] == 4
    assert report["lr"] == pytest.approx(0.2 * 4 / 256)
    losses = [r["loss"] for r in read_log(run)]
    first, last = sum(losses[:8]) / 8, sum(losses[-16:]) / 16
    assert first > 0.9 and last < 0.75 * first, (first, last)
    records = read_log(run)
    assert [r["step"] for r in records] == list(range(1, 81))
    assert records[0]["lr"] == 0.0 and records[-1]["skipped"] == 0
    assert {"clips_per_s", "data_wait", "grad_norm", "epoch"} <= set(records[-1])
    # keep_last=1: only the final checkpoint survives; it loads with weights_only=True and official key names
    assert sorted(p.name for p in run.glob("checkpoint-*.pth")) == ["checkpoint-00000080.pth"]
    ckpt = load_checkpoint_file(run / "checkpoint-00000080.pth")
    assert ckpt["step"] == 80 and ckpt["epoch"] == 20 and ckpt["config"]["model"] == "pretrain_videomae_test"
    assert "mask_token" in ckpt["model"] and not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert {"optimizer", "scaler", "rng", "data"} <= set(ckpt)
    assert json.loads((run / "config.json").read_text())["base_lr"] == 0.2


def deterministic_cfg(shards, run, **overrides):
    # 8 videos / batch 2 = 4 batches per epoch; accum 2 -> 2 optimiser steps per epoch; 4 epochs = 8 steps.
    options = dict(TINY, shards=shards, output_dir=str(run), epochs=4, warmup_epochs=1, base_lr=0.2,
                   accum_steps=2, deterministic=True, save_every_steps=3, keep_last=5, record_samples=True)
    options.update(overrides)
    return pretrain_config(**options)


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(shards, tmp_path):
    straight = tmp_path / "straight"
    pretrain(deterministic_cfg(shards, straight))
    # The second run stops at step 5 (checkpoints 3 and 5); losing checkpoint 5 is a kill after step 5's
    # work but before its save: resume must continue from step 3, in the middle of epoch 2.
    broken = tmp_path / "broken"
    pretrain(deterministic_cfg(shards, broken, max_steps=5))
    (broken / "checkpoint-00000005.pth").unlink()
    assert latest_checkpoint(broken).name == "checkpoint-00000003.pth"
    report = pretrain(deterministic_cfg(shards, broken, resume="auto"))
    assert report["start_step"] == 3 and report["steps"] == 8
    a = load_checkpoint_file(straight / "checkpoint-00000008.pth")
    b = load_checkpoint_file(broken / "checkpoint-00000008.pth")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # the log reads as one run: the resumed steps replace the lost ones
    assert [r["step"] for r in read_log(broken)] == list(range(1, 9))
    assert [r["loss"] for r in read_log(broken)] == [r["loss"] for r in read_log(straight)]
    # so do the sample records: every epoch lists each video once, in the uninterrupted run's order
    for epoch in range(4):
        keys = record_path(broken, epoch, 0).read_text().split()
        assert keys == record_path(straight, epoch, 0).read_text().split()
        assert sorted(keys) == [f"v{i:03d}" for i in range(8)], epoch


def test_corrupt_clip_is_skipped_counted_and_logged(tmp_path, caplog):
    shards = make_shards(tmp_path / "bad", videos=5, corrupt=1, per_shard=3)
    run = tmp_path / "run"
    cfg = pretrain_config(**dict(TINY, shards=shards, output_dir=str(run), epochs=2, warmup_epochs=0,
                                 batch_size=1))
    with caplog.at_level(logging.WARNING):
        report = pretrain(cfg)
    # Every failed draw of the truncated clip v005 is logged with its key and shard and counted in the log
    # (one video per batch, no worker prefetch: each failure lands in the next batch's count).
    failures = [r for r in caplog.records if "skipping sample v005" in r.getMessage() and "uh-00000" in r.getMessage()]
    assert report["steps"] == 12 and len(failures) >= 1
    assert report["skipped"] == read_log(run)[-1]["skipped"] == len(failures)
    assert any(r.getMessage().startswith("rank 0: ") and "skipped for decode errors" in r.getMessage()
               for r in caplog.records)


def test_cli_prints_global_batch_and_lr_and_rejects_bad_options(shards, tmp_path):
    runner = CliRunner()
    result = runner.invoke(train, ["pretrain", "--shards", shards, "--output-dir", str(tmp_path / "cli"),
                                   "--model", "pretrain_videomae_test", "--num-frames", "4", "--input-size", "64",
                                   "--batch-size", "2", "--num-sample", "2", "--accum-steps", "2", "--workers", "0",
                                   "--device", "cpu", "--max-steps", "2", "--no-tensorboard", "--clip-grad", "0"])
    assert result.exit_code == 0, result.output
    assert "global batch 8 clips" in result.output and f"lr {2.5e-4 * 8 / 256:.4g}" in result.output
    assert load_checkpoint_file(tmp_path / "cli" / "checkpoint-00000002.pth")["config"]["clip_grad"] is None
    bad = runner.invoke(train, ["pretrain", "--shards", shards, "--output-dir", str(tmp_path / "x"),
                                "--decoder-mask-ratio", "0.3"])
    assert bad.exit_code == 2 and "decoder_mask_ratio" in bad.output
    helptext = runner.invoke(train, ["pretrain", "--help"]).output
    assert "1200e" in helptext and "num_sample" in helptext
