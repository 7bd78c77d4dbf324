"""Drop folders: folders of files that other systems poll, published whole or not at all.

`publish` writes `PARENT/NAME` as `PARENT/.NAME.<run>.tmp` (files 0600, folders 0700, every file and folder
fsynced, so a power cut cannot leave a published folder with empty files), then swaps it in by renames:
`NAME` -> `.NAME.<run>.old`, staging -> `NAME`, the parent fsynced, the old folder removed. A reader sees the
previous folder or the new one, never a mix; for the instant between the two renames it sees none.

A writer killed at any point leaves hidden leftovers holding what the folder holds (phone numbers, for the
exports). Writers hold the root's lock (`exclusive`: the lake's table lock on `ROOT/_flowops.lock`, taken over
from a dead holder), so a leftover found under it is a dead run's: `clean_leftovers` removes it, except an
`.old` folder whose published folder is missing (the kill fell between the two renames), which it puts back:
it is the folder the lake's tables still agree with, the dead run having committed nothing after it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowops.lake.lock import TableLock

log = logging.getLogger(__name__)

# `.NAME.<run id>.tmp` (staging) and `.NAME.<run id>.old` (the replaced folder, during the swap).
LEFTOVER = re.compile(r"^\.(?P<name>[^.].*)\.(?P<run>[^./]+)\.(?P<kind>tmp|old)$")


@dataclass(frozen=True)
class Leftovers:
    """What `clean_leftovers` found of dead runs: folders removed, and published folders put back."""

    removed: tuple[Path, ...] = ()
    restored: tuple[Path, ...] = ()


@contextmanager
def exclusive(root: Path, job: str, timeout_s: float = 600.0, stale_after_s: float = 30.0) -> Iterator[TableLock]:
    """Hold `root`'s writer lock (created 0700 if missing): one publisher under `root` at a time."""
    private_dirs(root, root.parent)
    lock = TableLock(root, job, timeout_s, stale_after_s)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def clean_leftovers(root: Path) -> Leftovers:
    """Remove every staging and old folder of a dead run anywhere under `root`, putting an old folder back where
    its published folder is missing. Call it holding `exclusive(root)`: no live run has leftovers then."""
    removed: list[Path] = []
    restored: list[Path] = []
    for folder, dirs, _files in os.walk(root):
        parent = Path(folder)
        found = sorted((d for d in dirs if LEFTOVER.match(d)), reverse=True)   # newest run first
        dirs[:] = [d for d in dirs if d not in found]
        for name in sorted(found, key=lambda d: LEFTOVER.match(d)["kind"] != "old"):   # old folders first
            match = LEFTOVER.match(name)
            path, published = parent / name, parent / match["name"]
            if match["kind"] == "old" and not published.exists():
                _rename(path, published)
                restored.append(published)
                log.warning("%s: put back the folder run %s was replacing when it died", published, match["run"])
            else:
                _remove(path)
                removed.append(path)
                log.warning("removed %s, left by run %s, which died while writing it", path, match["run"])
        if found:
            fsync_dir(parent)
    return Leftovers(tuple(removed), tuple(restored))


def publish(parent: Path, name: str, files: Mapping[str, bytes], run_id: str) -> Path:
    """Write `files` (relative path -> bytes, in this order: the last is written last) as the folder
    `parent/name`, replacing the one there whole. Returns the folder."""
    final, staging = parent / name, parent / f".{name}.{run_id}.tmp"
    private_dirs(parent, parent.parent)
    if staging.exists():
        _remove(staging)
    folders = {staging, *(staging / p for rel in files for p in Path(rel).parents if str(p) != ".")}
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        folder.mkdir(mode=0o700)
    for rel, body in files.items():
        private_write(staging / rel, body)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):   # entries before their parents
        fsync_dir(folder)
    fsync_dir(parent)
    if final.exists():
        old = parent / f".{name}.{run_id}.old"
        _rename(final, old)
        _rename(staging, final)
        fsync_dir(parent)
        _remove(old)
    else:
        _rename(staging, final)
    fsync_dir(parent)
    return final


def private_dirs(folder: Path, base: Path) -> None:
    """Create `folder` and its missing parents below `base`, 0700, each made durable in its parent."""
    base.mkdir(parents=True, exist_ok=True)
    missing = [p for p in [folder, *folder.parents] if base in p.parents and not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        fsync_dir(path.parent)


def private_write(path: Path, body: bytes) -> None:
    """A new file, 0600, written whole and fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(source: Path, target: Path) -> None:
    os.rename(source, target)


def _remove(path: Path) -> None:
    shutil.rmtree(path)
