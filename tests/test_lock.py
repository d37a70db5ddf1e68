"""vmae.lock: one owner at a time, owners named, stale locks (dead pid, reboot, lost heartbeat) taken over."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from vmae import lock as lock_module
from vmae.errors import FolderInUseError
from vmae.lock import Lock, read_owner


def write_owner(path, **owner):
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                                "command": "vmae-data download", **owner}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_owner_named_in_the_refusal(tmp_path):
    path = tmp_path / "run" / ".lock"
    with Lock(path):
        owner = read_owner(path)
        assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
        other = Lock(path)
        assert not other.acquire() and other.owner == owner
        with pytest.raises(FolderInUseError, match=f"held by pid {os.getpid()} on {socket.gethostname()}"):
            with Lock(path):
                pass
    assert not path.exists()
    assert Lock(path).acquire()


@pytest.mark.parametrize("owner, stale", [
    ({"pid": "dead"}, True),                                 # this host, the process is gone
    ({"boot": "another-boot"}, True),                        # this host, rebooted since
    ({"host": "node-7", "pid": 1}, False),                   # another host, heartbeat fresh
    ({"host": "node-7", "pid": 1, "age": 3600}, True),       # another host, no heartbeat for an hour
])
def test_stale_locks_are_taken_over_and_live_ones_kept(tmp_path, owner, stale):
    path = tmp_path / ".lock"
    age = owner.pop("age", 0)
    if owner.get("pid") == "dead":
        owner["pid"] = dead_pid()
    write_owner(path, **owner)
    os.utime(path, (time.time() - age, time.time() - age))
    lock = Lock(path)
    assert lock.acquire() is stale
    assert (read_owner(path)["pid"] == os.getpid()) is stale
    lock.release()


def test_heartbeat_keeps_a_long_run_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT", 0.05)
    path = tmp_path / ".lock"
    with Lock(path):
        os.utime(path, (1, 1))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5


def _contend(path, barrier, results):
    barrier.wait()
    lock = Lock(path)
    results.put(lock.acquire())
    time.sleep(0.5)  # hold it while the others try
    lock.release()


def test_processes_racing_for_a_stale_lock_get_one_winner(tmp_path):
    path = tmp_path / ".lock"
    write_owner(path, pid=dead_pid())
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(path, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(results.get(timeout=5) for _ in procs) == [False, False, False, True]
