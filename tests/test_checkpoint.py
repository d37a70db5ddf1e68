import argparse
import os
import random

import numpy as np
import pytest
import torch

from vmae.manifests.labels import head_map
from vmae.training.checkpoint import (CheckpointError, extract_state_dict, latest_checkpoint, load_checkpoint_file,
                                      load_pretrained, rng_state, save_checkpoint, set_rng_state, unwrap)
from vmae.training.models import create_model

TINY = dict(num_frames=4, img_size=64)


class Payload:
    """Unpickling this would create a folder: a stand-in for code a downloaded checkpoint could run."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def official_pretrain_file(path, model):
    """What the reference writes under PyTorch 2: compiled keys, argparse args, optimizer and scaler state."""
    torch.save({
        "model": {f"_orig_mod.{k}": v for k, v in model.state_dict().items()},
        "optimizer": {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0]}]},
        "epoch": 4,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
        "args": argparse.Namespace(model="pretrain_videomae_base_patch16_224", lr=1e-3, window_size=(8, 14, 14)),
    }, path)


def test_official_style_pretrain_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = create_model("pretrain_videomae_test", **TINY)
    official_pretrain_file(tmp_path / "checkpoint-4.pth", source)
    ckpt = load_checkpoint_file(tmp_path / "checkpoint-4.pth")
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["epoch"] == 4
    target = create_model("pretrain_videomae_test", **TINY)
    target.load_state_dict(extract_state_dict(ckpt), strict=True)
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name]), name


def test_files_with_other_classes_are_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "payload": Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        load_checkpoint_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_extract_state_dict_prefixes_and_keys():
    w = torch.zeros(1)
    assert set(extract_state_dict({"module": {"module._orig_mod.a": w, "b": w}})) == {"a", "b"}
    assert set(extract_state_dict({"model": {"x": w}, "module": {"y": w}})) == {"x"}
    assert set(extract_state_dict({"a.weight": w})) == {"a.weight"}  # a bare state dict
    with pytest.raises(CheckpointError, match="model_key"):
        extract_state_dict({"model_ema": {"x": w}, "epoch": 3})


def test_pretrain_checkpoint_initialises_finetune_model(tmp_path):
    torch.manual_seed(0)
    source = create_model("pretrain_videomae_test", **TINY)
    official_pretrain_file(tmp_path / "pt.pth", source)
    model = create_model("vit_test", num_classes=5, **TINY)
    report = load_pretrained(model, tmp_path / "pt.pth")
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(report.unexpected) == ["norm.bias", "norm.weight"]  # encoder.norm: unused with mean pooling
    assert "mask_token" in report.dropped and "encoder_to_decoder.weight" in report.dropped
    assert all(k.startswith(("decoder.", "encoder_to_decoder", "mask_token")) for k in report.dropped)
    assert torch.equal(model.blocks[1].attn.qkv.weight, source.encoder.blocks[1].attn.qkv.weight)
    assert torch.equal(model.patch_embed.proj.weight, source.encoder.patch_embed.proj.weight)
    line = str(report)
    assert "\n" not in line and "missing: fc_norm.weight" in line and "unexpected: norm.weight" in line


def finetune_file(path, classes, prefix=""):
    torch.manual_seed(1)
    model = create_model("vit_test", num_classes=classes, **TINY)
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    state[f"{prefix}head.weight"] = torch.arange(classes, dtype=torch.float32)[:, None].repeat(1, 32)
    state[f"{prefix}head.bias"] = torch.arange(classes, dtype=torch.float32)
    torch.save({"module": state, "epoch": "best"}, path)
    return model


@pytest.mark.parametrize("classes", [400, 600, 700])
def test_k710_head_converts_with_official_map(tmp_path, classes):
    finetune_file(tmp_path / "k710.pth", 710, prefix="module.")
    model = create_model("vit_test", num_classes=classes, **TINY)
    report = load_pretrained(model, tmp_path / "k710.pth", strict=True)
    rows = torch.tensor(head_map(classes), dtype=torch.float32)
    assert torch.equal(model.head.bias, rows) and torch.equal(model.head.weight[:, 0], rows)
    assert f"710 -> {classes}" in report.head and not report.missing and not report.unexpected


def test_other_heads_are_kept_or_dropped(tmp_path):
    source = finetune_file(tmp_path / "k710.pth", 710)
    same = create_model("vit_test", num_classes=710, **TINY)
    assert "kept" in load_pretrained(same, tmp_path / "k710.pth", strict=True).head
    assert torch.equal(same.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)
    ssv2 = create_model("vit_test", num_classes=174, **TINY)
    fresh = ssv2.head.weight.clone()
    report = load_pretrained(ssv2, tmp_path / "k710.pth")
    assert "dropped" in report.head and torch.equal(ssv2.head.weight, fresh)
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    with pytest.raises(CheckpointError, match="strict"):
        load_pretrained(create_model("vit_test", num_classes=174, **TINY), tmp_path / "k710.pth", strict=True)


def test_deepspeed_folder_is_read_through_its_model_states_file(tmp_path):
    source = finetune_file(tmp_path / "k710.pth", 710)
    (tmp_path / "checkpoint-best").mkdir()
    (tmp_path / "k710.pth").rename(tmp_path / "checkpoint-best" / "mp_rank_00_model_states.pt")
    model = create_model("vit_test", num_classes=710, **TINY)
    load_pretrained(model, tmp_path / "checkpoint-best", strict=True)
    assert torch.equal(model.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    with pytest.raises(FileNotFoundError, match="mp_rank_00_model_states.pt"):
        load_checkpoint_file(tmp_path)


def test_wrong_model_size_is_an_error(tmp_path):
    finetune_file(tmp_path / "k710.pth", 710)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_pretrained(create_model("vit_test", embed_dim=64, num_classes=710, **TINY), tmp_path / "k710.pth")


def test_pretrain_to_pretrain_keeps_the_decoder():
    source = create_model("pretrain_videomae_test", **TINY)
    target = create_model("pretrain_videomae_test", **TINY)
    report = load_pretrained(target, {"model": source.state_dict()}, strict=True)
    assert not report.dropped and torch.equal(target.mask_token, source.mask_token)


def test_unwrap():
    model = create_model("vit_test", **TINY)
    assert unwrap(torch.nn.DataParallel(model)) is model
    assert unwrap(torch.compile(model)) is model


def test_save_keeps_last_k_and_latest_ignores_partial_files(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step * 100, {"step": step * 100, "w": torch.ones(2)}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000400.pth", "checkpoint-00000500.pth"]
    (tmp_path / ".checkpoint-00000900.pth.tmp-123-0123456789ab").write_bytes(b"partial")
    (tmp_path / "checkpoint-00000800.pth.partial").write_bytes(b"partial")
    good = (tmp_path / "checkpoint-00000500.pth").read_bytes()
    (tmp_path / "checkpoint-00000700.pth").write_bytes(good[: len(good) // 2])  # truncated by a copy
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "checkpoint-00000500.pth"
    assert torch.load(latest, weights_only=True)["step"] == 500
    assert latest_checkpoint(tmp_path / "absent") is None


def test_failed_save_leaves_nothing_behind(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(1)})
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, 2, {"bad": lambda: 0})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001.pth"]


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    torch.save({"rng": rng_state()}, tmp_path / "rng.pth")
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]
