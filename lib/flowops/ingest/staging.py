"""Accepted records written as bronze's Parquet files by the task that parsed them (`lines.read_landed`'s sink).

The parse runs in Python on Arrow batches; handing its widest rows to Spark only for Spark to cache them and write
them back out as Parquet cost more than the parse itself (BENCHMARKS.md, "Bronze written by the parsing tasks").
So each reading task writes its accepted records straight to Parquet files in the layout of bronze and of the
cells table, one file per table and day it has records of, and passes Spark only the rejected lines and the files'
status rows, without the columns those never need. The dedupe reads the records' keys and positions back from the
cells' files (Spark's Parquet reader costs far less per row than rows handed over from Python). The step then
commits the files as they are, after Spark tasks remove what the dedupe drops (`drop_task`).

A file is written under a hidden name and renamed when its task has read all its landed files, so only finished
files are ever found; a task run again (a retry, or a lost cache block recomputed) writes the same rows to the
same name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowops.ingest.vector import repeated

ROW_GROUP_ROWS = 1 << 18  # rows of a day buffered before they are written as one row group
ZSTD_LEVEL = 3            # Spark's (parquet-mr's) default level: bronze's files are as large as Spark wrote them


@dataclass(frozen=True)
class StagedTable:
    """Where a table's staged files go and how they are written.

    Args:
        folder: the files' folder (in a scratch folder of the lake, see `Lake.scratch`).
        schema: the files' columns: the table's less the partition column, and any the commit drops (`drop_rows`).
        dictionary: the columns written with dictionary encoding (the others are plain).
    """

    folder: str
    schema: pa.Schema
    dictionary: tuple[str, ...]


@dataclass(frozen=True)
class RecordFiles:
    """Writes the accepted records (a `line_no` and no `reason`) of every batch to each of `tables`, under
    `<folder>/<partition>=<value>/part-<task>.zstd.parquet`; passes Spark the rest of the batch (rejected lines,
    status rows) without the `drops` columns.

    Args:
        tables: the tables to stage the records for.
        partition: the column whose values name the folders (`dt`).
        constants: columns with one value for every row (`run_id`).
        drops: the batch columns kept back from Spark.
    """

    tables: tuple[StagedTable, ...]
    partition: str
    constants: tuple[tuple[str, str], ...]
    drops: tuple[str, ...]

    def open(self, task: int) -> _TaskFiles:
        return _TaskFiles(self, task)


@dataclass
class _TaskFiles:
    sink: RecordFiles
    task: int
    pending: dict[tuple[int, str], list[pa.Table]] = field(default_factory=dict)
    writers: dict[tuple[int, str], pq.ParquetWriter] = field(default_factory=dict)
    # Two attempts of one task (a retry while the first still runs, or speculation) never share an unfinished file.
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        accepted = pc.and_(pc.is_valid(batch.column("line_no")), pc.is_null(batch.column("reason")))
        rows = batch.filter(accepted)
        if rows.num_rows:
            day = rows.column(self.sink.partition)
            if day.null_count:
                raise ValueError(f"accepted records without {self.sink.partition}")
            values = pc.unique(day).to_pylist()
            for number, table in enumerate(self.sink.tables):
                records = self._records(rows, table.schema)
                for value in values:
                    self._add((number, value), records.filter(pc.equal(day, value)) if len(values) > 1 else records)
        kept = [name for name in batch.schema.names if name not in self.sink.drops]
        return batch.filter(pc.invert(accepted)).select(kept)

    def _records(self, rows: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
        constants = dict(self.sink.constants)
        return pa.Table.from_arrays(
            [repeated(constants[f.name], rows.num_rows).cast(f.type) if f.name in constants
             else rows.column(f.name).cast(f.type) for f in schema], schema=schema)

    def _path(self, key: tuple[int, str], name: str) -> Path:
        number, value = key
        return Path(self.sink.tables[number].folder) / f"{self.sink.partition}={value}" / name

    def _add(self, key: tuple[int, str], records: pa.Table) -> None:
        held = self.pending.setdefault(key, [])
        held.append(records)
        if sum(t.num_rows for t in held) >= ROW_GROUP_ROWS:
            self._write(key)

    def _write(self, key: tuple[int, str]) -> None:
        held = self.pending.pop(key, [])
        if not held:
            return
        if key not in self.writers:
            table = self.sink.tables[key[0]]
            path = self._path(key, f".part-{self.task:05d}-{self.attempt}.tmp")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[key] = pq.ParquetWriter(path, table.schema, compression="zstd",
                                                 compression_level=ZSTD_LEVEL, use_dictionary=list(table.dictionary))
        self.writers[key].write_table(pa.concat_tables(held), row_group_size=ROW_GROUP_ROWS * 2)

    def close(self) -> None:
        """Write what is held and give every file its final name."""
        for key in list(self.pending):
            self._write(key)
        for key, writer in self.writers.items():
            writer.close()
            os.replace(self._path(key, f".part-{self.task:05d}-{self.attempt}.tmp"),
                       self._path(key, f"part-{self.task:05d}.zstd.parquet"))

    def abort(self) -> None:
        """The task failed: remove its unfinished files."""
        for key, writer in self.writers.items():
            writer.close()
            self._path(key, f".part-{self.task:05d}-{self.attempt}.tmp").unlink(missing_ok=True)


def drop_rows(table: StagedTable, files: Sequence[str], positions: pa.Table,
              columns: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """Remove from a table's staged `files` the rows at `positions` (`source_file`, `line_no`), and every row of the
    source files listed there with a null `line_no` (files found damaged after their lines were written). A file
    with no such row is left as it is, unless `columns` names fewer columns than it has; the others are rewritten
    in place, keeping row order, with only `columns` when given. Returns the files that still hold rows, each with
    its number of rows.

    Running it again on the same files (a retried Spark task) gives the same answer: a file already emptied is gone,
    and one already cut to `columns` has nothing left to drop."""
    lines = (positions.filter(pc.is_valid(positions["line_no"])).select(["source_file", "line_no"])
             .cast(pa.schema([("source_file", pa.string()), ("line_no", pa.int64())])))
    whole = pa.array(sorted(set(positions.filter(pc.is_null(positions["line_no"]))["source_file"].to_pylist())),
                     pa.string())
    kept_columns = list(columns) if columns is not None else table.schema.names

    def one(rel: str) -> tuple[str, int] | None:
        path = f"{table.folder}/{rel}"
        try:
            names = pq.read_schema(path).names
        except FileNotFoundError:
            return None  # emptied by an earlier attempt of this task
        if not {"source_file", "line_no"} <= set(names):
            return rel, pq.read_metadata(path).num_rows  # cut to `columns` by an earlier attempt
        where = pq.read_table(path, columns=["source_file", "line_no"])
        where = where.append_column("_row", pa.array(range(where.num_rows), pa.int64()))
        dropped = where.join(lines, keys=["source_file", "line_no"], join_type="left semi")["_row"]
        drop = pc.or_(pc.is_in(where["_row"], dropped), pc.is_in(where["source_file"], whole))
        if not pc.any(drop).as_py() and kept_columns == table.schema.names:
            return rel, where.num_rows
        rows = pq.read_table(path, columns=kept_columns).filter(pc.invert(drop))
        if not rows.num_rows:
            os.unlink(path)
            return None
        folder, _, name = path.rpartition("/")
        hidden = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(rows, hidden, compression="zstd", compression_level=ZSTD_LEVEL,
                       use_dictionary=[c for c in table.dictionary if c in kept_columns],
                       row_group_size=ROW_GROUP_ROWS * 2)
        os.replace(hidden, path)
        return rel, rows.num_rows

    return [kept for kept in map(one, files) if kept is not None]


def drop_task(table: StagedTable, columns: Sequence[str], positions: Any,
              files: Iterable[str]) -> list[tuple[str, int]]:
    """`drop_rows` as a Spark task over some of the staged files; `positions` is a broadcast of the positions as an
    Arrow IPC stream. Kept in this module so that a Python worker imports only pyarrow to run it."""
    return drop_rows(table, list(files), pa.ipc.open_stream(positions.value).read_all(), columns)
