"""Checkpoint files: safe loading (official and ours), pretrained-weight import, checked saving, RNG state.

Every file is read with torch.load(weights_only=True); the only class allowed beyond tensors and plain data
is argparse.Namespace, which official files pickle under `args`. A file that needs anything else is refused,
so a downloaded checkpoint cannot run code. Our own files hold only tensors and plain data.

A checkpoint is written under a temporary name, flushed to the disk, checked (its zip directory and its
data.pkl record read back) and only then renamed into place; pruning keeps the newest `keep` readable files,
so a damaged or truncated file never costs a good one. A file that cannot be read, empty or cut short
included, is a `CheckpointError` naming it, never a torch traceback.
"""
import argparse
import os
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
from vmae.errors import OutputError, VmaeError
from vmae.manifests.labels import head_map

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8})\.pth$")
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"
STRIP_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP / DeepSpeed
ENCODER_PREFIXES = ("encoder.", "backbone.")
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")


DAMAGED_FIX = ("it was cut short or damaged (a full disk, a killed copy or download). Copy it again, or use "
               "another checkpoint (in a run folder, --resume auto takes the newest readable one)")


class CheckpointError(VmaeError, ValueError):
    """A checkpoint that cannot be used, with the file and the fix in the message."""


def damage(path) -> str | None:
    """What makes `path` unusable, found without unpickling it: empty, or a zip archive (torch's format since
    1.6) whose directory is missing, whose records run past the end, or whose data.pkl does not read back.
    None when nothing is found (files in the legacy pickle format are judged by loading them)."""
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if any(r.header_offset + r.compress_size > size for r in records):
                return f"is truncated ({size} bytes: its records run past the end)"
            pickles = [r for r in records if r.filename.endswith("/data.pkl") or r.filename == "data.pkl"]
            if not pickles:
                return "is a zip archive without data.pkl, not a torch checkpoint"
            archive.read(pickles[0])  # checks the record's CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        return f"is truncated or damaged ({size} bytes: no readable zip directory)"
    return None


def load_checkpoint_file(path) -> dict:
    """Load a checkpoint safely onto the CPU. A DeepSpeed checkpoint folder is read through its
    mp_rank_00_model_states.pt. An unreadable file is a CheckpointError naming it."""
    path = Path(path)
    if path.is_dir():
        if not (path / DEEPSPEED_FILE).exists():
            raise FileNotFoundError(f"{path} is a folder without {DEEPSPEED_FILE}; pass the checkpoint file")
        path = path / DEEPSPEED_FILE
    problem = damage(path)
    if problem:
        raise CheckpointError(f"cannot load {path}: it {problem}; {DAMAGED_FIX}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"cannot load {path}: {str(e).splitlines()[0]}; {DAMAGED_FIX}") from e
        raise CheckpointError(f"{path}: refused to load: it pickles objects other than tensors, plain data and "
                              f"argparse.Namespace, and unpickling them could run code ({str(e).splitlines()[0]}). "
                              "Re-save its state dict from a trusted environment.") from e
    except (EOFError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot load {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                              f"{DAMAGED_FIX}") from e


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
    """torch.save to a temporary name, flushed to the disk and read back (see `damage`) before the rename: a
    crash or a full disk never leaves a truncated file under `path`; a write that fails is an OutputError
    naming the folder and its free space."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # Through a Python file, a failed write raises OSError with its errno (torch's own writer raises a
        # RuntimeError that does not say why); fsync makes a late write error (NFS, quotas) surface here.
        with open(tmp, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as e:  # the writer's own check, failing after the write error it hides
                raise _write_error(e) or e
            f.flush()
            os.fsync(f.fileno())
        problem = damage(tmp)
        if problem:
            raise OutputError.at(path.parent, f"the checkpoint written for {path.name} {problem}")
    return path


def _write_error(error: BaseException) -> OSError | None:
    """The OSError behind `error` (its context chain), if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def numbered_checkpoints(output_dir) -> list:
    """(step, path) of the files named checkpoint-{step:08d}.pth, readable or not, oldest first."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*.pth"):
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def readable(path) -> bool:
    try:
        return damage(path) is None
    except OSError:
        return False


def prune(output_dir, keep: int, step: int) -> list:
    """Delete the numbered checkpoints up to `step` but the newest `keep` readable ones; damaged ones up to
    `step` go too (nothing can resume from them). Files after `step`, and files that could not be read for
    another reason (an I/O error), are left alone. Returns the deleted paths."""
    found = []
    for s, path in numbered_checkpoints(output_dir):
        if s <= step:
            try:
                found.append((path, damage(path)))
            except OSError:
                continue
    kept = [path for path, problem in found if problem is None][-keep:]
    deleted = [path for path, _ in found if path not in kept]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


def save_checkpoint(output_dir, step: int, state: dict, keep: int | None = None) -> Path:
    """Write output_dir/checkpoint-{step:08d}.pth (checked, atomically), then prune to the newest `keep`
    readable checkpoints (None keeps every one)."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (or None to keep all); got {keep}")
    path = save_file(Path(output_dir) / f"checkpoint-{step:08d}.pth", state)
    if keep is not None:
        prune(output_dir, keep, step)
    return path


def latest_checkpoint(output_dir) -> Path | None:
    """The newest readable checkpoint-{step:08d}.pth, or None. Temporary files never match the name; empty,
    truncated or damaged files are skipped."""
    if not Path(output_dir).is_dir():
        return None
    for _, path in reversed(numbered_checkpoints(output_dir)):
        if readable(path):
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
