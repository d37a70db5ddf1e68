"""vmae-train eval end to end: view positions, outputs, label maps, and 1 vs 2 processes (torchrun, gloo)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner

from finetune_data import COLOURS, classifier_checkpoint, labeled_shards
from videos import index_frames, read_index, write_video
from vmae.cli.train import train
from vmae.shards.format import encode_sample
from vmae.training.config import EvalConfig, eval_config
from vmae.training.data import make_loader
from vmae.training.decode import get_decoder
from vmae.training.evaluate import evaluate, stream_config
from vmae.training.models import create_model
from vmae.training.transforms import as_clip, crop, resize_short_side

VENV_BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_5x3_views_are_the_reference_positions(tmp_path):
    """A 300-frame 256x454 video: windows start at frames 0, 56, 116, 176, 236 (16 frames every 4) and the
    crops of the 224x397 resized frames start at x = 0, 86, 173 (spec section 4.5)."""
    video = write_video(tmp_path / "v.mp4", index_frames(300, (256, 454)), gop=32)
    with wds.TarWriter(str(tmp_path / "t-000000.tar")) as sink:
        sink.write(encode_sample({"key": "v300", "label_id": 7, "stride": 4}, video.read_bytes(), labeled=True))
    cfg = EvalConfig(shards=str(tmp_path / "t-000000.tar"), checkpoint="unused.pth", views="5x3", workers=0)
    loader, _ = make_loader(stream_config(cfg))
    (batch,) = list(loader)
    assert batch["video"].shape == (1, 15, 3, 16, 224, 224) and batch["label"].tolist() == [7]

    starts, offsets = [0, 56, 116, 176, 236], [0, 86, 173]
    with get_decoder().open(video.read_bytes()) as reader:
        for s, start in enumerate(starts):
            ids = start + 4 * np.arange(16)
            frames = reader.get_frames(ids)
            assert [read_index(f) for f in frames] == ids.tolist()
            resized = resize_short_side(as_clip(frames), 224)
            assert tuple(resized.shape[-2:]) == (224, 397)
            for c, x in enumerate(offsets):
                expected = crop(resized, 0, x, 224, 224).permute(1, 0, 2, 3)  # [3, T, 224, 224]
                assert torch.equal(batch["video"][0, s * 3 + c], expected), (start, x)


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory):
    return labeled_shards(tmp_path_factory, "val", [4, 3, 2], seed=2)  # 9 videos in 3 uneven shards


def _eval_options(shards, ckpt, out, **kw):
    return dict(shards=shards, checkpoint=str(ckpt), num_frames=4, input_size=32, batch_size=2, workers=0,
                device="cpu", output_dir=str(out), **kw)


def test_eval_writes_scores_predictions_and_confusion(tmp_path, val_shards):
    ckpt = classifier_checkpoint(tmp_path / "ft.pth")
    report = evaluate(eval_config(None, **_eval_options(val_shards, ckpt, tmp_path / "out", views="2x3",
                                                        sparse=True, confusion=True, save_probs=True)))
    assert report["videos"] == 9 and report["skipped"] == 0 and report["repeated_keys"] == []
    assert report["sampling"] == "sparse"
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert pred.key.tolist() == [f"val_{i:04d}" for i in range(9)]
    assert pred.label.tolist() == [i % 3 for i in range(9)]
    assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-5 for p in pred.probs)
    assert all(t[0] == p for t, p in zip(pred.top5, pred.pred))
    top1 = 100 * float((pred.pred == pred.label).mean())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(top1) == pytest.approx(report["top1"])
    assert metrics["top5"] == 100.0  # three classes
    assert metrics["config"]["views"] == "2x3"
    assert (tmp_path / "out" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_reports_and_refuses_bad_heads(tmp_path, val_shards):
    ckpt = classifier_checkpoint(tmp_path / "ft.pth")
    common = ["--shards", val_shards, "--checkpoint", str(ckpt), "--num-frames", "4", "--input-size", "32",
              "--workers", "0", "--device", "cpu", "--views", "1x1"]
    result = CliRunner().invoke(train, ["eval", *common, "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "9 videos" in result.output and "top-1" in result.output and "mean class accuracy" in result.output
    result = CliRunner().invoke(train, ["eval", *common, "--num-classes", "400"])
    assert result.exit_code == 2 and "has 3 classes but 400" in result.output
    result = CliRunner().invoke(train, ["eval", *common, "--views", "5by3"])
    assert result.exit_code == 2 and "SEGMENTSxCROPS" in result.output


def test_k710_checkpoint_scores_on_k400_labels(tmp_path):
    """--label-map k710-to-k400: the K400 scores are the K710 model's logits of the mapped rows (K400 class i
    = K710 class map[i]), so the 400-way probabilities are the 710-way ones restricted and renormalised."""
    from vmae.manifests.labels import head_map

    k400 = list(head_map(400))
    torch.manual_seed(0)
    model = create_model("vit_test", num_classes=710, num_frames=4, img_size=32)
    torch.save({"model": model.state_dict(), "config": {"model": "vit_test"}}, tmp_path / "k710.pth")
    shards = tmp_path / "s"
    shards.mkdir()
    with wds.TarWriter(str(shards / "k-000000.tar")) as sink:
        for i in range(2):
            video = write_video(tmp_path / f"{i}.mp4", index_frames(12, (32, 32), start=i * 40))
            sink.write(encode_sample({"key": f"k{i}", "label_id": 0, "stride": 2}, video.read_bytes(), True))
    opts = _eval_options(str(shards / "k-000000.tar"), tmp_path / "k710.pth", tmp_path / "o", views="1x1")
    evaluate(eval_config(None, save_probs=True, **opts))
    full = pd.read_parquet(tmp_path / "o" / "predictions.parquet")
    evaluate(eval_config(None, label_map="k710-to-k400", save_probs=True,
                         **{**opts, "output_dir": str(tmp_path / "o400")}))
    mapped = pd.read_parquet(tmp_path / "o400" / "predictions.parquet")
    for logits710_probs, probs400 in zip(full.probs, mapped.probs):
        sub = np.asarray(logits710_probs)[k400]
        np.testing.assert_allclose(probs400, sub / sub.sum(), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_one_and_two_processes_give_identical_results(tmp_path, val_shards):
    ckpt = classifier_checkpoint(tmp_path / "ft.pth", seed=1)
    single = evaluate(eval_config(None, **_eval_options(val_shards, ckpt, tmp_path / "one", views="5x3",
                                                        save_probs=True)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python", "vmae-train", "eval",
           "--shards", val_shards, "--checkpoint", str(ckpt), "--num-frames", "4", "--input-size", "32",
           "--batch-size", "2", "--workers", "0", "--device", "cpu", "--views", "5x3", "--save-probs",
           "--output-dir", str(tmp_path / "two")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"from {ckpt}: loaded" in run.stderr and "missing: none" in run.stderr  # INFO lines are shown
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["videos"] == single["videos"] == 9
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert two[key] == single[key], key
    a = pd.read_parquet(tmp_path / "one" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "two" / "predictions.parquet")
    assert a.key.tolist() == b.key.tolist() == sorted(set(a.key))  # no video missing or repeated
    assert a.pred.tolist() == b.pred.tolist()
    assert [list(t) for t in a.top5] == [list(t) for t in b.top5]
    np.testing.assert_allclose(np.stack(a.probs), np.stack(b.probs), atol=1e-6)
    assert "top-1" in run.stdout and run.stdout.count("top-1") == 1  # rank 0 alone reports


def test_eval_takes_the_input_shape_from_the_checkpoint(tmp_path, val_shards):
    """A model trained at 4 frames x 32 px is scored at that shape without being told, and says so; options
    still win."""
    torch.manual_seed(0)
    model = create_model("vit_test", num_classes=len(COLOURS), num_frames=4, img_size=32)
    config = {"model": "vit_test", "num_frames": 4, "input_size": 32, "tubelet_size": 2}
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "ft.pth")
    common = ["--shards", val_shards, "--checkpoint", str(tmp_path / "ft.pth"), "--workers", "0",
              "--device", "cpu", "--views", "1x1", "--output-dir", str(tmp_path / "o")]
    result = CliRunner().invoke(train, ["eval", *common])
    assert result.exit_code == 0, result.output
    assert "num_frames 4 (checkpoint), img_size 32 (checkpoint), tubelet_size 2 (checkpoint)" in result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["input"] == "4x32, tubelet 2" and metrics["videos"] == 9
    assert (metrics["config"]["num_frames"], metrics["config"]["input_size"]) == (4, 32)
    result = CliRunner().invoke(train, ["eval", *common, "--num-frames", "6"])
    assert result.exit_code == 0 and "num_frames 6 (given)" in result.output


def test_64_frame_266_px_views_end_to_end(tmp_path):
    """The paper's larger input with ViT-g's 14-pixel patches (19 x 19 x 32 = 11552 tokens): the position
    table, the multi-view cut at 266 px and the model agree, shape taken from the checkpoint."""
    torch.manual_seed(0)
    model = create_model("vit_test_patch14", num_classes=3, num_frames=64, img_size=266)
    assert model.pos_embed.shape == (1, 11552, 32)
    config = {"model": "vit_test_patch14", "num_frames": 64, "input_size": 266}
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "ft.pth")
    video = write_video(tmp_path / "v.mp4", index_frames(80, (280, 300)))
    with wds.TarWriter(str(tmp_path / "t-000000.tar")) as sink:
        sink.write(encode_sample({"key": "v", "label_id": 1, "stride": 1}, video.read_bytes(), labeled=True))
    report = evaluate(eval_config(None, shards=str(tmp_path / "t-000000.tar"), checkpoint=str(tmp_path / "ft.pth"),
                                  views="1x3", workers=0, device="cpu", output_dir=str(tmp_path / "o")))
    assert report["input"] == "64x266, tubelet 2" and report["videos"] == 1 and report["skipped"] == 0
