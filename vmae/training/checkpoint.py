"""Checkpoint files: safe loading (official and ours), pretrained-weight import, atomic saving, RNG state.

Every file is read with torch.load(weights_only=True); the only class allowed beyond tensors and plain data
is argparse.Namespace, which official files pickle under `args`. A file that needs anything else is refused,
so a downloaded checkpoint cannot run code. Our own files hold only tensors and plain data.
"""
import argparse
import pickle
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vmae.atomic import atomic_path
from vmae.errors import VmaeError
from vmae.manifests.labels import head_map

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8})\.pth$")
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"
STRIP_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP / DeepSpeed
ENCODER_PREFIXES = ("encoder.", "backbone.")
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")


class CheckpointError(VmaeError, ValueError):
    """A checkpoint that cannot be used, with the file and the fix in the message."""


def load_checkpoint_file(path) -> dict:
    """Load a checkpoint safely onto the CPU. A DeepSpeed checkpoint folder is read through its
    mp_rank_00_model_states.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / DEEPSPEED_FILE).exists():
            raise FileNotFoundError(f"{path} is a folder without {DEEPSPEED_FILE}; pass the checkpoint file")
        path = path / DEEPSPEED_FILE
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it pickles objects other than tensors, plain data and "
                              f"argparse.Namespace, and unpickling them could run code ({str(e).splitlines()[0]}). "
                              "Re-save its state dict from a trusted environment.") from e


def recorded_config(ckpt: dict) -> dict:
    """The settings a checkpoint records: our `config` (plain data) or the official `args` Namespace as a dict;
    {} when it has neither."""
    config = ckpt.get("config")
    if isinstance(config, dict):
        return config
    args = ckpt.get("args")
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else {}


def _strip(key: str, prefixes) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def extract_state_dict(ckpt: dict, model_key: str = "model|module") -> dict:
    """The state dict inside a loaded checkpoint: the first of the `|`-separated keys present (else the dict
    itself), with `_orig_mod.` and `module.` prefixes removed."""
    state = next((ckpt[k] for k in model_key.split("|") if k in ckpt), ckpt)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"no state dict under {model_key!r}: top-level keys are {sorted(ckpt)[:10]} "
                              f"(non-tensor entries such as {bad[:3]}); pass model_key=")
    return {_strip(k, STRIP_PREFIXES): v for k, v in state.items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    head: str = "none in checkpoint"

    def __str__(self) -> str:
        def names(keys):
            return ", ".join(keys) if keys else "none"
        dropped = f"{len(self.dropped)} decoder tensors" if self.dropped else "none"
        return (f"loaded {self.loaded} tensors from {self.source}; missing: {names(self.missing)}; "
                f"unexpected: {names(self.unexpected)}; dropped: {dropped}; head: {self.head}")


def _convert_head(state: dict, target: dict, report: LoadReport) -> None:
    if "head.weight" not in state:
        return
    rows = state["head.weight"].shape[0]
    if "head.weight" not in target:
        report.head = f"dropped ({rows} classes; the model has no head)"
    elif state["head.weight"].shape == target["head.weight"].shape:
        report.head = f"kept ({rows} classes)"
        return
    else:
        classes = target["head.weight"].shape[0]
        if rows == 710 and classes in (400, 600, 700):
            index = torch.tensor(head_map(classes))
            for k in ("head.weight", "head.bias"):
                if k in state:
                    state[k] = state[k][index]
            report.head = f"converted 710 -> {classes} with label_710to{classes}.json"
            return
        report.head = f"dropped ({rows} classes; the model has {classes}), fresh init"
    state.pop("head.weight")
    state.pop("head.bias", None)


def load_pretrained(model: nn.Module, path_or_dict, model_key: str = "model|module",
                    strict: bool = False) -> LoadReport:
    """Initialise `model` from an official or vmae checkpoint (pretrain or finetune): takes `model`/`module`,
    strips `_orig_mod.`/`module.`, and when the model has no such keys strips `encoder.`/`backbone.` and drops
    the decoder; a 710-class head becomes a 400/600/700 one through the official label maps, any other head of
    the wrong size is dropped. Tensors of the wrong shape elsewhere are an error. strict=True also refuses
    missing or unexpected keys."""
    model = unwrap(model)
    if isinstance(path_or_dict, dict):
        source, ckpt = "<state dict>", path_or_dict
    else:
        source, ckpt = str(path_or_dict), load_checkpoint_file(path_or_dict)
    state = extract_state_dict(ckpt, model_key)
    target = model.state_dict()
    report = LoadReport(source)
    for prefix in ENCODER_PREFIXES:
        if not any(k.startswith(prefix) for k in target):
            state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    if not any(k.startswith(DECODER_PREFIXES) for k in target):
        report.dropped = sorted(k for k in state if k.startswith(DECODER_PREFIXES))
        state = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}
    _convert_head(state, target, report)
    wrong = [f"{k}: checkpoint {list(v.shape)} vs model {list(target[k].shape)}"
             for k, v in state.items() if k in target and v.shape != target[k].shape]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors do not fit the model, e.g. {'; '.join(wrong[:3])}. "
                              "Build the model size (and patch size) the checkpoint was trained with.")
    result = model.load_state_dict(state, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    report.loaded = len(state) - len(report.unexpected)
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f"strict load failed: {report}")
    return report


def save_file(path, state: dict) -> Path:
    """torch.save to a temporary name, then rename: a crash never leaves a truncated file under `path`."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def _numbered(output_dir) -> list:
    """(step, path) of the complete numbered checkpoints, oldest first."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*.pth"):
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(output_dir, step: int, state: dict, keep: int | None = None) -> Path:
    """Write output_dir/checkpoint-{step:08d}.pth atomically, then delete all but the newest `keep` numbered
    checkpoints (None keeps every one)."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (or None to keep all); got {keep}")
    path = save_file(Path(output_dir) / f"checkpoint-{step:08d}.pth", state)
    if keep is not None:
        for _, old in _numbered(output_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def latest_checkpoint(output_dir) -> Path | None:
    """The newest complete checkpoint-{step:08d}.pth, or None. Temporary files never match the name, and a file
    whose zip directory is unreadable (truncated by a copy) is skipped."""
    if not Path(output_dir).is_dir():
        return None
    for _, path in reversed(_numbered(output_dir)):
        if zipfile.is_zipfile(path):
            return path
    return None


def rng_state() -> dict:
    """torch CPU, every CUDA device, numpy and Python `random` states, as tensors and plain data so the
    checkpoint stays loadable with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned. CUDA states are restored only where the devices exist."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
