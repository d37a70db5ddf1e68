"""Optimiser and learning-rate schedule: AdamW parameter groups and a per-step warmup + cosine.

Weight-decay exclusions and layer ids follow the reference (spec sections 5.2 and 6.1), but names are
compared after removing the `module.` (DDP) and `_orig_mod.` (torch.compile) wrappers, so the mask token
keeps its exclusion under torch.compile (the reference's slip, spec section 8.12).
"""
import math

import torch

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without DDP / torch.compile wrapper prefixes."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                stripped = True
    return name


def unwrap_model(model):
    """The plain module inside DDP (or any `.module` wrapper) and/or torch.compile wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model


def layer_id(name: str, num_layers: int) -> int:
    """The reference's layer id: embeddings 0, blocks.n -> n + 1, everything else num_layers + 1."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def decays(name: str, param: torch.Tensor, skip: set) -> bool:
    return not (param.ndim <= 1 or name.endswith(".bias") or name.endswith(".scale") or name in skip)


def param_groups(model, weight_decay: float, layer_decay: float | None = None,
                 no_decay_names=()) -> list[dict]:
    """AdamW groups: 1-D params, `.bias`/`.scale` and `model.no_weight_decay()` names get no weight decay.

    With `layer_decay`, groups are split by layer id (needs `model.get_num_layers()`) and carry
    `lr_scale = layer_decay ** (num_layers + 1 - id)`; otherwise every group has lr_scale 1.
    Each group has a readable `name` such as `layer_3_decay` or `no_decay`.
    """
    plain = unwrap_model(model)
    skip = {clean_name(n) for n in no_decay_names}
    if hasattr(plain, "no_weight_decay"):
        skip |= {clean_name(n) for n in plain.no_weight_decay()}
    num_layers = plain.get_num_layers() if layer_decay is not None else 0
    groups: dict[str, dict] = {}
    for raw_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = clean_name(raw_name)
        kind = "decay" if decays(name, param, skip) else "no_decay"
        scale, group_name = 1.0, kind
        if layer_decay is not None:
            lid = layer_id(name, num_layers)
            scale = layer_decay ** (num_layers + 1 - lid)
            group_name = f"layer_{lid}_{kind}"
        group = groups.setdefault(group_name, {"name": group_name, "params": [], "param_names": [],
                                               "weight_decay": weight_decay if kind == "decay" else 0.0,
                                               "lr_scale": scale})
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def make_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
                   layer_decay: float | None = None, no_decay_names=(), fused: bool = True) -> torch.optim.AdamW:
    """AdamW over `param_groups`, with the fused kernel (CPU or GPU; one kernel for every tensor instead of a
    loop over them).
    fused=False: torch's default implementation, as the reference (benchmarks' reference mode)."""
    groups = param_groups(model, weight_decay, layer_decay, no_decay_names)
    for group in groups:
        del group["param_names"]  # keep the optimizer state dict small and plain
    fusable = fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                            for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fusable or None)
    apply_lr(optimizer, lr)
    return optimizer


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """The linear scaling rule: lr = base_lr x total_batch / 256."""
    return base_lr * total_batch / 256


def lr_at(step: int, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Per-step lr, the reference's `cosine_scheduler`: W = warmup_steps steps spaced linearly from 0 at step 0
    to base_lr at step W-1 (np.linspace(0, base_lr, W); a single warmup step is lr 0), then a cosine from
    base_lr at step W towards min_lr, reached at total_steps."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps - 1, 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer, lr: float) -> None:
    """Write `lr x lr_scale` into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
