"""`flowops ingest`: landed files into bronze, quarantine and silver. Every read and write of the step is here.

Usage days (`ingest_days`: one landing day, or every landed day of a month, as one batch):
1. every landed file is read once (`ingest.lines`) and every line parsed and judged (`ingest.xdr`); the task
   that parses a line writes it, when accepted, to bronze's and the cells' files in a scratch folder of the lake
   (`ingest.staging`), and hands Spark only the rejected lines and each file's status row, which Spark caches;
   no landed file is read again;
2. one pass reads the files' status rows: lines per file, reasons and days, and whether every file reported;
3. replays within the delivery and records bronze already holds are found on narrow keys (`ingest.dedupe`),
   read from the cells' staged files;
4. each distinct msisdn is pseudonymised, each distinct host-side key and user agent identified;
5. commits, each one atomic, in this order: bronze/usage_events (append the staged files, less the records the
   dedupe dropped),
   restricted/subscriber_keys (append unseen msisdns), bronze/quarantine (overwrite the landing days),
   silver/user_agents (append the agents of unknown TACs no earlier run read), silver/usage_daily and
   silver/device_daily (recompute every day the delivery touched, from bronze);
6. every file is reconciled, lines in = accepted + quarantined + duplicates, with accepted and quarantined
   read back from the tables, so the rerun after a crash between two commits still tells the truth.
Monthly sources (`ingest_monthly`): the CRM snapshot, bills, orders and channel receipts into silver, with per-row
quarantine; each file is reconciled on its data rows (the header is checked, not counted): rows in = accepted +
quarantined, with quarantined read back from the table.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import astuple, dataclass, field, replace
from functools import partial
from pathlib import Path

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError
from flowops.ingest import dedupe
from flowops.ingest.apps import AppRules
from flowops.ingest.lines import OK, FileCheck, LandedFile, read_landed
from flowops.ingest.monthly import FEEDBACK_LINES, SOURCES, Source, parse_rows
from flowops.ingest.monthly import quarantine_text as monthly_quarantine_text
from flowops.ingest.pii import Pseudonymiser, key_fingerprint, pii_key
from flowops.ingest.rollup import device_daily, handsets_daily, usage_daily
from flowops.ingest.staging import RecordFiles, StagedTable, drop_task
from flowops.ingest.terminals import (
    HandsetClasses,
    load_reference,
    read_agents,
    reference_df,
    resolver_name,
    unknown_agents,
)
from flowops.ingest.xdr import RECORD_COLUMNS, RECORD_SUMMARY, ParseRules, RecordParser, quarantine_text
from flowops.lake import Staged, file_schema
from flowops.lake.tables import (
    DEVICE_DAILY,
    KEY_FINGERPRINT,
    QUARANTINE,
    SUBSCRIBER_KEYS,
    USAGE_CELLS,
    USAGE_DAILY,
    USAGE_EVENTS,
    USER_AGENTS,
    TableSpec,
)
from flowops.landing import (
    available_days,
    feedback_files,
    landing_day,
    month_days,
    monthly_file,
    parse_date,
    parse_month,
    previous_months,
    require_raw,
    usage_files,
)
from flowops.quality.frames import reconciliation_frame
from flowops.quality.suites import RECONCILIATION
from flowops.runs import FileReconciliation, Run, recorded_run
from flowops.steps.quality import gate

log = logging.getLogger(__name__)
RAW_KEEP = 2000            # characters of a rejected line kept in quarantine
UNEXPECTED = "unexpected_file"
BROADCAST_ROWS = 200_000   # a lookup frame this small is broadcast; a larger one is joined by shuffle
CACHE = StorageLevel.MEMORY_AND_DISK


@dataclass(frozen=True)
class Reference:
    """Rules, reference tables and the pseudonymisation key, loaded once per job from conf/."""

    apps: AppRules
    terminals: DataFrame
    key: bytes
    classes: HandsetClasses = HandsetClasses()

    @classmethod
    def load(cls, ctx: Context, definitions: Definitions | None = None) -> Reference:
        conf = ctx.settings.conf_dir
        key = pii_key(ctx.settings.pii, demo=ctx.demo)  # refuse before Spark starts, in one line
        apps = definitions.apps if definitions else AppRules.load(conf)
        terminals = definitions.terminals if definitions else load_reference(conf)
        classes = definitions.handset_classes if definitions else HandsetClasses.load(conf)
        return cls(apps, reference_df(ctx.spark, terminals), key, classes)


def ingest(ctx: Context, raw: str | Path, *, date: str | None = None, month: str | None = None,
           definitions: Definitions | None = None) -> list[Run]:
    """Ingest one landing day of usage, or a whole month: every landed day of usage as one batch, then the
    month's CRM, billing and order files. Returns the runs, usage first."""
    if (date is None) == (month is None):
        raise FlowopsError("give exactly one of --date YYYY-MM-DD or --month YYYY-MM")
    if date is not None:
        return [ingest_days(ctx, raw, [date], Reference.load(ctx, definitions))]
    raw_root = require_raw(raw)
    for source in SOURCES:  # fail before the long usage pass, not after it
        monthly_file(raw_root, source.name, parse_month(month))  # type: ignore[arg-type]
    landed_days = set(available_days(raw_root))
    days = [day for day in month_days(month) if day in landed_days]  # type: ignore[arg-type]
    if not days:
        raise FlowopsError(f"no usage has landed for {month} under {raw_root / 'usage'}")
    reference = Reference.load(ctx, definitions)
    usage = ingest_days(ctx, raw, days, reference, label={"month": month})  # type: ignore[dict-item]
    return [usage, ingest_monthly(ctx, raw, month, reference)]  # type: ignore[arg-type]


def ingest_days(ctx: Context, raw: str | Path, days: list[str], reference: Reference | None = None,
                label: dict[str, str] | None = None) -> Run:
    """Ingest the files of the given landing days as one batch; returns the recorded run."""
    landing_days = sorted(parse_date(day) for day in days)
    raw_root = require_raw(raw).resolve()
    landed = [usage_files(raw_root, day.isoformat()) for day in landing_days]
    files = [LandedFile.under(raw_root, path) for xdr, _ in landed for path in xdr]
    unexpected = [_printable(path.relative_to(raw_root).as_posix()) for _, other in landed for path in other]
    reference = reference or Reference.load(ctx)
    params = {"raw": raw_root, **(label or {"date": landing_days[0].isoformat()}), "conf": ctx.settings.conf_dir}
    with recorded_run(ctx.lake, "ingest", params) as run:
        _UsageBatch(ctx, run, reference, landing_days).ingest(files, unexpected)
    return run


def _printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by the file system as surrogates) as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Tally:
    """What the first pass over a batch found, per file: its check, lines read, reasons, accepted days."""

    checks: dict[str, FileCheck] = field(default_factory=dict)
    lines: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    days: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, parsed_df: DataFrame) -> Tally:
        """From the status rows (`line_no` null) the reader wrote after each file."""
        tally = cls()
        status = ("source_file", "file_status", "file_lines", "file_detail", "file_reasons", "file_days")
        for row in parsed_df.where(F.col("line_no").isNull()).select(*status).collect():
            check = FileCheck(row.source_file, row.file_status, row.file_lines, row.file_detail or "")
            tally.checks[row.source_file] = check
            if check.ok:
                tally.lines[row.source_file] = check.lines
                tally.reasons.update(row.file_reasons or {})
                tally.days.update(row.file_days or [])
        return tally

    @property
    def accepted(self) -> int:
        """Lines of whole files that passed every check."""
        return sum(self.lines.values()) - sum(self.reasons.values())

    @property
    def bad_files(self) -> list[str]:
        return sorted(name for name, check in self.checks.items() if not check.ok)

    def check_files(self, files: list[LandedFile]) -> None:
        """Every file must have reported, or the reader lost one."""
        missing = [f.source_file for f in files if f.source_file not in self.checks]
        if missing:
            raise FlowopsError(f"{len(missing)} files reported no status (nothing written): {missing[:3]}")


class _UsageBatch:
    """One batch of usage days through every stage of the step (see the module docstring)."""

    def __init__(self, ctx: Context, run: Run, reference: Reference, landing_days: list[dt.date]) -> None:
        self.ctx, self.run, self.reference = ctx, run, reference
        self.spark, self.lake, self.settings = ctx.spark, ctx.lake, ctx.settings
        self.landing_days = [day.isoformat() for day in landing_days]
        late = self.settings.pipeline.late_arrival_days
        first = landing_days[0] - dt.timedelta(days=late)
        self.window_days = [(first + dt.timedelta(days=n)).isoformat()
                            for n in range((landing_days[-1] - first).days + 1)]
        self._cached: list[DataFrame] = []

    def _cache(self, df: DataFrame) -> DataFrame:
        self._cached.append(df.persist(CACHE))
        return df

    def ingest(self, files: list[LandedFile], unexpected: list[str]) -> None:
        """Ingest `files`; the `unexpected` ones (not `hour=HH/<name>.txt.gz`) are quarantined whole, unread."""
        run, settings = self.run, self.settings
        pseudonymiser = Pseudonymiser(self.spark, self.reference.key)
        stack = ExitStack()
        try:
            rules = ParseRules(settings.pipeline.late_arrival_days, settings.pipeline.idle_hours,
                               settings.pipeline.timezone)
            parser = RecordParser(rules, self.reference.apps, pseudonymiser.shared)
            # The reading tasks write the accepted records as bronze's and the cells' files; Spark gets only the
            # rejected lines and each file's status row, and the dedupe reads the keys from the files (`_accepted`).
            sink = _staged_records(stack.enter_context(self.lake.scratch("ingest")), self.run.run_id)
            parsed = self._cache(read_landed(self.spark, files, parser, RECORD_COLUMNS, RECORD_SUMMARY, sink))
            with run.step("read and parse") as step:
                tally = Tally.of(parsed)
                for name in unexpected:
                    tally.checks[name] = FileCheck(name, UNEXPECTED, 0, "not an xDR file (hour=HH/<name>.txt.gz); "
                                                                        "not read")
                step["files"] = len(tally.checks)
                step["bad_files"] = len(tally.bad_files)
                step["lines"] = sum(tally.lines.values())
                step["rejected"] = sum(tally.reasons.values())
            tally.check_files(files)
            accepted = self._accepted(sink.tables[1], tally.bad_files)
            # Bronze's lock is held from the dedupe's read of it to the commit: of two ingests of the same day, the
            # second waits, then finds every record already there.
            with self.lake.locked(USAGE_EVENTS.name):
                with run.step("dedupe") as step:
                    firsts, replayed, later = self._drop_replays(accepted)
                    in_lake, earlier, known = self._drop_known(firsts)
                    step["replayed"] = sum(replayed.values())
                    step["already_in_lake"] = sum(in_lake.values())
                    step["accepted_before"] = sum(earlier.values())
                with run.step("write bronze") as step:
                    dropped = sum(replayed.values()) + sum(in_lake.values()) + sum(earlier.values())
                    # A rerun of what bronze already holds commits nothing (a first batch creates the table).
                    if tally.accepted - dropped or not self.lake.exists(USAGE_EVENTS.name):
                        drops = [df for df in (later, known) if df is not None]
                        self._commit_staged(USAGE_EVENTS, sink.tables[0], drops, dropped, tally.bad_files)
                    accepted_counts = self._bronze_counts(files)
                    step["rows"] = run.rows_out = sum(accepted_counts.values())
            with run.step("cells") as step:
                step["new_cells"] = self._write_cells(sink.tables[1], accepted, later, sum(replayed.values()),
                                                      tally.bad_files)
            with run.step("subscriber keys") as step:
                # From every accepted record, not only the new ones: a rerun after a crash between the bronze and
                # the keys commits must still add the keys.
                step["new_keys"] = append_new_keys(self.ctx, run, _subscriber_keys(parsed), self._meta())
            with run.step("quarantine") as step:
                quarantined = self._write_quarantine(parsed, tally)
                step["rows"] = sum(quarantined.values())
            # Reconciled (and the files' quality gate passed) before silver is rolled up from bronze.
            _reconcile(run, [f.source_file for f in files] + unexpected, tally, accepted_counts, quarantined,
                       replayed, in_lake, gate_files=lambda: gate_files(self.ctx, run, self._partition()))
            if tally.days:
                with run.step("rollup silver") as step:
                    step["days"] = len(tally.days)
                    step.update(self._rollup(sorted(tally.days)))
            run.count("accepted.by_earlier_runs", sum(earlier.values()))
            self._report_unknown_share()
        finally:
            for df in self._cached:
                df.unpersist()
            pseudonymiser.close()
            stack.close()

    def _accepted(self, cells: StagedTable, bad_files: list[str]) -> DataFrame:
        """`dt, record_id, source_file, line_no` of each accepted line of the batch's whole files, read from the cells'
        staged files, which the reading tasks wrote every accepted line to. Read before anything drops rows from them:
        whatever is computed from it is materialised before the cells are committed (`_write_cells`)."""
        schema = T.StructType([T.StructField("dt", T.StringType()), T.StructField("record_id", T.StringType()),
                               *POSITION_FIELDS])
        keys = Staged.found(cells.folder).read(self.spark, schema)
        return keys.where(~F.col("source_file").isin(bad_files)) if bad_files else keys

    def _drop_replays(self, accepted: DataFrame) -> tuple[DataFrame, Counter, DataFrame]:
        """The first copy of each record, the later copies per file, and their positions."""
        later = self._cache(dedupe.later_copies(accepted))
        replayed = Counter({r.source_file: r["count"] for r in later.groupBy("source_file").count().collect()})
        if not replayed:
            return accepted, replayed, later
        copies = F.broadcast(later) if sum(replayed.values()) <= BROADCAST_ROWS else later
        return accepted.join(copies, on=dedupe.POSITION, how="left_anti"), replayed, later

    def _drop_known(self, firsts: DataFrame) -> tuple[Counter, Counter, DataFrame | None]:
        """Records bronze holds: per file, copies of other lines and lines accepted before; and their positions."""
        days = sorted(self.lake.partition_values(USAGE_EVENTS.name, "dt") & set(self.window_days))
        if not days:
            return Counter(), Counter(), None
        known = self.lake.read(USAGE_EVENTS.name, partitions={"dt": days}).select(*dedupe.KEY, *dedupe.POSITION)
        matches = self._cache(dedupe.lake_matches(firsts.where(F.col("dt").isin(days)), known))
        counts = matches.groupBy("source_file", "is_same_line").count().collect()
        in_lake = Counter({r.source_file: r["count"] for r in counts if not r.is_same_line})
        earlier = Counter({r.source_file: r["count"] for r in counts if r.is_same_line})
        return in_lake, earlier, matches.select(*dedupe.POSITION)

    def _commit_staged(self, spec: TableSpec, table: StagedTable, drops: list[DataFrame], dropped: int,
                       bad_files: list[str]) -> int:
        """Commit the files the reading tasks staged for `spec`, less the records at the positions in `drops`
        (`dropped` of them) and the lines of damaged files; returns how many rows were committed. Up to
        BROADCAST_ROWS dropped records, Spark tasks remove them from the files that hold them and the files are
        committed as they are; beyond (a delivery largely landed before), Spark reads the staged files, drops the
        records by join and writes the table's files anew. Commits nothing when no row is left, unless the table
        does not exist yet."""
        staged = Staged.found(table.folder)
        columns = file_schema(spec).names
        if dropped <= BROADCAST_ROWS:
            positions = [df.toArrow() for df in drops]
            positions.append(pa.table({"source_file": pa.array(bad_files, pa.string()),
                                       "line_no": pa.nulls(len(bad_files), pa.int64())}))
            kept = self._drop_in_tasks(table, staged.files, pa.concat_tables(positions, promote_options="permissive"),
                                       columns)
            rows = sum(n for _, n in kept)
            if rows or not self.lake.exists(spec.name):
                self.run.wrote(spec.name, self.lake.write(None, spec, mode="append", metadata=self._meta(),
                                                          staged=Staged(table.folder, tuple(rel for rel, _ in kept))))
            return rows
        frame = staged.read(self.spark, T.StructType([*spec.schema.fields, *[f for f in POSITION_FIELDS
                                                                           if f.name not in spec.schema.names]]))
        for positions in drops:
            frame = frame.join(positions, on=dedupe.POSITION, how="left_anti")
        if bad_files:
            frame = frame.where(~F.col("source_file").isin(bad_files))
        frame = self._cache(frame.select(*spec.schema.fieldNames()))
        rows = frame.count()
        if rows or not self.lake.exists(spec.name):
            # Each staged file holds one reading task's records of one day: no shuffle of the widest rows.
            self.run.wrote(spec.name, self.lake.write(frame, spec, mode="append", metadata=self._meta(),
                                                      shuffle=False))
        return rows

    def _drop_in_tasks(self, table: StagedTable, files: tuple[str, ...], positions: pa.Table,
                       columns: list[str]) -> list[tuple[str, int]]:
        """`staging.drop_rows` over the staged files in Spark tasks (the files are in the lake, which every executor
        sees; the positions are broadcast), so the driver holds no rows whatever the delivery's size."""
        if not files:
            return []
        out = pa.BufferOutputStream()
        with pa.ipc.new_stream(out, positions.schema) as writer:
            writer.write_table(positions)
        shared = self.spark.sparkContext.broadcast(out.getvalue().to_pybytes())
        try:
            tasks = min(len(files), 4 * self.spark.sparkContext.defaultParallelism)
            return sorted(self.spark.sparkContext.parallelize(list(files), tasks)
                          .mapPartitions(partial(drop_task, table, columns, shared)).collect())
        finally:
            shared.destroy()

    def _write_cells(self, table: StagedTable, accepted: DataFrame, later: DataFrame, replayed: int,
                     bad_files: list[str]) -> int:
        """restricted/usage_cells: the cell of every accepted record that table does not hold yet (from every
        first copy, not only the new ones: a rerun after a crash between the bronze and the cells commits must
        still add them). Returns how many were added."""
        with self.lake.locked(USAGE_CELLS.name):
            days = sorted(self.lake.partition_values(USAGE_CELLS.name, "dt") & set(self.window_days))
            drops, dropped = [later], replayed
            if days:
                known = self.lake.read(USAGE_CELLS.name, partitions={"dt": days}).select(*dedupe.KEY)
                held = self._cache(accepted.where(F.col("dt").isin(days)).join(known, on=dedupe.KEY, how="left_semi")
                                   .select(*dedupe.POSITION))
                drops.append(held)
                dropped += held.count()
            return self._commit_staged(USAGE_CELLS, table, drops, dropped, bad_files)

    def _bronze_counts(self, files: list[LandedFile]) -> dict[str, int]:
        """Accepted lines per file, as bronze holds them (whichever run wrote them)."""
        if not self.lake.exists(USAGE_EVENTS.name):
            return {}
        names = {f.source_file for f in files}
        rows = (self.lake.read(USAGE_EVENTS.name, partitions={"dt": self.window_days})
                .groupBy("source_file").count().collect())
        return {r.source_file: r["count"] for r in rows if r.source_file in names}

    def _write_quarantine(self, parsed: DataFrame, tally: Tally) -> dict[str, int]:
        bad = tally.bad_files
        rejected = parsed.where(F.col("reason").isNotNull())
        if bad:
            rejected = rejected.where(~F.col("source_file").isin(bad))
        lines = rejected.select(
            F.col("landing_day").alias("dt"), F.lit("usage").alias("source"), "source_file", "line_no", "reason",
            F.lit(None).cast("string").alias("detail"), F.substring(quarantine_text(F.col("value")), 1, RAW_KEEP)
            .alias("raw"), F.lit(1).cast("long").alias("line_count"), F.lit(self.run.run_id).alias("run_id"))
        whole = self.spark.createDataFrame(
            [(landing_day(name), "usage", name, None, tally.checks[name].status, tally.checks[name].detail, None,
              tally.checks[name].lines, self.run.run_id) for name in bad], QUARANTINE.schema)
        version = self.lake.write(lines.unionByName(whole), QUARANTINE, mode="overwrite",
                                  partitions={"dt": self.landing_days}, metadata=self._meta())
        self.run.wrote(QUARANTINE.name, version)
        kept = self.lake.read(QUARANTINE.name, partitions={"dt": self.landing_days})
        return {r.source_file: r.n for r in kept.groupBy("source_file").agg(F.sum("line_count").alias("n")).collect()}

    def _rollup(self, days: list[str]) -> dict[str, int]:
        """Recompute silver's days from bronze; returns how many user agents were read and how many were known."""
        bronze = self.lake.read(USAGE_EVENTS.name, partitions={"dt": days})
        handsets = self._cache(handsets_daily(bronze, self.reference.terminals))
        agents, counts = self._agents(handsets)
        reference, classes = self.reference.terminals, self.reference.classes
        # A day's records meet in one task before they are summed, so the sums need no second shuffle for each day to
        # get one file (measured on a 2.9 M-record month: 6.4 s -> 4.9 s).
        tasks = min(len(days), 4 * self.spark.sparkContext.defaultParallelism)
        usage = self._cache(usage_daily(bronze.repartition(tasks, "dt")))
        gate(self.lake, self.settings, self.run, USAGE_DAILY.name, usage, self._partition())
        for spec, frame, shuffle in ((USAGE_DAILY, usage, False),
                                     (DEVICE_DAILY, device_daily(handsets, reference, classes, agents), True)):
            self.run.wrote(spec.name, self.lake.write(frame, spec, mode="overwrite", partitions={"dt": days},
                                                      metadata=self._meta(), shuffle=shuffle))
        return counts

    def _agents(self, handsets: DataFrame) -> tuple[DataFrame, dict[str, int]]:
        """The user agents of handsets the TAC table lacks, read: those silver/user_agents holds from an earlier run
        of the same resolver, and the others read now and appended there."""
        resolver = resolver_name(self.reference.classes)
        wanted = unknown_agents(handsets, self.reference.terminals)
        with self.lake.locked(USER_AGENTS.name):
            known, counts = None, {"agents_known": 0}
            if self.lake.exists(USER_AGENTS.name):
                # Materialised before this run appends: a lazy read would see the appended agents too (Delta's Spark
                # source reads the newest version when a frame is computed), and each agent must come once.
                known = self._cache(self.lake.read(USER_AGENTS.name).where(F.col("resolver") == resolver)
                                    .drop("resolver", "run_id").join(wanted, "user_agent", "left_semi")
                                    .dropDuplicates(["user_agent"]))
                counts["agents_known"] = known.count()
                wanted = wanted.join(known.select("user_agent"), "user_agent", "left_anti")
            new = self._cache(read_agents(wanted, self.reference.classes))
            counts["agents_read"] = new.count()
            if counts["agents_read"] or not self.lake.exists(USER_AGENTS.name):
                rows = new.withColumns({"resolver": F.lit(resolver), "run_id": F.lit(self.run.run_id)}).coalesce(1)
                self.run.wrote(USER_AGENTS.name, self.lake.write(rows, USER_AGENTS, mode="append",
                                                                 metadata=self._meta()))
        self.run.count("user_agents.read", counts["agents_read"])
        self.run.count("user_agents.known", counts["agents_known"])
        return (new if known is None else new.unionByName(known)), counts

    def _report_unknown_share(self) -> None:
        """The share of the landing days' bytes no fingerprint identified: encrypted SNI and QUIC hide hosts."""
        if not self.lake.exists(USAGE_DAILY.name):
            return  # nothing readable has landed yet
        days = self.landing_days
        daily = self.lake.read(USAGE_DAILY.name, partitions={"dt": days})
        is_unknown = F.col("app_id") == "unknown"
        row = daily.agg(F.sum("total_bytes").alias("all"),
                        F.sum(F.when(is_unknown, F.col("total_bytes"))).alias("unknown"),
                        F.sum("records").alias("records"),
                        F.sum(F.when(is_unknown, F.col("records"))).alias("unknown_records")).first()
        if row and row["all"]:
            self.run.count("unknown_app_bytes_ppm", int(1_000_000 * (row["unknown"] or 0) / row["all"]))
            self.run.count("unknown_app_records_ppm", int(1_000_000 * (row["unknown_records"] or 0) / row["records"]))
            log.info("unknown app share on %s..%s: %.1f%% of bytes, %.1f%% of records", days[0], days[-1],
                     100 * (row["unknown"] or 0) / row["all"], 100 * (row["unknown_records"] or 0) / row["records"])

    def _meta(self) -> dict[str, str]:
        return _meta(self.run, self.reference.key)

    def _partition(self) -> str:
        """The landing days of the batch, as the quality results name them."""
        first, last = self.landing_days[0], self.landing_days[-1]
        return first if first == last else f"{first}..{last}"


# What the rest of the ingest reads of a rejected line, besides the reader's status columns; the reading tasks write
# accepted lines only to the staged files.
NARROW = ("source_file", "line_no", "value", "reason", "landing_day")


POSITION_FIELDS = (T.StructField("source_file", T.StringType()), T.StructField("line_no", T.LongType()))


def _staged_records(scratch: str, run_id: str) -> RecordFiles:
    """The sink that writes a batch's accepted records as bronze's and restricted/usage_cells' files (see
    `ingest.staging`); the cells' files also hold each record's position, for the dedupe's drops."""
    bronze, cells = file_schema(USAGE_EVENTS), file_schema(USAGE_CELLS)
    cells = pa.schema([*cells, pa.field("source_file", pa.string()), pa.field("line_no", pa.int64())])
    tables = tuple(StagedTable(f"{scratch}/{spec.name}", schema,
                               tuple(name for name in schema.names if name not in spec.plain))
                   for spec, schema in ((USAGE_EVENTS, bronze), (USAGE_CELLS, cells)))
    return RecordFiles(tables, "dt", (("run_id", run_id),),
                       drops=tuple(name for name in (*bronze.names, "cell_id", "msisdn") if name not in NARROW))


def append_new_keys(ctx: Context, run: Run, keys: DataFrame, meta: dict[str, str]) -> int:
    """Append to restricted/subscriber_keys (the one place phone numbers are kept) the `sub_id, msisdn,
    first_seen, source` rows whose sub_id it does not hold yet; returns how many. Holds the table's lock from
    the read to the commit, so two jobs cannot both add the same key."""
    with ctx.lake.locked(SUBSCRIBER_KEYS.name):
        if ctx.lake.exists(SUBSCRIBER_KEYS.name):
            keys = keys.join(ctx.lake.read(SUBSCRIBER_KEYS.name).select("sub_id"), on="sub_id", how="left_anti")
        keys = keys.persist(CACHE)
        count = keys.count()
        if count:
            run.wrote(SUBSCRIBER_KEYS.name, ctx.lake.write(keys, SUBSCRIBER_KEYS, mode="append", metadata=meta))
        keys.unpersist()
    return count


def _subscriber_keys(parsed: DataFrame) -> DataFrame:
    """Each msisdn of the batch's whole files with its pseudonym and the first day it was seen, from the
    subscribers each file's status row lists (`RecordParser.finish`)."""
    listed = (parsed.where(F.col("line_no").isNull() & (F.col("file_status") == OK))
              .select(F.explode("file_keys").alias("key")).select("key.*"))
    # min over a date, not the text: a fixed-width buffer keeps it a hash aggregation (no sort).
    return (listed.groupBy("msisdn", "sub_id").agg(F.min(F.to_date("first_seen")).cast("string").alias("first_seen"))
            .withColumn("source", F.lit("usage")))


def _reconcile(run: Run, files: list[str], tally: Tally, accepted: dict[str, int],
               quarantined: dict[str, int], replayed: Counter, in_lake: Counter,
               gate_files: Callable[[], object] | None = None) -> None:
    """lines in = accepted + quarantined + duplicates for every landed file, each term counted on its own
    (lines by the reader, accepted and quarantined read back from the tables, duplicates from the dedupe);
    `gate_files` (the files' quality gate) runs on them; fail loudly when a file does not add up."""
    for name in files:
        check = tally.checks[name]
        run.files.append(FileReconciliation(name, check.status, check.lines, accepted.get(name, 0),
                                            quarantined.get(name, 0), replayed[name] + in_lake[name]))
    run.rows_in = sum(f.lines_in for f in run.files)
    run.count("accepted", sum(f.accepted for f in run.files))
    run.count("quarantined", sum(f.quarantined for f in run.files))
    run.count("duplicates", sum(f.duplicates for f in run.files))
    run.count("duplicates.replayed_in_delivery", sum(replayed.values()))
    run.count("duplicates.already_in_lake", sum(in_lake.values()))
    for reason, n in tally.reasons.items():
        run.count(f"reason.{reason}", n)
    for name in tally.bad_files:
        run.count(f"file.{tally.checks[name].status}", 1)
    if gate_files is not None:
        gate_files()
    unbalanced = [f for f in run.files if not f.balanced]
    if unbalanced:
        raise FlowopsError(f"reconciliation failed for {len(unbalanced)} of {len(run.files)} files "
                           f"(lines in != accepted + quarantined + duplicates): {unbalanced[:3]}")
    log.info("reconciled %d files: %d lines in = %d accepted + %d quarantined + %d duplicates", len(run.files),
             run.rows_in, run.counts["accepted"], run.counts["quarantined"], run.counts["duplicates"])


def gate_files(ctx: Context, run: Run, partition: str) -> None:
    """The quality gate of the run's landed files (bronze/reconciliation): the identity, the quarantine rate."""
    files = [astuple(f) for f in run.files]
    if files:
        gate(ctx.lake, ctx.settings, run, RECONCILIATION, reconciliation_frame(files), partition)


def _meta(run: Run, key: bytes) -> dict[str, str]:
    """Commit metadata of the step's writes: the run, and the fingerprint of the key its sub_ids come from."""
    return {"flowops.runId": run.run_id, "flowops.job": run.job, KEY_FINGERPRINT: key_fingerprint(key)}


def ingest_monthly(ctx: Context, raw: str | Path, month: str, reference: Reference | None = None) -> Run:
    """Land the month's CRM, billing and order files, and the channels' receipts (RAW/feedback/month=M/, when
    any have landed), in silver; one run record for all of them."""
    parse_month(month)
    raw_root = require_raw(raw).resolve()
    receipts, strays = feedback_files(raw_root, month)
    required = [LandedFile.under(raw_root, monthly_file(raw_root, source.name, month)) for source in SOURCES]
    files = required + [LandedFile.under(raw_root, path) for path in receipts]
    key = reference.key if reference else pii_key(ctx.settings.pii, demo=ctx.demo)
    pseudonymiser = Pseudonymiser(ctx.spark, key)
    quarantine: list[DataFrame] = []
    cached: list[DataFrame] = []
    read = read_landed(ctx.spark, files).persist(CACHE)  # every file in one pass
    try:
        with recorded_run(ctx.lake, "ingest-monthly", {"raw": raw_root, "month": month}) as run:
            # Each file's status and first line, in one job.
            firsts = {(r.source_file, r.line_no): r for r in
                      read.where(F.col("line_no").isNull() | (F.col("line_no") == 1)).collect()}
            for source, landed in zip(SOURCES, required, strict=True):
                with run.step(source.name) as step:
                    reconciliations, rejected = _land_source(ctx, run, source, [landed], month, pseudonymiser, read,
                                                             firsts, key, cached)
                    run.files.extend(reconciliations)
                    quarantine += rejected
                    step["accepted"] = reconciliations[0].accepted
                    step["quarantined"] = reconciliations[0].quarantined
            if receipts or strays:
                with run.step("feedback") as step:
                    landed_receipts = files[len(required):]
                    stray_names = [_printable(p.relative_to(raw_root).as_posix()) for p in strays]
                    quarantine += _land_feedback(ctx, run, landed_receipts, stray_names, month, pseudonymiser,
                                                 read, firsts, key, cached)
                    step["files"] = len(landed_receipts) + len(stray_names)
                    step["accepted"] = sum(f.accepted for f in run.files[len(required):])
            merged = quarantine[0]
            for frame in quarantine[1:]:
                merged = merged.unionByName(frame)
            run.wrote(QUARANTINE.name, ctx.lake.write(merged, QUARANTINE, mode="overwrite", partitions={"dt": [month]},
                                                      metadata=_meta(run, key)))
            _reconcile_monthly(ctx, run, month)
    finally:
        for frame in cached:
            frame.unpersist()
        read.unpersist()
        pseudonymiser.close()
    return run


def _reconcile_monthly(ctx: Context, run: Run, month: str) -> None:
    """Data rows in = accepted + quarantined for every monthly file (the header is the file's check, not a row):
    rows in counted by the reader, accepted by the parse (their sum checked against silver as it was written),
    quarantined read back from bronze/quarantine; fail loudly when a file does not add up."""
    kept = (ctx.lake.read(QUARANTINE.name, partitions={"dt": [month]}).groupBy("source_file")
            .agg(F.sum("line_count").alias("rows")).collect())
    quarantined = {r.source_file: r.rows for r in kept}
    run.files = [replace(f, quarantined=quarantined.get(f.source_file, 0)) for f in run.files]
    run.rows_in = sum(f.lines_in for f in run.files)
    run.rows_out = sum(f.accepted for f in run.files)
    gate_files(ctx, run, month)
    unbalanced = [f for f in run.files if not f.balanced]
    if unbalanced:
        raise FlowopsError(f"reconciliation failed for {len(unbalanced)} of {len(run.files)} monthly files (data rows "
                           f"in != accepted + quarantined): {unbalanced[:3]}")
    log.info("reconciled %d monthly files: %d data rows in = %d accepted + %d quarantined (headers not counted)",
             len(run.files), run.rows_in, run.rows_out, sum(f.quarantined for f in run.files))


def _land_feedback(ctx: Context, run: Run, receipts: list[LandedFile], strays: list[str], month: str,
                   pseudonymiser: Pseudonymiser, read: DataFrame, firsts: dict, key: bytes,
                   cached: list[DataFrame]) -> list[DataFrame]:
    """Every channel's receipts of the month in one overwrite of silver/feedback (empty when none is readable);
    files there that are not `<channel>.csv` are quarantined whole, unread. Returns the quarantine rows."""
    reconciliations, quarantine = _land_source(ctx, run, FEEDBACK_LINES, receipts, month, pseudonymiser, read,
                                               firsts, key, cached, replace_empty=True)
    for name in strays:
        reconciliations.append(FileReconciliation(name, UNEXPECTED, 0, 0, 0, 0))
        detail = "not a receipt file (feedback/month=M/<channel>.csv); not read"
        quarantine.append(ctx.spark.createDataFrame(
            [(month, FEEDBACK_LINES.name, name, None, UNEXPECTED, detail, None, 0, run.run_id)], QUARANTINE.schema))
    run.files.extend(reconciliations)
    return quarantine


def _land_source(ctx: Context, run: Run, source: Source, files: list[LandedFile], month: str,
                 pseudonymiser: Pseudonymiser, read: DataFrame, firsts: dict, key: bytes, cached: list[DataFrame],
                 replace_empty: bool = False) -> tuple[list[FileReconciliation], list[DataFrame]]:
    """Parse the files of one source together and write their good rows as the source's silver month, in one
    overwrite; return each file's reconciliation and the quarantine rows (cached frames are added to `cached`).

    A file that did not pass its checks, or whose first line is not the source's header, is quarantined whole.
    When no file is readable the silver month keeps its previous rows, unless `replace_empty` (then it is emptied:
    the receipts of a month are always the whole set)."""
    quarantine = []
    refused: dict[str, FileReconciliation] = {}
    for landed in files:
        whole = _refuse(ctx, run, source, landed, month, firsts, replace_empty)
        if whole is not None:
            refused[landed.source_file] = whole[0]
            quarantine.append(whole[1])
    readable = [f.source_file for f in files if f.source_file not in refused]
    accepted: dict[str, int] = {}
    rejected: dict[str, int] = {}
    if readable or replace_empty:
        lines = read.where(F.col("source_file").isin(readable) & (F.col("line_no") > 1))
        rows = parse_rows(lines, source, month, pseudonymiser.sub_id).persist(CACHE)
        cached.append(rows)
        for r in rows.groupBy("source_file", F.col("reason").isNull().alias("good")).count().collect():
            (accepted if r.good else rejected)[r.source_file] = r["count"]
        good = rows.where(F.col("reason").isNull())
        gate(ctx.lake, ctx.settings, run, source.table.name, good.select(*source.table.schema.fieldNames()), month,
             previous=(source.table.name, {"month": previous_months(month, 1)}))
        run.wrote(source.table.name, ctx.lake.write(good.select(*source.table.schema.fieldNames()), source.table,
                                                    mode="overwrite", partitions={"month": [month]},
                                                    metadata=_meta(run, key)))
        written = ctx.lake.count(source.table.name, partitions={"month": [month]})
        if written != sum(accepted.values()):
            raise FlowopsError(f"{source.table.name} {month}: {written:,} rows written, {sum(accepted.values()):,} "
                               f"accepted from {', '.join(readable) or 'no readable file'}")
        if source.name == "crm":
            append_new_keys(ctx, run, good.select("sub_id", "msisdn").distinct().select(
                "sub_id", "msisdn", F.lit(f"{month}-01").alias("first_seen"), F.lit("crm").alias("source")),
                _meta(run, key))
        quarantine.append(rows.where(F.col("reason").isNotNull()).select(
            F.lit(month).alias("dt"), F.lit(source.name).alias("source"), "source_file", "line_no", "reason",
            "detail", F.substring(monthly_quarantine_text(source, F.col("value")), 1, RAW_KEEP).alias("raw"),
            F.lit(1).cast("long").alias("line_count"), F.lit(run.run_id).alias("run_id")))
        run.count(f"{source.name}.rows", written)
        run.count(f"{source.name}.quarantined", sum(rejected.values()))
    reconciliations = []
    for landed in files:
        name = landed.source_file
        if name in refused:
            reconciliations.append(refused[name])
            continue
        # The header (line 1) passed its check in `_refuse`; the rows are the lines after it.
        rows = firsts[(name, None)].file_lines - 1
        reconciliations.append(FileReconciliation(name, "ok", rows, accepted.get(name, 0), rejected.get(name, 0), 0))
    return reconciliations, quarantine


def _refuse(ctx: Context, run: Run, source: Source, landed: LandedFile, month: str, firsts: dict,
            replace_empty: bool) -> tuple[FileReconciliation, DataFrame] | None:
    """A file's reconciliation and its one quarantine row when it failed its checks or its first line is not the
    source's header; None when its lines can be parsed. `replace_empty` as in `_land_source` (for the log line)."""
    name = landed.source_file
    status = firsts[(name, None)]
    check = FileCheck(name, status.file_status, status.file_lines, status.file_detail or "")
    header = firsts.get((name, 1)) if check.ok else None
    found = tuple(bytes(header.value).decode("utf-8", "replace").strip().lstrip("\ufeff").split(",")) \
        if header else ()
    if check.ok and found == source.header:
        return None
    if check.ok:
        # The found "header" may be a data row with phone numbers: log its shape, not its content, and name only the
        # contract's columns.
        log.error("%s: the first line (%d fields) is not the header %s; the file is quarantined",
                  name, len(found), list(source.header))
        check = FileCheck(name, "bad_header", check.lines, header_detail(source, found))
    else:
        log.warning("%s: %s; silver %s %s", name, check.status, source.table.name,
                    f"{month} is rewritten from the month's other files" if replace_empty else
                    f"keeps its previous {month} rows, if any")
    run.count(f"{source.name}.not_landed", 1)
    rows = max(check.lines - 1, 0)  # line 1 is the header's place; the rows after it are quarantined with the file
    whole = ctx.spark.createDataFrame([(month, source.name, name, None, check.status, check.detail, None,
                                        rows, run.run_id)], QUARANTINE.schema)
    return FileReconciliation(name, check.status, rows, 0, rows, 0), whole


def header_detail(source: Source, found: tuple[str, ...]) -> str:
    """Why a first line is not `source`'s header, naming only the contract's columns (the line may be personal)."""
    names = {part.strip().strip('"') for part in found}
    missing = [column for column in source.header if column not in names]
    why = f"missing {', '.join(missing)}" if missing else "columns in another order, quoted, spaced or extra"
    return f"the first line is not the header {','.join(source.header)} ({why})"
