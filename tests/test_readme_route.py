"""The README's route, run literally at tiny size: a README edit that breaks a step of it fails here.

The commands come from the README's fenced block after the route marker. The inputs are the demo's generated
videos and annotation files, laid out under `downloads/` with the official file names the README uses; the
"YouTube" videos are served on 127.0.0.1. Tiny-size options are appended to each command (click keeps the last
value of an option), so the command text itself is what a user pastes.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from http_server import Server
from vmae.manifests.schema import mixture_source

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- route:"

# Where the README's paths point, in the demo's generated inputs.
LAYOUT = {
    "downloads/kinetics400": "kinetics/k400",
    "downloads/kinetics600": "kinetics/k600",
    "downloads/kinetics700_2020": "kinetics/k700",
    "downloads/ssv2/something-something-v2-train.json": "ssv2/train.json",
    "downloads/ssv2/something-something-v2-labels.json": "ssv2/labels.json",
    "downloads/ssv2/20bn-something-something-v2": "ssv2/videos",
    "downloads/ava/ava_file_names_trainval_v2.1.txt": "ava/ava_file_names_trainval_v2.1.txt",
    "downloads/ava/movies": "ava/movies",
    "downloads/webvid/results_2M_train.csv": "webvid.csv",
}
_TRAIN = "--num-frames 4 --input-size 64 --batch-size 2 --workers 1 --device cpu --no-tensorboard"
# Options appended to each command, by its first words; a command not listed here fails the test, so that
# a new step of the route gets its tiny size decided rather than running at full size.
TINY = {
    "vmae-data build-k710": "",
    "vmae-data download": "--url-template http://127.0.0.1:{port}/{{video_id}}.mp4 --workers 2 --no-progress",
    "vmae-data ssv2": "--workers 1",
    "vmae-data ava": "--window-start 2 --window-end 17 --clip-frames 75 --fps 15 --workers 1",
    "vmae-data sample": "--n 6",
    "vmae-data mix": "",
    "vmae-data fingerprint": "--workers 1 --no-progress",
    "vmae-data dedup": "--no-progress",
    "vmae-data shard": "--max-count 8 --workers 2 --no-progress",
    "vmae-data verify": "--workers 1 --no-progress",
    "vmae-data stats": "",
    "vmae-train pretrain": f"--model pretrain_videomae_test {_TRAIN} --num-sample 1 --epochs 1 --warmup-epochs 0 "
                           "--max-steps 2",
    "vmae-train finetune": f"--model vit_test {_TRAIN} --num-sample 1 --epochs 1 --warmup-epochs 0 --max-steps 2 "
                           "--randaug none --mixup 0 --cutmix 0",
    "vmae-train eval": "--num-frames 4 --input-size 64 --batch-size 2 --workers 1 --device cpu --views 2x1",
}


def route_commands(readme: str) -> list[str]:
    """The shell commands of the fenced block after the route marker: continuation lines joined, comments
    and blank lines dropped."""
    lines = readme.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(MARKER)]
    assert len(starts) == 1, f"README.md needs exactly one {MARKER!r} line before the route block"
    assert lines[starts[0] + 1].startswith("```"), "the route marker must sit right above a fenced block"
    commands, current = [], ""
    for line in lines[starts[0] + 2:]:
        if line.startswith("```"):
            break
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
        else:
            commands.append(current)
            current = ""
    assert not current, f"the route block ends inside a continued command: {current!r}"
    return commands


def tiny(command: str, port: int) -> str:
    matches = [prefix for prefix in TINY if command.startswith(prefix + " ")]
    assert matches, f"README route command with no tiny-size options in {__file__}: {command}"
    return f"{command} {TINY[matches[0]].format(port=port)}"


@pytest.fixture
def served(tmp_path):
    """The demo's raw inputs under tmp/raw, their www/ folder served on 127.0.0.1; yields (raw, port)."""
    raw = tmp_path / "raw"
    (raw / "www").mkdir(parents=True)
    server = Server(raw / "www")
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "demo" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.main(raw, server.port)
    yield raw, server.port
    server.close()


def test_route_commands_are_read_whole():
    readme = f"text\n{MARKER} x -->\n```sh\n# 1. a step\nvmae-data a --x 1 \\\n    --y 2\n\nvmae-train b\n```\n"
    assert route_commands(readme) == ["vmae-data a --x 1 --y 2", "vmae-train b"]
    with pytest.raises(AssertionError, match="no tiny-size options"):
        tiny("vmae-data unknown --x 1", 0)


@pytest.mark.slow
def test_readme_route_runs_as_written(served, tmp_path):
    raw, port = served
    work = tmp_path / "work"
    for link, target in LAYOUT.items():
        (work / link).parent.mkdir(parents=True, exist_ok=True)
        (work / link).symlink_to(raw / target)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    commands = route_commands((ROOT / "README.md").read_text())
    for command in commands:
        run = subprocess.run(["bash", "-c", "set -euo pipefail; " + tiny(command, port)], cwd=work, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, f"README route step failed: {command}\n{(run.stdout + run.stderr)[-3000:]}"

    # The route reached a scored model, and every step passed its clips on to the next.
    assert [c.split()[1] for c in commands][-3:] == ["pretrain", "finetune", "eval"]
    val = pd.read_parquet(work / "clips/k710-val/manifest.parquet")
    metrics = json.loads((work / "runs/eval/metrics.json").read_text())
    assert metrics["videos"] == (val["status"] == "ok").sum() > 0
    # The leakage check found the demo's one planted copy (a mirrored WebVid re-upload of a val clip), only it.
    pairs = pd.read_parquet(work / "dups/pairs.parquet")
    assert list(zip(pairs["key_a"], pairs["key_b"])) == [("webvid_1007", "demo027_yt_000001_000011")]
    hybrid = json.loads((work / "shards/uh/shards.json").read_text())
    assert {mixture_source(s) for s in hybrid["totals"]["sources"]} == {"k710", "ssv2", "ava", "webvid"}
    assert (work / "uh-stats.png").stat().st_size > 0
