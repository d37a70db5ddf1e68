"""glibc malloc settings for work that makes and frees many large arrays (numpy, pyarrow).

By default glibc returns every freed block above 128 KiB to the kernel at once (munmap, trim) and gives
each thread an arena of its own. A pipeline of large temporary arrays then faults in, and has the kernel
zero, fresh pages for nearly every array it makes: in `build-k710` that was a fifth of all CPU time. Inside
`reuse_freed_memory()` blocks up to 32 MiB come from one heap shared by all threads, and freed memory stays
in it to be reused; on leaving, the defaults come back. Elsewhere than on glibc it does nothing.
"""
import ctypes
import platform
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # from glibc's malloc.h
_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024, M_ARENA_MAX: 0}  # 0: glibc's own
_REUSE = {M_ARENA_MAX: 1, M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


@contextmanager
def reuse_freed_memory():
    """Keep freed heap memory for reuse while the block runs (process-wide: glibc has one allocator)."""
    mallopt = _glibc()
    if mallopt is None:
        yield
        return
    for option, value in _REUSE.items():
        mallopt(option, value)
    try:
        yield
    finally:
        for option in _REUSE:
            mallopt(option, _DEFAULTS[option])
