"""Run configurations: frozen dataclasses built defaults -> preset -> command-line overrides.

Unknown keys are rejected (a typo must not silently fall back to a default). The final config is saved as
plain data (`to_dict`) in the run folder and in every checkpoint, so a checkpoint says how it was made.
"""
import dataclasses
import json
import typing
from dataclasses import dataclass

from vmae.atomic import write_text


def build_config(cls, presets: dict, preset: str | None = None, **overrides):
    """`cls` with its defaults, then the named preset's values, then every override that is not None."""
    values = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(sorted(presets))}")
        values.update(presets[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values)


def from_dict(cls, values: dict):
    """`cls(**values)`, rejecting unknown keys by name and turning JSON lists back into tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
                         f"valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    clean = {}
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            value = tuple(value)
        clean[name] = value
    return cls(**clean)


def to_dict(cfg) -> dict:
    """The config as plain data (str/int/float/bool/None/tuple): JSON- and weights_only-safe."""
    return dataclasses.asdict(cfg)


def save_config(cfg, path) -> None:
    write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


AMP_MODES = ("auto", "bf16", "fp16", "off")
DECODER_MASK_RATIOS = (0.0, 0.25, 0.5, 0.75)


def common_problems(cfg, at_least_one=(), unset_or_at_least_one=()) -> list[str]:
    """The checks the run and stream configs share: counts that must be >= 1 (or unset) and, where the
    config has them, the amp mode, workers >= 0, a positive clip_grad and warmup_epochs within epochs."""
    problems = []
    if getattr(cfg, "amp", "off") not in AMP_MODES:
        problems.append(f"amp {cfg.amp!r} must be one of {AMP_MODES}")
    for name in at_least_one:
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in unset_or_at_least_one:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            problems.append(f"{name} must be at least 1 (or unset), got {value}")
    if getattr(cfg, "workers", 0) < 0:
        problems.append(f"workers must be >= 0, got {cfg.workers}")
    clip_grad = getattr(cfg, "clip_grad", None)
    if clip_grad is not None and clip_grad <= 0:
        problems.append(f"clip_grad must be positive (or None for no clipping), got {clip_grad}")
    if hasattr(cfg, "warmup_epochs") and not 0 <= cfg.warmup_epochs <= cfg.epochs:
        problems.append(f"warmup_epochs {cfg.warmup_epochs} must lie in [0, epochs={cfg.epochs}]")
    return problems


def raise_problems(cfg, problems: list[str]) -> None:
    if problems:
        raise ValueError(f"invalid {type(cfg).__name__}: " + "; ".join(problems))


@dataclass(frozen=True)
class PretrainConfig:
    """VideoMAE V2 dual-masking pretraining. Defaults are the paper's Table 4 (ViT-g on UnlabeledHybrid).

    Epochs count passes over the *videos* (as the reference's --epochs): each video yields num_sample
    clips, so the paper's "1200e" is epochs=300 with num_sample=4. Learning rates are per 256 clips:
    lr = base_lr x batch_size x num_sample x world_size x accum_steps / 256 (min_lr scaled alike).
    """
    shards: str = ""
    output_dir: str = ""
    model: str = "pretrain_videomae_base_patch16_224"
    num_frames: int = 16
    input_size: int = 224
    tubelet_size: int = 2
    decoder_depth: int = 4
    drop_path: float = 0.0
    # Batch: videos per process per micro-step; each video gives num_sample views (one decode).
    batch_size: int = 32
    num_sample: int = 4
    accum_steps: int = 1
    # Schedule, in epochs of the shard set's videos (steps per epoch from shards.json unless given).
    epochs: int = 300
    warmup_epochs: int = 30
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    # Optimiser.
    base_lr: float = 1.5e-4
    min_lr: float = 2.5e-6  # the reference's 1e-5 per 256 videos = 2.5e-6 per 256 clips at num_sample 4
    weight_decay: float = 0.05
    opt_betas: tuple[float, float] = (0.9, 0.95)
    opt_eps: float = 1e-8
    clip_grad: float | None = 0.02
    # Masking and target.
    mask_ratio: float = 0.9
    decoder_mask_ratio: float = 0.5
    normalize_target: bool = True
    # Precision and speed: "auto" = bf16 autocast on GPU, off on CPU.
    amp: str = "auto"
    checkpoint_activations: bool = False
    compile: bool = False
    device: str | None = None
    # Data.
    workers: int = 8
    decoder: str | None = None
    shuffle_buffer: int | None = None
    resampled: bool = True
    # Deterministic: one loader worker, no resampling, so a resumed run replays exactly.
    deterministic: bool = False
    # Checkpoints and logs.
    resume: str | None = None
    save_every_steps: int = 1000
    keep_last: int = 3
    log_every: int = 10
    tensorboard: bool = True
    seed: int = 0

    def __post_init__(self):
        problems = []
        if not self.shards:
            problems.append("shards is required (--shards 'DIR/NAME-{000000..000099}.tar')")
        if not self.output_dir:
            problems.append("output_dir is required (--output-dir DIR)")
        if not 0.0 < self.mask_ratio < 1.0:
            problems.append(f"mask_ratio {self.mask_ratio} must lie strictly between 0 and 1")
        if self.decoder_mask_ratio not in DECODER_MASK_RATIOS:
            problems.append(f"decoder_mask_ratio {self.decoder_mask_ratio} must be one of {DECODER_MASK_RATIOS} "
                            "(running-cell masking on 2x2 cells; 0 = VideoMAE v1)")
        problems += common_problems(self, ("batch_size", "num_sample", "accum_steps", "epochs", "save_every_steps",
                                           "keep_last", "log_every"), ("max_steps", "steps_per_epoch"))
        raise_problems(self, problems)

    @property
    def loader_workers(self) -> int:
        return min(self.workers, 1) if self.deterministic else self.workers

    @property
    def loader_resampled(self) -> bool:
        return self.resampled and not self.deterministic

    def global_batch(self, world_size: int) -> int:
        """Clips per optimiser step over all processes: the number the lr is scaled by."""
        return self.batch_size * self.num_sample * world_size * self.accum_steps


# The reference's scripts (spec section 5.3) in this project's units. The reference scales its lr by
# videos (1e-3 x 32 x GPUs / 256); per 256 clips that is 2.5e-4 for B, L and H, and 6e-4 / 4 = 1.5e-4
# for g, so a run with the same global batch gets the same actual lr.
PRETRAIN_PRESETS = {
    "vit-b-hybrid": dict(model="pretrain_videomae_base_patch16_224", epochs=200, warmup_epochs=20,
                         base_lr=2.5e-4, clip_grad=None),
    "vit-l-hybrid": dict(model="pretrain_videomae_large_patch16_224", epochs=300, warmup_epochs=30,
                         base_lr=2.5e-4, clip_grad=None),
    "vit-h-hybrid": dict(model="pretrain_videomae_huge_patch16_224", epochs=300, warmup_epochs=30,
                         base_lr=2.5e-4, clip_grad=None, checkpoint_activations=True),
    "vit-g-hybrid": dict(model="pretrain_videomae_giant_patch14_224", epochs=300, warmup_epochs=30,
                         base_lr=1.5e-4, clip_grad=0.02, checkpoint_activations=True),
}
for _preset in PRETRAIN_PRESETS.values():
    _preset.update(batch_size=32, num_sample=4, mask_ratio=0.9, decoder_mask_ratio=0.5, decoder_depth=4,
                   weight_decay=0.05, opt_betas=(0.9, 0.95), drop_path=0.0, num_frames=16, input_size=224)
del _preset


def pretrain_config(preset: str | None = None, **overrides) -> PretrainConfig:
    return build_config(PretrainConfig, PRETRAIN_PRESETS, preset, **overrides)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning, evaluation, distillation and feature extraction (finetune stream).
# Learning rates here are per 256 *videos*, as in the reference's fine-tuning and the paper's Tables 3, 5
# and 10: lr = base_lr x batch_size x world_size x accum_steps / 256, not counting the num_sample views, so
# the presets carry the published numbers unchanged.

SAMPLING_DOCS = "dense: 16 frames at `stride` (Kinetics, UCF, HMDB); sparse: TSN segments (SSV2)"


def parse_views(views: str) -> tuple[int, int]:
    """'5x3' -> (5 temporal segments, 3 spatial crops)."""
    parts = views.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"views {views!r} must look like SEGMENTSxCROPS, e.g. 5x3 (Kinetics) or 2x3 (SSV2)")
    return int(parts[0]), int(parts[1])


LABEL_MAPS = {"k710-to-k400": 400, "k710-to-k600": 600, "k710-to-k700": 700}


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning of the ViT encoder with a mean-pooled fc_norm + linear head.

    Defaults are the reference's (spec sections 4.6 and 6.2); presets (vmae.training.presets) carry the
    paper's per-task recipes. Epochs count passes over the training videos; each video gives num_sample
    augmented clips (repeated augmentation).
    """
    shards: str = ""
    val_shards: str | None = None
    output_dir: str = ""
    model: str = "vit_base_patch16_224"
    num_classes: int = 400
    init: str | None = None
    model_key: str = "model|module"
    num_frames: int = 16
    input_size: int = 224
    tubelet_size: int = 2
    drop_path: float = 0.1
    head_drop: float = 0.0
    init_scale: float = 0.001
    # Data: sparse = SSV2-style segment sampling; stride None = each sample's own stride from KEY.json.
    sparse: bool = False
    stride: int | None = None
    flip: bool = True
    randaug: str | None = "rand-m7-n4-mstd0.5-inc1"
    reprob: float = 0.25
    # Batch: videos per process per micro-step; each gives num_sample clips (one decode).
    batch_size: int = 16
    num_sample: int = 2
    accum_steps: int = 1
    epochs: int = 30
    warmup_epochs: int = 5
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    # Optimiser (AdamW) and schedule (per-step linear warmup from 0, then cosine to min_lr).
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float | None = 0.75
    opt_betas: tuple[float, float] = (0.9, 0.999)
    opt_eps: float = 1e-8
    clip_grad: float | None = None
    # Mixup / CutMix on the batch viewed as (B, C*T, H, W); label smoothing folded into the soft targets.
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    model_ema: bool = False
    model_ema_decay: float = 0.9999
    # Precision and speed: "auto" = bf16 autocast on GPU, off on CPU.
    amp: str = "auto"
    checkpoint_activations: bool = False
    compile: bool = False
    device: str | None = None
    workers: int = 8
    decoder: str | None = None
    shuffle_buffer: int | None = None
    val_batch_size: int | None = None
    # Checkpoints and logs: checkpoint-best.pth (best val top-1) and the newest keep_last epoch checkpoints.
    resume: str | None = None
    keep_last: int = 1
    log_every: int = 10
    tensorboard: bool = True
    seed: int = 0

    def __post_init__(self):
        raise_problems(self, self.problems())

    def problems(self) -> list[str]:
        problems = []
        if not self.shards:
            problems.append("shards is required (--shards 'DIR/train-{000000..000099}.tar')")
        if not self.output_dir:
            problems.append("output_dir is required (--output-dir DIR)")
        problems += common_problems(self, ("num_classes", "batch_size", "num_sample", "accum_steps", "epochs",
                                           "keep_last", "log_every"),
                                    ("steps_per_epoch", "max_steps", "stride", "val_batch_size"))
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must lie in (0, 1], got {self.layer_decay}")
        for name in ("drop_path", "head_drop", "reprob", "mixup_prob", "mixup_switch_prob", "smoothing"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.mixup < 0 or self.cutmix < 0:
            problems.append("mixup and cutmix alphas must be >= 0 (0 turns one off)")
        if (self.mixup > 0 or self.cutmix > 0) and (self.batch_size * self.num_sample) % 2:
            problems.append(f"mixup needs an even number of clips per batch; batch_size x num_sample = "
                            f"{self.batch_size * self.num_sample}")
        return problems

    @property
    def uses_mixup(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)

    def global_batch(self, world_size: int) -> int:
        """Videos per optimiser step over all processes: the number the lr is scaled by (as the reference)."""
        return self.batch_size * world_size * self.accum_steps


@dataclass(frozen=True)
class DistillConfig(FinetuneConfig):
    """Distillation of a fine-tuned teacher into a student: KL(teacher || student) at a temperature.

    Defaults are the paper's Table 10 for K710 (the `distill-ssv2` preset has the SSV2 values).
    """
    teacher: str = ""
    teacher_model: str | None = None  # None: the name recorded in the teacher checkpoint
    teacher_key: str = "model|module"
    temperature: float = 3.0
    num_classes: int = 710
    epochs: int = 100
    drop_path: float = 0.1
    layer_decay: float | None = 0.75
    clip_grad: float | None = 1.0

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.teacher:
            problems.append("teacher is required (--teacher CKPT, a fine-tuned checkpoint)")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        return problems


@dataclass(frozen=True)
class EvalConfig:
    """Multi-view testing: every video decoded once, its segments x crops views cut from that decode."""
    shards: str = ""
    checkpoint: str = ""
    model: str | None = None  # None: the name recorded in the checkpoint (vmae config or official args)
    # None: the checkpoint's head size (or the label map's target size).
    num_classes: int | None = None
    label_map: str | None = None
    model_key: str = "model|module"
    views: str = "5x3"
    sparse: bool = False
    stride: int | None = None
    num_frames: int = 16
    input_size: int = 224
    tubelet_size: int = 2
    short_side: int | None = None
    batch_size: int = 4
    workers: int = 4
    decoder: str | None = None
    amp: str = "auto"
    device: str | None = None
    output_dir: str = ""
    confusion: bool = False
    save_probs: bool = False

    def __post_init__(self):
        problems = []
        if not self.shards:
            problems.append("shards is required (--shards 'DIR/val-{000000..000009}.tar')")
        if not self.checkpoint:
            problems.append("checkpoint is required (--checkpoint CKPT)")
        if self.label_map is not None and self.label_map not in LABEL_MAPS:
            problems.append(f"label_map {self.label_map!r} must be one of {tuple(LABEL_MAPS)}")
        if self.label_map is not None and self.num_classes not in (None, LABEL_MAPS[self.label_map]):
            problems.append(f"label_map {self.label_map} gives {LABEL_MAPS[self.label_map]} classes, "
                            f"not num_classes={self.num_classes}")
        try:
            parse_views(self.views)
        except ValueError as e:
            problems.append(str(e))
        problems += common_problems(self, ("batch_size", "num_frames", "input_size"))
        raise_problems(self, problems)

    @property
    def segments_crops(self) -> tuple[int, int]:
        return parse_views(self.views)


@dataclass(frozen=True)
class FeatureConfig:
    """Per-window features for temporal action detection: one [num_windows, E] .npy per video.

    Window i covers frames i*window_stride + j*frame_stride for j < num_frames; windows that would run past
    the last frame are dropped, and a video shorter than one window gives one window padded with its last
    frame. Frames are resized to input_size x input_size (whole frame, as the reference) and ImageNet-normalised.
    """
    checkpoint: str = ""
    model: str | None = None  # None: the name recorded in the checkpoint (pretrain names map to vit_*)
    out: str = ""
    videos: str | None = None
    shards: str | None = None
    num_classes: int | None = None
    model_key: str = "model|module"
    num_frames: int = 16
    input_size: int = 224
    tubelet_size: int = 2
    window_stride: int = 4
    frame_stride: int = 1
    batch_size: int = 16
    decoder: str | None = None
    amp: str = "auto"
    device: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        problems = []
        if not self.checkpoint:
            problems.append("checkpoint is required (--checkpoint CKPT)")
        if not self.out:
            problems.append("out is required (--out DIR)")
        if (self.videos is None) == (self.shards is None):
            problems.append("give exactly one of videos (--videos DIR) and shards (--shards URLS)")
        problems += common_problems(self, ("num_frames", "input_size", "window_stride", "frame_stride", "batch_size"))
        raise_problems(self, problems)


def finetune_config(preset: str | None = None, cls=FinetuneConfig, **overrides):
    """FinetuneConfig (or DistillConfig): defaults -> preset for the chosen model size -> overrides."""
    from vmae.training.presets import resolve

    presets = {}
    if preset is not None:
        model = overrides.get("model") or cls.model
        presets[preset] = resolve(preset, model)[0]
    return build_config(cls, presets, preset, **overrides)


def eval_config(preset: str | None = None, **overrides) -> EvalConfig:
    """EvalConfig: defaults -> the preset's views, sampling and classes -> overrides."""
    from vmae.training.presets import eval_settings

    presets = {preset: eval_settings(preset)} if preset is not None else {}
    return build_config(EvalConfig, presets, preset, **overrides)
