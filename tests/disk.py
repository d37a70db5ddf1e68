"""A folder on a file system that fills up, for tests of full disks."""
import os
import resource
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


class SmallDisk:
    """`path` on a tmpfs of `size` bytes when the tests run as root and may mount one (a real full disk);
    otherwise a plain folder whose fullness is a per-file size limit (RLIMIT_FSIZE) on the processes that
    `preexec` is given to. fill(leave) leaves about `leave` bytes; free_up() ends the shortage."""

    def __init__(self, path, size: int):
        self.path, self.size, self.limit = Path(path), size, None
        self.path.mkdir(parents=True)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)]
        self.mounted = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0

    def fill(self, leave: int) -> None:
        if self.mounted:
            filler = shutil.disk_usage(self.path).free - leave
            (self.path / ".filler").write_bytes(bytes(max(0, filler)))
        else:
            self.limit = leave

    def free_up(self) -> None:
        (self.path / ".filler").unlink(missing_ok=True)
        self.limit = None

    def preexec(self):
        """For subprocess: the file-size limit that stands in for a full disk when no tmpfs could be mounted."""
        limit = self.limit
        if limit is None:
            return None
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def read_only(self) -> None:
        """Remount the tmpfs read-only: a read-only output that root cannot write either."""
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@contextmanager
def mounted_disk(path, size: int):
    """A SmallDisk that is a real tmpfs, for faults a file-size limit cannot stand for (writes inside the test's
    own process, read-only remounts); the test is skipped where none can be mounted (not root)."""
    disk = SmallDisk(path, size)
    try:
        if not disk.mounted:
            pytest.skip("a real small file system needs root and mount")
        yield disk
    finally:
        disk.close()
