"""Fine-tuning: presets, layer-decay groups, mixup on clips, the criterion, and a real run that learns."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from finetune_data import COLOURS, labeled_shards
from vmae.errors import ConfigError
from vmae.training import presets
from vmae.training.checkpoint import load_checkpoint_file
from vmae.training.config import DistillConfig, FinetuneConfig, finetune_config
from vmae.training.engine import make_schedule
from vmae.training.finetune import BEST, classification_loss, finetune, make_mixup, mix_clips
from vmae.training.models import FINETUNE_MODELS, create_model
from vmae.training.optim import make_optimizer
from vmae.training.progress import record_path

REQUIRED = dict(shards="s-{000000..000001}.tar", output_dir="out")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ presets

@pytest.mark.parametrize("name", presets.FINETUNE_PRESETS + presets.DISTILL_PRESETS)
@pytest.mark.parametrize("model", [m for m in FINETUNE_MODELS if "test" not in m])
def test_every_preset_builds_its_sizes_and_refuses_the_others(name, model):
    """A preset applies to the model sizes it has a recipe for; any other size is refused, naming those."""
    cls = DistillConfig if name in presets.DISTILL_PRESETS else FinetuneConfig
    extra = {"teacher": "t.pth", "init": "none"} if cls is DistillConfig else {}
    if cls is DistillConfig or presets.model_size(model) in presets.sizes_of(name):
        cfg = finetune_config(name, cls=cls, model=model, **REQUIRED, **extra)
        assert cfg.opt_betas == (0.9, 0.999) and cfg.num_sample == 2 and cfg.smoothing == 0.1
    else:
        with pytest.raises(ConfigError, match=f"preset {name} has no recipe for {model}.*It has recipes for ViT-"):
            finetune_config(name, cls=cls, model=model, **REQUIRED, **extra)


def test_presets_carry_the_official_recipes():
    g = finetune_config("ssv2", model="vit_giant_patch14_224", **REQUIRED)
    assert (g.base_lr, g.layer_decay, g.drop_path, g.weight_decay, g.epochs, g.batch_size) == \
        (3e-4, 0.9, 0.25, 0.05, 20, 3)
    assert (g.num_classes, g.sparse, g.flip) == (174, True, False)
    b = finetune_config("ssv2", model="vit_base_patch16_224", **REQUIRED)
    assert (b.base_lr, b.layer_decay, b.epochs, b.batch_size) == (2e-3, 0.65, 25, 16)
    post = finetune_config("k710-post-pretrain", model="vit_giant_patch14_224", **REQUIRED)
    assert (post.num_classes, post.base_lr, post.drop_path, post.weight_decay, post.epochs, post.clip_grad) == \
        (710, 1e-3, 0.3, 0.1, 35, 5.0)
    k400 = finetune_config("k400", model="vit_giant_patch14_224", **REQUIRED)
    assert (k400.num_classes, k400.base_lr, k400.epochs, k400.warmup_epochs) == (400, 1e-5, 3, 1)
    hmdb = finetune_config("hmdb51", model="vit_giant_patch14_224", **REQUIRED)
    assert (hmdb.num_classes, hmdb.stride, hmdb.head_drop, hmdb.base_lr, hmdb.epochs) == (51, 2, 0.5, 5e-4, 15)
    ucf = finetune_config("ucf101", model="vit_giant_patch14_224", **REQUIRED)
    assert (ucf.num_classes, ucf.stride, ucf.drop_path, ucf.epochs) == (101, 4, 0.35, 50)
    # Table 10
    d = finetune_config("distill-ssv2", cls=DistillConfig, teacher="t", init="none", **REQUIRED)
    assert (d.base_lr, d.weight_decay, d.epochs, d.warmup_epochs, d.mixup, d.cutmix, d.drop_path,
            d.layer_decay, d.clip_grad, d.temperature, d.num_classes, d.flip) == \
        (5e-4, 0.05, 100, 5, 0.8, 1.0, 0.1, 0.75, 1.0, 3.0, 174, False)
    assert DistillConfig(teacher="t", init="none", **REQUIRED).base_lr == 1e-3  # the K710 row is the default
    # the paper's variants and its larger-input column (ViT-g only)
    paper = finetune_config("k400-paper", model="vit_giant_patch14_224", **REQUIRED)
    assert (paper.drop_path, paper.head_drop, paper.base_lr, paper.epochs) == (0.3, 0.5, 1e-5, 3)
    big = finetune_config("k600-64x266", model="vit_giant_patch14_224", **REQUIRED)
    assert (big.num_frames, big.input_size, big.checkpoint_activations, big.num_classes) == (64, 266, True, 600)
    assert (big.base_lr, big.epochs, big.warmup_epochs, big.drop_path, big.head_drop, big.layer_decay,
            big.batch_size) == (1e-4, 5, 0, 0.35, 0.5, 0.9, 1)


def test_preset_notes_and_overrides():
    assert presets.resolve("ssv2", "vit_large_patch16_224")[1] == "ssv2: the official script, ViT-L row"
    assert "the paper's Table 3" in presets.resolve("k400-paper", "vit_giant_patch14_224")[1]
    assert "64x266 column" in presets.resolve("k400-64x266", "vit_giant_patch14_224")[1]
    assert presets.resolve("distill-ssv2", "vit_small_patch16_224")[1] == "distill-ssv2: the paper's Table 10"
    with pytest.raises(ConfigError, match="no recipe for vit_custom .not an official size.*ViT-g"):
        presets.resolve("ucf101", "vit_custom")
    settings, note = presets.resolve("k400", "vit_test")  # smoke runs of documented commands
    assert settings == presets.resolve("k400", "vit_base_patch16_224")[0] and "tiny test model" in note
    cfg = finetune_config("k400", model="vit_base_patch16_224", base_lr=1e-4, **REQUIRED)
    assert cfg.base_lr == 1e-4 and cfg.layer_decay == 0.75  # the command line wins over the preset
    with pytest.raises(ValueError, match="unknown preset"):
        finetune_config("k500", **REQUIRED)
    with pytest.raises(ValueError, match="unknown FinetuneConfig key"):
        finetune_config("distill-k710", **REQUIRED)  # a distillation preset is not a fine-tuning config
    assert presets.eval_settings("ssv2") == {"views": "2x3", "sparse": True, "num_classes": 174}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="shards is required"):
        FinetuneConfig(output_dir="o")
    with pytest.raises(ValueError, match="even number of clips"):
        FinetuneConfig(batch_size=3, num_sample=1, **REQUIRED)
    FinetuneConfig(batch_size=3, num_sample=1, mixup=0, cutmix=0, **REQUIRED)
    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneConfig(layer_decay=1.5, **REQUIRED)
    with pytest.raises(ValueError, match="teacher is required"):
        DistillConfig(init="none", **REQUIRED)
    with pytest.raises(ConfigError, match="init is required.*--init none"):
        DistillConfig(teacher="t", **REQUIRED)
    with pytest.raises(ConfigError, match="init missing.pth does not exist"):
        FinetuneConfig(init="missing.pth", **REQUIRED)


# ------------------------------------------------------------------------------------- optimiser groups

def test_layer_decay_groups_follow_the_reference_rule():
    with torch.device("meta"):
        model = create_model("vit_base_patch16_224", num_classes=400)
    opt = make_optimizer(model, lr=1.0, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.75)
    depth = 12
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = group_of[id(param)]
        if name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:  # fc_norm, head
            layer = depth + 1
        assert group["lr_scale"] == pytest.approx(0.75 ** (depth + 1 - layer)), name
        no_decay = param.ndim == 1 or name.endswith(".bias")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert len(opt.param_groups) == 2 * (depth + 2)  # layer_{0..13}_{decay,no_decay}
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales[0] == pytest.approx(0.75 ** 13) and scales[-1] == 1.0


def test_schedule_scales_lr_by_videos_and_counts_optimizer_steps():
    cfg = FinetuneConfig(batch_size=8, accum_steps=2, epochs=10, warmup_epochs=2, base_lr=1e-3, **REQUIRED)
    sched = make_schedule(cfg, loader_steps=100, world_size=4)  # 100 batches per epoch per process
    assert sched.global_batch == 8 * 4 * 2 and sched.lr == pytest.approx(1e-3 * 64 / 256)
    assert (sched.steps_per_epoch, sched.total_steps, sched.warmup_steps) == (50, 500, 100)
    assert sched.end_step == 500
    short = make_schedule(FinetuneConfig(max_steps=30, **REQUIRED), loader_steps=100, world_size=1)
    assert (short.end_step, short.total_steps) == (30, 3000)  # stops early, the lr schedule is unchanged
    with pytest.raises(ValueError, match="--steps-per-epoch"):
        make_schedule(cfg, loader_steps=None, world_size=1)
    given = FinetuneConfig(steps_per_epoch=14, accum_steps=2, stream="resampled", **REQUIRED)  # batches per process
    assert make_schedule(given, None, 1).steps_per_epoch == 7


# ------------------------------------------------------------------------------------- mixup, criterion

def test_cutmix_box_covers_every_frame_and_targets_are_smoothed():
    cfg = FinetuneConfig(mixup=0.0, cutmix=1.0, num_classes=4, **REQUIRED)
    mixup = make_mixup(cfg)
    np.random.seed(3)
    video = torch.stack([torch.full((3, 4, 16, 16), float(i)) for i in range(4)])  # clip i is all i
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = mix_clips(mixup, video.clone(), labels)
    assert mixed.shape == video.shape
    for i in range(4):
        other = 3 - i  # batch mode pairs clip i with the flipped batch
        pasted = mixed[i] == other
        assert pasted.any() and (pasted | (mixed[i] == i)).all()
        assert (pasted == pasted[:, :1]).all()  # the same box in every frame and channel
        lam = 1 - pasted[0, 0].float().mean().item()
        off = 0.1 / 4
        expected = torch.full((4,), off)
        expected[i] += lam * (1 - 0.1)
        expected[other] += (1 - lam) * (1 - 0.1)
        torch.testing.assert_close(targets[i], expected)


def test_criterion_follows_the_reference():
    soft = classification_loss(FinetuneConfig(**REQUIRED))
    logits = torch.randn(4, 5)
    targets = torch.softmax(torch.randn(4, 5), -1)
    torch.testing.assert_close(soft(logits, None, targets), SoftTargetCrossEntropy()(logits, targets))
    smooth = classification_loss(FinetuneConfig(mixup=0, cutmix=0, **REQUIRED))
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(smooth(logits, None, labels), LabelSmoothingCrossEntropy(0.1)(logits, labels))
    plain = classification_loss(FinetuneConfig(mixup=0, cutmix=0, smoothing=0, **REQUIRED))
    torch.testing.assert_close(plain(logits, None, labels), torch.nn.functional.cross_entropy(logits, labels))
    assert make_mixup(FinetuneConfig(mixup=0, cutmix=0, **REQUIRED)) is None


# ----------------------------------------------------------------------------------------- a real run

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    train = labeled_shards(tmp_path_factory, "train", [12, 12], seed=1)
    val = labeled_shards(tmp_path_factory, "val", [4, 3, 2], seed=2)
    return train, val


def tiny_run(shards, out, init="none", **kw):
    train, val = shards
    options = dict(shards=train, val_shards=val, output_dir=str(out), model="vit_test", num_classes=len(COLOURS),
                   init=init, num_frames=4, input_size=32, batch_size=4, epochs=5, warmup_epochs=1,
                   base_lr=0.25, randaug="none", workers=0, device="cpu", tensorboard=False, log_every=3)
    options.update(kw)
    return finetune_config(None, **options)


@pytest.mark.slow
def test_finetune_learns_from_a_pretrain_checkpoint(tmp_path, shards):
    pretrain = create_model("pretrain_videomae_test", num_frames=4, img_size=32)
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in pretrain.state_dict().items()}}, tmp_path / "pt.pth")
    cfg = tiny_run(shards, tmp_path / "run", init=str(tmp_path / "pt.pth"), model_ema=True,
                   model_ema_decay=0.9, clip_grad=1.0, record_samples=True)
    report = finetune(cfg)
    # 24 videos / batch 4 = 6 steps per epoch; lr = 0.25 x 4 / 256
    assert (report["steps_per_epoch"], report["total_steps"], report["lr"]) == (6, 30, pytest.approx(0.25 * 4 / 256))
    assert "missing: fc_norm.weight, fc_norm.bias, head.weight, head.bias" in report["init"]
    assert "dropped: 19 decoder tensors" in report["init"]
    # chance is 33%: a model that learned the colour classes gets (nearly) every validation video right
    assert report["val"]["videos"] == 9 and report["val"]["top1"] >= 88.0
    assert report["best_top1"] >= report["val"]["top1"]

    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert [r["epoch"] for r in log if "val_top1" in r] == [0, 1, 2, 3, 4]
    assert all("val_ema_top1" in r for r in log if "val_top1" in r)

    best = load_checkpoint_file(tmp_path / "run" / BEST)
    model = create_model("vit_test", num_classes=3, num_frames=4, img_size=32)
    model.load_state_dict(best["model"], strict=True)  # official key names, no prefixes
    assert best["val"]["top1"] == report["best_top1"]
    last = load_checkpoint_file(report["last_checkpoint"])
    assert last["step"] == 30 and last["epoch"] == 4 and "model_ema" in last and "optimizer" in last
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*.pth")) == \
        ["checkpoint-00000030.pth", BEST]

    # resume: two more epochs continue from step 30 with the saved optimiser state
    more = finetune(tiny_run(shards, tmp_path / "run", epochs=6, resume="auto", model_ema=True,
                             model_ema_decay=0.9, clip_grad=1.0, record_samples=True))
    assert more["resumed_from"].endswith("checkpoint-00000030.pth") and more["steps"] == 36
    assert load_checkpoint_file(more["last_checkpoint"])["epoch"] == 5
    # every epoch, before and after the resume, trained on each of the 24 videos once
    for epoch in range(6):
        keys = record_path(tmp_path / "run", epoch, 0).read_text().split()
        assert sorted(keys) == [f"train_{i:04d}" for i in range(24)], epoch


def test_official_finetuned_checkpoint_loads_strictly_with_weights_only(tmp_path):
    """Keys and shapes of the official ViT-S K710 file (spec JSON), under `module` with a pickled argparse
    Namespace under `args`, as DeepSpeed wrote them."""
    from pathlib import Path

    from vmae.training.evaluate import load_classifier

    spec = Path(__file__).resolve().parent / "data" / "official_state_dict_shapes.json"
    shapes = json.loads(spec.read_text())["vit_small_patch16_224"]
    state = {k: torch.zeros(v) for k, v in shapes.items()}
    state["head.bias"] = torch.arange(710, dtype=torch.float32)
    torch.save({"module": state, "args": argparse.Namespace(model="vit_small_patch16_224", nb_classes=710)},
               tmp_path / "vit_s_k710.pth")
    model, classes, note = load_classifier("vit_small_patch16_224", tmp_path / "vit_s_k710.pth")
    assert classes == 710 and "missing: none; unexpected: none" in note
    assert model.head.bias[709].item() == 709
    model, classes, _ = load_classifier("vit_small_patch16_224", tmp_path / "vit_s_k710.pth",
                                        label_map="k710-to-k400")
    assert classes == 400 and model.head.bias[0].item() == 341  # K400 'abseiling' is K710 class 341


def test_cli_finetune_smoke_and_off_switches(tmp_path, shards):
    from click.testing import CliRunner

    from vmae.cli.train import train

    for command in ("finetune", "distill", "eval", "extract-features"):
        result = CliRunner().invoke(train, [command, "--help"])
        assert result.exit_code == 0 and f"vmae-train {command} --" in result.output, command
    args = ["finetune", "--shards", shards[0], "--output-dir", str(tmp_path / "run"), "--model", "vit_test",
            "--num-classes", "3", "--num-frames", "4", "--input-size", "32", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--max-steps", "2", "--randaug", "none", "--clip-grad", "0",
            "--layer-decay", "1", "--mixup", "0", "--cutmix", "0", "--no-tensorboard"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "steps 2 of " in result.output and "no validation" in result.output
    assert "last checkpoint: " in result.output and "checkpoint-00000002.pth" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["randaug"] is None and saved["clip_grad"] is None and saved["layer_decay"] is None
    result = CliRunner().invoke(train, args[:-1] + ["--preset", "k500"])
    assert result.exit_code == 2 and "k500" in result.output


@pytest.mark.slow
def test_64_frames_of_266_px_fine_tune_from_a_16x224_checkpoint(tmp_path):
    """The larger-input recipe's shape on a tiny model with ViT-g's 14-pixel patches: a 16x224 checkpoint
    loads into the 64x266 model (the position table is built for 32x19x19 tokens), a step trains with
    activation checkpointing, validation cuts 266-px views, and the checkpoint records the shape for eval."""
    from finetune_data import write_labeled_shards

    small = create_model("vit_test_patch14", num_classes=3)
    torch.save({"model": small.state_dict()}, tmp_path / "ft16x224.pth")
    shards = write_labeled_shards(tmp_path / "s", "t", [1], seed=0, frames=66, size=(270, 300), stride=1)
    cfg = finetune_config(None, shards=shards, val_shards=shards, output_dir=str(tmp_path / "run"),
                          model="vit_test_patch14", num_classes=3, init=str(tmp_path / "ft16x224.pth"),
                          num_frames=64, input_size=266, checkpoint_activations=True, batch_size=1, num_sample=2,
                          epochs=1, warmup_epochs=0, randaug="none", workers=0, device="cpu", tensorboard=False)
    report = finetune(cfg)
    assert report["steps"] == 1 and report["val"]["videos"] == 1 and "missing: none" in report["init"]
    saved = load_checkpoint_file(report["last_checkpoint"])["config"]
    assert (saved["num_frames"], saved["input_size"]) == (64, 266)
