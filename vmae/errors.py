"""The errors a user reads, and the one table that words faults of files and folders.

Every error meant for a user (a bad option, input file or row, a full or read-only disk, a folder that belongs
to another run, an unusable checkpoint) derives from `VmaeError`; its message names the file or option and the
fix. The CLI prints these without a traceback; any other exception is a bug and keeps its traceback.

`FAULTS` maps an OSError's errno to what went wrong and how to fix it. It words both kinds of faults of the
machine: an output that cannot be written (`OutputError.at`, which stops the run) and any other path a
command could not use (vmae.cli.common prints it as one line).
"""
import errno
import re
import shutil
from pathlib import Path


class VmaeError(Exception):
    """A problem the user can fix; the message says which file or option, and how."""


class ConfigError(VmaeError, ValueError):
    """A bad option or combination of options, found before any work starts (a usage error)."""


class FolderInUseError(VmaeError):
    """An output folder that another live process is writing (see vmae.lock), or that holds the output of
    another job (another input or other options)."""


# errno -> (what went wrong, the fix)
FAULTS = {
    errno.ENOSPC: ("no space left on device", "free space there or choose a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or choose another folder"),
    errno.EFBIG: ("file too large", "raise the file size limit (ulimit -f) or choose another folder"),
    errno.EROFS: ("read-only file system", "choose a folder on a writable file system"),
    errno.EACCES: ("permission denied", "change its permissions or choose a path you may write to"),
    errno.EPERM: ("operation not permitted", "change its permissions or choose a path you may write to"),
    errno.ENOTDIR: ("a parent is not a folder", "check the path: a part of it is a file"),
    errno.EEXIST: ("it is a file, not a folder", "remove the file in the way or choose another folder"),
    errno.ENOENT: ("no such file or folder", "check the path (and that the step that writes it has run)"),
    errno.EISDIR: ("it is a folder", "pass a file"),
}
# The faults of an output itself, whichever file is being written: never one row's status, the run stops.
# Permission errors are not among them, since inside a write they may concern an input file
# (vmae.atomic.make_folder checks that the output folder is writable instead).
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# What tools print for those faults (pyarrow, yt-dlp and ffmpeg report them in their messages).
_OUTPUT_FAULT_TEXT = re.compile(r"no space left on device|disk quota exceeded|read-only file system|"
                                r"file too large|errno (28|30|122)\b", re.IGNORECASE)


def free_space(folder) -> str:
    """Free space of the file system holding `folder` (or its nearest existing parent), for messages."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024:
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024
    return f"{free:.1f} TiB free"


class OutputError(VmaeError):
    """An output that cannot be written: its folder is read-only, is a file, or its disk (or quota) is full. Not a
    per-row status: the run stops at once and keeps what it finished (see vmae.atomic)."""

    @classmethod
    def at(cls, folder, problem) -> "OutputError":
        """The error that stops a run because `folder` cannot take its output. `problem` is the OSError (its
        errno picks the words and the fix) or a text (a tool's report, a file that came out short)."""
        reason, fix = FAULTS.get(getattr(problem, "errno", None), (None, None))
        reason = reason or str(problem)
        space = fix is None or problem.errno in _SPACE_ERRNOS
        fix = fix or "free space or fix the folder (or choose another one)"
        return cls(f"cannot write to {Path(folder).absolute()}: {reason}"
                   + (f" ({free_space(folder)})" if space else "")
                   + f". {fix[0].upper()}{fix[1:]}, then rerun the same command: what was finished before is "
                     "kept, and the rerun completes what is missing")


def is_output_fault_text(text: str) -> bool:
    """Whether a tool's error text reports a full, read-only or size-limited output."""
    return bool(_OUTPUT_FAULT_TEXT.search(text or ""))


def row_error(error: Exception, folder) -> str:
    """The row status message of an unexpected exception while one row (clip) was made; a fault of the output
    `folder` (full, read-only) is raised instead, as an OutputError: it stops the run."""
    fault = output_fault(error, folder)
    if fault is error:
        raise error
    if fault is not None:
        raise fault from error
    return f"{type(error).__name__}: {error}"


def output_fault(error: BaseException, folder):
    """`error` as an OutputError for `folder` when it is a fault of the output (by errno or by its text), else
    None."""
    if isinstance(error, OutputError):
        return error
    if not isinstance(error, OSError):
        return None
    if error.errno in OUTPUT_ERRNOS:
        return OutputError.at(folder, error)
    found = _OUTPUT_FAULT_TEXT.search(str(error))
    return OutputError.at(folder, found.group(0).lower()) if found else None
