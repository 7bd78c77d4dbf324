"""`flowops ingest`: landing days of xDR files into bronze, quarantine and the silver daily tables.

A batch is one day (`--date`) or every landed day of a month (`--month`, one pass over all its files).
In order, each write one atomic commit:
1. bronze/usage_events  - append records not already in the lake (dedupe by dt + record_id, within the
   delivery and against the lake), so reruns and redelivered files add nothing twice;
2. restricted/subscriber_keys - append msisdns seen for the first time;
3. bronze/quarantine    - overwrite the landing days' partitions with their rejected lines and files;
4. silver/usage_daily, silver/device_daily - recompute every day the delivery touched, from bronze.
A crash between steps leaves each table at a consistent version, and the rerun completes the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.errors import FlowopsError
from flowops.ingest import lines as landed
from flowops.ingest.apps import AppRules, identify_apps
from flowops.ingest.keys import append_new_keys
from flowops.ingest.pii import pii_key, sub_id
from flowops.ingest.rollup import device_daily, usage_daily
from flowops.ingest.terminals import load_reference, reference_df
from flowops.ingest.xdr import parse_xdr
from flowops.landing import parse_date, require_raw, usage_files
from flowops.runs import FileReconciliation, Run, recorded_run
from flowops.tables import DEVICE_DAILY, QUARANTINE, USAGE_DAILY, USAGE_EVENTS

log = logging.getLogger(__name__)
RAW_KEEP = 2000


@dataclass(frozen=True)
class Reference:
    """Rules and reference tables loaded once per job from conf/."""

    apps: AppRules
    terminals: DataFrame
    key: bytes

    @classmethod
    def load(cls, ctx: Context) -> Reference:
        conf = ctx.settings.conf_dir
        return cls(AppRules.load(conf), reference_df(ctx.spark, load_reference(conf)), pii_key(ctx.settings.pii))


def ingest_days(ctx: Context, raw: str | Path, days: list[str], reference: Reference | None = None,
                label: dict[str, str] | None = None) -> Run:
    """Ingest the files of the given landing days as one batch; returns the recorded run."""
    landing_days = sorted(parse_date(day) for day in days)
    raw_root = require_raw(raw).resolve()
    paths = [path for day in landing_days for path in usage_files(raw_root, day.isoformat())]
    reference = reference or Reference.load(ctx)
    params = {"raw": raw_root, **(label or {"date": landing_days[0].isoformat()}), "conf": ctx.settings.conf_dir}
    with recorded_run(ctx.lake, "ingest", params) as run:
        _ingest(ctx, run, raw_root, landing_days, paths, reference)
    return run


def _ingest(ctx: Context, run: Run, raw_root: Path, landing_days: list[dt.date], paths: list[Path],
            reference: Reference) -> None:
    spark, lake, settings = ctx.spark, ctx.lake, ctx.settings
    late_days = settings.pipeline.late_arrival_days
    with run.step("check files") as step:
        checks = landed.check_files(spark, paths, raw_root)
        step["files"] = len(checks)
        step["bad_files"] = sum(not c.ok for c in checks)
    lines = landed.read_lines(spark, checks).persist(StorageLevel.MEMORY_AND_DISK)
    parsed = _with_first_copy(parse_xdr(lines, late_days, settings.pipeline.idle_hours))
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with run.step("parse") as step:
            per_file: dict[str, dict[str, int]] = {}
            reasons: dict[str, int] = {}
            for row in parsed.groupBy("source_file", "reason", "is_first").agg(F.count("*").alias("n")).collect():
                stats = per_file.setdefault(row.source_file, {"lines": 0, "replayed": 0})
                stats["lines"] += row.n
                if row.reason is not None:
                    reasons[row.reason] = reasons.get(row.reason, 0) + row.n
                elif not row.is_first:
                    stats["replayed"] += row.n
            step["lines"] = sum(s["lines"] for s in per_file.values())
            step["rejected"] = sum(reasons.values())
        _check_line_counts(checks, per_file)
        first_day = landing_days[0] - dt.timedelta(days=late_days)
        window_days = [(first_day + dt.timedelta(days=n)).isoformat()
                       for n in range((landing_days[-1] - first_day).days + 1)]
        with run.step("dedupe") as step:
            firsts = parsed.where(F.col("reason").isNull() & F.col("is_first"))
            fresh, in_lake = firsts, {}
            if lake.exists(USAGE_EVENTS.name):
                known = lake.read(USAGE_EVENTS.name, partitions={"dt": window_days}).select("dt", "record_id")
                fresh = firsts.join(known, on=["dt", "record_id"], how="left_anti")
                in_lake = _count_by_file(firsts.join(known, on=["dt", "record_id"], how="left_semi"))
            fresh = fresh.persist(StorageLevel.MEMORY_AND_DISK)
            touched = sorted(r.dt for r in parsed.where("reason is null").select("dt").distinct().collect())
            step["already_in_lake"] = sum(in_lake.values())
            step["days_touched"] = len(touched)
        with run.step("identify and write bronze") as step:
            bronze = (
                identify_apps(fresh.withColumn("sub_id", sub_id(F.col("msisdn"), reference.key)),
                              reference.apps, reference.apps.tables(spark))
                .withColumn("run_id", F.lit(run.run_id))
            )
            run.wrote(USAGE_EVENTS.name, lake.write(bronze.select(*USAGE_EVENTS.schema.fieldNames()),
                                                    USAGE_EVENTS, mode="append", metadata=_meta(run)))
            # Read back what the commit holds: a lookup that multiplied rows would show here.
            written = lake.read(USAGE_EVENTS.name, partitions={"dt": touched or window_days})
            accepted = _count_by_file(written.where(F.col("run_id") == run.run_id))
            step["rows"] = run.rows_out = sum(accepted.values())
        with run.step("subscriber keys") as step:
            # From every accepted record of the delivery, not only the new ones: a rerun after a crash between
            # the bronze and the keys commits must still add the keys.
            step["new_keys"] = _write_keys(ctx, run, firsts, reference.key)
        with run.step("quarantine") as step:
            quarantine = _quarantine_rows(ctx, parsed, checks, run.run_id)
            days = [day.isoformat() for day in landing_days]
            run.wrote(QUARANTINE.name, lake.write(quarantine, QUARANTINE, mode="overwrite", partitions={"dt": days},
                                                  metadata=_meta(run)))
            kept = lake.read(QUARANTINE.name, partitions={"dt": days})
            quarantined = {r.source_file: r.n for r in kept.where(F.col("run_id") == run.run_id)
                           .groupBy("source_file").agg(F.sum("line_count").alias("n")).collect()}
            step["rows"] = sum(quarantined.values())
        if touched:
            with run.step("rollup silver") as step:
                _rollup(ctx, run, touched, reference)
                step["days"] = len(touched)
        _reconcile(run, checks, accepted, quarantined, per_file, in_lake, reasons)
        _report_unknown_share(ctx, run, [day.isoformat() for day in landing_days])
    finally:
        parsed.unpersist()
        lines.unpersist()
        if "fresh" in locals():
            fresh.unpersist()


def _count_by_file(df: DataFrame) -> dict[str, int]:
    return {r.source_file: r.n for r in df.groupBy("source_file").agg(F.count("*").alias("n")).collect()}


def _with_first_copy(parsed: DataFrame) -> DataFrame:
    """Mark the first copy of each accepted (dt, record_id) in delivery order; later copies are replays.

    Only the narrow key columns are shuffled to find the keys that occur more than once (few: replays are
    rare); the wide rows are never sorted.
    """
    accepted = F.col("reason").isNull()
    repeated = (
        parsed.where(accepted).groupBy("dt", "record_id")
        .agg(F.count("*").alias("_copies"), F.min(F.struct("source_file", "line_no")).alias("_first"))
        .where("_copies > 1").select("dt", "record_id", "_first")
    )
    marked = parsed.join(repeated, on=["dt", "record_id"], how="left")
    is_first = accepted & (F.col("_first").isNull() | ((F.col("_first.source_file") == F.col("source_file"))
                                                       & (F.col("_first.line_no") == F.col("line_no"))))
    return marked.withColumn("is_first", is_first).drop("_first")


def _check_line_counts(checks: list[landed.FileCheck], per_file: dict) -> None:
    """Spark must read exactly the lines zlib counted, or something was silently lost."""
    wrong = []
    for check in checks:
        read = per_file.get(check.source_file, {}).get("lines", 0)
        if check.ok and read != check.lines:
            wrong.append(f"{check.source_file}: zlib counted {check.lines}, Spark read {read}")
    if wrong:
        raise FlowopsError(f"line counts disagree for {len(wrong)} files (nothing written): {wrong[:3]}")


def _write_keys(ctx: Context, run: Run, accepted: DataFrame, key: bytes) -> int:
    keys = (accepted.groupBy("msisdn").agg(F.min("dt").alias("first_seen"))
            .select(sub_id(F.col("msisdn"), key).alias("sub_id"), "msisdn", "first_seen",
                    F.lit("usage").alias("source")))
    return append_new_keys(ctx, run, keys)


def _quarantine_rows(ctx: Context, parsed: DataFrame, checks: list[landed.FileCheck], run_id: str) -> DataFrame:
    lines = parsed.where("reason is not null").select(
        F.col("landing_day").alias("dt"), F.lit("usage").alias("source"), "source_file", "line_no", "reason",
        F.lit(None).cast("string").alias("detail"),
        F.substring("raw_masked", 1, RAW_KEEP).alias("raw"),
        F.lit(1).cast("long").alias("line_count"), F.lit(run_id).alias("run_id"))
    files = ctx.spark.createDataFrame(
        [(_landing_day(c.source_file), "usage", c.source_file, None, c.status, c.detail, None, c.lines, run_id)
         for c in checks if not c.ok], QUARANTINE.schema)
    return lines.unionByName(files)


def _rollup(ctx: Context, run: Run, days: list[str], reference: Reference) -> None:
    bronze = ctx.lake.read(USAGE_EVENTS.name, partitions={"dt": days})
    for spec, frame in ((USAGE_DAILY, usage_daily(bronze)), (DEVICE_DAILY, device_daily(bronze, reference.terminals))):
        version = ctx.lake.write(frame, spec, mode="overwrite", partitions={"dt": days}, metadata=_meta(run))
        run.wrote(spec.name, version)


def _reconcile(run: Run, checks: list[landed.FileCheck], accepted: dict[str, int], quarantined: dict[str, int],
               per_file: dict, in_lake: dict[str, int], reasons: dict[str, int]) -> None:
    """lines in = accepted + quarantined + duplicates for every landed file, each term counted on its own
    (lines by zlib, accepted and quarantined read back from the commits, duplicates from the dedupe);
    fail loudly when a file does not add up."""
    for check in checks:
        name = check.source_file
        replayed = per_file.get(name, {}).get("replayed", 0)
        run.files.append(FileReconciliation(name, check.status, check.lines, accepted.get(name, 0),
                                            quarantined.get(name, 0), replayed + in_lake.get(name, 0)))
    run.rows_in = sum(f.lines_in for f in run.files)
    run.count("accepted", sum(f.accepted for f in run.files))
    run.count("quarantined", sum(f.quarantined for f in run.files))
    run.count("duplicates", sum(f.duplicates for f in run.files))
    run.count("duplicates.replayed_in_delivery", sum(s["replayed"] for s in per_file.values()))
    run.count("duplicates.already_in_lake", sum(in_lake.values()))
    for reason, n in reasons.items():
        run.count(f"reason.{reason}", n)
    for check in checks:
        if not check.ok:
            run.count(f"file.{check.status}", 1)
    unbalanced = [f for f in run.files if not f.balanced]
    if unbalanced:
        raise FlowopsError(f"reconciliation failed for {len(unbalanced)} of {len(run.files)} files "
                           f"(lines in != accepted + quarantined + duplicates): {unbalanced[:3]}")
    log.info("reconciled %d files: %d lines in = %d accepted + %d quarantined + %d duplicates", len(run.files),
             run.rows_in, run.counts["accepted"], run.counts["quarantined"], run.counts["duplicates"])


def _report_unknown_share(ctx: Context, run: Run, days: list[str]) -> None:
    """The share of the landing days' bytes no fingerprint identified: encrypted SNI and QUIC hide hosts."""
    if not ctx.lake.exists(USAGE_DAILY.name):
        return  # nothing readable has landed yet
    daily = ctx.lake.read(USAGE_DAILY.name, partitions={"dt": days})
    row = daily.agg(F.sum("total_bytes").alias("all"),
                    F.sum(F.when(F.col("app_id") == "unknown", F.col("total_bytes"))).alias("unknown"),
                    F.sum("records").alias("records"),
                    F.sum(F.when(F.col("app_id") == "unknown", F.col("records"))).alias("unknown_records")).first()
    if row and row["all"]:
        run.count("unknown_app_bytes_ppm", int(1_000_000 * (row["unknown"] or 0) / row["all"]))
        run.count("unknown_app_records_ppm", int(1_000_000 * (row["unknown_records"] or 0) / row["records"]))
        log.info("unknown app share on %s..%s: %.1f%% of bytes, %.1f%% of records", days[0], days[-1],
                 100 * (row["unknown"] or 0) / row["all"], 100 * (row["unknown_records"] or 0) / row["records"])


def _meta(run: Run) -> dict[str, str]:
    return {"flowops.runId": run.run_id, "flowops.job": run.job}


def _landing_day(source_file: str) -> str:
    return source_file.split("dt=", 1)[1][:10]


def ingest(ctx: Context, raw: str | Path, *, date: str | None = None, month: str | None = None) -> list[Run]:
    """Ingest one landing day of usage, or a whole month: every landed day of usage as one batch, then the
    month's CRM, billing and order files. Returns the runs, usage first."""
    from flowops.ingest.monthly import SOURCES, ingest_monthly
    from flowops.landing import available_days, month_days, monthly_file, parse_month

    if (date is None) == (month is None):
        raise FlowopsError("give exactly one of --date YYYY-MM-DD or --month YYYY-MM")
    if date is not None:
        return [ingest_days(ctx, raw, [date])]
    raw_root = require_raw(raw)
    for source in SOURCES:  # fail before the long usage pass, not after it
        monthly_file(raw_root, source.name, parse_month(month))  # type: ignore[arg-type]
    landed_days = set(available_days(raw_root))
    days = [day for day in month_days(month) if day in landed_days]  # type: ignore[arg-type]
    if not days:
        raise FlowopsError(f"no usage has landed for {month} under {raw_root / 'usage'}")
    usage = ingest_days(ctx, raw, days, label={"month": month})  # type: ignore[dict-item]
    return [usage, ingest_monthly(ctx, raw, month)]  # type: ignore[arg-type]
