"""One writer per table: an exclusive-create lock file inside the table's folder, with a heartbeat.

A writer creates `TABLE/_flowops.lock` with `O_CREAT | O_EXCL` (atomic on local disks and on NFS v3+)
holding its owner id, host, pid, job and start time, and touches it every few seconds while it holds it.
Another writer waits, saying once who holds the table, and gives up after a timeout with a clear error.
A lock is stale when its holder's heartbeat stopped (older than `stale_after`), or at once when its
holder was a process of this host that no longer exists (`kill -9`); a stale lock is taken over by
renaming it away (atomic: of two writers taking over, one wins) and creating a fresh one. Before a
commit the holder checks it still owns the lock, so a writer that lost it (paused past the stale age)
aborts instead of committing over its successor.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowops.errors import LakeError

log = logging.getLogger(__name__)

LOCK_FILE = "_flowops.lock"
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""

    owner: str
    host: str
    pid: int
    job: str
    since: str
    age_s: float

    def describe(self) -> str:
        return f"{self.job} (pid {self.pid} on {self.host}, since {self.since})"

    def is_dead(self) -> bool:
        """Its process is known to be gone: same host, pid not running."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class TableLock:
    """The writer lock of one table folder.

    Args:
        folder: the table's folder (created if missing).
        job: what is writing, for the messages of whoever waits.
        timeout_s: how long `acquire` waits for another writer.
        stale_after_s: a lock whose heartbeat is older than this is abandoned.
    """

    def __init__(self, folder: str | Path, job: str, timeout_s: float, stale_after_s: float) -> None:
        self.folder, self.job = Path(folder), job
        self.path = self.folder / LOCK_FILE
        self.timeout_s, self.stale_after_s = timeout_s, stale_after_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock, waiting for a live holder and taking over a stale one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        started, told = time.monotonic(), False
        while True:
            if self._try_create():
                self._start_heartbeat()
                return
            holder = self.holder()
            if holder is None:
                continue  # released between our attempt and our look: try again
            if holder.is_dead() or holder.age_s > self.stale_after_s:
                self._take_over(holder)
                continue
            waited = time.monotonic() - started
            if waited > self.timeout_s:
                raise LakeError(f"{self.folder.name}: locked by {holder.describe()} for more than "
                                f"{self.timeout_s:.0f}s; another job is writing this table (if none is, remove "
                                f"{self.path})")
            if not told:
                log.info("%s is being written by %s: waiting (up to %.0fs)", self.folder, holder.describe(),
                         self.timeout_s, extra={"progress": True})   # shown on the console: why nothing moves
                told = True
            time.sleep(0.2)

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        self._stop.set()
        if self._beat:
            self._beat.join()
        holder = self.holder()
        if holder and holder.owner == self.owner:
            self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Fail unless this writer still holds the lock (call right before committing)."""
        holder = self.holder()
        if holder is None or holder.owner != self.owner:
            taken = holder.describe() if holder else "nobody"
            raise LakeError(f"{self.folder.name}: this writer lost the table lock (now held by {taken}) after "
                            f"more than {self.stale_after_s:.0f}s without a heartbeat; nothing was committed")

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None."""
        try:
            data = json.loads(self.path.read_text())
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):  # a holder killed mid-write: empty or partial
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None
            return Holder("?", "?", -1, "unknown (unreadable lock file)", "?", age)
        return Holder(data["owner"], data["host"], int(data["pid"]), data["job"], data["since"], age)

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "job": self.job,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S")}, handle)
        return True

    def _take_over(self, holder: Holder) -> None:
        stale = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, stale)  # atomic: of two writers taking over, one wins
        except FileNotFoundError:
            return
        log.warning("%s: took over the lock of %s (%s)", self.folder, holder.describe(),
                    "its process is gone" if holder.is_dead() else f"no heartbeat for {holder.age_s:.0f}s")
        stale.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._beat = threading.Thread(target=beat, name=f"lock-{self.folder.name}", daemon=True)
        self._beat.start()


class Locks:
    """The table locks a process holds; re-entrant, so a write inside a held lock does not wait for itself."""

    def __init__(self, timeout_s: float, stale_after_s: float) -> None:
        self.timeout_s, self.stale_after_s = timeout_s, stale_after_s
        self._held: dict[str, tuple[TableLock, int]] = {}
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, folder: str | Path, job: str) -> Iterator[TableLock]:
        key = str(folder)
        with self._mutex:
            held = self._held.get(key)
            if held:
                self._held[key] = (held[0], held[1] + 1)
        if held:
            try:
                yield held[0]
            finally:
                with self._mutex:
                    lock, depth = self._held[key]
                    self._held[key] = (lock, depth - 1)
            return
        lock = TableLock(folder, job, self.timeout_s, self.stale_after_s)
        lock.acquire()
        with self._mutex:
            self._held[key] = (lock, 1)
        try:
            yield lock
        finally:
            with self._mutex:
                _, depth = self._held[key]
                if depth <= 1:
                    del self._held[key]
                else:
                    self._held[key] = (lock, depth - 1)
            if depth <= 1:
                lock.release()
