"""One writer at a time: a lock file that names its owner (host, pid), for a run folder or one work unit.

    with Lock(out / ".lock"):          # raises FolderInUseError naming the owner when another holds it
        ...
    lock = Lock(path)
    if lock.acquire(): ...             # non-blocking; lock.owner says who holds it otherwise

The file holds JSON: host, pid, boot id, start time and command. It is written whole under a temporary name
and hard-linked to the lock's name, which fails if that exists (atomic on local file systems, NFS, Lustre
and GPFS): a lock is never seen half-written, even when its owner is killed while taking it. While held, a
daemon thread refreshes its mtime every HEARTBEAT seconds.

Stale locks, taken over without asking:
- same host: the owner's pid is gone, or the machine rebooted since (another boot id);
- any host: no heartbeat for STALE_AFTER seconds (the owner's node crashed, lost power or was preempted).
  This compares the file's mtime, which NFS sets from the server's clock, with this machine's clock:
  clocks must agree within a few minutes (NTP); STALE_AFTER is far above NFS attribute caching (<= 60 s).
  A lock of a live owner on another host that cannot write its heartbeat (a hung mount) looks stale too.
A stale lock is renamed aside, checked to be the one judged stale, then retaken through the link, so two
processes breaking it at once cannot both win. Deleting a lock file by hand is always safe once its owner
is known to be gone.
"""
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from vmae.atomic import make_folder, temp_path
from vmae.errors import FolderInUseError, output_fault

HEARTBEAT = 30.0       # seconds between two refreshes of a held lock's mtime
STALE_AFTER = 300.0    # seconds without a heartbeat after which any host may take the lock over


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # a process we may not signal is alive; a malformed pid is judged by its heartbeat
    return True


def read_owner(path):
    """The owner recorded in a lock file, or None when it is missing or unreadable."""
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def is_stale(path, owner) -> bool:
    """Whether the lock at `path`, recorded as held by `owner`, may be taken over (see the module notes)."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age > STALE_AFTER:
        return True
    if owner is None or owner.get("host") != socket.gethostname():
        return False  # an owner being written, or on another host: only the heartbeat can tell
    if owner.get("boot") and owner.get("boot") != _boot_id():
        return True
    return not _alive(owner.get("pid"))


def describe(path, owner) -> str:
    """Who holds the lock, and what to do, for messages."""
    if owner is None:
        return f"{path} is being taken by another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return (f"{path} is held by pid {owner.get('pid')} on {owner.get('host')} since {since} "
            f"({owner.get('command', '?')}). Wait for it to finish; if that process is gone, the lock expires "
            f"{STALE_AFTER:.0f} s after its last heartbeat, or delete {path}")


class Lock:
    """An exclusive lock file; see the module notes."""

    def __init__(self, path):
        self.path = Path(path)
        self.owner = None          # the holder found by a failed acquire
        self._mine = None
        self._stop = None

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; False (and self.owner set) when another process holds it."""
        make_folder(self.path.parent)
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(), "started": time.time(),
                "command": " ".join(sys.argv)[:300], "token": secrets.token_hex(8)}
        tmp = temp_path(self.path)
        try:
            try:
                tmp.write_text(json.dumps(mine), encoding="utf-8")
            except OSError as e:
                raise output_fault(e, self.path.parent) or e from None
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    owner = read_owner(self.path)
                    if is_stale(self.path, owner):
                        self._break(owner)
                        continue
                    self.owner = owner
                    return False
                self._mine, self._stop = mine, threading.Event()
                threading.Thread(target=self._heartbeat, args=(self._stop,), daemon=True).start()
                return True
        finally:
            tmp.unlink(missing_ok=True)
        self.owner = read_owner(self.path)
        return False

    def release(self) -> None:
        if self._mine is None:
            return
        self._stop.set()
        if read_owner(self.path) == self._mine:  # never remove a lock that was taken over meanwhile
            self.path.unlink(missing_ok=True)
        self._mine = None

    def __enter__(self):
        if not self.acquire():
            raise FolderInUseError(describe(self.path, self.owner))
        return self

    def __exit__(self, *exc):
        self.release()

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                pass  # taken over or removed: nothing to refresh

    def _break(self, owner) -> None:
        """Remove the stale lock that was judged stale, and only that one."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if read_owner(aside) != owner:
            # Another process broke the same stale lock and took it anew before our rename: give it back.
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)


def clear_stale(paths) -> list:
    """Delete the lock files among `paths` whose owners are gone (see is_stale); return the ones removed.
    For the end of a run: a unit finished by a killed process keeps its lock file until someone clears it."""
    removed = []
    for path in paths:
        if is_stale(path, read_owner(path)):
            Path(path).unlink(missing_ok=True)
            removed.append(Path(path))
    return removed
