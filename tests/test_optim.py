import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from vmae.config import from_dict, save_config
from vmae.training import config as C
from vmae.training import optim


class Toy(nn.Module):
    """The parameter kinds of a ViT: patch embedding, blocks, norms, a 3-D mask token, a head."""

    def __init__(self, depth=2, dim=8):
        super().__init__()
        self.patch_embed = nn.Conv3d(3, dim, 2)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 4)

    def get_num_layers(self):
        return len(self.blocks)

    def no_weight_decay(self):
        return {"mask_token"}


def decay_map(groups):
    return {name: g["weight_decay"] for g in groups for name in g["param_names"]}


@pytest.mark.parametrize("wrap", ["plain", "compiled", "ddp-like"])
def test_no_decay_for_1d_bias_and_mask_token_under_wrappers(wrap):
    model = Toy()
    if wrap == "compiled":
        model = torch.compile(model)  # names become _orig_mod.*: the reference loses the mask-token exclusion
    elif wrap == "ddp-like":
        holder = nn.Module()
        holder.module = model
        model = holder
    wd = decay_map(optim.param_groups(model, 0.05))
    assert wd["mask_token"] == 0.0
    assert wd["patch_embed.bias"] == 0.0 and wd["blocks.0.0.weight"] == 0.0 and wd["norm.weight"] == 0.0
    assert wd["patch_embed.weight"] == 0.05 and wd["blocks.1.1.weight"] == 0.05 and wd["head.weight"] == 0.05
    assert sum(len(g["params"]) for g in optim.param_groups(model, 0.05)) == len(list(model.parameters()))


def test_layer_decay_ids_and_scales_follow_the_reference():
    model = Toy(depth=2)
    groups = optim.param_groups(model, 0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    # L = 2: patch_embed/mask_token -> id 0 (0.5^3), blocks.n -> n+1, the rest -> L+1 (scale 1).
    assert scale["patch_embed.weight"] == scale["mask_token"] == 0.125
    assert scale["blocks.0.1.weight"] == 0.25 and scale["blocks.1.1.bias"] == 0.5
    assert scale["head.weight"] == scale["norm.bias"] == 1.0
    names = {g["name"] for g in groups}
    assert {"layer_0_decay", "layer_0_no_decay", "layer_3_decay", "layer_3_no_decay"} <= names
    assert optim.layer_id("blocks.11.attn.qkv.weight", 12) == 12 and optim.layer_id("fc_norm.weight", 12) == 13


def test_extra_no_decay_names_and_clean_name():
    groups = optim.param_groups(Toy(), 0.05, no_decay_names=("module.head.weight",))
    assert decay_map(groups)["head.weight"] == 0.0
    assert optim.clean_name("_orig_mod.module._orig_mod.blocks.0.weight") == "blocks.0.weight"


def test_optimizer_is_fused_unless_asked_for_torchs_default():
    model = nn.Linear(4, 2)
    assert optim.make_optimizer(model, lr=1e-3, weight_decay=0.05).defaults["fused"]
    assert not optim.make_optimizer(model, lr=1e-3, weight_decay=0.05, fused=False).defaults["fused"]


def test_apply_lr_multiplies_each_group_scale():
    model = Toy()
    opt = optim.make_optimizer(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    optim.apply_lr(opt, 0.1)
    assert sorted({round(g["lr"], 6) for g in opt.param_groups}) == [0.0125, 0.025, 0.05, 0.1]


def test_lr_schedule_warms_up_from_zero_then_cosine_to_min():
    base, low, warm, total = 1e-3, 1e-5, 11, 111
    lrs = [optim.lr_at(s, base, low, warm, total) for s in range(total + 1)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(base / 2) and lrs[warm - 1] == lrs[warm] == pytest.approx(base)
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # cosine falls
    assert lrs[61] == pytest.approx(low + (base - low) / 2)  # halfway down the cosine
    assert lrs[total] == pytest.approx(low) and optim.lr_at(10_000, base, low, warm, total) == pytest.approx(low)
    assert optim.lr_at(0, base, low, 0, total) == pytest.approx(base)  # no warmup


@pytest.mark.parametrize("warm", [0, 1, 2, 7])
def test_lr_schedule_is_the_references_cosine_scheduler(warm):
    """Every step equals the reference's utils.cosine_scheduler, written out: np.linspace(0, base, W) for the
    warmup (base reached at step W-1), then base -> min over the remaining steps."""
    base, low, total = 4e-3, 1e-5, 40
    rest = np.arange(total - warm)
    expected = np.concatenate([np.linspace(0, base, warm),
                               low + 0.5 * (base - low) * (1 + np.cos(np.pi * rest / len(rest)))])
    np.testing.assert_allclose([optim.lr_at(s, base, low, warm, total) for s in range(total)], expected,
                               rtol=1e-12, atol=1e-15)


def test_lr_scaling_counts_views_processes_and_accumulation():
    cfg = C.pretrain_config(shards="x.tar", output_dir="o", batch_size=32, num_sample=4, accum_steps=2)
    assert cfg.global_batch(world_size=8) == 32 * 4 * 8 * 2
    # Table 4: base 1.5e-4 at the ViT-g recipe's 32 x 4 x 64 clips is the reference's 6e-4 x 32 x 64 / 256.
    g = C.pretrain_config("vit-g-hybrid", shards="x.tar", output_dir="o")
    assert optim.scaled_lr(g.base_lr, g.global_batch(64)) == pytest.approx(6e-4 * 32 * 64 / 256)
    b = C.pretrain_config("vit-b-hybrid", shards="x.tar", output_dir="o")
    assert optim.scaled_lr(b.base_lr, b.global_batch(32)) == pytest.approx(1e-3 * 32 * 32 / 256)


def test_config_layers_defaults_preset_overrides_and_rejects_unknown(tmp_path):
    cfg = C.pretrain_config(shards="s.tar", output_dir="o")
    assert (cfg.mask_ratio, cfg.decoder_mask_ratio, cfg.clip_grad, cfg.num_sample) == (0.9, 0.5, None, 4)
    # the defaults are one model size's recipe: the default model's (ViT-B), the vit-b-hybrid preset
    b = C.pretrain_config("vit-b-hybrid", shards="s.tar", output_dir="o")
    assert cfg == b
    g = C.pretrain_config("vit-g-hybrid", shards="s.tar", output_dir="o", epochs=100, warmup_epochs=None)
    assert g.model == "pretrain_videomae_giant_patch14_224" and g.checkpoint_activations
    assert g.epochs == 100 and g.warmup_epochs == 30  # None means "not given on the command line"
    with pytest.raises(ValueError, match="unknown PretrainConfig key.*mask_ration"):
        C.pretrain_config(shards="s.tar", output_dir="o", mask_ration=0.8)
    with pytest.raises(ValueError, match="unknown preset"):
        C.pretrain_config("vit-z", shards="s.tar", output_dir="o")
    with pytest.raises(ValueError, match="decoder_mask_ratio"):
        C.pretrain_config(shards="s.tar", output_dir="o", decoder_mask_ratio=0.3)
    with pytest.raises(ValueError, match="shards is required"):
        C.pretrain_config(output_dir="o")
    save_config(g, tmp_path / "config.json")
    again = from_dict(C.PretrainConfig, json.loads((tmp_path / "config.json").read_text()))
    assert again == g and isinstance(again.opt_betas, tuple)


def test_deterministic_flag_forces_one_worker_and_no_resampling():
    cfg = C.pretrain_config(shards="s.tar", output_dir="o", workers=6, deterministic=True)
    assert cfg.loader_workers == 1 and not cfg.loader_resampled
    assert math.isclose(C.pretrain_config(shards="s.tar", output_dir="o").min_lr, 2.5e-6)
