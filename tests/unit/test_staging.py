"""The reading tasks' bronze files: what the sink writes and passes on, and how dropped records leave the files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flowops.ingest.staging import RecordFiles, StagedTable, drop_rows

SCHEMA = pa.schema([("source_file", pa.string()), ("line_no", pa.int64()), ("bytes", pa.int64()),
                    ("run_id", pa.string())])


def sink(folder: Path) -> RecordFiles:
    return RecordFiles((table(folder),), "dt", (("run_id", "r1"),), drops=("bytes",))


def table(folder: Path) -> StagedTable:
    return StagedTable(str(folder), SCHEMA, dictionary=("source_file",))


def batch(rows: list[tuple]) -> pa.RecordBatch:
    """Parsed lines `(source_file, line_no, dt, reason, bytes)`; a status row has no line_no."""
    names = ["source_file", "line_no", "dt", "reason", "bytes"]
    types = [pa.string(), pa.int64(), pa.string(), pa.string(), pa.int64()]
    return pa.RecordBatch.from_arrays([pa.array([r[i] for r in rows], t) for i, t in enumerate(types)], names)


def read(folder: Path) -> dict[str, list[tuple]]:
    return {p.relative_to(folder).as_posix(): [tuple(r.values()) for r in pq.read_table(p).to_pylist()]
            for p in sorted(folder.rglob("*.parquet"))}


def test_accepted_records_go_to_one_file_per_day_named_only_when_the_task_is_done(tmp_path):
    task = sink(tmp_path).open(3)
    passed = task(batch([("a", 1, "2026-03-02", None, 10), ("a", 2, "2026-03-01", None, 20),
                         ("a", 3, None, "bad_timestamp", None), ("a", None, None, None, None)]))
    passed2 = task(batch([("b", 1, "2026-03-02", None, 30), ("b", 2, "2026-03-02", "bad_number", 5)]))
    assert passed.schema.names == ["source_file", "line_no", "dt", "reason"]  # the wide column stays behind
    # Spark gets the rejected lines and the status rows; the accepted records only go to the files.
    assert passed.column("line_no").to_pylist() == [3, None] and passed2.column("line_no").to_pylist() == [2]
    assert read(tmp_path) == {}  # nothing is findable before the task's files are read through
    task.close()
    assert read(tmp_path) == {"dt=2026-03-01/part-00003.zstd.parquet": [("a", 2, 20, "r1")],
                              "dt=2026-03-02/part-00003.zstd.parquet": [("a", 1, 10, "r1"), ("b", 1, 30, "r1")]}
    assert not list(tmp_path.rglob(".*"))


def test_a_failed_task_leaves_no_file(tmp_path):
    task = sink(tmp_path).open(0)
    task(batch([("a", 1, "2026-03-02", None, 10)] * (1 << 18)))  # enough for a row group to be written
    assert list(tmp_path.rglob(".part-*"))
    task.abort()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_dropped_records_and_damaged_files_leave_the_files_that_hold_them_and_no_other(tmp_path):
    task = sink(tmp_path).open(0)
    task(batch([("a", n, "2026-03-01", None, n) for n in range(1, 6)] + [("b", 1, "2026-03-02", None, 7)]
               + [("c", 1, "2026-03-03", None, 8), ("c", 2, "2026-03-03", None, 9)]))
    task.close()
    untouched = tmp_path / "dt=2026-03-02" / "part-00000.zstd.parquet"
    before = untouched.read_bytes(), untouched.stat().st_mtime_ns
    positions = pa.table({"source_file": ["a", "a", "z", "c"], "line_no": pa.array([2, 4, 1, None], pa.int64())})
    kept = drop_rows(table(tmp_path), sorted(read(tmp_path)), positions)
    assert kept == [("dt=2026-03-01/part-00000.zstd.parquet", 3), ("dt=2026-03-02/part-00000.zstd.parquet", 1)]
    assert read(tmp_path) == {"dt=2026-03-01/part-00000.zstd.parquet": [("a", 1, 1, "r1"), ("a", 3, 3, "r1"),
                                                                        ("a", 5, 5, "r1")],
                              "dt=2026-03-02/part-00000.zstd.parquet": [("b", 1, 7, "r1")]}
    assert (untouched.read_bytes(), untouched.stat().st_mtime_ns) == before


def test_each_table_gets_its_columns_and_positions_kept_for_the_drops_leave_at_the_commit(tmp_path):
    cells = StagedTable(str(tmp_path / "cells"), pa.schema([("bytes", pa.int64()), ("source_file", pa.string()),
                                                            ("line_no", pa.int64())]), dictionary=())
    two = RecordFiles((table(tmp_path / "bronze"), cells), "dt", (("run_id", "r1"),), drops=("bytes",))
    task = two.open(1)
    task(batch([("a", 1, "2026-03-01", None, 10), ("a", 2, "2026-03-01", None, 20), ("b", 1, "2026-03-02", None, 30)]))
    task.close()
    assert read(tmp_path / "cells") == {"dt=2026-03-01/part-00001.zstd.parquet": [(10, "a", 1), (20, "a", 2)],
                                        "dt=2026-03-02/part-00001.zstd.parquet": [(30, "b", 1)]}
    positions = pa.table({"source_file": ["a"], "line_no": pa.array([1], pa.int64())})
    kept = drop_rows(cells, sorted(read(tmp_path / "cells")), positions, columns=["bytes"])
    assert kept == [("dt=2026-03-01/part-00001.zstd.parquet", 1), ("dt=2026-03-02/part-00001.zstd.parquet", 1)]
    assert read(tmp_path / "cells") == {"dt=2026-03-01/part-00001.zstd.parquet": [(20,)],
                                        "dt=2026-03-02/part-00001.zstd.parquet": [(30,)]}
    assert len(read(tmp_path / "bronze")["dt=2026-03-01/part-00001.zstd.parquet"]) == 2  # the other table's own


def test_editing_the_files_again_as_a_retried_task_does_gives_the_same_files(tmp_path):
    cells = StagedTable(str(tmp_path), pa.schema([("bytes", pa.int64()), ("source_file", pa.string()),
                                                  ("line_no", pa.int64())]), dictionary=())
    task = RecordFiles((cells,), "dt", (), drops=()).open(0)
    task(batch([("a", 1, "2026-03-01", None, 10), ("b", 1, "2026-03-02", None, 20)]))
    task.close()
    files = sorted(read(tmp_path))
    positions = pa.table({"source_file": ["b"], "line_no": pa.array([1], pa.int64())})
    first = drop_rows(cells, files, positions, columns=["bytes"])
    after = read(tmp_path)
    assert first == [("dt=2026-03-01/part-00000.zstd.parquet", 1)]
    assert drop_rows(cells, files, positions, columns=["bytes"]) == first   # the emptied file is gone, the other cut
    assert read(tmp_path) == after == {"dt=2026-03-01/part-00000.zstd.parquet": [(10,)]}
