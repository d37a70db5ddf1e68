"""Write to a temporary name in the same folder, check, then rename: readers never see half a file.

A write that fails because of the output itself (no space, read-only, quota, no permission, not a folder)
becomes one `OutputError` naming the folder and its free space (the OSError behind it is its __cause__):
such a fault is never a per-row status, the run stops, and everything renamed into place before it stays valid.
"""
import errno
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from vmae.errors import OutputError

TEMP_SUFFIX = r"\.tmp-\d+-[0-9a-f]{12}"  # regex of what atomic_path appends to '.' + the final name

# errno values, and the texts tools print for them (pyarrow, yt-dlp and ffmpeg report them in messages).
# Permission errors are not among them: inside a write they may concern an input file; make_folder checks
# that the output folder is writable instead.
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}
_FOLDER_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                  errno.ENOTDIR: "a parent is not a folder", errno.EEXIST: "it is a file, not a folder"}
_STORAGE_TEXT = re.compile(r"no space left on device|disk quota exceeded|read-only file system|file too large|"
                           r"errno (28|30|122)\b", re.IGNORECASE)


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


def output_error(folder, problem: str) -> OutputError:
    """The error that stops a run because `folder` cannot take its output."""
    return OutputError(f"cannot write to {Path(folder).absolute()}: {problem} ({free_space(folder)}). What was "
                        "finished before is kept: free space or fix the folder (or choose another output), then "
                        "rerun the same command to complete what is missing")


def is_output_fault_text(text: str) -> bool:
    """Whether a tool's error text reports a full, read-only or size-limited output."""
    return bool(_STORAGE_TEXT.search(text or ""))


def as_output_error(error: BaseException, folder):
    """`error` as a OutputError when it is an output fault (by errno or by its text), else None."""
    if isinstance(error, OutputError):
        return error
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
        return output_error(folder, _STORAGE_ERRNOS[error.errno])
    if isinstance(error, OSError) and is_output_fault_text(str(error)):
        return output_error(folder, _STORAGE_TEXT.search(str(error)).group(0).lower())
    return None


def make_folder(folder) -> Path:
    """Create `folder` (and its parents), or raise OutputError saying why it cannot be an output folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in _FOLDER_ERRNOS:
            raise output_error(folder, _FOLDER_ERRNOS[e.errno]) from e
        raise as_output_error(e, folder) or e
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
        raise output_error(folder, os.strerror(code).lower()) from OSError(code, os.strerror(code), str(folder))
    return folder


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The caller checks what it wrote inside the block (raise to keep it from being renamed into place).
    """
    path = Path(path)
    make_folder(path.parent)
    # The pid says which process left a file behind; the random part keeps two writers apart that share a
    # pid on different nodes of a cluster writing into one shared folder.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        error = as_output_error(e, path.parent)
        if error is None:
            raise
        raise error from e
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_temporaries(path) -> list:
    """Delete the temporaries that killed writers of `path` left next to it; return their names.
    Call it only while no live process can be writing `path` (its unit's lock is held)."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}{TEMP_SUFFIX}$")
    try:
        names = [n for n in os.listdir(path.parent) if pattern.match(n)]
    except FileNotFoundError:
        return []
    for name in names:
        Path(path.parent, name).unlink(missing_ok=True)
    return names


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
        if os.path.getsize(tmp) != len(data):
            raise output_error(Path(path).parent, f"{path} came out short")


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
