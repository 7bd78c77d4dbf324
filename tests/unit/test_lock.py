"""Table writer locks: one writer at a time, waiting with a clear line, stale and dead holders taken over."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowops.errors import LakeError
from flowops.lake.lock import LOCK_FILE, Locks, TableLock


def holder_process(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the lock, says so on stdout, and holds it for `seconds`."""
    code = (f"import sys, time\nsys.path.insert(0, {str(Path(__file__).parents[2] / 'lib')!r})\n"
            "from flowops.lake.lock import TableLock\n"
            f"lock = TableLock({str(folder)!r}, 'holder-job', timeout_s=5, stale_after_s=30)\n"
            "lock.acquire()\nprint('held', flush=True)\n"
            f"time.sleep({seconds})\nlock.release()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_waits_saying_who_holds_the_table(tmp_path, caplog):
    proc = holder_process(tmp_path / "t", 1.5)
    lock = TableLock(tmp_path / "t", "second-job", timeout_s=30, stale_after_s=30)
    started = time.monotonic()

    with caplog.at_level(logging.INFO):
        lock.acquire()

    waited = time.monotonic() - started
    lock.release()
    proc.wait()
    assert waited > 0.5
    assert "is being written by holder-job" in caplog.text and f"pid {proc.pid}" in caplog.text


def test_a_writer_gives_up_after_the_timeout_with_a_clear_error(tmp_path):
    proc = holder_process(tmp_path / "t", 10)
    try:
        with pytest.raises(LakeError, match=r"t: locked by holder-job \(pid \d+ on .*\) for more than 1s"):
            TableLock(tmp_path / "t", "impatient", timeout_s=1, stale_after_s=30).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_at_once(tmp_path, caplog):
    proc = holder_process(tmp_path / "t", 60)
    proc.kill()   # kill -9: no release, the lock file stays
    proc.wait()
    assert (tmp_path / "t" / LOCK_FILE).exists()
    lock = TableLock(tmp_path / "t", "next", timeout_s=5, stale_after_s=3600)
    started = time.monotonic()

    lock.acquire()

    assert time.monotonic() - started < 2   # no waiting for the stale age: the holder is known to be dead
    assert json.loads((tmp_path / "t" / LOCK_FILE).read_text())["job"] == "next"
    assert "took over the lock of holder-job" in caplog.text and "its process is gone" in caplog.text
    lock.release()
    assert not (tmp_path / "t" / LOCK_FILE).exists()


def test_a_lock_without_heartbeat_is_stale_and_its_old_holder_cannot_commit(tmp_path):
    old = TableLock(tmp_path / "t", "old", timeout_s=5, stale_after_s=60)
    old.acquire()
    old._stop.set()   # the heartbeat stops, as in a process paused for minutes
    past = time.time() - 120
    os.utime(tmp_path / "t" / LOCK_FILE, (past, past))
    new = TableLock(tmp_path / "t", "new", timeout_s=5, stale_after_s=60)

    new.acquire()

    with pytest.raises(LakeError, match="this writer lost the table lock .* nothing was committed"):
        old.check()
    new.check()
    old.release()   # not its lock any more: leaves it alone
    assert json.loads((tmp_path / "t" / LOCK_FILE).read_text())["job"] == "new"
    new.release()


def test_the_heartbeat_keeps_a_long_write_from_looking_stale(tmp_path, monkeypatch):
    monkeypatch.setattr("flowops.lake.lock.HEARTBEAT_S", 0.1)
    lock = TableLock(tmp_path / "t", "long", timeout_s=5, stale_after_s=30)
    lock.acquire()
    past = time.time() - 20
    os.utime(tmp_path / "t" / LOCK_FILE, (past, past))

    time.sleep(0.5)

    assert lock.holder().age_s < 1
    lock.release()


def test_locks_are_reentrant_within_a_process_and_exclusive_between_threads(tmp_path):
    locks = Locks(timeout_s=5, stale_after_s=30)
    order = []
    with locks.hold(tmp_path / "t", "outer"), locks.hold(tmp_path / "t", "inner"):
        other = threading.Thread(target=lambda: (TableLock(tmp_path / "t", "thread", 5, 30).acquire(),
                                                 order.append("thread")))
        other.start()
        time.sleep(0.3)
        order.append("holder")
    other.join()

    assert order == ["holder", "thread"]
