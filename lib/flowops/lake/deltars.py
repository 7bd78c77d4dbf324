"""The delta-rs commit protocol: Spark writes Parquet into a staging folder inside the table; the driver moves
the files into place and commits them to the Delta log in one transaction with `deltalake` (per-file stats
from the footers; an overwrite removes the replaced files in that same commit).

Every step runs while the writer holds the table's lock (`lock.TableLock`), which it checks again right
before committing. A write that dies before its commit leaves the previous version readable; its staging
folder records the files it placed, and the next write removes them (`clean_leftovers`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from flowops.errors import LakeError
from flowops.lake.lock import TableLock
from flowops.lake.staged import Staged, finished_files, process_gone
from flowops.lake.stats import file_stats
from flowops.lake.tables import TableSpec

log = logging.getLogger(__name__)

STAGING = "_staging"
PLACED = "placed.json"
OWNER = "owner.json"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
Partitions = Mapping[str, Sequence[str]]


class DeltaRsEngine:
    """Spark writes Parquet; delta-rs commits it. No JVM plugin needed."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def version(self, path: str) -> int:
        from deltalake import DeltaTable

        return DeltaTable(path).version()

    def history(self, path: str, limit: int | None) -> list[dict[str, Any]]:
        from deltalake import DeltaTable

        return DeltaTable(path).history(limit)

    def check_schema_version(self, path: str, spec: TableSpec) -> None:
        if not self.exists(path):
            return
        check_written_schema(spec, self.history(path, 1))

    def read(self, path: str, version: int | None, partitions: Partitions | None) -> DataFrame:
        from deltalake import DeltaTable

        table = DeltaTable(path, version=version)
        schema = T.StructType.fromJson(json.loads(table.schema().to_json()))
        filters = [(col, "in", list(values)) for col, values in partitions.items()] if partitions else None
        files = table.file_uris(file_pruning_predicate=filters)
        if not files:
            return self.spark.createDataFrame([], schema)
        # Explicit schema + basePath: partition columns come from the hive-style folders with their
        # declared types (a `dt` string stays a string).
        df = self.spark.read.schema(schema).option("basePath", path).parquet(*files)
        return df.select(*schema.fieldNames())

    def write(self, df: DataFrame | pa.Table | None, path: str, spec: TableSpec, mode: str,
              partitions: Partitions | None, metadata: Mapping[str, str], lock: TableLock,
              staged: Staged | None = None) -> int:
        """Stage, place and commit, all while holding the table's `lock` (checked right before the commit). Spark
        stages a DataFrame; an Arrow table (a few rows of an unpartitioned table, `Lake.write_rows`) is staged
        as one Parquet file by pyarrow; `staged` files, already written, are moved into the staging folder."""
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import CommitProperties, create_table_with_add_actions

        fs, root = pafs.LocalFileSystem(), path
        clean_leftovers(fs, root, self.history(path, None) if self.exists(path) else [], lock.stale_after_s)
        write_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        staging = f"{root}/{STAGING}/{write_id}"
        fs.create_dir(staging, recursive=True)
        with fs.open_output_stream(f"{staging}/{OWNER}") as out:
            out.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "lock": lock.owner}).encode())
        if isinstance(df, pa.Table):
            fs.create_dir(f"{staging}/data", recursive=True)
            pq.write_table(df, f"{staging}/data/part-00000-{write_id}.zstd.parquet", compression="zstd",
                           filesystem=fs)
        elif df is not None:
            (df.write.mode("error")
             .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
             .options(**spec.writer_options())
             .partitionBy(*spec.partition_by)
             .parquet(f"{path}/{STAGING}/{write_id}/data"))
        for rel in staged.files if staged else ():
            head, _, name = rel.rpartition("/")
            target = f"{staging}/data/{head + '/' if head else ''}{write_id}-{name}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            fs.move(f"{staged.folder}/{rel}", target)
        written = finished_files(fs, f"{staging}/data")
        values = [_partition_values(rel, spec) for rel in written]
        if partitions is not None:
            _refuse_outside(spec, values, partitions, fs, staging)
        lock.check()
        # Written whole, then renamed: a kill mid-write must not leave a manifest the cleanup cannot parse.
        with fs.open_output_stream(f"{staging}/{PLACED}.tmp") as out:
            out.write(json.dumps({"write_id": write_id, "files": written}).encode())
        fs.move(f"{staging}/{PLACED}.tmp", f"{staging}/{PLACED}")
        types = {f.name: _delta_type(f.dataType) for f in spec.schema.fields if f.name not in spec.partition_by}
        adds = [self._place(fs, root, staging, rel, pv, types) for rel, pv in zip(written, values, strict=True)]
        schema = Schema.from_json(spec.schema.json())
        commit = CommitProperties(custom_metadata={"flowops.writeId": write_id, **metadata})
        lock.check()
        if not self.exists(path):
            create_table_with_add_actions(path, schema, adds, mode="error", partition_by=list(spec.partition_by),
                                          name=spec.name, description=spec.description, commit_properties=commit)
        else:
            filters = [(col, "in", list(v)) for col, v in partitions.items()] if partitions else None
            DeltaTable(path).create_write_transaction(adds, mode=mode, schema=schema,
                                                      partition_by=list(spec.partition_by),
                                                      partition_filters=filters, commit_properties=commit)
        fs.delete_dir(staging)
        _remove_if_empty(fs, f"{root}/{STAGING}")
        return self.version(path)

    @staticmethod
    def _place(fs: pafs.FileSystem, root: str, staging: str, rel: str, partition_values: dict[str, str | None],
               types: dict[str, str]) -> Any:
        from deltalake.transaction import AddAction

        target = f"{root}/{rel}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        fs.move(f"{staging}/data/{rel}", target)
        info = fs.get_file_info(target)
        with fs.open_input_file(target) as handle:
            stats = file_stats(pq.ParquetFile(handle).metadata, types)
        return AddAction(path=rel, size=info.size, partition_values=partition_values,
                         modification_time=int(info.mtime_ns // 1_000_000), data_change=True, stats=stats)


def clean_leftovers(fs: pafs.FileSystem, root: str, history: list[dict[str, Any]], stale_after_s: float) -> int:
    """Delete what dead writes left: their staging folders, and placed files whose commit never happened.

    Call it while holding the table's lock: every other writer's staging folder then belongs to a writer that
    no longer holds the lock. A folder is removed when its writer's process is known to be gone (same host) or
    it is older than `stale_after_s`; a younger one of a live process (a writer that lost its lock and will
    fail its check before committing) is left to the next write. A write records the files it is about to move
    in `placed.json` before moving them; if no commit in the table's history carries that write's id, the files
    are not part of any version and are removed. Returns the number of orphaned data files deleted.
    """
    staging_root = f"{root}/{STAGING}"
    if fs.get_file_info(staging_root).type == pafs.FileType.NotFound:
        return 0
    committed = {entry.get("flowops.writeId") for entry in history}
    removed = 0
    for entry in fs.get_file_info(pafs.FileSelector(staging_root)):
        if entry.type != pafs.FileType.Directory:
            fs.delete_file(entry.path)
            continue
        if not _abandoned(fs, entry, stale_after_s):
            continue
        manifest = f"{entry.path}/{PLACED}"
        if fs.get_file_info(manifest).type == pafs.FileType.File:
            with fs.open_input_stream(manifest) as handle:
                placed = json.loads(handle.read())
            if placed["write_id"] not in committed:
                for rel in placed["files"]:
                    if fs.get_file_info(f"{root}/{rel}").type == pafs.FileType.File:
                        fs.delete_file(f"{root}/{rel}")
                        removed += 1
        fs.delete_dir(entry.path)
    _remove_if_empty(fs, staging_root)
    if removed:
        log.warning("%s: removed %d data files left by a write that never committed", root, removed)
    return removed


def _abandoned(fs: pafs.FileSystem, entry: pafs.FileInfo, stale_after_s: float) -> bool:
    """A staging folder whose writer is gone: its process is dead (same host), or it is older than the stale
    age (a writer on another host, or one without an owner record)."""
    if time.time() - entry.mtime_ns / 1e9 > stale_after_s:
        return True
    try:
        with fs.open_input_stream(f"{entry.path}/{OWNER}") as handle:
            owner = json.loads(handle.read())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return False
    gone = process_gone(owner)
    if gone is None:
        return False
    # An earlier write of this process that failed is abandoned too: this process holds the lock now.
    return gone or int(owner["pid"]) == os.getpid()


def _remove_if_empty(fs: pafs.FileSystem, folder: str) -> None:
    if (fs.get_file_info(folder).type == pafs.FileType.Directory
            and not fs.get_file_info(pafs.FileSelector(folder))):
        fs.delete_dir(folder)


def _partition_values(rel: str, spec: TableSpec) -> dict[str, str | None]:
    parts = dict(segment.split("=", 1) for segment in rel.split("/")[:-1])
    values: dict[str, str | None] = {}
    for col in spec.partition_by:
        raw = unquote(parts[col])
        values[col] = None if raw == HIVE_NULL else raw
    return values


def _refuse_outside(spec: TableSpec, values: list[dict[str, str | None]], partitions: Partitions,
                    fs: pafs.FileSystem, staging: str) -> None:
    allowed = {col: set(v) for col, v in partitions.items()}
    outside = sorted({f"{col}={pv[col]}" for pv in values for col in allowed if pv[col] not in allowed[col]})
    if outside:
        fs.delete_dir(staging)
        _remove_if_empty(fs, staging.rsplit("/", 1)[0])
        raise LakeError(f"table {spec.name}: overwrite of {dict(partitions)} got rows for other partitions "
                        f"{outside[:5]}; nothing was written")


def _delta_type(dtype: T.DataType) -> str:
    """Delta's name for a primitive type (`long`, `timestamp`...), or `nested` for maps, arrays, structs."""
    name = json.loads(dtype.json())
    return name if isinstance(name, str) else "nested"


def check_written_schema(spec: TableSpec, last_commits: list[dict[str, Any]]) -> None:
    """Refuse a table written with another schema version of its contract (newer, or older: no migration)."""
    written = next((c.get("flowops.schemaVersion") for c in last_commits if "flowops.schemaVersion" in c), None)
    if written is not None and int(written) > spec.version:
        raise LakeError(
            f"table {spec.name} was written with schema v{written} by a newer flowops, this one knows v"
            f"{spec.version}: upgrade flowops (or point --lake at another lake)"
        )
    if written is not None and int(written) < spec.version:
        raise LakeError(
            f"table {spec.name} has schema v{written}, this flowops writes v{spec.version}: rebuild the table "
            "by rerunning its job on a fresh lake (flowops does not migrate schemas in place)"
        )


