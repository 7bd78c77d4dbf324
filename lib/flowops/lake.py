"""Delta lake access: read, write (append / overwrite / overwrite partitions) and history, two engines.

`delta-rs` (the embedded default): Spark writes the Parquet files into a staging folder inside the
table, they are moved into place, and the driver commits them to the Delta log in one transaction with
`deltalake` (per-file stats from the footers; an overwrite removes the replaced files in that same
commit). A crash before the commit leaves the previous version readable; the next write deletes what
the crashed one placed. `spark-delta` (clusters with the Delta jars) hands the same calls to Delta's own
Spark data source. Either way the result is a standard Delta table.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.delta_stats import file_stats
from flowops.errors import FlowopsError, LakeError
from flowops.spark import delta_classes_available
from flowops.tables import TableSpec, spec_for

log = logging.getLogger(__name__)

Mode = Literal["append", "overwrite"]
Partitions = Mapping[str, Sequence[str]]
STAGING = "_staging"
PLACED = "placed.json"
SAFE_PARTITION_VALUE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


class Lake:
    """The lakehouse rooted at `root`: tables live at `root/<layer>/<table>`.

    Args:
        spark: the session that reads and writes DataFrames.
        root: a local path or a URI delta-rs and pyarrow understand.
        engine: `auto`, `delta-rs` or `spark-delta`; `auto` picks spark-delta when its classes load.
    """

    def __init__(self, spark: SparkSession, root: str, engine: str = "auto") -> None:
        self.spark = spark
        self.root = _normalise_root(root)
        self.engine_name = resolve_engine(spark, engine)
        self._engine = SparkDeltaEngine(spark) if self.engine_name == "spark-delta" else DeltaRsEngine(spark)

    def path(self, table: str) -> str:
        """Location of `table` (`layer/name`) under the lake root."""
        return f"{self.root}/{table}"

    def exists(self, table: str) -> bool:
        """True when `table` has a Delta log."""
        return self._engine.exists(self.path(table))

    def read(self, table: str, *, version: int | None = None, partitions: Partitions | None = None) -> DataFrame:
        """Read the active version of `table` (or an older `version`) as a Spark DataFrame.

        Args:
            table: `layer/name`.
            version: a table version for time travel; latest when None.
            partitions: only these partition values, e.g. `{"dt": ["2026-01-05"]}`.
        """
        path = self.path(table)
        if not self.exists(table):
            raise LakeError(f"table {table} does not exist at {path}; run the job that writes it first")
        return self._engine.read(path, version, partitions)

    def partition_values(self, table: str, column: str) -> set[str]:
        """The values of partition `column` that hold data in the active version (empty if no table)."""
        if not self.exists(table):
            return set()
        # From the Delta log (delta-rs reads it for either engine), not a scan of the data.
        from deltalake import DeltaTable

        return {p[column] for p in DeltaTable(self.path(table)).partitions() if p.get(column) is not None}

    def to_pandas(self, table: str, **kwargs: Any) -> Any:
        """Read `table` into pandas (for notebooks; use Spark for anything large)."""
        return self.read(table, **kwargs).toPandas()

    def write(
        self,
        df: DataFrame,
        table: str | TableSpec,
        *,
        mode: Mode = "append",
        partitions: Partitions | None = None,
        metadata: Mapping[str, str] | None = None,
        shuffle: bool = True,
    ) -> int:
        """Write `df` to a declared table in one atomic commit and return the new table version.

        Args:
            df: rows matching the table's declared schema (column order does not matter).
            table: a registered table name or its spec.
            mode: `append`, or `overwrite`: of the partitions named in `partitions`, or of the whole table
                when `partitions` is None.
            partitions: with overwrite, the partition values to replace, e.g. `{"dt": ["2026-01-05"]}`;
                rows outside them are refused.
            metadata: extra string key/values stored in the commit (e.g. the run id).
            shuffle: gather each partition value's rows into one task first, so a partition gets one file per
                write; pass False for large frames whose tasks already hold few partition values each (each task
                then writes one file per value it holds, and nothing is shuffled).
        """
        spec = table if isinstance(table, TableSpec) else spec_for(table)
        if mode not in ("append", "overwrite"):
            raise LakeError(f"write mode must be 'append' or 'overwrite', got {mode!r}")
        if partitions is not None:
            _check_partitions(spec, mode, partitions)
        conformed = conform(df, spec)
        if spec.partition_by and shuffle:
            # Rows of a partition value meet in one task: one file per partition instead of one per input split.
            # When the values are known, a task count Spark's adaptive execution keeps: up to four tasks per core
            # (not a few merged ones that leave cores idle, nor one per value, each with a writer to set up).
            columns = [F.col(col) for col in spec.partition_by]
            values = len(next(iter(partitions.values()))) if partitions and len(partitions) == 1 else None
            tasks = min(values, 4 * self.spark.sparkContext.defaultParallelism) if values else None
            conformed = conformed.repartition(tasks, *columns) if tasks else conformed.repartition(*columns)
        if spec.cluster_by:
            conformed = conformed.sortWithinPartitions(*spec.partition_by, *spec.cluster_by)
        path = self.path(spec.name)
        self._engine.check_schema_version(path, spec)
        commit_meta = {"flowops.schemaVersion": str(spec.version), **(metadata or {})}
        started = time.perf_counter()
        version = self._engine.write(conformed, path, spec, mode, partitions, commit_meta)
        log.info("wrote %s v%d (%s%s) in %.1fs with %s", spec.name, version, mode,
                 f" {dict(partitions)}" if partitions else "", time.perf_counter() - started, self.engine_name)
        return version

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of `table`, newest first, each with `version`, `timestamp`, `operation` and metadata."""
        if not self.exists(table):
            raise LakeError(f"table {table} does not exist at {self.path(table)}")
        return self._engine.history(self.path(table), limit)

    def version(self, table: str) -> int | None:
        """Current version of `table`, or None if it does not exist."""
        return self._engine.version(self.path(table)) if self.exists(table) else None


def resolve_engine(spark: SparkSession, engine: str) -> str:
    """Pick the engine and log which one runs and why."""
    has_delta = delta_classes_available(spark)
    if engine == "spark-delta" and not has_delta:
        raise FlowopsError(
            "lake.engine is spark-delta but Delta Lake's Spark classes are not on the classpath: run with "
            "spark-submit --packages io.delta:delta-spark_2.13:4.0.0 (or your platform's Delta), or set "
            "lake.engine: delta-rs"
        )
    if engine == "auto":
        chosen = "spark-delta" if has_delta else "delta-rs"
        reason = "Delta Spark classes found" if has_delta else "Delta Spark classes not on the classpath"
        log.info("lake engine: %s (auto: %s)", chosen, reason)
        return chosen
    if engine not in ("delta-rs", "spark-delta"):
        raise FlowopsError(f"lake.engine must be auto, delta-rs or spark-delta, got {engine!r}")
    log.info("lake engine: %s (configured)", engine)
    return engine


def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
    """Select the declared columns in order, failing clearly on missing, extra or mistyped columns."""
    expected = {f.name: f.dataType for f in spec.schema.fields}
    actual = {f.name: f.dataType for f in df.schema.fields}
    missing = [name for name in expected if name not in actual]
    extra = [name for name in actual if name not in expected]
    mistyped = [
        f"{name} ({actual[name].simpleString()}, expected {dtype.simpleString()})"
        for name, dtype in expected.items()
        if name in actual and not _same_type(actual[name], dtype)
    ]
    if missing or extra or mistyped:
        problems = [f"{label} {items}" for label, items in
                    (("missing", missing), ("unexpected", extra), ("wrong type", mistyped)) if items]
        raise LakeError(
            f"table {spec.name} requires columns {list(expected)}, but the DataFrame has {list(actual)}: "
            + "; ".join(problems)
        )
    return df.select(*[F.col(name) for name in expected])


def _same_type(actual: T.DataType, expected: T.DataType) -> bool:
    """Types equal ignoring nullability (Spark marks literals non-nullable; Delta columns are nullable)."""
    strip = ('"nullable":false', '"nullable":true'), ('"containsNull":false', '"containsNull":true'), (
        '"valueContainsNull":false', '"valueContainsNull":true')
    a, b = actual.json(), expected.json()
    for old, new in strip:
        a, b = a.replace(old, new), b.replace(old, new)
    return a == b


def _check_partitions(spec: TableSpec, mode: Mode, partitions: Partitions) -> None:
    if mode != "overwrite":
        raise LakeError(f"table {spec.name}: partitions= is only meaningful with mode='overwrite'")
    unknown = [col for col in partitions if col not in spec.partition_by]
    if unknown:
        raise LakeError(f"table {spec.name} is partitioned by {list(spec.partition_by)}, not by {unknown}")
    for col, values in partitions.items():
        if isinstance(values, str) or not values:
            raise LakeError(f"table {spec.name}: partitions[{col!r}] must be a non-empty list of values")
        for value in values:
            if not set(value) <= SAFE_PARTITION_VALUE:
                raise LakeError(f"table {spec.name}: partition value {value!r} has characters outside "
                                "[A-Za-z0-9._-]")


def _normalise_root(root: str) -> str:
    if "://" in root:
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


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
        _refuse_newer(spec, self.history(path, 1))

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

    def write(self, df: DataFrame, path: str, spec: TableSpec, mode: Mode,
              partitions: Partitions | None, metadata: Mapping[str, str]) -> int:
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import CommitProperties, create_table_with_add_actions

        fs, root = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
        clean_leftovers(fs, root, self.history(path, None) if self.exists(path) else [])
        write_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        staging = f"{root}/{STAGING}/{write_id}"
        (df.write.mode("error")
         .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
         .options(**spec.writer_options())
         .partitionBy(*spec.partition_by)
         .parquet(f"{path}/{STAGING}/{write_id}/data"))
        staged = _staged_files(fs, f"{staging}/data")
        values = [_partition_values(rel, spec) for rel in staged]
        if partitions is not None:
            _refuse_outside(spec, values, partitions, fs, staging)
        fs.create_dir(staging, recursive=True)
        # Written whole, then renamed: a kill mid-write must not leave a manifest the cleanup cannot parse.
        with fs.open_output_stream(f"{staging}/{PLACED}.tmp") as out:
            out.write(json.dumps({"write_id": write_id, "files": staged}).encode())
        fs.move(f"{staging}/{PLACED}.tmp", f"{staging}/{PLACED}")
        types = {f.name: _delta_type(f.dataType) for f in spec.schema.fields if f.name not in spec.partition_by}
        adds = [self._place(fs, root, staging, rel, pv, types) for rel, pv in zip(staged, values, strict=True)]
        schema = Schema.from_json(spec.schema.json())
        commit = CommitProperties(custom_metadata={"flowops.writeId": write_id, **metadata})
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


def clean_leftovers(fs: pafs.FileSystem, root: str, history: list[dict[str, Any]]) -> int:
    """Delete what crashed writes left: staging folders, and placed files whose commit never happened.

    A write records the files it is about to move in `placed.json` before moving them; if no commit in the
    table's history carries that write's id, the files are not part of any version and are removed.
    Returns the number of orphaned data files deleted.
    """
    staging_root = f"{root}/{STAGING}"
    if fs.get_file_info(staging_root).type == pafs.FileType.NotFound:
        return 0
    committed = {entry.get("flowops.writeId") for entry in history}
    removed = 0
    for entry in fs.get_file_info(pafs.FileSelector(staging_root)):
        manifest = f"{entry.path}/{PLACED}"
        if entry.type == pafs.FileType.Directory and fs.get_file_info(manifest).type == pafs.FileType.File:
            with fs.open_input_stream(manifest) as handle:
                placed = json.loads(handle.read())
            if placed["write_id"] not in committed:
                for rel in placed["files"]:
                    if fs.get_file_info(f"{root}/{rel}").type == pafs.FileType.File:
                        fs.delete_file(f"{root}/{rel}")
                        removed += 1
        if entry.type == pafs.FileType.Directory:
            fs.delete_dir(entry.path)
        else:
            fs.delete_file(entry.path)
    fs.delete_dir(staging_root)
    if removed:
        log.warning("%s: removed %d data files left by a write that never committed", root, removed)
    return removed


def _remove_if_empty(fs: pafs.FileSystem, folder: str) -> None:
    if (fs.get_file_info(folder).type == pafs.FileType.Directory
            and not fs.get_file_info(pafs.FileSelector(folder))):
        fs.delete_dir(folder)


def _staged_files(fs: pafs.FileSystem, data_dir: str) -> list[str]:
    """Parquet files Spark wrote, relative to the data folder (no checksums or markers)."""
    if fs.get_file_info(data_dir).type == pafs.FileType.NotFound:
        return []
    selector = pafs.FileSelector(data_dir, recursive=True)
    names = [info.path[len(data_dir) + 1:] for info in fs.get_file_info(selector)
             if info.type == pafs.FileType.File and info.path.endswith(".parquet")]
    return sorted(name for name in names if not name.rsplit("/", 1)[-1].startswith((".", "_")))


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


def _refuse_newer(spec: TableSpec, last_commits: list[dict[str, Any]]) -> None:
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


class SparkDeltaEngine:
    """Delta Lake's own Spark data source, for clusters that have its jars."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def _table(self, path: str) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def version(self, path: str) -> int:
        return int(self._table(path).history(1).collect()[0]["version"])

    def history(self, path: str, limit: int | None) -> list[dict[str, Any]]:
        rows = (self._table(path).history(limit) if limit else self._table(path).history()).collect()
        out = []
        for row in rows:
            entry = row.asDict(recursive=True)
            user = entry.get("userMetadata")
            if user:
                entry.update(json.loads(user))
            out.append(entry)
        return out

    def check_schema_version(self, path: str, spec: TableSpec) -> None:
        if self.exists(path):
            _refuse_newer(spec, self.history(path, 1))

    def read(self, path: str, version: int | None, partitions: Partitions | None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(path)
        for col, values in (partitions or {}).items():
            df = df.where(F.col(col).isin(list(values)))
        return df

    def write(self, df: DataFrame, path: str, spec: TableSpec, mode: Mode,
              partitions: Partitions | None, metadata: Mapping[str, str]) -> int:
        # mergeSchema: `conform` has already checked the frame against the declared schema, so this only lets a
        # declared schema grow (e.g. a new tag column), as the delta-rs path does.
        writer = (df.write.format("delta").mode(mode).partitionBy(*spec.partition_by).options(**spec.writer_options())
                  .option("userMetadata", json.dumps(dict(metadata))).option("mergeSchema", "true"))
        if partitions:
            condition = " AND ".join(
                f"{col} IN ({', '.join(repr(v) for v in values)})" for col, values in partitions.items())
            writer = writer.option("replaceWhere", condition)
        writer.save(path)
        return self.version(path)
