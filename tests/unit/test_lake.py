"""Lake round trips: what lake.write commits, independent readers (delta-rs, DuckDB, Polars) read back."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from flowops import lake as lake_module
from flowops.errors import LakeError
from flowops.lake.tables import TableSpec, register

EVENTS = TableSpec(
    name="test/events",
    schema=T.StructType([
        T.StructField("dt", T.StringType()),
        T.StructField("sub_id", T.StringType()),
        T.StructField("bytes", T.LongType()),
        T.StructField("share", T.DoubleType()),
        T.StructField("seen_at", T.TimestampType()),
        T.StructField("day", T.DateType()),
        T.StructField("apps", T.ArrayType(T.StringType())),
    ]),
    partition_by=("dt",),
)
register(EVENTS)

ROWS = [
    ("2026-01-01", "a", 10, 0.5, dt.datetime(2026, 1, 1, 8, 0, 0, 123456), dt.date(2026, 1, 1), ["wechat"]),
    ("2026-01-01", "b", None, None, None, None, None),
    ("2026-01-02", "a", 30, 1.0, dt.datetime(2026, 1, 2, 23, 59, 59, 999999), dt.date(2026, 1, 2), []),
    ("2026-01-03", "c", 7, 0.25, dt.datetime(2026, 1, 3, 0, 0, 0), dt.date(2026, 1, 3), ["douyin", "qq"]),
]


def events_df(spark, rows=ROWS):
    return spark.createDataFrame(rows, EVENTS.schema)


def duckdb_rows(path: str, query: str) -> list[tuple]:
    import duckdb
    import duckdb_extension_delta

    extension = next(Path(duckdb_extension_delta.__file__).parent.glob("extensions/*/delta.duckdb_extension"))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension}'")
    return con.execute(query.format(table=f"delta_scan('{path}')")).fetchall()


def test_write_then_read_back_with_spark(spark, lake):
    version = lake.write(events_df(spark), "test/events", mode="overwrite")

    assert version == 0
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))
    assert lake.read("test/events").schema == EVENTS.schema


def test_rows_from_the_driver_commit_without_spark_and_read_back_as_a_spark_write_does(spark, lake):
    from deltalake import DeltaTable

    from flowops.lake.tables import RUNS

    started = dt.datetime(2026, 1, 5, 3, 15, 0, 123456, tzinfo=dt.UTC)
    row = ("r1", "ingest", {"month": "2026-01"}, started, started + dt.timedelta(seconds=2.5), 2.5, "ok", None,
           10, 9, {"accepted": 9}, {"bronze/usage_events": 3}, [("a.txt.gz", "ok", 10, 9, 1, 0)], "delta-rs",
           "0.1", "local[2]")
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup()
    assert lake.write_rows([row], RUNS) == 0
    assert spark.sparkContext.statusTracker().getJobIdsForGroup() == jobs  # no Spark job ran
    lake.write(spark.createDataFrame([(*row[:1], "tags", *row[2:])], RUNS.schema), RUNS)
    by_job = {r.job: r.asDict(recursive=True) for r in lake.read("ops/runs").collect()}
    assert by_job["ingest"] == {**by_job["tags"], "job": "ingest"}
    assert by_job["ingest"]["started_at"] == started.astimezone().replace(tzinfo=None)  # PySpark's local time
    assert DeltaTable(lake.path("ops/runs")).to_pyarrow_table().column("seconds").to_pylist() == [2.5, 2.5]
    # A naive datetime is local time on both paths, as PySpark takes it (in a zone other than UTC, to tell).
    import os
    import time

    naive = dt.datetime(2026, 1, 5, 11, 15)
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        lake.write_rows([(*row[:1], "naive", *row[2:3], naive, *row[4:])], RUNS)
        lake.write(spark.createDataFrame([(*row[:1], "naive-spark", *row[2:3], naive, *row[4:])], RUNS.schema),
                   RUNS)
        stamps = {r.job: r.started_at for r in lake.read("ops/runs").where("job like 'naive%'").collect()}
    finally:
        if zone is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = zone
        time.tzset()
    assert stamps == {"naive": naive, "naive-spark": naive}


def test_count_from_the_log_equals_a_scan_and_falls_back_to_one_without_file_counts(spark, lake, monkeypatch):
    import pyarrow as pa
    from deltalake import DeltaTable

    lake.write(events_df(spark), "test/events", mode="overwrite")
    lake.write(events_df(spark, ROWS[:2]), "test/events", mode="append")
    lake.write(events_df(spark, ROWS[3:]), "test/events", mode="overwrite", partitions={"dt": ["2026-01-03"]})
    for partitions in (None, {"dt": ["2026-01-01"]}, {"dt": ["2026-01-02", "2026-01-03"]}, {"dt": ["2027-01-01"]}):
        assert lake.count("test/events", partitions=partitions) == \
            lake.read("test/events", partitions=partitions).count()
    assert lake.count("test/events") == 6

    with_counts = DeltaTable.get_add_actions

    def without_counts(table, flatten=False):
        actions = pa.table(with_counts(table, flatten=flatten))
        return actions.set_column(actions.schema.get_field_index("num_records"), "num_records",
                                  pa.nulls(actions.num_rows, pa.int64()))

    monkeypatch.setattr(DeltaTable, "get_add_actions", without_counts)
    assert lake.count("test/events", partitions={"dt": ["2026-01-01"]}) == 4   # counted by Spark
    with pytest.raises(LakeError, match="does not exist"):
        lake.count("test/none")


def test_independent_readers_see_the_same_rows(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite")
    path = lake.path("test/events")

    import polars as pl
    from deltalake import DeltaTable

    polars_rows = pl.read_delta(path).sort(["dt", "sub_id"]).select("dt", "sub_id", "bytes").rows()
    duck_rows = duckdb_rows(path, "select dt, sub_id, bytes from {table} order by dt, sub_id")
    rs_rows = DeltaTable(path).to_pyarrow_table().sort_by([("dt", "ascending"), ("sub_id", "ascending")])
    expected = [(r[0], r[1], r[2]) for r in ROWS]
    assert polars_rows == expected
    assert duck_rows == expected
    assert list(zip(*[rs_rows.column(c).to_pylist() for c in ("dt", "sub_id", "bytes")], strict=False)) == expected
    # dt stays a string for every reader: no partition-type inference.
    assert pl.read_delta(path).schema["dt"] == pl.String
    # Timestamps keep microseconds and mean the same instant everywhere.
    micro = duckdb_rows(path, "select epoch_us(seen_at) from {table} where sub_id = 'a' and dt = '2026-01-02'")
    spark_micro = (lake.read("test/events").where("sub_id = 'a' and dt = '2026-01-02'")
                   .select(F.unix_micros("seen_at")).first()[0])
    assert micro == [(spark_micro,)]


def test_stats_bound_the_data_so_skipping_readers_lose_nothing(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite")
    path = lake.path("test/events")

    assert duckdb_rows(path, "select count(*) from {table} where bytes = 30") == [(1,)]
    assert duckdb_rows(path, "select count(*) from {table} where seen_at >= '2026-01-02 15:59:59.999999+00'"
                       ) == [(2,)]  # the 23:59:59.999999 Shanghai row is 15:59:59.999999 UTC
    log = Path(path, "_delta_log", "00000000000000000000.json").read_text().splitlines()
    stats = [json.loads(json.loads(line)["add"]["stats"]) for line in log if '"add"' in line]
    assert sum(s["numRecords"] for s in stats) == len(ROWS)
    assert all("apps" not in s["minValues"] for s in stats)


def test_partition_overwrite_replaces_only_that_partition(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite")
    replacement = [("2026-01-01", "z", 99, 0.1, None, None, None)]

    lake.write(events_df(spark, replacement), "test/events", mode="overwrite", partitions={"dt": ["2026-01-01"]})

    expected = events_df(spark, replacement + [r for r in ROWS if r[0] != "2026-01-01"])
    assertDataFrameEqual(lake.read("test/events"), expected)
    assert duckdb_rows(lake.path("test/events"), "select count(*) from {table}") == [(3,)]
    assert lake.read("test/events", partitions={"dt": ["2026-01-01"]}).count() == 1
    # the old version is still there for time travel
    assertDataFrameEqual(lake.read("test/events", version=0), events_df(spark))


def test_overwrite_refuses_rows_outside_the_named_partitions(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite")

    with pytest.raises(LakeError, match=r"other partitions \['dt=2026-01-02'"):
        lake.write(events_df(spark), "test/events", mode="overwrite", partitions={"dt": ["2026-01-01"]})

    assert lake.version("test/events") == 0
    assert not Path(lake.path("test/events"), "_staging").exists()


def test_rerunning_the_same_overwrite_gives_the_same_content(spark, lake):
    for _ in range(2):
        lake.write(events_df(spark), "test/events", mode="overwrite", partitions={"dt": ["2026-01-01",
                                                                                        "2026-01-02",
                                                                                        "2026-01-03"]})
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))
    assert lake.version("test/events") == 1


def test_wrong_columns_fail_before_writing(spark, lake):
    bad = events_df(spark).drop("share").withColumn("bytes", F.col("bytes").cast("int")).withColumn("x", F.lit(1))

    with pytest.raises(LakeError) as err:
        lake.write(bad, "test/events")

    message = str(err.value)
    assert "missing ['share']" in message
    assert "unexpected ['x']" in message
    assert "bytes (int, expected bigint)" in message
    assert not lake.exists("test/events")


def test_a_write_that_fails_before_commit_leaves_the_previous_version(spark, lake, monkeypatch):
    lake.write(events_df(spark), "test/events", mode="overwrite")
    placed: list[str] = []
    real_place = lake_module.DeltaRsEngine._place

    def place_then_remember(*args, **kwargs):
        action = real_place(*args, **kwargs)
        placed.append(action.path)
        return action

    def crash(*args, **kwargs):
        raise RuntimeError("killed between placing files and committing")

    monkeypatch.setattr(lake_module.DeltaRsEngine, "_place", staticmethod(place_then_remember))
    monkeypatch.setattr("deltalake.DeltaTable.create_write_transaction", crash)
    with pytest.raises(RuntimeError, match="killed"):
        lake.write(events_df(spark, ROWS[:1]), "test/events", mode="overwrite")
    monkeypatch.undo()

    path = Path(lake.path("test/events"))
    assert placed and all((path / rel).exists() for rel in placed)   # the crash left files behind
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))  # ...but readers do not see them
    assert lake.version("test/events") == 0

    lake.write(events_df(spark, ROWS[:1]), "test/events", mode="overwrite")

    assert not any((path / rel).exists() for rel in placed)          # orphans cleaned by the rerun
    assert not (path / "_staging").exists()
    assertDataFrameEqual(lake.read("test/events"), events_df(spark, ROWS[:1]))
    _assert_no_orphans(path)


def test_a_killed_writer_process_leaves_a_readable_table_and_the_rerun_succeeds(spark, lake, tmp_path):
    lake.write(events_df(spark), "test/events", mode="overwrite")
    script = tmp_path / "killed_writer.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.conftest import make_settings
        from tests.unit.test_lake import events_df, ROWS
        from flowops.spark import build_session
        from flowops import lake as lake_module
        spark = build_session(make_settings(), ui=False)
        lake = lake_module.Lake(spark, {lake.root!r}, "delta-rs")
        real = lake_module.DeltaRsEngine._place
        count = []
        def place_and_die(*args, **kwargs):
            action = real(*args, **kwargs)
            count.append(action)
            if len(count) == 2:
                os._exit(9)   # SIGKILL-like: no cleanup, no finally blocks
            return action
        lake_module.DeltaRsEngine._place = staticmethod(place_and_die)
        lake.write(events_df(spark, ROWS * 3), "test/events", mode="overwrite")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]

    path = Path(lake.path("test/events"))
    assert (path / "_staging").exists()
    assert (path / "_flowops.lock").exists()   # killed while holding the table's lock
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))

    lake.write(events_df(spark, ROWS[2:]), "test/events", mode="append")

    assertDataFrameEqual(lake.read("test/events"), events_df(spark, ROWS + ROWS[2:]))
    _assert_no_orphans(path)


def _assert_no_orphans(path: Path) -> None:
    from deltalake import DeltaTable

    active = {Path(uri).resolve() for uri in DeltaTable(str(path)).file_uris()}
    on_disk = {p.resolve() for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}
    history_files = set()
    for entry in (path / "_delta_log").glob("*.json"):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                history_files.add((path / action["add"]["path"]).resolve())
    assert active <= on_disk
    assert on_disk <= history_files, f"files no commit ever added: {sorted(on_disk - history_files)}"


def test_a_lake_written_by_a_newer_schema_is_refused(spark, lake):
    newer = TableSpec(EVENTS.name, EVENTS.schema, EVENTS.partition_by, version=EVENTS.version + 1)
    lake.write(events_df(spark), newer, mode="overwrite")

    with pytest.raises(LakeError, match="written with schema v2 by a newer flowops"):
        lake.write(events_df(spark), EVENTS, mode="append")


def test_history_lists_commits_newest_first_with_flowops_metadata(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite", metadata={"flowops.runId": "r1"})
    lake.write(events_df(spark, ROWS[:1]), "test/events", mode="append", metadata={"flowops.runId": "r2"})

    history = lake.history("test/events")

    assert [h["version"] for h in history] == [1, 0]
    assert [h["flowops.runId"] for h in history] == ["r2", "r1"]


def test_reading_a_missing_table_says_what_to_do(lake):
    with pytest.raises(LakeError, match="does not exist .* run the job that writes it first"):
        lake.read("test/events")


def test_empty_overwrite_of_a_partition_removes_it(spark, lake):
    lake.write(events_df(spark), "test/events", mode="overwrite")

    lake.write(events_df(spark, []), "test/events", mode="overwrite", partitions={"dt": ["2026-01-03"]})

    assert sorted(r.dt for r in lake.read("test/events").select("dt").distinct().collect()) == [
        "2026-01-01", "2026-01-02"]


def _stage(folder: Path, rows: list[tuple], name: str = "part-00000.zstd.parquet", schema=None) -> None:
    """Write ROWS-shaped tuples as Parquet files in EVENTS' layout, as a parsing task would (pyarrow, no Spark)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema or lake_module.file_schema(EVENTS)
    for day in sorted({row[0] for row in rows}):
        kept = [dict(zip(EVENTS.schema.fieldNames(), row, strict=True)) for row in rows if row[0] == day]
        for row in kept:
            del row["dt"]
            if row["seen_at"] is not None:
                row["seen_at"] = row["seen_at"].replace(tzinfo=dt.UTC)
        (folder / f"dt={day}").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(kept, schema=schema), folder / f"dt={day}" / name)


def test_staged_files_commit_as_they_are_with_spark_rows_in_one_commit(spark, lake, tmp_path):
    staged = tmp_path / "staged"
    _stage(staged, ROWS[:2])
    found = lake_module.Staged.found(str(staged))
    assert found.files == ("dt=2026-01-01/part-00000.zstd.parquet",)
    version = lake.write(events_df(spark, ROWS[2:]), "test/events", mode="append", staged=found)
    assert version == 0
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))
    assert not (staged / "dt=2026-01-01" / "part-00000.zstd.parquet").exists()  # moved into the table, not copied
    assert duckdb_rows(lake.path("test/events"), "select count(*), sum(bytes) from {table}") == [(4, 47)]
    assert lake.count("test/events") == 4  # the log's per-file stats of the staged file


def test_staged_files_alone_and_a_wrong_staged_schema_is_refused_before_anything_is_written(spark, lake, tmp_path):
    import pyarrow as pa

    _stage(tmp_path / "ok", ROWS)
    lake.write(None, "test/events", mode="append", staged=lake_module.Staged.found(str(tmp_path / "ok")))
    assertDataFrameEqual(lake.read("test/events"), events_df(spark))
    wrong = pa.schema([f if f.name != "bytes" else pa.field("bytes", pa.int32()) for f in
                       lake_module.file_schema(EVENTS)])
    _stage(tmp_path / "bad", ROWS[:1], schema=wrong)
    with pytest.raises(LakeError, match="bytes.*int32|int32.*bytes|has columns"):
        lake.write(None, "test/events", mode="append", staged=lake_module.Staged.found(str(tmp_path / "bad")))
    assert lake.version("test/events") == 0
    with pytest.raises(LakeError, match="nothing to write"):
        lake.write(None, "test/events")


def test_a_scratch_folder_goes_when_its_block_ends_and_one_a_dead_job_left_goes_with_the_next(lake, tmp_path):
    with lake.scratch("ingest") as folder:
        (Path(folder) / "x.parquet").write_bytes(b"x")
        kept = folder
    assert not Path(kept).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = Path(lake.root) / "_scratch" / "ingest-left"
    left.mkdir(parents=True)
    (left / "owner.json").write_text(json.dumps({"host": __import__("socket").gethostname(),
                                                 "pid": int(dead.stdout)}))
    elsewhere = Path(lake.root) / "_scratch" / "ingest-elsewhere"   # another host's job: left alone for a day
    elsewhere.mkdir()
    (elsewhere / "owner.json").write_text(json.dumps({"host": "another-host", "pid": 1}))
    live = Path(lake.root) / "_scratch" / "ingest-live"             # a live job of this host: kept however old
    live.mkdir()
    (live / "owner.json").write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": os.getpid()}))
    old = time.time() - 2 * 24 * 3600
    os.utime(live, (old, old))
    with lake.scratch("ingest") as folder:
        assert not left.exists() and elsewhere.exists() and live.exists()
        with lake.scratch("other") as other:  # a live job's folder stays
            assert Path(folder).exists() and Path(other).exists()
        os.utime(elsewhere, (old, old))
    with lake.scratch("ingest"):
        assert not elsewhere.exists() and live.exists()
