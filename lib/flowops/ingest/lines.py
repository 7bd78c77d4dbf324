"""Landed text files as numbered lines: a whole-file check, then Spark's text reader with line numbers.

Spark's gzip reader fails the whole job on one truncated file, and cannot say how many lines a file
had. So each file is first streamed through zlib on the executors (one task per file, constant memory):
that gives an independent line count for reconciliation and flags empty, truncated and corrupt files,
which are quarantined whole while the rest of the day lands.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

CHUNK = 1 << 20
OK, EMPTY, TRUNCATED, CORRUPT, UNREADABLE = "ok", "empty_file", "truncated_gzip", "corrupt_gzip", "unreadable_file"


@dataclass(frozen=True)
class FileCheck:
    """What one landed file holds before any parsing."""

    path: str
    source_file: str
    status: str
    lines: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def check_files(spark: SparkSession, paths: list[Path], raw_root: Path) -> list[FileCheck]:
    """Stream every file once on the executors; one small result per file comes back."""
    items = [(str(path), path.relative_to(raw_root).as_posix()) for path in paths]
    if not items:
        return []
    slices = min(len(items), spark.sparkContext.defaultParallelism * 4)
    return spark.sparkContext.parallelize(items, slices).map(lambda item: check_file(*item)).collect()


def check_file(path: str, source_file: str) -> FileCheck:
    """Count the lines of one (gzip or plain) file, as Spark's reader with lineSep='\\n' would split them.

    Gzip is inflated with zlib directly (not the gzip module) so that a cut file still reports the complete
    lines before the cut; concatenated gzip members are read one after the other, as Hadoop's codec does.
    """
    try:
        if Path(path).stat().st_size == 0:
            return FileCheck(path, source_file, EMPTY, 0, "0 bytes")
        with open(path, "rb") as handle:
            if path.endswith(".gz"):
                return _check_gzip(handle, path, source_file)
            lines, last, total = 0, b"\n", 0
            while chunk := handle.read(CHUNK):
                lines, last, total = lines + chunk.count(b"\n"), chunk[-1:], total + len(chunk)
            return FileCheck(path, source_file, OK, _count(lines, last, total))
    except OSError as exc:
        return FileCheck(path, source_file, UNREADABLE, 0, f"cannot read: {exc}")


def _check_gzip(handle, path: str, source_file: str) -> FileCheck:  # noqa: ANN001 - a binary file object
    lines, last, total = 0, b"\n", 0
    inflater, fed = zlib.decompressobj(wbits=31), False
    try:
        while chunk := handle.read(CHUNK):
            while chunk:
                out = inflater.decompress(chunk)
                fed = True
                lines, total, last = lines + out.count(b"\n"), total + len(out), out[-1:] or last
                chunk = b""
                if inflater.eof:  # a member ended: what follows is the next member
                    chunk, inflater, fed = inflater.unused_data, zlib.decompressobj(wbits=31), False
    except zlib.error as exc:
        return FileCheck(path, source_file, CORRUPT, lines, f"corrupt gzip after {lines} lines: {exc}")
    if fed and not inflater.eof:
        return FileCheck(path, source_file, TRUNCATED, lines,
                         f"gzip stream ends early; {lines} complete lines readable before the cut")
    if total == 0:
        return FileCheck(path, source_file, EMPTY, 0, "no content after decompression")
    return FileCheck(path, source_file, OK, _count(lines, last, total))


def _count(newlines: int, last: bytes, total: int) -> int:
    return newlines + (1 if total and last != b"\n" else 0)


def read_lines(spark: SparkSession, checks: list[FileCheck]) -> DataFrame:
    """Lines of the files that passed the check: `source_file`, `line_no` (1-based), `value` (string).

    Line numbers come from Spark's row ids: rows of one file are in order within a partition, so a line's
    number is its id minus the first id of that file in its partition, plus the lines of the file that
    earlier partitions hold (non-splittable gzip files sit in one partition; plain files may span several).
    """
    good = [c for c in checks if c.ok]
    if not good:
        return spark.createDataFrame([], "source_file string, line_no long, value string")
    depths = {len(Path(c.source_file).parts) for c in good}
    if len(depths) != 1:
        raise ValueError(f"files to read together must sit at one depth under RAW, got depths {sorted(depths)}")
    depth = depths.pop()
    # source_file is the path under RAW: the last `depth` segments of the path Spark reports.
    segments = F.split(F.col("_metadata.file_path"), "/")
    lines = (
        spark.read.option("lineSep", "\n").text([c.path for c in good])
        .select(F.array_join(F.slice(segments, -depth, depth), "/").alias("source_file"), "value")
        .withColumn("_row", F.monotonically_increasing_id())
        .withColumn("_part", F.spark_partition_id())
    )
    firsts = lines.groupBy("source_file", "_part").agg(F.min("_row").alias("_first"), F.count("*").alias("_n"))
    earlier = Window.partitionBy("source_file").orderBy("_first")
    offsets = firsts.withColumn("_offset", F.sum("_n").over(earlier) - F.col("_n"))
    return (
        lines.join(F.broadcast(offsets), on=["source_file", "_part"], how="inner")
        .select("source_file",
                (F.col("_row") - F.col("_first") + F.col("_offset") + 1).alias("line_no"),
                "value")
    )
