"""The errors a user reads.

Every error meant for a user (a bad option, input file or row, a full or read-only disk, a folder that belongs
to another run, an unusable checkpoint) derives from `VmaeError`; its message names the file or option and the
fix. The CLI prints these without a traceback; any other exception is a bug and keeps its traceback.
"""
import errno
import shutil
from pathlib import Path


class VmaeError(Exception):
    """A problem the user can fix; the message says which file or option, and how."""


class ConfigError(VmaeError, ValueError):
    """A bad option or combination of options, found before any work starts (a usage error)."""


class OutputError(VmaeError):
    """An output that cannot be written: its folder is read-only, is a file, or its disk (or quota) is full. Not a
    per-row status: the run stops at once and keeps what it finished (see vmae.atomic)."""

    @classmethod
    def writing(cls, folder, error: OSError) -> "OutputError":
        """The error for `error`, raised while writing into `folder`, with the fix."""
        folder = Path(folder)
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            free = shutil.disk_usage(existing).free
            fix = f"{free / 2**20:,.1f} MiB free there; free some space or choose another output folder"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "choose another output folder or make this one writable"
        elif error.errno in (errno.EEXIST, errno.ENOTDIR) or folder.exists() and not folder.is_dir():
            reason, fix = "not a folder", "remove the file in the way or choose another output folder"
        else:
            fix = "choose another output folder"
        return cls(f"{folder}: cannot write the outputs ({reason}); {fix}. Nothing was written there.")


class FolderInUseError(VmaeError):
    """An output folder that another live process is writing (see vmae.lock), or that holds the output of
    another job (another input or other options)."""
