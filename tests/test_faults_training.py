"""Training faults of issue 11, each a real one: empty, truncated and damaged checkpoints, a reused run folder,
checkpoints that cannot be read, two processes started into one run folder, a full disk, a wrong --model and
labels outside --num-classes. Every error is one message naming the file and the fix, never a traceback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from disk import SmallDisk
from finetune_data import labeled_shards
from pretrain_data import make_shards, ramp_frames
from videos import write_video

from vmae.errors import FolderInUseError
from vmae.executors import ExecutorConfig
from vmae.manifests import conform
from vmae.shards.writer import ShardConfig, write_shards
from vmae.training import run_folder
from vmae.training.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint_file, prune,
                                      save_checkpoint)
from vmae.cli.train import train

VMAE_TRAIN = str(Path(sys.executable).parent / "vmae-train")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((256,), float(step))}}


def damaged_copies(good, folder):
    """An empty, a half and a nearly complete copy of checkpoint file `good` (a full disk or a killed copy)."""
    data = good.read_bytes()
    copies = {"empty": b"", "half": data[:len(data) // 2], "tail": data[:-10]}
    for name, content in copies.items():
        (folder / f"{name}.pth").write_bytes(content)
    return {name: folder / f"{name}.pth" for name in copies}


def test_unreadable_checkpoints_are_errors_that_name_the_file(tmp_path):
    good = save_checkpoint(tmp_path, 1, state(1))
    copies = damaged_copies(good, tmp_path)
    with pytest.raises(CheckpointError, match=r"empty.pth: it is empty \(0 bytes\).*--resume auto"):
        load_checkpoint_file(copies["empty"])
    for name in ("half", "tail"):
        with pytest.raises(CheckpointError, match=rf"cannot load .*{name}.pth: it is truncated"):
            load_checkpoint_file(copies[name])
    assert load_checkpoint_file(good)["step"] == 1


def test_pruning_keeps_the_newest_readable_checkpoints(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, state(step))
    # a truncated step 3 (a full disk), and a later step 9 left by a timeline this run resumed before
    data = (tmp_path / "checkpoint-00000002.pth").read_bytes()
    (tmp_path / "checkpoint-00000003.pth").write_bytes(data[:100])
    (tmp_path / "checkpoint-00000009.pth").write_bytes(data)
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000009.pth"
    (tmp_path / "checkpoint-00000009.pth").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000002.pth"
    deleted = prune(tmp_path, keep=1, step=3)
    assert sorted(p.name for p in deleted) == ["checkpoint-00000001.pth", "checkpoint-00000003.pth"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-00000002.pth",
                                                                      "checkpoint-00000009.pth"]


def test_a_folder_with_a_run_is_refused_without_resume(tmp_path):
    assert run_folder.pick_resume(None, tmp_path / "new") is None
    assert run_folder.pick_resume("auto", tmp_path / "new") is None
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(FolderInUseError, match=r"holds a run \(log.jsonl\).*--resume auto.*new --output-dir"):
        run_folder.pick_resume(None, tmp_path)
    assert run_folder.pick_resume("auto", tmp_path) is None  # a run that never saved starts over


def test_resume_auto_refuses_when_no_checkpoint_can_be_read(tmp_path):
    good = save_checkpoint(tmp_path, 4, state(4))
    data = good.read_bytes()
    (tmp_path / "checkpoint-00000008.pth").write_bytes(data[:len(data) // 3])
    assert run_folder.pick_resume("auto", tmp_path) == good
    good.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"none of the 2 checkpoint\(s\) .* can be read: "
                                              r"checkpoint-00000008.pth is truncated.*checkpoint-00000004.pth is "
                                              r"empty.*Restore a good copy"):
        run_folder.pick_resume("auto", tmp_path)


def test_rewind_keeps_the_log_up_to_the_start_step_and_sets_later_checkpoints_aside(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, state(step))
    (tmp_path / "log.jsonl").write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 7))
                                        + '{"step": 7, "lo')  # cut short by a kill
    moved = run_folder.rewind(tmp_path, 4)
    assert [p.name for p in moved] == ["checkpoint-00000006.pth.set-aside"]
    assert load_checkpoint_file(moved[0])["step"] == 6  # renamed, not lost
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000004.pth"
    assert (tmp_path / "log.jsonl").read_text().splitlines()[-1] == '{"step": 4, "loss": 1.0}'


# ------------------------------------------------------------------------------------ the commands themselves

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("faults-pt"), videos=8)


def pretrain_args(shards, run, max_steps, keep_last=3, epochs=1, *more):
    """A tiny pretraining run: 8 videos / batch 2 = 4 steps per epoch, a checkpoint after every step."""
    return ["pretrain", "--shards", shards, "--output-dir", str(run), "--model", "pretrain_videomae_test",
            "--num-frames", "4", "--input-size", "64", "--batch-size", "2", "--num-sample", "2", "--workers", "0",
            "--device", "cpu", "--no-tensorboard", "--epochs", str(epochs), "--warmup-epochs", "0",
            "--log-every", "1", "--save-every-steps", "1", "--max-steps", str(max_steps), "--keep-last",
            str(keep_last), *more]


def invoke(args):
    result = CliRunner().invoke(train, args)
    assert "Traceback" not in result.output
    return result


def files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def logged_steps(run) -> list:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_pretrain_refuses_a_folder_that_holds_a_run_and_resumes_with_auto(shards, tmp_path):
    run = tmp_path / "run"
    assert invoke(pretrain_args(shards, run, 2, keep_last=1)).exit_code == 0
    before = files(run)
    assert sorted(before) == ["checkpoint-00000002.pth", "config.json", "log.jsonl"]
    again = invoke(pretrain_args(shards, run, 4, keep_last=1))
    assert again.exit_code == 1
    assert f"{run} holds a run (config.json, log.jsonl, 1 checkpoint(s) up to step 2)" in again.output
    assert "--resume auto" in again.output and "new --output-dir" in again.output
    assert files(run) == before  # nothing overwritten, nothing pruned, no lock left
    assert invoke(pretrain_args(shards, run, 4, 1, 1, "--resume", "auto")).exit_code == 0
    assert logged_steps(run) == [1, 2, 3, 4] and load_checkpoint_file(run / "checkpoint-00000004.pth")["step"] == 4


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_auto_refuses_unreadable_checkpoints_and_never_prunes_the_good_one(shards, tmp_path):
    run = tmp_path / "run"
    assert invoke(pretrain_args(shards, run, 2, keep_last=2)).exit_code == 0
    good = (run / "checkpoint-00000001.pth").read_bytes()
    (run / "checkpoint-00000001.pth").write_bytes(b"")
    (run / "checkpoint-00000002.pth").write_bytes(good[:len(good) // 2])  # both lost to a full disk
    before = files(run)
    refused = invoke(pretrain_args(shards, run, 4, 1, 1, "--resume", "auto"))
    assert refused.exit_code == 1
    assert "none of the 2 checkpoint(s)" in refused.output and "checkpoint-00000002.pth is truncated" in \
        refused.output and "checkpoint-00000001.pth is empty" in refused.output
    assert files(run) == before  # no restart at step 0: the log is kept
    # a good step 1 back: the run goes on from it, the broken step 2 is set aside, and --keep-last 1 keeps
    # the new checkpoints (the broken one's step number no longer outranks them)
    (run / "checkpoint-00000001.pth").write_bytes(good)
    assert invoke(pretrain_args(shards, run, 3, 1, 1, "--resume", "auto")).exit_code == 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-00000002.pth.set-aside",
                                                                "checkpoint-00000003.pth"]
    assert load_checkpoint_file(run / "checkpoint-00000003.pth")["step"] == 3 and logged_steps(run) == [1, 2, 3]


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_of_an_empty_or_truncated_checkpoint_is_one_message(shards, tmp_path):
    good = save_checkpoint(tmp_path, 1, state(1))
    copies = damaged_copies(good, tmp_path)
    empty = invoke(pretrain_args(shards, tmp_path / "a", 2, 3, 1, "--resume", str(copies["empty"])))
    assert empty.exit_code == 1 and "Aborted" not in empty.output
    assert f"Error: cannot load {copies['empty']}: it is empty (0 bytes)" in empty.output
    for name in ("half", "tail"):
        result = invoke(pretrain_args(shards, tmp_path / name, 2, 3, 1, "--resume", str(copies[name])))
        assert result.exit_code == 1 and f"cannot load {copies[name]}: it is truncated" in result.output
    debug = CliRunner().invoke(train, ["--debug", *pretrain_args(shards, tmp_path / "d", 2, 3, 1, "--resume",
                                                                  str(copies["half"]))])
    assert isinstance(debug.exception, CheckpointError)  # --debug: the traceback, not the one line


def test_finetune_and_distill_refuse_a_folder_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"")  # never read: the folder is refused first
    for command in (["finetune"], ["distill", "--teacher", str(teacher), "--init", "none"]):
        result = invoke([*command, "--shards", str(tmp_path / "x-000000.tar"), "--output-dir", str(run),
                         "--model", "vit_test", "--device", "cpu"])
        assert result.exit_code == 1 and f"{run} holds a run (config.json)" in result.output, result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_an_output_folder_that_cannot_be_made_is_one_message(shards, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = invoke(pretrain_args(shards, tmp_path / "file" / "run", 2))
    assert result.exit_code == 1 and f"cannot write to {tmp_path / 'file' / 'run'}: a parent is not a folder" \
        in result.output
    assert "--resume auto" not in result.output  # nothing ran: no run to continue


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_owner_does_not_block(shards, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([VMAE_TRAIN, *pretrain_args(shards, run, 400, 2, 100)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: latest_checkpoint(run) is not None)  # the first process is writing its run
        second = invoke(pretrain_args(shards, run, 400, 2, 100, "--resume", "auto"))
        assert first.poll() is None, "the first run ended too early for this test"
        assert second.exit_code == 1 and f"{run} is in use by another run" in second.output
        assert f"held by pid {first.pid} on" in second.output
    finally:
        first.kill()  # preempted: its lock file stays behind with a pid that is gone
        first.wait()
    assert (run / ".lock").exists()
    resumed = latest_checkpoint(run)
    step = load_checkpoint_file(resumed)["step"]
    assert invoke(pretrain_args(shards, run, step + 1, 2, 100, "--resume", "auto")).exit_code == 0
    assert logged_steps(run) == list(range(1, step + 2))  # one run's log, no interleaved records
    assert load_checkpoint_file(run / f"checkpoint-{step + 1:08d}.pth")["step"] == step + 1
    assert not (run / ".lock").exists()


def file_size_limit(disk):
    """disk.preexec() for a Python child: with RLIMIT_FSIZE, a write past it is EFBIG instead of SIGXFSZ."""
    limit = disk.preexec()
    if limit is None:
        return None

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit()
    return preexec


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_message_and_keeps_the_last_checkpoint(shards, tmp_path):
    disk = SmallDisk(tmp_path / "disk", 16 * 2**20)
    try:
        run = disk.path / "run"
        first = subprocess.run([VMAE_TRAIN, *pretrain_args(shards, run, 1, 1)], env=ENV, capture_output=True,
                               text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]
        size = (run / "checkpoint-00000001.pth").stat().st_size
        disk.fill(size // 2)  # room for log lines, not for a checkpoint
        full = subprocess.run([VMAE_TRAIN, *pretrain_args(shards, run, 3, 1, 1, "--resume", "auto")], env=ENV,
                              capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit(disk))
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
        (message,) = [line.split("Error: ", 1)[1] for line in full.stderr.splitlines() if "Error: " in line]
        assert f"cannot write to {run}" in message and "free)" in message
        assert "no space left on device" in message or "file too large" in message  # tmpfs, or RLIMIT_FSIZE
        assert message.endswith("rerun with --resume auto: it goes on from checkpoint-00000001.pth, the newest "
                                "checkpoint kept")
        assert [p.name for p in run.iterdir() if ".tmp-" in p.name] == []
        assert load_checkpoint_file(run / "checkpoint-00000001.pth")["step"] == 1  # the last good one
        disk.free_up()
        done = subprocess.run([VMAE_TRAIN, *pretrain_args(shards, run, 3, 1, 1, "--resume", "auto")], env=ENV,
                              capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit(disk))
        assert done.returncode == 0, done.stderr[-2000:]
        assert logged_steps(run) == [1, 2, 3] and load_checkpoint_file(latest_checkpoint(run))["step"] == 3
    finally:
        disk.close()


def labeled_set(root, label_ids) -> str:
    """Labeled shards written by `vmae-data shard`'s writer (its shards.json counts samples per label id)."""
    rows = []
    for i, label in enumerate(label_ids):
        path = write_video(root / "clips" / f"c{i}.mp4", ramp_frames(12, seed=i))
        rows.append({"key": f"c{i}", "source": "k400", "video_id": f"c{i}", "path": str(path), "stride": 2,
                     "fps": 30.0, "frames": 12, "width": 80, "height": 64, "status": "ok", "label": f"class{label}",
                     "label_id": label, "split": "train"})
    report = write_shards(conform(pd.DataFrame(rows)), root / "shards", ShardConfig(labeled=True, max_count=2),
                          ExecutorConfig(workers=1), progress=False)
    assert report.complete
    return str(root / "shards")


def finetune_args(shards, run, num_classes, *more):
    return ["finetune", "--shards", shards, "--output-dir", str(run), "--model", "vit_test", "--num-classes",
            str(num_classes), "--num-frames", "4", "--input-size", "32", "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--no-tensorboard", "--randaug", "none", "--epochs", "1", "--warmup-epochs", "0",
            *more]


def test_a_wrong_model_or_labels_outside_the_head_stop_before_the_first_step(tmp_path):
    unknown = invoke(["pretrain", "--shards", "x.tar", "--output-dir", str(tmp_path / "a"), "--model",
                      "pretrain_videomae_bse_patch16_224"])
    assert unknown.exit_code == 2 and "did you mean pretrain_videomae_base_patch16_224?" in unknown.output
    kind = invoke(finetune_args("x.tar", tmp_path / "b", 3, "--model", "pretrain_videomae_base_patch16_224"))
    assert kind.exit_code == 2 and "pass --model vit_base_patch16_224" in kind.output

    shards = labeled_set(tmp_path / "data", [0, 1, 5, 2])
    assert json.loads(Path(shards, "shards.json").read_text())["totals"]["labels"] == {"0": 1, "1": 1, "2": 1,
                                                                                      "5": 1}
    for args in (finetune_args(shards, tmp_path / "run", 3),
                 finetune_args(str(tmp_path / "x-000000.tar"), tmp_path / "run", 3, "--val-shards", shards)):
        result = invoke(args)
        assert result.exit_code == 2 and "1 sample(s) have label ids outside 0..2 (ids 0..5)" in result.output
        assert "pass --num-classes 6 (or more)" in result.output
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.usefixtures("one_torch_thread")
def test_labels_outside_the_head_in_shards_without_a_label_record_stop_at_their_batch(tmp_path_factory, tmp_path):
    shards = labeled_shards(tmp_path_factory, "train", [12, 12], seed=1)  # colours 0..2, no label record
    result = invoke(finetune_args(shards, tmp_path / "run", 2, "--batch-size", "4"))
    assert result.exit_code == 1 and "have labels outside 0..1" in result.output
    assert "(label 2)" in result.output and "pass --num-classes 3 (or more)" in result.output
