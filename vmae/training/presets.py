"""The recipes of the paper and of the official scripts as named presets: pretraining, fine-tuning,
post-pretraining and distillation.

A preset is a dict of config fields (PretrainConfig, FinetuneConfig or DistillConfig); it applies between the
defaults and the user's own options. Which source each preset follows (`resolve` names it in its note):

- `vit-{b,l,h,g}-hybrid` (pretraining) and `k710-post-pretrain`, `k400`, `k600`, `ssv2`, `ucf101`, `hmdb51`:
  the official scripts (scripts/{pretrain,finetune}/*.sh, videomaev2-reference.md §5.3 and §6.3), one row per
  model size a script exists for. They are the default because they run as published, cover ViT-B, L, H and g,
  and are the record of how the released checkpoints were trained.
- `k400-paper`, `k600-paper` (ViT-g): the paper's Table 3 where it disagrees with the script: drop path 0.3
  and dropout 0.5 (before the head) against the script's 0.25 and none. Table 3's other entries are not in our
  sources; they follow the script.
- `k400-64x266`, `k600-64x266` (ViT-g): the paper's Table 3 "Kinetics 64x266^2" column, which has no script:
  lr 1e-4, 5 epochs, no warmup, drop path 0.35, dropout 0.5, layer decay 0.9, batch 32, on 64 frames of
  266 px (32 x 19 x 19 tokens) with activation checkpointing (its activation memory per clip: bench_memory.py,
  benchmarks/README.md). Weight decay is not in our sources; it follows the 16x224 script (0.1). Start from a
  ViT-g fine-tuned at 16x224 (--init); its position table is rebuilt for the larger grid.
- `distill-k710`, `distill-ssv2`: the paper's Table 10 (no script exists).

A preset is refused for a model size it has no row for, naming the sizes it has: neither the paper nor the
scripts give a rule that derives one size's recipe from another's (their rows differ in lr, layer decay, drop
path and epochs together), so a derived row would be a guess presented as a recipe. Only the tiny test models
(`vit_test*`), which no recipe is meant for, borrow the preset's first row so that smoke runs of documented
commands work.

`batch_size` is per process, as in the scripts; the reference ran these GPU counts (global batch =
GPUs x batch, x2 views from repeated augmentation), and our lr is scaled by the global batch / 256 like
the reference, so fewer GPUs with the same per-process batch keep the recipe's lr per sample:

    k710-post-pretrain  B 32 GPUs, H 32, g 32       k400    B 32, L 32, H 32, g 32
    ssv2                B 16, L 32, H 32, g 32      ucf101  g 8      hmdb51  g 8
    k400-64x266, k600-64x266  g 32 x 1 video (the paper's batch 32)

Every recipe starts from the reference defaults (§4.6, §6.2): AdamW betas (0.9, 0.999), min lr 1e-6, warmup 5
epochs, RandAugment rand-m7-n4-mstd0.5-inc1, mixup 0.8, cutmix 1.0, label smoothing 0.1, cube random erasing
0.25, repeated augmentation 2, 16 frames, 224 px.

Where a recipe fine-tunes the K710 post-pretrained model (g: k400, k600, ucf101, hmdb51), pass that checkpoint
with --init; its 710-class head is converted (K400/K600) or dropped (UCF101/HMDB51) by the loader.
"""
import re

from vmae.errors import ConfigError

# Pretraining: the reference's scripts (spec section 5.3) in this project's units. The reference scales its lr
# by videos (1e-3 x 32 x GPUs / 256); per 256 clips that is 2.5e-4 for B, L and H, and 6e-4 / 4 = 1.5e-4 for
# g, so a run with the same global batch gets the same actual lr.
PRETRAIN = {
    "vit-b-hybrid": dict(model="pretrain_videomae_base_patch16_224", epochs=200, warmup_epochs=20,
                         base_lr=2.5e-4, clip_grad=None),
    "vit-l-hybrid": dict(model="pretrain_videomae_large_patch16_224", epochs=300, warmup_epochs=30,
                         base_lr=2.5e-4, clip_grad=None),
    "vit-h-hybrid": dict(model="pretrain_videomae_huge_patch16_224", epochs=300, warmup_epochs=30,
                         base_lr=2.5e-4, clip_grad=None, checkpoint_activations=True),
    "vit-g-hybrid": dict(model="pretrain_videomae_giant_patch14_224", epochs=300, warmup_epochs=30,
                         base_lr=1.5e-4, clip_grad=0.02, checkpoint_activations=True),
}
for _preset in PRETRAIN.values():
    _preset.update(batch_size=32, num_sample=4, mask_ratio=0.9, decoder_mask_ratio=0.5, decoder_depth=4,
                   weight_decay=0.05, opt_betas=(0.9, 0.95), drop_path=0.0, num_frames=16, input_size=224)
del _preset

# Settings every recipe shares (the reference CLI defaults the scripts do not override).
COMMON = dict(num_frames=16, input_size=224, num_sample=2, min_lr=1e-6, warmup_epochs=5,
              opt_betas=(0.9, 0.999), randaug="rand-m7-n4-mstd0.5-inc1", mixup=0.8, cutmix=1.0, smoothing=0.1,
              reprob=0.25, init_scale=0.001)

# Per task: the data side of the recipe (classes, sampling, flip) and the evaluation views it is scored with.
KINETICS = dict(sparse=False, flip=True, test_views="5x3")
TASKS = {
    "k710-post-pretrain": dict(num_classes=710, **KINETICS),
    "k400": dict(num_classes=400, **KINETICS),
    "k600": dict(num_classes=600, **KINETICS),
    "ssv2": dict(num_classes=174, sparse=True, flip=False, test_views="2x3"),
    "ucf101": dict(num_classes=101, sparse=False, flip=True, test_views="5x3", stride=4),
    "hmdb51": dict(num_classes=51, sparse=False, flip=True, test_views="5x3", stride=2),
}
for _task in ("k400", "k600"):
    TASKS[f"{_task}-paper"] = TASKS[f"{_task}-64x266"] = TASKS[_task]
del _task

SCRIPTS = "the official script"
SOURCES = {name: SCRIPTS for name in ("k710-post-pretrain", "k400", "k600", "ssv2", "ucf101", "hmdb51")}
SOURCES.update({"k400-paper": "the paper's Table 3 (drop path, dropout), the official script otherwise",
                "k400-64x266": "the paper's Table 3, Kinetics 64x266 column"})
SOURCES.update({"k600-paper": SOURCES["k400-paper"], "k600-64x266": SOURCES["k400-64x266"]})


def _row(batch_size, base_lr, layer_decay, drop_path, weight_decay, epochs, **extra):
    return dict(batch_size=batch_size, base_lr=base_lr, layer_decay=layer_decay, drop_path=drop_path,
                weight_decay=weight_decay, epochs=epochs, **extra)


# (preset, size) -> the optimisation side of the recipe for that model size.
RECIPES = {
    ("k710-post-pretrain", "base"): _row(16, 7e-4, 0.75, 0.1, 0.05, 90),
    ("k710-post-pretrain", "huge"): _row(4, 1e-3, 0.8, 0.2, 0.05, 40, head_drop=0.5),
    ("k710-post-pretrain", "giant"): _row(3, 1e-3, 0.9, 0.3, 0.1, 35, clip_grad=5.0),
    ("k400", "base"): _row(16, 7e-4, 0.75, 0.1, 0.05, 90),
    ("k400", "large"): _row(6, 2e-3, 0.75, 0.2, 0.05, 35),
    ("k400", "huge"): _row(4, 1e-3, 0.8, 0.2, 0.05, 40, head_drop=0.5),
    # ViT-g reaches its K400/K600 numbers by a short fine-tune of the K710 post-pretrained model.
    ("k400", "giant"): _row(3, 1e-5, 0.9, 0.25, 0.1, 3, warmup_epochs=1),
    ("k600", "huge"): _row(4, 1e-3, 0.8, 0.2, 0.05, 40, head_drop=0.5),
    ("k600", "giant"): _row(3, 1e-5, 0.9, 0.25, 0.1, 3, warmup_epochs=1),
    ("ssv2", "base"): _row(16, 2e-3, 0.65, 0.1, 0.05, 25),
    ("ssv2", "large"): _row(6, 5e-4, 0.75, 0.2, 0.05, 20),
    ("ssv2", "huge"): _row(4, 5e-4, 0.8, 0.2, 0.05, 20),
    ("ssv2", "giant"): _row(3, 3e-4, 0.9, 0.25, 0.05, 20),
    ("ucf101", "giant"): _row(3, 1e-3, 0.9, 0.35, 0.05, 50, head_drop=0.5),
    ("hmdb51", "giant"): _row(3, 5e-4, 0.9, 0.35, 0.05, 15, head_drop=0.5),
}
for _task in ("k400", "k600"):
    RECIPES[(f"{_task}-paper", "giant")] = {**RECIPES[(_task, "giant")], "drop_path": 0.3, "head_drop": 0.5}
    RECIPES[(f"{_task}-64x266", "giant")] = _row(1, 1e-4, 0.9, 0.35, 0.1, 5, warmup_epochs=0, head_drop=0.5,
                                                  num_frames=64, input_size=266, checkpoint_activations=True)
del _task

# Paper Table 10: distilling the K710-fine-tuned ViT-g into a smaller student (post-pretrained init).
DISTILL = {
    "distill-k710": dict(num_classes=710, sparse=False, flip=True, base_lr=1e-3),
    "distill-ssv2": dict(num_classes=174, sparse=True, flip=False, base_lr=5e-4),
}
DISTILL_COMMON = dict(weight_decay=0.05, warmup_epochs=5, epochs=100, mixup=0.8, cutmix=1.0, drop_path=0.1,
                      layer_decay=0.75, clip_grad=1.0, temperature=3.0)

FINETUNE_PRESETS = tuple(TASKS)
DISTILL_PRESETS = tuple(DISTILL)
SIZES = ("small", "base", "large", "huge", "giant")
LABELS = {"small": "ViT-S", "base": "ViT-B", "large": "ViT-L", "huge": "ViT-H", "giant": "ViT-g"}
MODELS = {size: f"vit_{size}_patch16_224" for size in SIZES} | {"giant": "vit_giant_patch14_224"}


def model_size(model: str) -> str | None:
    """'vit_base_patch16_224' -> 'base'; None for names without an official size (e.g. vit_test)."""
    m = re.match(r"^(?:pretrain_videomae|vit)_(small|base|large|huge|giant)_", model)
    return m.group(1) if m else None


def sizes_of(name: str) -> list[str]:
    """The model sizes preset `name` has a recipe for."""
    return [size for size in SIZES if (name, size) in RECIPES]


def resolve(name: str, model: str) -> tuple[dict, str]:
    """(settings, note) for preset `name` and model name; settings are config fields to apply, the note names
    the source. A size without a recipe of its own is refused (see the module notes)."""
    if name in DISTILL:
        return {**COMMON, **DISTILL_COMMON, **DISTILL[name]}, f"{name}: the paper's Table 10"
    if name not in TASKS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {FINETUNE_PRESETS + DISTILL_PRESETS}")
    size = model_size(model)
    if re.match(r"^(?:pretrain_videomae|vit)_test", model):
        # The tiny test models have no recipe of any source; smoke runs of documented commands borrow one.
        size = sizes_of(name)[0]
        return resolve(name, MODELS[size])[0], f"{name}: a tiny test model, given the {LABELS[size]} row"
    if (name, size) not in RECIPES:
        sizes = sizes_of(name)
        raise ConfigError(f"preset {name} has no recipe for {model} ({size or 'not an official size'}): neither "
                          "the paper nor the official scripts give one, and none is derived. It has recipes for "
                          f"{', '.join(LABELS[s] for s in sizes)}: pass one of those with --model (e.g. "
                          f"{MODELS[sizes[0]]}), or drop --preset and give the options yourself")
    task = {k: v for k, v in TASKS[name].items() if k != "test_views"}
    return {**COMMON, **task, **RECIPES[(name, size)]}, f"{name}: {SOURCES[name]}, {LABELS[size]} row"


def eval_settings(name: str) -> dict:
    """The evaluation side of a preset: views, sampling and classes (for `vmae-train eval --preset`)."""
    if name not in TASKS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {FINETUNE_PRESETS}")
    task = TASKS[name]
    return dict(views=task["test_views"], sparse=task["sparse"], num_classes=task["num_classes"])
