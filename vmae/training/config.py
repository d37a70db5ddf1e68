"""Training configurations: frozen dataclasses built defaults -> preset -> command-line overrides.

Every default lives here, once; each field made with `option` is also a command-line option (see vmae.config).
Sentinels from the command line ("0 turns clipping off") are turned into None here (`OFF`), so the saved
config says what ran. The final config is saved as plain data (`to_dict`) in the run folder and in every
checkpoint, so a checkpoint says how it was made.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vmae.config import apply_off, build_config, count_problems, option, raise_problems
from vmae.errors import ConfigError
from vmae.training import presets
from vmae.training.model_names import model_problem

AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("cpu", "cuda")
DECODERS = ("pyav", "decord")
STREAMS = ("exact", "resampled")
DECODER_MASK_RATIOS = (0.0, 0.25, 0.5, 0.75)
LABEL_MAPS = {"k710-to-k400": 400, "k710-to-k600": 600, "k710-to-k700": 700}


def common_problems(cfg, at_least_one=(), unset_or_at_least_one=()) -> list[str]:
    """The checks the run and stream configs share: counts that must be >= 1 (or unset) and, where the
    config has them, the amp mode, workers >= 0, a positive clip_grad and warmup_epochs within epochs."""
    problems = count_problems(cfg, at_least_one, unset_or_at_least_one)
    if getattr(cfg, "amp", "off") not in AMP_MODES:
        problems.append(f"amp {cfg.amp!r} must be one of {AMP_MODES}")
    if getattr(cfg, "workers", 0) < 0:
        problems.append(f"workers must be >= 0, got {cfg.workers}")
    clip_grad = getattr(cfg, "clip_grad", None)
    if clip_grad is not None and clip_grad <= 0:
        problems.append(f"clip_grad must be positive (or None for no clipping), got {clip_grad}")
    if hasattr(cfg, "warmup_epochs") and not 0 <= cfg.warmup_epochs <= cfg.epochs:
        problems.append(f"warmup_epochs {cfg.warmup_epochs} must lie in [0, epochs={cfg.epochs}]")
    return problems


@dataclass(frozen=True)
class RunConfig:
    """What every training run has: data, model size, batch, schedule, optimiser, precision, checkpoints.

    Defaults are pretraining's: the official ViT-B script, the default model's own recipe (the vit-b-hybrid
    preset; the others are the vit-{l,h,g}-hybrid presets); FinetuneConfig overrides the ones that differ.
    Epochs count passes over the training videos. Learning rates are per 256 samples of the global batch
    (`global_batch`: clips for pretraining, videos for fine-tuning).
    """
    OFF: ClassVar[dict] = {"clip_grad": 0}  # command-line value -> None (off)

    shards: str = option("", "Training shards: a shard folder (the shards its shards.json lists) or a brace "
                             "pattern, e.g. shards/uh or 'shards/uh/uh-{000000..001347}.tar'; join sets with "
                             "'::'.", required=True)
    output_dir: str = option("", "Run folder: config.json, log.jsonl, tb/, checkpoint-STEP.pth. One run per "
                                 "folder: a folder that holds a run needs --resume.", required=True, path="folder")
    model: str = option("pretrain_videomae_base_patch16_224", "Model name.")
    num_frames: int = option(16, "Frames per clip.")
    input_size: int = option(224, "Crop size in pixels.")
    tubelet_size: int = 2
    drop_path: float = option(0.0, "Stochastic depth rate.")
    # Batch: videos per process per micro-step; each video gives num_sample views (one decode).
    batch_size: int = option(32, "Videos per process per micro-step.")
    num_sample: int = option(4, "Views per decoded video (repeated augmentation).")
    accum_steps: int = option(1, "Micro-steps per optimiser step (gradient accumulation).")
    # Schedule, in epochs of the shard set's videos (counted in its index.parquet).
    epochs: int = option(200, "Passes over the training videos.")
    warmup_epochs: int = option(20, "Epochs of linear warmup from lr 0.")
    steps_per_epoch: int | None = option(None, "Batches per process per epoch of a resampled stream whose shards "
                                               "have no index.parquet to count from.")
    max_steps: int | None = option(None, "Stop after this many optimiser steps (smoke runs); the lr schedule "
                                         "still spans --epochs.")
    # Optimiser: AdamW, per-step linear warmup from 0, then cosine to min_lr.
    base_lr: float = option(2.5e-4, "Learning rate per 256 clips of the global batch (views counted).")
    # the reference's 1e-5 per 256 videos = 2.5e-6 per 256 clips at num_sample 4
    min_lr: float = option(2.5e-6, "Final learning rate, scaled like --base-lr.")
    weight_decay: float = option(0.05, "AdamW weight decay (not on 1-D parameters).")
    opt_betas: tuple[float, float] = (0.9, 0.95)
    opt_eps: float = 1e-8
    clip_grad: float | None = option(None, "Gradient-norm clip.", unset="off")
    # Precision and speed: "auto" = bf16 autocast on GPU, off on CPU.
    amp: str = option("auto", "Precision: auto = bf16 autocast on GPU, off on CPU; fp16 adds a grad scaler.",
                      choices=AMP_MODES)
    checkpoint_activations: bool = option(False, "Recompute block activations in backward (less memory, more "
                                                 "compute).")
    compile: bool = option(False, "torch.compile the model.")
    device: str | None = option(None, "Device.", choices=DEVICES, unset="cuda when available")
    # Data.
    stream: str = option("exact", "exact: every video once per epoch, dealt over processes x loader workers "
                                  "(padded with a few repeats to whole steps), resumable mid-epoch; resampled: "
                                  "whole shards drawn with replacement by every worker (webdataset's classic "
                                  "stream).", choices=STREAMS)
    index: str | None = option(None, "The training shards' index.parquet (one per '::'-joined set), e.g. for "
                                     "pipe: URLs.", unset="the one beside the shards")
    record_samples: bool = option(False, "Write the keys each process trains on, in order, to "
                                         "OUTPUT_DIR/samples/epoch-E-rank-R.txt (exact stream).")
    workers: int = option(8, "Loader worker processes per training process.")
    decoder: str | None = option(None, "Video decoder backend.", choices=DECODERS, unset="the stream's")
    shuffle_buffer: int | None = option(None, "Samples in each loader worker's shuffle buffer.",
                                        unset="the stream's")
    # Checkpoints and logs.
    resume: str | None = option(None, "'auto' (the newest readable checkpoint in --output-dir; a fresh start "
                                      "if there is none, an error if none reads) or a checkpoint path.")
    keep_last: int = option(3, "Numbered checkpoints to keep.")
    log_every: int = option(10, "Log interval in steps.")
    tensorboard: bool = option(True, "Write TensorBoard events to tb/ (log.jsonl is always written).")
    seed: int = option(0, "Seed of every random choice (offset by the rank).")

    def __post_init__(self):
        apply_off(self)
        raise_problems(self, self.problems())

    def problems(self) -> list[str]:
        problems = []
        if not self.shards:
            problems.append("shards is required (--shards 'DIR/NAME-{000000..000099}.tar')")
        if not self.output_dir:
            problems.append("output_dir is required (--output-dir DIR)")
        if self.stream not in STREAMS:
            problems.append(f"stream {self.stream!r} must be one of {STREAMS}")
        if self.stream == "exact" and self.steps_per_epoch is not None:
            problems.append("steps_per_epoch is for --stream resampled: an exact epoch is the shard set's videos, "
                            "counted in its index.parquet")
        if self.stream != "exact" and self.record_samples:
            problems.append("record_samples needs --stream exact (a resampled stream has no epochs to record)")
        return problems + common_problems(self, ("batch_size", "num_sample", "accum_steps", "epochs", "keep_last",
                                                 "log_every"), ("max_steps", "steps_per_epoch"))


@dataclass(frozen=True)
class PretrainConfig(RunConfig):
    """VideoMAE V2 dual-masking pretraining. Defaults are the official ViT-B script's recipe (vit-b-hybrid).

    Epochs count passes over the *videos* (as the reference's --epochs): each video yields num_sample
    clips, so the paper's "1200e" is epochs=300 with num_sample=4. Learning rates are per 256 clips:
    lr = base_lr x batch_size x num_sample x world_size x accum_steps / 256 (min_lr scaled alike).
    """
    decoder_depth: int = option(4, "Decoder blocks.")
    mask_ratio: float = option(0.9, "Encoder tube-mask ratio.")
    decoder_mask_ratio: float = option(0.5, "Decoder running-cell ratio: 0.25, 0.5 or 0.75; 0 = VideoMAE v1.")
    normalize_target: bool = True
    deterministic: bool = option(False, "One loader worker and the exact stream; a resumed run replays its epoch "
                                        "from the start to where it stopped, so it ends bit-identical (for "
                                        "debugging and tests).")
    save_every_steps: int = option(1000, "Checkpoint interval in steps; one is also written at the end.")

    def problems(self) -> list[str]:
        problems = super().problems() + count_problems(self, ("save_every_steps",))
        problems += filter(None, [model_problem(self.model, "pretrain")])
        if not 0.0 < self.mask_ratio < 1.0:
            problems.append(f"mask_ratio {self.mask_ratio} must lie strictly between 0 and 1")
        if self.decoder_mask_ratio not in DECODER_MASK_RATIOS:
            problems.append(f"decoder_mask_ratio {self.decoder_mask_ratio} must be one of {DECODER_MASK_RATIOS} "
                            "(running-cell masking on 2x2 cells; 0 = VideoMAE v1)")
        return problems

    @property
    def loader_workers(self) -> int:
        return min(self.workers, 1) if self.deterministic else self.workers

    @property
    def loader_resampled(self) -> bool:
        return self.stream == "resampled" and not self.deterministic

    def global_batch(self, world_size: int) -> int:
        """Clips per optimiser step over all processes: the number the lr is scaled by."""
        return self.batch_size * self.num_sample * world_size * self.accum_steps


def pretrain_config(preset: str | None = None, **overrides) -> PretrainConfig:
    return build_config(PretrainConfig, presets.PRETRAIN, preset, **overrides)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning, evaluation, distillation and feature extraction (finetune stream).
# Learning rates here are per 256 *videos*, as in the reference's fine-tuning and the paper's Tables 3, 5
# and 10: lr = base_lr x batch_size x world_size x accum_steps / 256, not counting the num_sample views, so
# the presets carry the published numbers unchanged.

def parse_views(views: str) -> tuple[int, int]:
    """'5x3' -> (5 temporal segments, 3 spatial crops)."""
    parts = views.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"views {views!r} must look like SEGMENTSxCROPS, e.g. 5x3 (Kinetics) or 2x3 (SSV2)")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class FinetuneConfig(RunConfig):
    """Supervised fine-tuning of the ViT encoder with a mean-pooled fc_norm + linear head.

    Defaults are the reference's (spec sections 4.6 and 6.2); presets (vmae.training.presets) carry the
    paper's per-task recipes. Epochs count passes over the training videos; each video gives num_sample
    augmented clips (repeated augmentation).
    """
    OFF: ClassVar[dict] = {**RunConfig.OFF, "layer_decay": 1, "randaug": "none", "init": "none"}

    # The run defaults that differ from pretraining's.
    shards: str = option("", "Labeled training shards (KEY.cls): a shard folder or a brace pattern, e.g. "
                             "shards/k710-train.", required=True)
    output_dir: str = option("", "Run folder: config.json, log.jsonl, tb/, checkpoint-STEP.pth, "
                                 "checkpoint-best.pth. One run per folder: a folder that holds a run needs "
                                 "--resume.", required=True, path="folder")
    model: str = "vit_base_patch16_224"
    drop_path: float = 0.1
    batch_size: int = 16
    num_sample: int = 2
    epochs: int = 30
    warmup_epochs: int = 5
    base_lr: float = option(1e-3, "Learning rate per 256 videos of the global batch (views not counted, as the "
                                  "paper's tables).")
    min_lr: float = 1e-6
    opt_betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None
    keep_last: int = option(1, "Epoch checkpoints to keep (besides checkpoint-best.pth).")
    # Fine-tuning's own.
    val_shards: str | None = option(None, "Labeled shards (folder or pattern) for the single-view validation "
                                          "after every epoch.")
    num_classes: int = option(400, "Classes of the new head.")
    init: str | None = option(None, "Initial weights: a pretrain or fine-tuned checkpoint (vmae or official). A "
                                    "K710 head is converted for 400/600/700 classes, any other mismatching head "
                                    "is re-initialised.", unset="random weights")
    model_key: str = option("model|module", "Key(s) of the state dict inside --init.")
    head_drop: float = option(0.0, "Dropout before the head (the paper's \"dropout\").")
    drop: float = option(0.0, "Dropout after the position embedding, the attention projection and fc2 (the "
                              "reference's --drop).")
    init_scale: float = 0.001
    # Data: sparse = SSV2-style segment sampling; stride None = each sample's own stride from KEY.json.
    sparse: bool = option(False, "Frame sampling: sparse TSN segments (SSV2) or dense strided windows "
                                 "(Kinetics).", flag="--sparse/--dense")
    stride: int | None = option(None, "Dense frame stride.", unset="each sample's own, from KEY.json")
    flip: bool = option(True, "Random horizontal flip (off for SSV2).")
    randaug: str | None = option("rand-m7-n4-mstd0.5-inc1", "timm RandAugment spec, the same ops on every frame.")
    reprob: float = option(0.25, "Cube random-erasing probability.")
    antialias: bool = option(False, "Antialiased resizes (random resized crop, validation); off resizes as the "
                                    "reference (bilinear without antialiasing).")
    layer_decay: float | None = option(0.75, "Layer-wise lr decay.", unset="off")
    # Mixup / CutMix on the batch viewed as (B, C*T, H, W); label smoothing folded into the soft targets.
    mixup: float = option(0.8, "Mixup alpha; 0 turns it off.")
    cutmix: float = option(1.0, "CutMix alpha; 0 turns it off.")
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = option(0.1, "Label smoothing.")
    model_ema: bool = option(False, "Keep an EMA of the weights (validated too).")
    model_ema_decay: float = option(0.9999, "Decay of the weights' EMA.")
    val_batch_size: int | None = None

    def problems(self) -> list[str]:
        problems = super().problems()
        problems += count_problems(self, ("num_classes",), ("stride", "val_batch_size"))
        problems += filter(None, [model_problem(self.model, "finetune")])
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must lie in (0, 1], got {self.layer_decay}")
        if self.init is not None and not Path(self.init).exists():
            problems.append(f"init {self.init} does not exist (give a checkpoint file or folder, or 'none')")
        for name in ("drop_path", "head_drop", "drop", "reprob", "mixup_prob", "mixup_switch_prob", "smoothing"):
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
    teacher: str = option("", "Fine-tuned teacher checkpoint.", required=True, path="existing")
    teacher_model: str | None = option(None, "Teacher model name.", unset="the name recorded in the checkpoint")
    teacher_key: str = option("model|module", "Key(s) of the state dict inside --teacher.")
    temperature: float = option(3.0, "Softmax temperature of the KL loss.")
    num_classes: int = 710
    epochs: int = 100
    clip_grad: float | None = 1.0

    def __post_init__(self):
        # Checked before `OFF` turns an explicit "none" into None: a student left at random weights by a
        # forgotten --init would train for days to a poor model.
        if self.init is None:
            raise_problems(self, ["init is required: the student's post-pretrained checkpoint (--init CKPT), or "
                                  "--init none to start from random weights"])
        super().__post_init__()

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.teacher:
            problems.append("teacher is required (--teacher CKPT, a fine-tuned checkpoint)")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.teacher_model is not None:
            problems += filter(None, [model_problem(self.teacher_model, "finetune", "--teacher-model")])
        return problems


@dataclass(frozen=True)
class CheckpointConfig:
    """What eval and extract-features share: a checkpoint, the model built for it, and where it runs. An unset
    input shape is the checkpoint's (evaluate.input_shape), so a model is scored at the size it learned."""
    checkpoint: str = option("", "Checkpoint, vmae or official (weights under --model-key).", required=True,
                             path="existing")
    model: str | None = option(None, "Model name.", unset="the name recorded in the checkpoint")
    model_key: str = option("model|module", "Key(s) of the state dict in the checkpoint.")
    num_classes: int | None = None  # None: the checkpoint's head size
    num_frames: int | None = option(None, "Frames per model input.", unset="the checkpoint's, else 16")
    input_size: int | None = option(None, "Model input size in pixels.", unset="the checkpoint's, else 224")
    tubelet_size: int | None = None  # None: the checkpoint's (its patch-embedding weights), else 2
    decoder: str | None = option(None, "Video decoder backend.", choices=DECODERS, unset="the stream's")
    amp: str = option("auto", "Precision: auto = bf16 autocast on GPU, off on CPU.", choices=AMP_MODES)
    device: str | None = option(None, "Device.", choices=DEVICES, unset="cuda when available")

    def __post_init__(self):
        raise_problems(self, self.problems())

    def problems(self) -> list[str]:
        problems = [] if self.checkpoint else ["checkpoint is required (--checkpoint CKPT)"]
        if self.model is not None:
            problems += filter(None, [model_problem(self.model, "finetune")])
        return problems + common_problems(self, (), ("num_classes", "num_frames", "input_size", "tubelet_size"))


@dataclass(frozen=True)
class EvalConfig(CheckpointConfig):
    """Multi-view testing: every video decoded once, its segments x crops views cut from that decode."""
    shards: str = option("", "Labeled shards to score: a shard folder or a brace pattern, e.g. shards/k710-val.",
                         required=True)
    num_classes: int | None = option(None, "Expected head size.", unset="the checkpoint's, or the label map's")
    label_map: str | None = option(None, "Score a K710 head on K400/K600/K700 by the official row gather "
                                         "(label_710to{N}.json).", choices=tuple(LABEL_MAPS))
    views: str = option("5x3", "Temporal segments x spatial crops.", metavar="SEGMENTSxCROPS")
    sparse: bool = option(False, "Sparse TSN-style views (SSV2) or dense strided windows.", flag="--sparse/--dense")
    stride: int | None = option(None, "Dense frame stride.", unset="each sample's own, from KEY.json")
    short_side: int | None = option(None, "Resize the shorter side to this before cropping.", unset="input size")
    antialias: bool = option(False, "Antialiased short-side resize; off resizes as the reference's test pipeline "
                                    "(OpenCV INTER_LINEAR: bilinear without antialiasing).")
    batch_size: int = option(4, "Videos per process per batch (each gives all its views).")
    workers: int = option(4, "Loader worker processes.")
    output_dir: str = option("", "Where predictions.parquet, metrics.json (and confusion.png) go.",
                             path="folder", unset="eval-CKPT-VIEWS[-MAP] next to the checkpoint")
    confusion: bool = option(False, "Also draw confusion.png.")
    save_probs: bool = option(False, "Store every video's full probability vector.")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.shards:
            problems.append("shards is required (--shards 'DIR/val-{000000..000009}.tar')")
        if self.label_map is not None and self.label_map not in LABEL_MAPS:
            problems.append(f"label_map {self.label_map!r} must be one of {tuple(LABEL_MAPS)}")
        if self.label_map is not None and self.num_classes not in (None, LABEL_MAPS[self.label_map]):
            problems.append(f"label_map {self.label_map} gives {LABEL_MAPS[self.label_map]} classes, "
                            f"not num_classes={self.num_classes}")
        try:
            parse_views(self.views)
        except ConfigError as e:
            problems.append(str(e))
        return problems + count_problems(self, ("batch_size",))

    @property
    def segments_crops(self) -> tuple[int, int]:
        return parse_views(self.views)


@dataclass(frozen=True)
class FeatureConfig(CheckpointConfig):
    """Per-window features for temporal action detection: one [num_windows, E] .npy per video.

    Window i covers frames i*window_stride + j*frame_stride for j < num_frames; windows that would run past
    the last frame are dropped, and a video shorter than one window gives one window padded with its last
    frame. Frames are resized to input_size x input_size (whole frame, as the reference) and ImageNet-normalised,
    or with reference_features exactly as the reference's TAD script (vmae.training.features says why both).
    """
    out: str = option("", "Folder for KEY.npy and index.parquet.", required=True, path="folder")
    videos: str | None = option(None, "Folder of video files (searched recursively); KEY = path without the "
                                      "suffix.", path="existing-folder")
    shards: str | None = option(None, "Or shards (a folder or a brace pattern); KEY = the sample key.")
    window_stride: int = option(4, "Frames between window starts.")
    frame_stride: int = option(1, "Frames between a window's frames.")
    batch_size: int = option(16, "Windows per forward pass.")
    overwrite: bool = option(False, "Recompute videos whose KEY.npy exists.")
    reference_features: bool = option(False, "Inputs as the reference's TAD script, which made the released "
                                              "THUMOS14/FineAction features: frames /255 without ImageNet "
                                              "normalisation, resized as floats, fp32.")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.out:
            problems.append("out is required (--out DIR)")
        if (self.videos is None) == (self.shards is None):
            problems.append("give exactly one of videos (--videos DIR) and shards (--shards URLS)")
        if self.reference_features and self.amp not in ("auto", "off"):
            problems.append(f"reference_features runs in fp32 as the reference; amp {self.amp!r} contradicts it")
        return problems + count_problems(self, ("window_stride", "frame_stride", "batch_size"))


def finetune_config(preset: str | None = None, cls=FinetuneConfig, **overrides):
    """FinetuneConfig (or DistillConfig): defaults -> preset for the chosen model size -> overrides."""
    recipes = {}
    if preset is not None:
        model = overrides.get("model") or cls.model
        recipes[preset] = presets.resolve(preset, model)[0]
    return build_config(cls, recipes, preset, **overrides)


def eval_config(preset: str | None = None, **overrides) -> EvalConfig:
    """EvalConfig: defaults -> the preset's views, sampling and classes -> overrides."""
    recipes = {preset: presets.eval_settings(preset)} if preset is not None else {}
    return build_config(EvalConfig, recipes, preset, **overrides)
