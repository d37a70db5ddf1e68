"""Write to a temporary name in the same folder, then rename: readers never see half a file."""
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = r"\.tmp-\d+-[0-9a-f]{12}"  # regex of what atomic_path appends to '.' + the final name


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid says which process left a file behind; the random part keeps two writers apart that share a
    # pid on different nodes of a cluster writing into one shared folder.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
