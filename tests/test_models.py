import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from vmae.errors import ConfigError
from vmae.training import models
from vmae.training.masking import make_masks, mask_counts
from vmae.training.models import FINETUNE_MODELS, PRETRAIN_MODELS, create_model, sinusoid_table

# A copy of the spec's list of every official parameter name and shape (OpenGVLab/VideoMAEv2 models).
SPEC = Path(__file__).resolve().parent / "data" / "official_state_dict_shapes.json"
TINY = dict(num_frames=4, img_size=64)  # grid (2, 4, 4), N = 32


@pytest.fixture(scope="module")
def official():
    return json.loads(SPEC.read_text())


@pytest.mark.parametrize("name", [n for n in list(PRETRAIN_MODELS) + list(FINETUNE_MODELS) if "test" not in n])
def test_state_dict_names_and_shapes_equal_official(official, name):
    with torch.device("meta"):
        model = create_model(name) if name in PRETRAIN_MODELS else create_model(name, num_classes=710)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(official[name])  # same names, same order
    assert shapes == official[name]


def test_parameter_counts_match_reference():
    expected = {"small": 24.03, "base": 94.21, "large": 317.78, "huge": 645.66, "giant": 1026.31}
    for name, size in PRETRAIN_MODELS.items():
        if size in expected:
            with torch.device("meta"):
                model = create_model(name)
            assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == expected[size], name
    with torch.device("meta"):
        ft = create_model("vit_base_patch16_224", num_classes=400)
    assert round(sum(p.numel() for p in ft.parameters()) / 1e6, 2) == 86.53


def test_giant_decoder_mlp_and_key_rules():
    with torch.device("meta"):
        g = create_model("pretrain_videomae_giant_patch14_224")
    assert g.decoder.blocks[0].mlp.fc1.out_features == 2234
    assert g.encoder.blocks[0].mlp.fc1.out_features == 6144
    keys = g.state_dict().keys()
    assert not [k for k in keys if "pos_embed" in k or "cls_token" in k or "gamma" in k or k.endswith("qkv.bias")]
    assert g.encoder_to_decoder.bias is None and g.mask_token.shape == (1, 1, 512)
    assert g.out_dim == 1176 and g.grid == (8, 16, 16) and g.num_patches == 2048


def test_sinusoid_table_matches_reference_formula():
    n, d = 50, 24
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d) // 2) / d)
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    table = sinusoid_table(n, d)
    assert table.dtype == torch.float32 and table.shape == (1, n, d)
    assert torch.allclose(table[0], torch.from_numpy(pos).float(), atol=1e-6)


def test_position_tables_are_non_persistent_buffers_for_any_size():
    model = create_model("pretrain_videomae_test", num_frames=8, img_size=112)  # grid (4, 7, 7)
    buffers = dict(model.named_buffers())
    assert buffers["encoder.pos_embed"].shape == (1, 196, 32) and buffers["pos_embed"].shape == (1, 196, 16)
    assert not [k for k in model.state_dict() if "pos_embed" in k]
    mask, decode_mask = make_masks(2, model.grid, 0.9, 0.0, torch.Generator().manual_seed(0), "cpu")  # 7x7: v1
    assert model(torch.randn(2, 3, 8, 112, 112), mask, decode_mask).shape == (2, 4 * 44, 1536)
    model.to(torch.float64)
    assert model.pos_embed.dtype == torch.float64  # moves (and casts) with the module
    ft = create_model("vit_test", num_frames=8, img_size=112, num_classes=3)
    assert ft(torch.randn(2, 3, 8, 112, 112)).shape == (2, 3)


def _reference_attention(attn, x):
    """The reference computation written out: qkv with (q_bias, 0, v_bias), softmax(q k^T * scale) v, proj."""
    B, N, C = x.shape
    h = attn.num_heads
    bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    qkv = (x @ attn.qkv.weight.T + bias).reshape(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = ((q * (C // h) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_attention_equals_reference_computation(impl):
    attn = models.set_attention(models.Attention(32, 4), impl)
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 10, 32)
    assert torch.allclose(attn(x), _reference_attention(attn, x), atol=1e-5)


def test_set_attention_switches_every_layer_and_refuses_unknown_names():
    model = models.set_attention(create_model("pretrain_videomae_test", **TINY), "eager")
    layers = [m for m in model.modules() if isinstance(m, models.Attention)]
    assert len(layers) == 3 and not any(m.fused for m in layers)
    with pytest.raises(ConfigError, match="'sdpa' or 'eager'"):
        models.set_attention(model, "flash")


@pytest.mark.parametrize("decoder_ratio", [0.5, 0.0])
def test_known_token_counts_give_the_same_outputs(decoder_ratio):
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", **TINY)
    video = torch.randn(2, 3, 4, 64, 64)
    mask, decode_mask = _masks(model, 2, decoder_ratio)
    counts = mask_counts(model.grid, 0.75, decoder_ratio)
    assert torch.equal(model(video, mask, decode_mask, counts=counts), model(video, mask, decode_mask))


def _masks(model, batch, decoder_ratio=0.5, seed=0):
    return make_masks(batch, model.grid, 0.75, decoder_ratio, torch.Generator().manual_seed(seed), "cpu")


@pytest.mark.parametrize("patch,img,out", [(16, 64, 1536), (14, 56, 1176)])
def test_pretrain_forward_shapes(patch, img, out):
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", num_frames=4, img_size=img, patch_size=patch).eval()
    assert model.grid == (2, 4, 4) and model.num_patches == 32 and model.out_dim == out
    video = torch.randn(2, 3, 4, img, img)
    mask, decode_mask = _masks(model, 2)
    assert model(video, mask, decode_mask).shape == (2, 16, out)  # half of 32 tokens decoded
    v1 = model(video, mask)  # VideoMAE v1: decode exactly the 12 per frame x 2 hidden tokens
    assert v1.shape == (2, 24, out)
    assert torch.equal(v1, model(video, mask, ~mask))


def test_pretrain_forward_follows_reference_steps():
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", **TINY).eval()
    video = torch.randn(2, 3, 4, 64, 64)
    mask, decode_mask = _masks(model, 2)
    with torch.no_grad():
        got = model(video, mask, decode_mask)
        # spec section 1.6, token by token through explicit index lists
        tokens = model.encoder.patch_embed(video) + sinusoid_table(32, 32)
        rows = []
        for b in range(2):
            vis = torch.nonzero(~mask[b]).flatten()
            dec = torch.nonzero(~decode_mask[b]).flatten()
            x = tokens[b, vis][None]
            for blk in model.encoder.blocks:
                x = blk(x)
            x = model.encoder_to_decoder(model.encoder.norm(x))
            pos = sinusoid_table(32, 16)[0]
            x = torch.cat([x + pos[vis], (model.mask_token[0] + pos[dec])[None]], dim=1)
            for blk in model.decoder.blocks:
                x = blk(x)
            rows.append(model.decoder.head(model.decoder.norm(x[:, -len(dec):])))
    assert torch.allclose(got, torch.cat(rows), atol=1e-5)


def test_patch_embed_of_picked_tokens_equals_the_conv_gathered():
    """The encoder embeds only its visible cubes; on a grid with t, h and w all different (3, 2, 3) that must
    equal the Conv3d's output at the same raster positions."""
    torch.manual_seed(0)
    embed = models.PatchEmbed(img_size=(32, 48), patch_size=16, num_frames=6, tubelet_size=2, embed_dim=8)
    video = torch.randn(2, 3, 6, 32, 48)
    index = torch.stack([torch.randperm(18)[:7].sort().values for _ in range(2)])
    full = embed(video)
    assert torch.allclose(embed.forward_tokens(video, index), full[torch.arange(2)[:, None], index], atol=1e-6)
    assert torch.allclose(embed.forward_tokens(video, torch.arange(18).expand(2, 18)), full, atol=1e-6)


def test_bad_masks_and_sizes_are_refused():
    model = create_model("pretrain_videomae_test", **TINY)
    video = torch.randn(2, 3, 4, 64, 64)
    mask, decode_mask = _masks(model, 2)
    uneven = mask.clone()
    uneven[0, ~mask[0]] = True  # sample 0 hides every token
    with pytest.raises(ValueError, match="same number of tokens"):
        model(video, uneven, decode_mask)
    with pytest.raises(ValueError, match="bool tensor"):
        model(video, mask.float(), decode_mask)
    with pytest.raises(ValueError, match="num_frames= and img_size="):
        model(torch.randn(2, 3, 4, 32, 32), mask, decode_mask)


def test_bf16_autocast_runs_encoder_in_bf16_and_decoder_in_fp32_on_cpu():
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", **TINY)
    seen = {}
    model.encoder.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.__setitem__("enc", o.dtype))
    model.decoder.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.__setitem__("dec", o.dtype))
    video = torch.randn(2, 3, 4, 64, 64)
    mask, decode_mask = _masks(model, 2)
    ref = model(video, mask, decode_mask)
    out = model(video, mask, decode_mask, amp_dtype=torch.bfloat16)
    assert seen == {"enc": torch.bfloat16, "dec": torch.float32} and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05, rtol=0.05) and not torch.equal(out, ref)
    out.square().mean().backward()
    assert model.encoder.patch_embed.proj.weight.grad.dtype == torch.float32


def test_activation_checkpointing_gives_same_outputs_and_grads():
    video = torch.randn(2, 3, 4, 64, 64)
    results = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = create_model("pretrain_videomae_test", checkpoint_activations=enabled, **TINY).train()
        mask, decode_mask = _masks(model, 2)
        out = model(video, mask, decode_mask)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-6), name


def test_drop_path_rates_rise_linearly():
    model = create_model("pretrain_videomae_test", drop_path_rate=0.2, depth=3, decoder_depth=2, **TINY)
    assert isinstance(model.encoder.blocks[0].drop_path, torch.nn.Identity)
    assert [b.drop_path.drop_prob for b in model.encoder.blocks[1:]] == pytest.approx([0.1, 0.2])
    assert model.decoder.blocks[1].drop_path.drop_prob == pytest.approx(0.2)


def test_initialisation_follows_reference():
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_test", **TINY)
    fc1 = model.decoder.blocks[0].mlp.fc1
    assert fc1.weight.abs().max() <= math.sqrt(6 / (fc1.in_features + fc1.out_features))  # xavier uniform
    assert not fc1.bias.any() and not model.encoder.blocks[0].attn.q_bias.any()
    assert model.mask_token.abs().max() <= 0.02 and model.mask_token.std() > 0.005  # trunc normal at +-1 std
    e2d = model.encoder_to_decoder.weight  # PyTorch default: uniform within 1/sqrt(fan_in)
    assert 0.9 / math.sqrt(32) < e2d.abs().max() <= 1 / math.sqrt(32)  # xavier would reach sqrt(6/48) = 0.35
    ft = create_model("vit_test", num_classes=50, embed_dim=64, **TINY)
    assert ft.head.weight.std().item() == pytest.approx(0.02 * 0.001, rel=0.2)
    assert ft.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert create_model("vit_test", init_scale=1.0, **TINY).head.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_finetune_model_interface():
    model = create_model("vit_test", num_classes=7, **TINY)
    video = torch.randn(3, 3, 4, 64, 64)
    assert model(video).shape == (3, 7) and model.forward_features(video).shape == (3, 32)
    assert model.get_num_layers() == 2 and model.num_classes == 7 and model.no_weight_decay() == set()
    assert set(model.state_dict()) >= {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert not [k for k in model.state_dict() if k.startswith("norm.")]
    features_only = create_model("vit_test", num_classes=0, **TINY)
    assert features_only(video).shape == (3, 32)


def test_create_model_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit_tiny")
    with pytest.raises(TypeError, match="decoder_depth"):
        create_model("vit_test", decoder_depth=2)
    with pytest.raises(TypeError, match="num_classes"):
        create_model("pretrain_videomae_test", num_classes=2)


def test_timm_registry_keeps_timm_models_and_registers_once():
    assert isinstance(timm.create_model("pretrain_videomae_test", **TINY), models.PretrainVisionTransformer)
    ft = timm.create_model("videomae_v2_vit_test", num_classes=5, **TINY)
    assert isinstance(ft, models.VisionTransformer) and ft.num_classes == 5
    assert timm.is_model("pretrain_videomae_giant_patch14_224") and timm.is_model("videomae_v2_vit_giant_patch14_224")
    assert timm.models.get_pretrained_cfg("vit_base_patch16_224") is not None  # timm's own image ViT untouched
    assert "vmae" not in timm.models.model_entrypoint("vit_base_patch16_224").__module__
    # Importing the module again (a reload, as notebooks do) registers nothing twice: timm would warn.
    again = ("import importlib, warnings\nimport vmae.training.models as m\nwith warnings.catch_warnings():\n"
             "    warnings.simplefilter('error')\n    importlib.reload(m)")
    result = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("pretrain_videomae_test", pretrained=True)


def test_dropout_sits_where_the_reference_puts_it():
    """drop_rate (the reference's --drop): after the position embedding, the attention projection and fc2,
    none after the MLP activation; active in training only, no parameters."""
    torch.manual_seed(0)
    model = create_model("vit_test", num_classes=3, num_frames=4, img_size=32, drop_rate=0.5)
    rates = {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0}
    assert sorted(rates) == ["blocks.0.attn.proj_drop", "blocks.0.mlp.drop2", "blocks.1.attn.proj_drop",
                             "blocks.1.mlp.drop2", "pos_drop"]
    plain = create_model("vit_test", num_classes=3, num_frames=4, img_size=32)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    assert torch.equal(model.eval()(x), plain.eval()(x))
    assert not torch.equal(model.train()(x), plain.train()(x))
