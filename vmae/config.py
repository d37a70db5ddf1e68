"""Typed configs: frozen dataclasses built defaults -> preset -> overrides, saved as plain data.

A field made with `option(default, help, ...)` is also a command-line option of every command built on its
config (vmae/cli/options.py reads the metadata), so each default lives in its config alone; a subclass that
only changes a default writes `name: type = value` and keeps the help. `build_config` layers a preset and the
given overrides over the defaults; None there means "not given". Unknown keys are rejected: a typo must not
silently fall back to a default.
"""
import dataclasses
import json
import typing

from vmae.atomic import write_text
from vmae.errors import ConfigError


def option(default, help: str, **cli):
    """A config field that is also a command-line option. `cli` hints for the option: choices, metavar,
    flag ("--sparse/--dense"), path ("existing", "folder", "existing-folder"), required, and unset (what an
    unset default, None or "", means; shown in --help)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def apply_off(cfg) -> None:
    """Turn the command line's off values (`cls.OFF`: name -> value, e.g. clip_grad 0) into None, in a frozen
    config's __post_init__, so that the saved config says what ran."""
    for name, off in getattr(cfg, "OFF", {}).items():
        if getattr(cfg, name) == off:
            object.__setattr__(cfg, name, None)


def build_config(cls, presets: dict, preset: str | None = None, **overrides):
    """`cls` with its defaults, then the named preset's values, then every override that is not None.

    None is "not given", so it cannot turn a setting off: for a field with an off value (`cls.OFF`, e.g.
    randaug "none") None is refused rather than silently keep the default or the preset's value."""
    ambiguous = sorted(k for k, v in overrides.items() if v is None and k in getattr(cls, "OFF", {}))
    if ambiguous:
        raise ConfigError(", ".join(f"{k}=None" for k in ambiguous) + " would mean 'not given' and keep the default; "
                          "to turn it off pass " + ", ".join(f"{k}={cls.OFF[k]!r}" for k in ambiguous)
                          + ", or leave it out")
    values = {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(sorted(presets))}")
        values.update(presets[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values)


def from_dict(cls, values: dict):
    """`cls(**values)`, rejecting unknown keys by name and turning JSON lists back into tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
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


def count_problems(cfg, at_least_one=(), unset_or_at_least_one=()) -> list[str]:
    """Counts that must be >= 1 (or unset)."""
    problems = [f"{name} must be at least 1, got {getattr(cfg, name)}"
                for name in at_least_one if getattr(cfg, name) < 1]
    for name in unset_or_at_least_one:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            problems.append(f"{name} must be at least 1 (or unset), got {value}")
    return problems


def raise_problems(cfg, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"invalid {type(cfg).__name__}: " + "; ".join(problems))
