"""The lakehouse: read, write (append / overwrite / overwrite partitions) and history of Delta tables.

Two engines write the same standard Delta tables: `delta-rs` (the embedded default; `deltars.py`) and
Delta Lake's own Spark data source for clusters that have its jars (`sparkdelta.py`). Every write holds the
table's writer lock (`lock.py`) from staging to commit; a job that reads a table and then writes it from
what it read holds the lock across both (`Lake.locked`). The tables' contracts are in `tables.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.errors import FlowopsError, LakeError
from flowops.lake.deltars import DeltaRsEngine
from flowops.lake.lock import Locks, TableLock
from flowops.lake.sparkdelta import SparkDeltaEngine
from flowops.lake.staged import Staged, scratch_folder
from flowops.lake.tables import KEY_FINGERPRINT, TableSpec, spec_for
from flowops.spark import delta_classes_available

log = logging.getLogger(__name__)

Mode = Literal["append", "overwrite"]
Partitions = Mapping[str, Sequence[str]]
SAFE_PARTITION_VALUE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class Lake:
    """The lakehouse rooted at `root`: tables live at `root/<layer>/<table>`.

    Args:
        spark: the session that reads and writes DataFrames.
        root: a local path, or a shared mount every writer sees (the writer locks are files).
        engine: `auto`, `delta-rs` or `spark-delta`; `auto` picks spark-delta when its classes load.
        lock_timeout_s: how long a write waits for another writer of the same table.
        lock_stale_s: a writer lock without a heartbeat for this long is abandoned and taken over.
        job: who writes, for the lock's holder record.
    """

    def __init__(self, spark: SparkSession, root: str, engine: str = "auto", *, lock_timeout_s: float = 600,
                 lock_stale_s: float = 30, job: str = "flowops") -> None:
        self.spark = spark
        self.root = _normalise_root(root)
        self.engine_name = resolve_engine(spark, engine)
        self._engine = SparkDeltaEngine(spark) if self.engine_name == "spark-delta" else DeltaRsEngine(spark)
        self._locks = Locks(lock_timeout_s, lock_stale_s)
        self.job = job

    @contextmanager
    def locked(self, table: str) -> Iterator[TableLock]:
        """Hold `table`'s writer lock: for a job that reads the table and then writes it from what it read
        (writes inside take the lock they already hold)."""
        if "://" in self.root:
            raise LakeError(f"the lake at {self.root} is not a file system path: flowops' writer locks are files, "
                            "so writes need a local or mounted lake (object stores are not supported yet)")
        with self._locks.hold(self.path(table), self.job) as lock:
            yield lock

    @contextmanager
    def scratch(self, name: str) -> Iterator[str]:
        """A private folder under the lake root for files a job writes before committing them (see `Staged`);
        removed when the block ends. Folders of jobs that died are removed the next time one is made."""
        with scratch_folder(self.root, name) as folder:
            yield folder

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
        self._require(table)
        return self._engine.read(self.path(table), version, partitions)

    def _require(self, table: str) -> None:
        if not self.exists(table):
            raise LakeError(f"table {table} does not exist at {self.path(table)}; run the job that writes it first")

    def partition_values(self, table: str, column: str) -> set[str]:
        """The values of partition `column` that hold data in the active version (empty if no table)."""
        if not self.exists(table):
            return set()
        # From the Delta log (delta-rs reads it for either engine), not a scan of the data.
        from deltalake import DeltaTable

        return {p[column] for p in DeltaTable(self.path(table)).partitions() if p.get(column) is not None}

    def count(self, table: str, *, partitions: Partitions | None = None) -> int:
        """Rows of the active version of `table` (only these partition values, when given), summed from the
        record counts the Delta log keeps per file (delta-rs reads the log for either engine): no scan, no Spark
        job. When a file's count is missing from the log (a writer without stats), Spark counts the rows. Deletion
        vectors are not subtracted: flowops' tables have none (a table given them by another writer is over-counted)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        self._require(table)
        files = pa.table(DeltaTable(self.path(table)).get_add_actions(flatten=True))
        for column, values in (partitions or {}).items():
            files = files.filter(pc.is_in(files[f"partition.{column}"], pa.array(list(values), pa.string())))
        records = files["num_records"]
        if records.null_count:
            return self.read(table, partitions=partitions).count()
        return int(pc.sum(records).as_py() or 0)

    def to_pandas(self, table: str, **kwargs: Any) -> Any:
        """Read `table` into pandas (for notebooks; use Spark for anything large)."""
        return self.read(table, **kwargs).toPandas()

    def write(
        self,
        df: DataFrame | None,
        table: str | TableSpec,
        *,
        mode: Mode = "append",
        partitions: Partitions | None = None,
        metadata: Mapping[str, str] | None = None,
        shuffle: bool = True,
        staged: Staged | None = None,
    ) -> int:
        """Write `df` to a declared table in one atomic commit and return the new table version.

        Args:
            df: rows matching the table's declared schema (column order does not matter); None when `staged`
                holds all of them.
            table: a registered table name or its spec.
            mode: `append`, or `overwrite`: of the partitions named in `partitions`, or of the whole table
                when `partitions` is None.
            partitions: with overwrite, the partition values to replace, e.g. `{"dt": ["2026-01-05"]}`;
                rows outside them are refused.
            metadata: extra string key/values stored in the commit (e.g. the run id).
            shuffle: gather each partition value's rows into one task first, so a partition gets one file per
                write; pass False for large frames whose tasks already hold few partition values each (each task
                then writes one file per value it holds, and nothing is shuffled).
            staged: Parquet files of more rows, already written in the table's layout (checked against its
                schema), committed with `df`'s in the same commit: delta-rs moves them into the table as they
                are; spark-delta reads them into the write.
        """
        spec = table if isinstance(table, TableSpec) else spec_for(table)
        _check_mode(mode)
        if partitions is not None:
            _check_partitions(spec, mode, partitions)
        if staged is not None:
            staged.check(file_schema(spec), spec.name)
        if df is None:
            if staged is None:
                raise LakeError(f"nothing to write to {spec.name}: no rows and no staged files")
            return self._commit(None, spec, mode, partitions, metadata, staged)
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
        return self._commit(conformed, spec, mode, partitions, metadata, staged)

    def write_rows(self, rows: Sequence[Sequence[Any]], table: str | TableSpec, *, mode: Mode = "append",
                   metadata: Mapping[str, str] | None = None) -> int:
        """Write a few rows built on the driver (tuples in the table's column order), e.g. a run's record, in one
        atomic commit; returns the new version. With delta-rs they go from Arrow straight to Parquet and the
        commit, with no Spark job (a Spark write costs a job and its planning, ~0.2 s, for one row); with
        spark-delta, or for a partitioned table, through a DataFrame and `write`."""
        spec = table if isinstance(table, TableSpec) else spec_for(table)
        if self.engine_name != "delta-rs" or spec.partition_by:
            return self.write(self.spark.createDataFrame(list(rows), spec.schema).coalesce(1), spec, mode=mode,
                              metadata=metadata)
        _check_mode(mode)
        import pyarrow as pa
        from pyspark.sql.pandas.types import to_arrow_schema

        schema = to_arrow_schema(spec.schema, timezone="UTC")
        # A naive datetime is local time, as PySpark's createDataFrame takes it (Arrow would take it as UTC).
        rows = [[v.astimezone(dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is None else v for v in row]
                for row in rows]
        data = pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows], schema=schema)
        return self._commit(data, spec, mode, None, metadata)

    def _commit(self, data: Any, spec: TableSpec, mode: Mode, partitions: Partitions | None,
                metadata: Mapping[str, str] | None, staged: Staged | None = None) -> int:
        path = self.path(spec.name)
        commit_meta = {"flowops.schemaVersion": str(spec.version), **(metadata or {})}
        started = time.perf_counter()
        with self.locked(spec.name) as lock:
            self._engine.check_schema_version(path, spec)
            if KEY_FINGERPRINT in commit_meta and self.exists(spec.name):
                _refuse_other_key(spec, commit_meta[KEY_FINGERPRINT], self._engine.history(path, 50))
            version = self._engine.write(data, path, spec, mode, partitions, commit_meta, lock, staged)
        log.info("wrote %s v%d (%s%s) in %.1fs with %s", spec.name, version, mode, _shown(partitions),
                 time.perf_counter() - started, self.engine_name)
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
        log.info("lake engine: %s (auto: %s)", chosen, reason, extra={"progress": True})
        return chosen
    if engine not in ("delta-rs", "spark-delta"):
        raise FlowopsError(f"lake.engine must be auto, delta-rs or spark-delta, got {engine!r}")
    log.info("lake engine: %s (configured)", engine, extra={"progress": True})
    return engine


def file_schema(spec: TableSpec) -> Any:
    """The Arrow schema of the table's data files: its columns less the partition columns (held by the folder
    names), timestamps as UTC microseconds."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    return pa.schema([f for f in to_arrow_schema(spec.schema, timezone="UTC") if f.name not in spec.partition_by])


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


def _check_mode(mode: str) -> None:
    if mode not in ("append", "overwrite"):
        raise LakeError(f"write mode must be 'append' or 'overwrite', got {mode!r}")


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


def _shown(partitions: Partitions | None) -> str:
    """` dt=2026-01-01..2026-03-31 (90)` for a log line: the range and count, not every value."""
    if not partitions:
        return ""
    parts = []
    for column, values in partitions.items():
        ordered = sorted(values)
        parts.append(f"{column}={ordered[0]}" if len(ordered) == 1 else
                     f"{column}={ordered[0]}..{ordered[-1]} ({len(ordered)})")
    return " " + ", ".join(parts)


def _refuse_other_key(spec: TableSpec, fingerprint: str, last_commits: list[dict[str, Any]]) -> None:
    """A table's sub_ids all come from one key: mixing keys would split every subscriber in two."""
    recorded = next((c[KEY_FINGERPRINT] for c in last_commits if KEY_FINGERPRINT in c), None)
    if recorded is not None and recorded != fingerprint:
        raise LakeError(f"table {spec.name} was pseudonymised with another key (fingerprint {recorded}; this run's "
                        f"is {fingerprint}): set the lake's FLOWOPS_PII_KEY, or write to another lake")


def _normalise_root(root: str) -> str:
    if "://" in root:
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())
