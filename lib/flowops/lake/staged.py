"""Files a job writes outside Spark before committing them: a private scratch folder per job, and `Staged`, a set of
Parquet files holding a table's rows in its hive layout, which a write commits as they are (`Lake.write`).

Usage ingest is the user: the tasks that parse the landed lines also write bronze's files (`ingest.staging`), so
the widest rows of the pipeline never pass through Spark's rows, cache or Parquet writer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flowops.errors import LakeError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

SCRATCH = "_scratch"
OWNER = "owner.json"
ABANDONED_AFTER_S = 24 * 3600   # a scratch folder of another host is left alone this long


@dataclass(frozen=True)
class Staged:
    """Parquet files of a table's rows, written without Spark, in the table's hive layout under `folder`
    (`dt=2026-03-01/part-00003.zstd.parquet`): a write commits them as they are."""

    folder: str
    files: tuple[str, ...]

    @classmethod
    def found(cls, folder: str) -> Staged:
        """Every finished Parquet file under `folder`."""
        return cls(folder, tuple(finished_files(pafs.LocalFileSystem(), folder)))

    def read(self, spark: SparkSession, schema: StructType) -> DataFrame:
        """The files as one Spark frame of `schema`, the partition columns taken from the folders with their declared
        types (a `dt` string stays a string); an empty frame when there are no files."""
        if not self.files:
            return spark.createDataFrame([], schema)
        return (spark.read.schema(schema).option("basePath", self.folder)
                .parquet(*(f"{self.folder}/{rel}" for rel in self.files)))

    def check(self, schema: pa.Schema, table: str) -> None:
        """Refuse files whose columns are not `schema`'s (the table's, less its partition columns)."""
        for rel in self.files:
            found = pq.read_schema(f"{self.folder}/{rel}")
            found = pa.schema([f.remove_metadata() for f in found]).remove_metadata()
            if [(f.name, f.type) for f in found] != [(f.name, f.type) for f in schema]:
                raise LakeError(f"staged file {rel} for {table} has columns {found.names} "
                                f"({', '.join(map(str, found.types))}); the table needs {schema.names} "
                                f"({', '.join(map(str, schema.types))})")


@contextmanager
def scratch_folder(lake_root: str, name: str) -> Iterator[str]:
    """A new folder `<lake>/_scratch/<name>-<id>` for files staged before a commit, removed on exit. Folders that
    jobs which died left behind are removed on entry (their process is gone, or another host's folder is a day
    old)."""
    if "://" in lake_root:
        raise LakeError(f"the lake at {lake_root} is not a file system path: staging files needs a local or mounted "
                        "lake")
    parent = Path(lake_root) / SCRATCH
    _remove_abandoned(parent)
    folder = parent / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with suppress(OSError):  # another job's folder is in it
            parent.rmdir()


def _remove_abandoned(parent: Path) -> None:
    try:
        folders = [folder for folder in parent.iterdir() if folder.is_dir()]
    except FileNotFoundError:
        return  # no scratch folder, or the last job's went while this looked
    for folder in folders:
        if _abandoned(folder):
            log.warning("removing %s, left by a job that died", folder)
            shutil.rmtree(folder, ignore_errors=True)


def finished_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The Parquet files under `folder`, relative to it; names starting with `.` or `_` (unfinished files,
    checksums, markers) are left out."""
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return []
    selector = pafs.FileSelector(folder, recursive=True)
    names = [info.path[len(folder) + 1:] for info in fs.get_file_info(selector)
             if info.type == pafs.FileType.File and info.path.endswith(".parquet")]
    return sorted(name for name in names if not name.rsplit("/", 1)[-1].startswith((".", "_")))


def process_gone(owner: dict) -> bool | None:
    """Whether the process an owner record (`host`, `pid`) names has ended; None when it ran on another host
    (this one cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # the process lives, under another user
    return False


def _abandoned(folder: Path) -> bool:
    """Its job's process is gone (a job of this host), or it is a day old (a job of another host, or a folder
    without an owner). A live process of this host keeps its folder however long it runs."""
    try:
        gone = process_gone(json.loads((folder / OWNER).read_text()))
        if gone is not None:
            return gone
    except FileNotFoundError:
        if not folder.exists():
            return False  # removed while this looked
    except (OSError, ValueError, KeyError):
        pass
    try:
        return time.time() - folder.stat().st_mtime > ABANDONED_AFTER_S
    except FileNotFoundError:
        return False
