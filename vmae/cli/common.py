"""What the command modules share: the group with its --debug flag, one path for errors a user reads, and the
option sets of several vmae-data commands (executor, progress) with the printing of their reports."""
import functools
from dataclasses import fields

import click

from vmae.errors import FAULTS, ConfigError, VmaeError
from vmae.executors import EXECUTORS, ExecutorConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

# Exceptions of these types count as faults of the machine (vmae.errors.FAULTS) even when raised with only a
# message.
FAULT_TYPES = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def group(fn):
    """A top-level command group with the global --debug flag (also VMAE_DEBUG=1)."""
    fn = click.option("--debug", is_flag=True, envvar="VMAE_DEBUG",
                      help="On an error, show the full traceback instead of a one-line message.")(fn)
    return click.group(context_settings=CONTEXT)(fn)


def fault_message(err: OSError, ctx: click.Context) -> str | None:
    """One line naming the file and the fix for a fault of the machine, or None if `err` is not one."""
    if not isinstance(err, FAULT_TYPES) and err.errno not in FAULTS:
        return None
    if err.errno is None:  # raised by vmae with its own message, which names the file and the fix
        return str(err)
    # A write that fails for lack of space often names no file: the command's output folder is the place.
    where = err.filename or next((ctx.params[k] for k in ("out", "output_dir") if ctx.params.get(k)), None)
    reason, fix = FAULTS[err.errno]
    return f"{where}: {reason}; {fix}" if where else f"{reason}; {fix}"


def handle_errors(fn):
    """The one error path of every command: a ConfigError is a usage error (exit 2), any other VmaeError or an
    environment fault (missing file, no permission, no space) one line and exit 1. Anything else is a bug and
    keeps its traceback, as every error does under --debug."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except (VmaeError, OSError) as err:
            if ctx.find_root().params.get("debug"):
                raise
            if isinstance(err, ConfigError):
                raise click.UsageError(str(err), ctx=ctx) from None
            message = str(err) if isinstance(err, VmaeError) else fault_message(err, ctx)
            if message is None:
                raise
            raise click.ClickException(message) from None
    return run


# ---------------------------------------------------------------- vmae-data option sets

def options(*decorators):
    """Several click options applied as one decorator."""
    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


def executor_options(workers_help: str, slices: bool = True):
    """--workers, and with `slices` --executor, --unit-index and --num-units: the ExecutorConfig fields."""
    workers = click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help=workers_help)
    if not slices:
        return workers
    return options(
        workers,
        click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                     help="local: a process pool of --workers; ray: Ray tasks (RAY_ADDRESS or a local Ray)."),
        click.option("--unit-index", type=int, help="With --num-units: run only this slice of the work "
                                                     "(e.g. $SLURM_ARRAY_TASK_ID)."),
        click.option("--num-units", type=int, help="Number of slices the work is split into."))


def executor_config(options: dict) -> ExecutorConfig:
    """The ExecutorConfig of the executor options among a command's `options`, which are taken out of it."""
    return ExecutorConfig(**{f.name: options.pop(f.name) for f in fields(ExecutorConfig) if f.name in options})


PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")


def echo_report(report) -> None:
    """A curation report, line by line."""
    click.echo("\n".join(report.lines()))
