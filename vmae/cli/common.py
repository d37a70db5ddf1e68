"""What both command groups share: the group with its --debug flag, and one path for errors a user reads."""
import functools

import click

from vmae.errors import FAULTS, ConfigError, VmaeError

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
