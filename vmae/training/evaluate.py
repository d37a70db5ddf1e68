"""Multi-view testing (`vmae-train eval`): scores, per-video predictions and a confusion matrix.

Each video is decoded once by the stream's test mode and all its segments x crops views are cut from that
decode (the reference decodes the whole video again for every view). A video's score is the mean over views
of the per-view softmax probabilities, as the reference's default `prob` merge.

Results are identical on one process and under torchrun: every rank scores the videos of its own shards,
the per-video records are gathered, de-duplicated by key and sorted by key before any metric is computed.
"""
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from vmae.atomic import atomic_path, write_text
from vmae.errors import ConfigError
from vmae.manifests import labels
from vmae.training import checkpoint, distributed
from vmae.config import to_dict
from vmae.training.config import LABEL_MAPS, CheckpointConfig, EvalConfig
from vmae.training.data import StreamConfig, make_loader
from vmae.training.engine import Amp
from vmae.training.models import create_model
from vmae.training.transforms import normalize

log = logging.getLogger(__name__)

TOPK = 5


# ----------------------------------------------------------------------------------------- pure functions

def view_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """[B, V, C] logits -> [B, C] mean over views of each view's softmax (float32)."""
    return logits.float().softmax(dim=-1).mean(dim=1)


def video_records(keys, video_labels, probs: torch.Tensor, keep_probs: bool = False) -> list[dict]:
    """One record per video: key, label, pred (argmax), top5 ids (best first) and their probabilities."""
    probs = probs.detach().cpu().numpy().astype(np.float32)
    k = min(TOPK, probs.shape[1])
    records = []
    for key, label, p in zip(keys, video_labels, probs):
        top = np.argsort(-p, kind="stable")[:k]  # stable: ties resolve to the lower class id, like argmax
        record = {"key": str(key), "label": None if label is None else int(label), "pred": int(top[0]),
                  "top5": top.tolist(), "top5_prob": p[top].tolist()}
        if keep_probs:
            record["probs"] = p
        records.append(record)
    return records


def merge_results(parts) -> tuple[list[dict], list[str]]:
    """Per-rank record lists -> (records sorted by key, keys seen more than once).

    The first record of a repeated key is kept (ranks come in rank order); a repeat means the same key sits
    in two shards, which the caller reports.
    """
    by_key, repeated = {}, []
    for part in parts:
        for record in part:
            if record["key"] in by_key:
                repeated.append(record["key"])
            else:
                by_key[record["key"]] = record
    return [by_key[k] for k in sorted(by_key)], sorted(set(repeated))


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def mean_class_accuracy(true: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in `true` of each class's recall, in percent."""
    cm = confusion_matrix(true, pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(100.0 * np.mean(np.diag(cm)[present] / support[present]))


def score(records: list[dict], num_classes: int) -> dict:
    """top-1, top-5 and mean per-class accuracy (percent) over the labeled records."""
    labeled = [r for r in records if r["label"] is not None]
    if not labeled:
        return {"videos": len(records), "labeled": 0, "top1": float("nan"), "top5": float("nan"),
                "mean_class_accuracy": float("nan")}
    true = np.array([r["label"] for r in labeled])
    pred = np.array([r["pred"] for r in labeled])
    in_top5 = np.array([r["label"] in r["top5"] for r in labeled])
    return {"videos": len(records), "labeled": len(labeled),
            "top1": float(100.0 * np.mean(true == pred)), "top5": float(100.0 * np.mean(in_top5)),
            "mean_class_accuracy": mean_class_accuracy(true, pred, num_classes)}


def write_predictions(records: list[dict], path) -> None:
    """Per-video predictions as Parquet (key, label, pred, top5, top5_prob[, probs]), atomically."""
    columns = {"key": pa.array([r["key"] for r in records], pa.string()),
               "label": pa.array([r["label"] for r in records], pa.int64()),
               "pred": pa.array([r["pred"] for r in records], pa.int64()),
               "top5": pa.array([r["top5"] for r in records], pa.list_(pa.int64())),
               "top5_prob": pa.array([r["top5_prob"] for r in records], pa.list_(pa.float32()))}
    if records and "probs" in records[0]:
        columns["probs"] = pa.array([r["probs"].tolist() for r in records], pa.list_(pa.float32()))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def plot_confusion(cm: np.ndarray, path, class_names=None, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG; class names on the axes when there are few classes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    n = cm.shape[0]
    size = min(4 + n * 0.25, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if class_names is not None and n <= 60:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def class_names_for(num_classes: int):
    """Kinetics class names when the class count is a Kinetics version's, else None."""
    version = {400: "k400", 600: "k600", 700: "k700", 710: "k710"}.get(num_classes)
    return labels.class_names(version) if version else None


# ------------------------------------------------------------------------------------------ model loading

def recorded_model_name(ckpt: dict) -> str | None:
    """The fine-tune model name a checkpoint records: our `config.model` or the official `args.model`; a
    pretrain name maps to the fine-tune model with the same encoder (pretrain_videomae_X -> vit_X)."""
    name = checkpoint.recorded_config(ckpt).get("model")
    return name.replace("pretrain_videomae_", "vit_") if isinstance(name, str) else None


# The reference's input shape, for checkpoints that record none.
DEFAULT_INPUT_SHAPE = {"num_frames": 16, "img_size": 224, "tubelet_size": 2}


def input_shape(given: dict, ckpt: dict, state: dict) -> tuple[dict, str]:
    """The model's num_frames, img_size and tubelet_size: each as given (not None), else as the checkpoint
    records it (our config or the official args; the tubelet also from the patch-embedding weights), else
    the reference's 16 x 224, tubelet 2. Returns (shape, note saying which value came from where)."""
    config = checkpoint.recorded_config(ckpt)
    recorded = {"num_frames": config.get("num_frames"), "img_size": config.get("input_size"),
                "tubelet_size": config.get("tubelet_size")}
    weight = state.get("patch_embed.proj.weight", state.get("encoder.patch_embed.proj.weight"))
    if weight is not None and weight.dim() == 5:
        recorded["tubelet_size"] = int(weight.shape[2])
    shape, sources = {}, []
    for name, default in DEFAULT_INPUT_SHAPE.items():
        for source, value in (("given", given.get(name)), ("checkpoint", recorded[name]), ("default", default)):
            if isinstance(value, int):
                shape[name] = value
                sources.append(f"{name} {value} ({source})")
                break
    return shape, ", ".join(sources)


def load_classifier(model_name: str | None, path, num_classes: int | None = None, label_map: str | None = None,
                    model_key: str = "model|module", strict: bool = True, num_frames: int | None = None,
                    img_size: int | None = None, tubelet_size: int | None = None, **model_options):
    """A fine-tune model sized for `path`'s head, its weights loaded (safe weights_only read).

    model_name None takes the name the checkpoint records. num_classes None takes the checkpoint's head size.
    label_map "k710-to-k400|600|700" builds a 400/600/700-class model from a K710 head by the official row
    gather (label_710to{N}.json). num_frames, img_size, tubelet_size None take the checkpoint's (see
    `input_shape`; the model's `patch_embed.input_shape` then says what was used). strict=False (features from
    a pretrain checkpoint) tolerates missing keys and reports them. Returns (model, num_classes, note).
    """
    ckpt = checkpoint.load_checkpoint_file(path)
    model_name = model_name or recorded_model_name(ckpt)
    if model_name is None:
        raise ConfigError(f"{path} records no model name; pass --model (e.g. vit_base_patch16_224)")
    state = checkpoint.extract_state_dict(ckpt, model_key)
    shape, shape_note = input_shape({"num_frames": num_frames, "img_size": img_size, "tubelet_size": tubelet_size},
                                    ckpt, state)
    del ckpt
    rows = state["head.weight"].shape[0] if "head.weight" in state else 0
    if label_map is not None:
        if rows != 710:
            raise ConfigError(f"--label-map {label_map} converts a 710-class head, but {path} has "
                             f"{rows or 'no'} head rows")
        num_classes = LABEL_MAPS[label_map]
    elif num_classes is None:
        num_classes = rows
    elif strict and rows != num_classes:
        raise ConfigError(f"{path}: the checkpoint head has {rows} classes but {num_classes} were asked for; drop "
                         "--num-classes, or pass --label-map k710-to-k400|k600|k700 for a K710 head")
    model = create_model(model_name, num_classes=num_classes, **shape, **model_options)
    report = checkpoint.load_pretrained(model, {"model": state}, strict=strict)
    return model, num_classes, f"{model_name} ({shape_note}) from {path}: {report}"


def load_for(cfg: CheckpointConfig, label_map: str | None = None, strict: bool = True):
    """The model of an eval or feature config (`load_classifier` with its settings) and the config with the
    input shape that model was built for: given, else the checkpoint's, else 16 x 224, tubelet 2. Returns
    (model, num_classes, note saying which shape came from where, config)."""
    model, num_classes, note = load_classifier(
        cfg.model, cfg.checkpoint, cfg.num_classes, label_map, cfg.model_key, strict=strict,
        num_frames=cfg.num_frames, img_size=cfg.input_size, tubelet_size=cfg.tubelet_size)
    frames, size, _ = model.patch_embed.input_shape
    return model, num_classes, note, dataclasses.replace(cfg, num_frames=frames, input_size=size,
                                                         tubelet_size=model.tubelet_size)


# ---------------------------------------------------------------------------------------------- the loop

def default_output_dir(cfg: EvalConfig) -> Path:
    """eval-CKPT-VIEWS[-MAP] next to the checkpoint, so evaluations of one checkpoint do not collide."""
    ckpt = Path(cfg.checkpoint)
    name = f"eval-{ckpt.stem}-{cfg.views}" + (f"-{cfg.label_map}" if cfg.label_map else "")
    return ckpt.parent / name


@torch.inference_mode()
def predict(model, loader, device, amp, keep_probs: bool = False, progress=None) -> tuple[list[dict], int]:
    """Records for every video the loader yields (test batches [B, V, 3, T, S, S], or val batches
    [B, 3, T, S, S] as one view), and the number of samples the loader skipped (decode errors)."""
    records, skipped = [], 0
    for batch in loader:
        skipped += int(batch.get("skipped", 0))
        video = batch["video"]
        if video.ndim == 5:  # val mode: one view per video
            video = video.unsqueeze(1)
        b, v = video.shape[:2]
        x = normalize(video.to(device, non_blocking=True).flatten(0, 1))  # [B*V, 3, T, S, S]
        with amp.autocast():
            logits = model(x)
        probs = view_probabilities(logits.view(b, v, -1))
        batch_labels = batch["label"].tolist() if "label" in batch else [None] * b
        records += video_records(batch["key"], batch_labels, probs, keep_probs)
        if progress is not None:
            progress.update(b)
    return records, skipped


def evaluate(cfg: EvalConfig) -> dict:
    """Score `cfg.checkpoint` on `cfg.shards` with multi-view testing; rank 0 writes the outputs.

    Returns the report (also written to metrics.json): top1, top5, mean_class_accuracy, videos, skipped,
    repeated keys, output paths.
    """
    info = distributed.init_distributed(cfg.device)
    try:
        return _evaluate(cfg, info)
    finally:
        distributed.cleanup()


def _evaluate(cfg: EvalConfig, info) -> dict:
    model, num_classes, note, cfg = load_for(cfg, cfg.label_map)  # the views are cut to the model's shape
    if info.is_main:
        log.info("%s", note)
    model.to(info.device).eval()
    loader, _ = make_loader(stream_config(cfg), rank=info.rank, world_size=info.world_size)
    amp = Amp(cfg.amp, info.device)
    bar = tqdm(desc=f"eval {cfg.views}", unit="video", disable=not info.is_main)
    records, skipped = predict(model, loader, info.device, amp, keep_probs=cfg.save_probs, progress=bar)
    bar.close()
    parts = distributed.all_gather_object((records, skipped))
    merged, repeated = merge_results(part[0] for part in parts)
    skipped = sum(part[1] for part in parts)
    if skipped and info.is_main:
        log.warning("%d video(s) could not be decoded and are not scored (their keys and shards are logged "
                    "above; check the shards with `vmae-data verify --decode`)", skipped)
    report = {**score(merged, num_classes), "skipped": skipped,
              "repeated_keys": repeated, "views": cfg.views, "sampling": "sparse" if cfg.sparse else "dense",
              "num_classes": num_classes, "checkpoint": str(cfg.checkpoint), "shards": cfg.shards,
              "label_map": cfg.label_map, "input": f"{cfg.num_frames}x{cfg.input_size}, tubelet {cfg.tubelet_size}",
              "model": note, "world_size": info.world_size, "rank": info.rank}
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg)
    report["predictions"] = str(out / "predictions.parquet")
    report["confusion"] = str(out / "confusion.png") if cfg.confusion else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(merged, out / "predictions.parquet")
        if cfg.confusion:
            labeled = [r for r in merged if r["label"] is not None]
            cm = confusion_matrix([r["label"] for r in labeled], [r["pred"] for r in labeled], num_classes)
            plot_confusion(cm, out / "confusion.png", class_names_for(num_classes),
                           f"{Path(cfg.checkpoint).name}: top-1 {report['top1']:.2f}%")
        write_text(out / "metrics.json", json.dumps({**report, "config": to_dict(cfg)}, indent=2) + "\n")
    return report


def stream_config(cfg: EvalConfig) -> StreamConfig:
    """The data stream's test mode for this evaluation (an unset shape: the reference's 16 x 224)."""
    segments, crops = cfg.segments_crops
    frames = cfg.num_frames or DEFAULT_INPUT_SHAPE["num_frames"]
    size = cfg.input_size or DEFAULT_INPUT_SHAPE["img_size"]
    return StreamConfig.from_run(cfg, mode="test", num_frames=frames, input_size=size, test_segments=segments,
                                 test_crops=crops, short_side=cfg.short_side or size)
