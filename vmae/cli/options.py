"""Command-line options generated from the config dataclasses (vmae.config, vmae.training.config).

Design: a config field made with `config.option(default, help, ...)` becomes an option of every command built
on that config, with no other change. Its name is the field's (`num_frames` -> `--num-frames`), its type comes
from the annotation, its default and help from the field; a bool becomes a `--name/--no-name` switch. A
subclass that only changes a default (`epochs: int = 100`) keeps its parent's help and shows its own default.
Fields without help stay config-only (set them through a preset or the library).

The option's default is the config's own, so `--help` shows what a run uses; but only values the user gave
reach the config (`given`), so a preset applies between the defaults and the command line. Sentinels such as
"0 turns clipping off" are the config's `OFF` table; the help says so, the config does the turning.
"""
import dataclasses
import typing

import click
from click.core import ParameterSource

PATHS = {"existing": click.Path(exists=True), "folder": click.Path(file_okay=False),
         "existing-folder": click.Path(exists=True, file_okay=False)}


def _metadata(cls, name: str) -> dict:
    """The option metadata of field `name`: from the nearest class in `cls`'s MRO that gives it help."""
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and "help" in field.metadata:
            return field.metadata
    return {}


def _type(hint, meta: dict):
    """The click type of a field: its choices or path kind, else int/float/str/bool (Optional unwrapped),
    or a tuple of those."""
    if "choices" in meta:
        return click.Choice(meta["choices"])
    if "path" in meta:
        return PATHS[meta["path"]]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple(args)
    return args[0] if args else hint


def field_option(cls, field: dataclasses.Field, hint):
    """The click option for one config field, or None for a field without help."""
    meta = _metadata(cls, field.name)
    if not meta:
        return None
    flag = "--" + field.name.replace("_", "-")
    kind = _type(hint, meta)
    help_text = meta["help"]
    off = getattr(cls, "OFF", {}).get(field.name)
    if off is not None:
        help_text += f" {off} turns it off."
    if kind is bool:
        decls = [meta.get("flag", f"{flag}/--no-{flag[2:]}"), field.name]
        return click.option(*decls, default=field.default, show_default=True, help=help_text)
    required = meta.get("required", False)
    default = None if required else field.default
    show = meta["unset"] if default in (None, "") and "unset" in meta else not required
    return click.option(flag, field.name, type=kind, default=default, required=required, show_default=show,
                        metavar=meta.get("metavar"), help=help_text)


def config_options(cls):
    """Decorator: one option per field of the config class `cls` that has help, in field order."""
    hints = typing.get_type_hints(cls)

    def decorate(fn):
        for field in reversed(dataclasses.fields(cls)):
            option = field_option(cls, field, hints[field.name])
            if option is not None:
                fn = option(fn)
        return fn
    return decorate


def given(values: dict) -> dict:
    """The values the user gave (command line, environment), without click's defaults: an option nobody
    typed must not override a preset."""
    ctx = click.get_current_context()
    return {name: value for name, value in values.items()
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}
