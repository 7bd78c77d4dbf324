"""Ingest on generated landing data with every dirty kind: reasons, reconciliation, idempotency, no PII."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from collections import Counter
from dataclasses import astuple
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.steps.ingest import ingest_days
from flowops.synth import generate
from tests.conftest import make_settings
from tests.integration.conftest import personal_leaks

pytestmark = pytest.mark.slow
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
TABLES = ["bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
          "silver/user_agents", "restricted/usage_cells", "restricted/subscriber_keys"]
# What each planted line defect must be rejected as.
EXPECTED_REASON = {
    "wrong_field_count": {"wrong_field_count"}, "bad_number": {"bad_number"}, "negative_bytes": {"negative_bytes"},
    "end_before_start": {"end_before_start"}, "bad_timestamp": {"bad_timestamp", "timestamp_out_of_window"},
    "invalid_msisdn": {"invalid_msisdn"}, "invalid_imei": {"invalid_imei"}, "bad_encoding": {"bad_encoding"},
}


@pytest.fixture(scope="module")
def landed(tmp_path_factory, spark):
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, subscribers=60, start_month="2026-01", months=1, seed=11, bad_rate=0.04, workers=1)
    ctx = Context(make_settings(tmp_path_factory.mktemp("lake")))
    run = ingest_days(ctx, raw, DAYS)
    truth = json.loads((raw / "_truth" / "dirty.json").read_text())
    manifest = json.loads((raw / "_truth" / "manifest.json").read_text())
    return ctx, raw, run, truth, manifest


def fingerprint(ctx, table):
    df = ctx.lake.read(table)
    cols = [c for c in df.columns if c not in ("run_id",)]
    return df.count(), df.select(F.sum(F.pmod(F.xxhash64(*cols), F.lit(1_000_000_007)))).first()[0]


def test_each_bad_line_is_quarantined_with_its_reason(landed):
    ctx, raw, run, truth, _ = landed
    truncated = {t["file"] for t in truth["truncated_files"]}
    quarantine = ctx.lake.read("bronze/quarantine").where("line_no is not null")
    got = Counter((r.source_file, r.reason) for r in quarantine.select("source_file", "reason").collect())
    for source_file, kinds in truth["files"].items():
        if source_file.split("/")[1][3:] not in DAYS or source_file in truncated:
            continue
        for kind, planted in kinds.items():
            if kind in EXPECTED_REASON:
                found = sum(got[(source_file, reason)] for reason in EXPECTED_REASON[kind])
                assert found == planted, (source_file, kind)
    planted_total = sum(n for f, kinds in truth["files"].items() if f.split("/")[1][3:] in DAYS and f not in truncated
                        for k, n in kinds.items() if k in EXPECTED_REASON)
    assert sum(got.values()) == planted_total > 0


def test_reconciliation_adds_up_against_the_generator_line_counts(landed):
    ctx, raw, run, truth, manifest = landed
    truncated = {t["file"]: t["lines_readable"] for t in truth["truncated_files"]}
    row = ctx.lake.read("ops/runs").where(F.col("run_id") == run.run_id).first()
    files = {f.source_file: f for f in row.files}
    expected_files = {f for f in manifest["xdr_files"] if f.split("/")[1][3:] in DAYS}
    assert set(files) == expected_files
    for name, f in files.items():
        assert f.lines_in == f.accepted + f.quarantined + f.duplicates
        assert f.lines_in == truncated.get(name, manifest["xdr_files"][name]["lines"])
    assert row.status == "ok" and row.counts["accepted"] == row.rows_out > 0


def test_a_truncated_file_is_quarantined_whole_and_the_rest_of_the_day_lands(landed):
    ctx, raw, run, truth, _ = landed
    cut = [t for t in truth["truncated_files"] if t["file"].split("/")[1][3:] in DAYS]
    empty = [e["file"] for e in truth["empty_files"] if e["file"].split("/")[1][3:] in DAYS]
    assert cut and empty
    files = ctx.lake.read("bronze/quarantine").where("line_no is null").collect()
    by_file = {r.source_file: r for r in files}
    for t in cut:
        assert by_file[t["file"]].reason == "truncated_gzip"
        assert by_file[t["file"]].line_count == t["lines_readable"]
    assert all(by_file[name].reason == "empty_file" for name in empty)
    day = cut[0]["file"].split("/")[1][3:]
    landed_files = {r.source_file for r in ctx.lake.read("bronze/usage_events").where(F.col("landing_day") == day)
                    .select("source_file").distinct().collect()}
    assert cut[0]["file"] not in landed_files and len(landed_files) >= 20


def test_late_records_land_in_their_own_day(landed):
    ctx, raw, run, truth, _ = landed
    late = ctx.lake.read("bronze/usage_events").where("dt < landing_day")
    truncated = {t["file"] for t in truth["truncated_files"]}
    planted = sum(kinds.get("late_arrival", 0) for f, kinds in truth["files"].items()
                  if f.split("/")[1][3:] in DAYS and f not in truncated)
    assert late.count() == planted > 0
    daily = ctx.lake.read("silver/usage_daily")
    assert sorted(r.dt for r in daily.select("dt").distinct().collect())[-1] == DAYS[-1]


def test_silver_rolls_up_bronze_exactly(landed):
    ctx, *_ = landed
    bronze = ctx.lake.read("bronze/usage_events").groupBy("dt", "sub_id").agg(
        F.sum(F.col("ul_bytes") + F.col("dl_bytes")).alias("b"), F.count("*").alias("n"))
    silver = ctx.lake.read("silver/usage_daily").groupBy("dt", "sub_id").agg(
        F.sum("total_bytes").alias("b"), F.sum("records").alias("n"))
    assert bronze.exceptAll(silver).count() == 0 and silver.exceptAll(bronze).count() == 0
    devices = ctx.lake.read("silver/device_daily")
    assert devices.where("terminal_source = 'tac'").count() > 0
    assert devices.groupBy().agg(F.sum("records")).first()[0] == bronze.groupBy().agg(F.sum("n")).first()[0]


def test_no_phone_numbers_imeis_or_cells_outside_restricted(landed):
    ctx, raw, *_ = landed
    with (raw / "crm" / "month=2026-01" / "subscribers.csv").open() as handle:
        crm = list(csv.DictReader(handle))
    with (raw / "_truth" / "handsets.csv").open() as handle:
        imeis = {row["imei"] for row in csv.DictReader(handle)}
    personal = {row["msisdn"] for row in crm} | {row["imsi"] for row in crm} | imeis

    assert personal_leaks(Path(ctx.settings.lake.root), personal) == []
    keys = {r.msisdn for r in ctx.lake.read("restricted/subscriber_keys").collect()}
    assert keys and keys <= {row["msisdn"] for row in crm}
    # The radio cell (a location trail with time and sub_id) lives only in restricted/usage_cells, one per record.
    assert not any("cell" in c for t in TABLES if not t.startswith("restricted/") for c in ctx.lake.read(t).columns)
    bronze = ctx.lake.read("bronze/usage_events").select("dt", "record_id")
    cells = ctx.lake.read("restricted/usage_cells")
    assert cells.count() == bronze.count() == cells.join(bronze, ["dt", "record_id"]).count() > 0
    assert cells.where("cell_id is null or cell_id = ''").count() == 0


def test_a_second_run_of_the_same_days_changes_no_table_content(landed):
    ctx, raw, first, *_ = landed
    before = {t: fingerprint(ctx, t) for t in TABLES}
    versions = {t: ctx.lake.version(t) for t in ("bronze/usage_events", "restricted/subscriber_keys",
                                                 "silver/user_agents")}

    again = ingest_days(ctx, raw, DAYS)

    assert {t: fingerprint(ctx, t) for t in TABLES} == before
    assert {t: ctx.lake.version(t) for t in versions} == versions   # nothing new: no commit at all
    # The rerun tells the same truth: what bronze holds was accepted (by the first run), replays are duplicates.
    assert [astuple(f) for f in again.files] == [astuple(f) for f in first.files]
    assert again.counts["accepted.by_earlier_runs"] == again.counts["accepted"] > 0


def test_each_user_agent_is_read_once_per_resolver_and_identifies_handsets_as_a_fresh_read_does(landed, tmp_path):
    from flowops.ingest.rollup import device_daily, handsets_daily
    from flowops.ingest.terminals import HandsetClasses
    from flowops.steps.ingest import Reference

    _, raw, *_ = landed
    ctx = Context(make_settings(tmp_path / "lake"))
    first = ingest_days(ctx, raw, DAYS[:2])
    later = ingest_days(ctx, raw, DAYS[2:])
    agents = ctx.lake.read("silver/user_agents")
    assert first.counts["user_agents.read"] > 0 and first.counts["user_agents.known"] == 0
    assert later.counts["user_agents.known"] > 0          # day 3's handsets were mostly seen on days 1-2 ...
    assert agents.count() == agents.select("user_agent").distinct().count() == \
        first.counts["user_agents.read"] + later.counts["user_agents.read"]   # ... and none was read twice
    # What day 3 identified from agents read on days 1-2 is what reading them all afresh identifies.
    reference = Reference.load(ctx)
    bronze = ctx.lake.read("bronze/usage_events", partitions={"dt": DAYS[2:]})
    fresh = device_daily(handsets_daily(bronze), reference.terminals, reference.classes)
    written = ctx.lake.read("silver/device_daily", partitions={"dt": DAYS[2:]})
    assert Counter(map(tuple, written.collect())) == Counter(map(tuple, fresh.select(*written.columns).collect()))
    assert written.where(F.col("terminal_source") == "user_agent").count() > 0
    # Other handset rules (the test conf has rules; HandsetClasses() has none) are another resolver: every agent is
    # read again, the earlier reads kept apart.
    from flowops.ingest.terminals import resolver_name

    assert resolver_name(HandsetClasses()) != resolver_name(reference.classes)
    other = ingest_days(ctx, raw, DAYS[2:], Reference(reference.apps, reference.terminals, reference.key,
                                                       HandsetClasses()))
    assert other.counts["user_agents.known"] == 0 and other.counts["user_agents.read"] > 0
    assert ctx.lake.read("silver/user_agents").select("resolver").distinct().count() == 2


@pytest.fixture(scope="module")
def day_one(landed, tmp_path_factory) -> Path:
    """A lake holding the first day alone."""
    _, raw, *_ = landed
    root = tmp_path_factory.mktemp("day_one") / "lake"
    ingest_days(Context(make_settings(root)), raw, DAYS[:1])
    return root


@pytest.mark.parametrize("drops_by", ["files", "join"])
def test_a_batch_overlapping_the_lake_lands_what_one_batch_of_its_days_lands(landed, day_one, tmp_path, monkeypatch,
                                                                             drops_by):
    """Day 1 lands, then days 1-3 as one batch: the records bronze holds and the replays leave the files the reading
    tasks staged, edited file by file (a few dropped records) or rewritten by Spark through a join (many)."""
    import flowops.steps.ingest as step

    ctx, raw, *_ = landed
    shutil.copytree(day_one, tmp_path / "lake")
    again = Context(make_settings(tmp_path / "lake"))
    if drops_by == "join":
        monkeypatch.setattr(step, "BROADCAST_ROWS", 0)
    run = ingest_days(again, raw, DAYS)
    assert run.counts["accepted.by_earlier_runs"] > 0 and run.counts["duplicates.replayed_in_delivery"] > 0
    assert {t: fingerprint(again, t) for t in TABLES} == {t: fingerprint(ctx, t) for t in TABLES}
    assert not (tmp_path / "lake" / "_scratch").exists()


def test_a_redelivered_file_adds_no_rows(landed):
    ctx, raw, run, truth, manifest = landed
    source = next(f for f in manifest["xdr_files"] if f.startswith("usage/dt=2026-01-02/")
                  and manifest["xdr_files"][f]["lines"] > 0 and f not in {t["file"] for t in truth["truncated_files"]})
    copy = raw / re.sub(r"\.txt\.gz$", "_redelivered.txt.gz", source)
    shutil.copy(raw / source, copy)
    before = fingerprint(ctx, "bronze/usage_events")
    try:
        redo = ingest_days(ctx, raw, ["2026-01-02"])
    finally:
        copy.unlink()
    assert fingerprint(ctx, "bronze/usage_events") == before
    mine = next(f for f in redo.files if f.source_file.endswith("_redelivered.txt.gz"))
    assert mine.accepted == 0 and mine.duplicates + mine.quarantined == mine.lines_in > 0


def test_a_record_whose_first_copy_is_in_a_file_found_cut_lands_from_its_replay(landed, tmp_path):
    """The first copy of a record is the first among the whole files: a copy in a file found truncated (quarantined
    whole, nothing of it lands) does not count, so the record lands from its replay in a whole file, once."""
    ctx, raw, *_ = landed
    day = "2026-01-02"
    bronze = ctx.lake.read("bronze/usage_events").where(F.col("landing_day") == day)
    first, second = sorted(r.source_file for r in bronze.select("source_file").distinct().collect())[:2]
    record = bronze.where(F.col("source_file") == first).orderBy("line_no").first()
    lines = gzip.decompress((raw / first).read_bytes()).splitlines(keepends=True)
    again = tmp_path / "raw"
    for name in (first, second):
        (again / name).parent.mkdir(parents=True, exist_ok=True)
    # Every line readable, but the gzip trailer is missing: the file is found cut once it is read through.
    (again / first).write_bytes(gzip.compress(b"".join(lines))[:-8])
    (again / second).write_bytes(gzip.compress(gzip.decompress((raw / second).read_bytes())
                                               + lines[record.line_no - 1]))
    lake = Context(make_settings(tmp_path / "lake"))

    run = ingest_days(lake, again, [day])

    by_file = {f.source_file: f for f in run.files}
    assert by_file[first].status == "truncated_gzip" and by_file[first].accepted == 0
    assert by_file[second].duplicates == 0
    assert by_file[second].accepted + by_file[second].quarantined == by_file[second].lines_in
    landed_copies = lake.lake.read("bronze/usage_events").where(
        (F.col("dt") == record.dt) & (F.col("record_id") == record.record_id)).collect()
    assert [(r.source_file, r.line_no) for r in landed_copies] == [(second, by_file[second].lines_in)]


def test_a_day_of_only_broken_files_is_quarantined_and_reconciled(spark, tmp_path):
    raw = tmp_path / "raw"
    day = raw / "usage" / "dt=2026-02-01" / "hour=00"
    day.mkdir(parents=True)
    (day / "zero.txt.gz").write_bytes(b"")
    (day / "cut.txt.gz").write_bytes(gzip.compress(b"a|b\n" * 1000)[:40])
    ctx = Context(make_settings(tmp_path / "lake"))

    run = ingest_days(ctx, raw, ["2026-02-01"])

    assert sorted(f.status for f in run.files) == ["empty_file", "truncated_gzip"]
    assert all(f.accepted == 0 and f.quarantined == f.lines_in for f in run.files)
    assert ctx.lake.read("bronze/usage_events").count() == 0
    assert sorted(r.reason for r in ctx.lake.read("bronze/quarantine").collect()) == ["empty_file", "truncated_gzip"]
