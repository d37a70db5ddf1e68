"""Write to a temporary name in the same folder, check, then rename: readers never see half a file.

A write that fails because of the output itself (no space, read-only, quota, not a folder) becomes one
`OutputError` naming the folder and its free space (the OSError behind it is its __cause__): such a fault is
never a per-row status, the run stops, and everything renamed into place before it stays valid.
"""
import errno
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

from vmae.errors import FAULTS, OutputError, output_fault

TEMP_SUFFIX = r"\.tmp-\d+-[0-9a-f]{12}"  # regex of what temp_path appends to '.' + the final name
_TEMPORARY = re.compile(rf"^\.(.+){TEMP_SUFFIX}$")


def temp_path(path) -> Path:
    """A fresh temporary name next to `path` (matched by TEMP_SUFFIX). The pid says which process left a file
    behind; the random part keeps two writers apart that share a pid on different nodes of a cluster writing
    into one shared folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")


def make_folder(folder) -> Path:
    """Create `folder` (and its parents), or raise OutputError saying why it cannot be an output folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in FAULTS:
            raise OutputError.at(folder, e) from e
        raise
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
        error = OSError(code, os.strerror(code), str(folder))
        raise OutputError.at(folder, error) from error
    return folder


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The caller checks what it wrote inside the block (raise to keep it from being renamed into place).
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        error = output_fault(e, path.parent)
        if error is None:
            raise
        raise error from e
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_temporaries(*paths) -> list:
    """Delete the temporaries that killed writers of `paths` left next to them; return their names. One listing
    per folder, however many of the paths it holds. Call it only while no live process can be writing them
    (their unit's lock is held)."""
    folders = {}
    for path in map(Path, paths):
        folders.setdefault(path.parent, set()).add(path.name)
    removed = []
    for folder, names in folders.items():
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            continue
        for entry in entries:
            match = _TEMPORARY.match(entry)
            if match and match.group(1) in names:
                Path(folder, entry).unlink(missing_ok=True)
                removed.append(entry)
    return removed


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
        if os.path.getsize(tmp) != len(data):
            raise OutputError.at(Path(path).parent, f"{path} came out short")


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
