"""Landed text files as numbered lines, each file read once and checked on the way.

Spark's own text reader fails the whole job on one truncated gzip file, cannot say how many lines a file
had, and numbers lines only through a second pass (row ids plus per-partition offsets). So the landed
files are read by a vectorised (Arrow) function on the executors instead: each file is streamed through
zlib once, split into lines with numpy, and handed to Spark as Arrow batches of
`source_file, line_no, value` (the raw bytes of the line). After its lines, every file contributes one
status row (`line_no` null) saying whether it was whole: `ok`, `empty_file`, `truncated_gzip`,
`corrupt_gzip` or `unreadable_file`, with its line count. A file that is not whole is quarantined by the
caller; its lines before the damage are still emitted (the reader streams and cannot know in advance),
and the caller drops them.

Files are opened by their exact path, never through a glob or a URL, so names with spaces, `%`, `[`,
`*` or non-ASCII characters read like any other.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from flowops.ingest.vector import repeated

READ_BYTES = 4 << 20       # bytes read from a file at a time
INFLATE_BYTES = 32 << 20   # most text inflated from them at a time: memory per task stays bounded
MAX_LINE_BYTES = 64 << 20  # a "line" longer than this is not an xDR or CSV record
TASK_BYTES = 64 << 20      # most landed bytes per Spark task (files are grouped, never split)
MIN_TASK_BYTES = 8 << 20   # fewest: a task costs a Python worker's set-up, worth it only for some data
BATCH_LINES = 1 << 16      # lines parsed at a time, across consecutive files (see `read_files`)
OK, EMPTY, TRUNCATED, CORRUPT, UNREADABLE = "ok", "empty_file", "truncated_gzip", "corrupt_gzip", "unreadable_file"
OVERSIZED = "oversized_line"
NEWLINE, CR = 10, 13
Parse = Callable[[pa.BinaryArray, list[tuple[str, int]]], dict[str, pa.Array]]


@dataclass(frozen=True)
class FileCheck:
    """What one landed file held: whether it was whole, and how many complete lines could be read."""

    source_file: str
    status: str
    lines: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class LandedFile:
    """A file to read: where it is, and its name under RAW (what tables and reports call it)."""

    path: str
    source_file: str
    size: int

    @classmethod
    def under(cls, raw_root: Path, path: Path) -> LandedFile:
        return cls(str(path), path.relative_to(raw_root).as_posix(), path.stat().st_size)


def scan_file(path: str) -> Iterator[np.ndarray | FileCheck]:
    """Stream one (gzip or plain) file: yields chunks of complete lines, then its FileCheck.

    Each chunk is the raw text of complete lines, newline-terminated, as a uint8 array. Gzip is inflated
    with zlib directly (not the gzip module) so that a cut file still yields the complete lines before the
    cut; concatenated gzip members are read one after the other, as Hadoop's codec does. Output is inflated
    in bounded pieces, so a gzip bomb or a line without end costs bounded memory. The last line may lack
    its newline; the line count follows Spark's reader with lineSep='\\n'.
    """
    lines, tail, total, read_any = 0, b"", 0, False
    gzipped = path.endswith(".gz")
    inflater, fed = zlib.decompressobj(wbits=31), False
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_BYTES):
                read_any = True
                while chunk:
                    if gzipped:
                        out = inflater.decompress(chunk, INFLATE_BYTES)
                        fed, chunk = True, inflater.unconsumed_tail
                        if inflater.eof:  # a member ended: what follows is the next member
                            chunk, inflater, fed = inflater.unused_data, zlib.decompressobj(wbits=31), False
                    else:
                        out, chunk = chunk, b""
                    total += len(out)
                    block = np.frombuffer(tail + out, np.uint8)
                    newlines = np.flatnonzero(block == NEWLINE)
                    if len(newlines):
                        end = int(newlines[-1]) + 1
                        lines += len(newlines)
                        yield block[:end]
                        tail = block[end:].tobytes()
                    else:
                        tail = block.tobytes()
                    if len(tail) > MAX_LINE_BYTES:
                        yield FileCheck("", OVERSIZED, lines, f"a line longer than {MAX_LINE_BYTES >> 20} MB "
                                                              f"after {lines} lines")
                        return
    except zlib.error as exc:
        yield FileCheck("", CORRUPT, lines, f"corrupt gzip after {lines} lines: {exc}")
        return
    except OSError as exc:
        yield FileCheck("", UNREADABLE, lines, f"cannot read: {exc}")
        return
    if gzipped and fed and not inflater.eof:
        yield FileCheck("", TRUNCATED, lines, f"gzip stream ends early; {lines} complete lines readable before the cut")
        return
    if total == 0:
        yield FileCheck("", EMPTY, 0, "no content after decompression" if read_any else "0 bytes")
        return
    if tail:
        lines += 1
        yield np.frombuffer(tail + b"\n", np.uint8)
    yield FileCheck("", OK, lines)


def check_file(path: str, source_file: str) -> FileCheck:
    """Read a file through and say what it held (what `read_landed` reports in its status row)."""
    for item in scan_file(path):
        if isinstance(item, FileCheck):
            return FileCheck(source_file, item.status, item.lines, item.detail)
    raise AssertionError("scan_file always ends with a FileCheck")  # pragma: no cover


def line_values(block: np.ndarray) -> pa.BinaryArray:
    """Newline-terminated text -> one binary value per line, without the newline (nor a CR before it)."""
    newlines = np.flatnonzero(block == NEWLINE)
    starts = np.concatenate(([0], newlines[:-1] + 1))
    has_cr = (newlines > starts) & (block[np.maximum(newlines - 1, 0)] == CR)
    keep = np.ones(len(block), bool)
    keep[newlines] = False
    keep[newlines[has_cr] - 1] = False
    offsets = np.zeros(len(newlines) + 1, np.int32)  # a block is at most INFLATE_BYTES + MAX_LINE_BYTES
    np.cumsum(newlines - starts - has_cr, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(newlines), [None, pa.py_buffer(offsets), pa.py_buffer(block[keep])])


def read_files(files: Iterable[tuple[str, str]], parse: Parse | None, schema: pa.Schema,
               batch_lines: int = BATCH_LINES, batch_bytes: int = INFLATE_BYTES) -> Iterator[pa.RecordBatch]:
    """`(path, source_file)` pairs -> record batches of `schema`: every file's numbered lines, then its status row.

    Lines of consecutive files are parsed together, until `batch_lines` lines or `batch_bytes` bytes are held (so
    a batch is at most about twice INFLATE_BYTES, as one file's piece was): a landed file holds a few thousand
    lines, and each parse call costs about a hundred Arrow kernel calls whatever its size. A file's status row
    follows the batch holding its last line, so a parse that tallies per file (`parse.finish`) has seen all of
    it."""
    pending: list[tuple[str, int, pa.BinaryArray]] = []   # (source_file, line_no of its first line, lines)
    finished: list[tuple[str, FileCheck]] = []
    held = held_bytes = 0
    for path, source_file in files:
        line_no = 0
        for item in scan_file(path):
            if isinstance(item, FileCheck):
                finished.append((source_file, item))
                break
            values = line_values(item)
            pending.append((source_file, line_no, values))
            line_no += len(values)
            held += len(values)
            held_bytes += values.nbytes
            if held >= batch_lines or held_bytes >= batch_bytes:
                yield from _flush(pending, finished, parse, schema)
                held = held_bytes = 0
    yield from _flush(pending, finished, parse, schema)


def _flush(pending: list, finished: list, parse: Parse | None, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Parse and emit the pending lines as one batch, then the status rows of the files read through; empties both
    lists."""
    if pending:
        values = pa.concat_arrays([lines for _, _, lines in pending]) if len(pending) > 1 else pending[0][2]
        count = len(values)
        segments = [(source_file, len(lines)) for source_file, _, lines in pending]
        columns = parse(values, segments) if parse else {"value": values}
        base = {"source_file": pa.concat_arrays([repeated(name, n) for name, n in segments]),
                "line_no": pa.array(np.concatenate([np.arange(first + 1, first + len(lines) + 1)
                                                    for _, first, lines in pending]))}
        yield pa.RecordBatch.from_arrays(
            [(base.get(f.name) if f.name in base else columns.get(f.name, pa.nulls(count, f.type))).cast(f.type)
             for f in schema], schema=schema)
    for source_file, check in finished:
        status = {"source_file": source_file, "file_status": check.status, "file_lines": check.lines,
                  "file_detail": check.detail or None, **(parse.finish(source_file) if hasattr(parse, "finish")
                                                          else {})}
        yield pa.RecordBatch.from_pylist([status], schema=schema)
    pending.clear()
    finished.clear()


class TaskSink(Protocol):
    """What a reading task hands each batch to (`read_landed`'s `sink`): it keeps what it writes elsewhere and
    returns the batch without the columns it `drops`; closed once the task's files are read through."""

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Sink(Protocol):
    """Opens each reading task's `TaskSink` (given the task's number); `drops` are the columns its tasks keep back
    from Spark."""

    drops: tuple[str, ...]

    def open(self, task: int) -> TaskSink: ...


def _read_group(parse: Parse | None, schema: pa.Schema, sink: Sink | None,
                batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A task's files (mapInArrow's input: batches of `path, source_file, task`) -> `read_files`, through the
    task's sink when there is one."""
    listed = [row for batch in batches for row in zip(batch.column("path").to_pylist(),
                                                      batch.column("source_file").to_pylist(),
                                                      batch.column("task").to_pylist(), strict=True)]
    if not listed:
        return
    parsed = read_files(((path, source_file) for path, source_file, _ in listed), parse, schema)
    if sink is None:
        yield from parsed
        return
    task = sink.open(listed[0][2])
    try:
        for batch in parsed:
            yield task(batch)
    except BaseException:
        task.abort()
        raise
    task.close()


def group_files(files: list[LandedFile], tasks: int) -> list[list[LandedFile]]:
    """Consecutive files (in name order, so a day's files stay together) in groups of similar size."""
    ordered = sorted(files, key=lambda f: f.source_file)
    total = sum(max(f.size, 1) for f in ordered)
    target = min(max(total / max(tasks, 1), MIN_TASK_BYTES), TASK_BYTES)
    groups: list[list[LandedFile]] = [[]]
    filled = 0.0
    for landed in ordered:
        if groups[-1] and filled + landed.size > target:
            groups.append([])
            filled = 0.0
        groups[-1].append(landed)
        filled += max(landed.size, 1)
    return groups


def read_landed(spark: SparkSession, files: list[LandedFile], parse: Parse | None = None,
                columns: str = "value binary", summary: str = "", sink: Sink | None = None) -> DataFrame:
    """Every line of `files` and one status row per file (see the module docstring).

    Args:
        spark: the session.
        files: the files to read.
        parse: turns a batch of lines (raw bytes) into `columns`; it is also given the batch's segments,
            `(file's name under RAW, lines)` in order, as a batch may hold the end of one file and the start of
            the next. By default each line is kept as `value`. It runs in the reading task, once per batch.
        columns: what `parse` returns (Spark DDL), after `source_file` and `line_no`; null in status rows.
        summary: what `parse.finish(source_file)`, called once a file is read through, adds to its status row
            (Spark DDL), e.g. counts the parse kept while it read.
        sink: in each reading task, takes every batch (lines and status rows) before Spark does, e.g. to write
            some of its rows to files; Spark gets what it returns, without the sink's `drops` columns.

    Returns:
        `source_file, line_no, <columns>, file_status, file_lines, file_detail, <summary>` (less the sink's
        drops). Files are grouped into tasks of similar size (four per core when there is enough data, so no
        core idles while another finishes a big task); each file is read by exactly one task.
    """
    schema = T.StructType.fromDDL(f"source_file string, line_no long, {columns}, file_status string, "
                                  f"file_lines long, file_detail string{', ' + summary if summary else ''}")
    returned = T.StructType([f for f in schema.fields if f.name not in sink.drops]) if sink else schema
    if not files:
        return spark.createDataFrame([], returned)
    arrow_schema = to_arrow_schema(schema, timezone=spark.conf.get("spark.sql.session.timeZone"))
    groups = group_files(files, 4 * spark.sparkContext.defaultParallelism)
    rows = spark.sparkContext.parallelize([[(f.path, f.source_file, task) for f in group]
                                           for task, group in enumerate(groups)], len(groups))
    listing = spark.createDataFrame(rows.flatMap(lambda group: group), "path string, source_file string, task int")
    return listing.mapInArrow(partial(_read_group, parse, arrow_schema, sink), returned)
