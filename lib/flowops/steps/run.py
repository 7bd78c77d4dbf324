"""`flowops run --month M`: ingest -> evaluate -> tags -> segment -> target for month M, each step skipped when
its output is already current, so a rerun after a crash resumes where it stopped (and a rerun of a finished month
writes nothing).

`evaluate` measures the previous month's campaign (its contacts fall in M): it runs when that month exported
contacts and channel receipts for M have landed (RAW/feedback/month=M/), after M's orders are ingested, and
before M's targeting, which learns from it (acceptance rates, immunity).

A step is current when ops/runs holds a successful run of it for M (evaluate: of M-1) that ended after the
successful run of the step before it: ingest when every file landed for M (each usage day, the CRM, billing and
order files, the receipts) is in a successful ingest run; evaluate after that ingest; tags after that; segment
after those tags; target after that segment. A conf change is not detected: rerun the step itself, or
`flowops run --force`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import functions as F

from flowops import tracking
from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError
from flowops.ingest.monthly import SOURCES
from flowops.lake.tables import CONTACT_HISTORY
from flowops.landing import (
    available_days,
    feedback_files,
    month_days,
    monthly_file,
    next_month,
    parse_month,
    previous_months,
    require_raw,
    usage_files,
)
from flowops.steps.evaluate import Evaluation, run_evaluate
from flowops.steps.ingest import ingest
from flowops.steps.report import run_report
from flowops.steps.segment import run_segment
from flowops.steps.tags import run_tags
from flowops.steps.target import Targets, run_target
from flowops.tags.base import HISTORY

log = logging.getLogger(__name__)
STEPS = ("ingest", "evaluate", "tags", "segment", "target")


@dataclass
class MonthRun:
    month: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: dict[str, int] | None = None
    targets: Targets | None = None
    evaluation: Evaluation | None = None
    report: Path | None = None


def run_month(ctx: Context, raw: str | Path, month: str, *, force: bool = False) -> MonthRun:
    """Every step of month M in order, skipping those whose output is current (none with `force`). The month is one
    MLflow run with each step that runs nested under it."""
    parse_month(month)
    raw_root = require_raw(raw).resolve()
    definitions = Definitions.load(ctx.settings.conf_dir)   # all of conf/ checked before anything runs
    result = MonthRun(month)
    with tracking.month_run(ctx.settings, ctx.lake, month, command="run", force=force) as month_metrics:
        _run_steps(ctx, raw_root, month, definitions, result, force)
        month_metrics.update(steps_ran=len(result.ran), steps_skipped=len(result.skipped))
        result.report = run_report(ctx, month)   # inside the month's MLflow run, which keeps a copy
    return result


def _run_steps(ctx: Context, raw_root: Path, month: str, definitions: Definitions, result: MonthRun,
               force: bool) -> None:
    done = {} if force else _finished(ctx, raw_root, month)
    after: dt.datetime | None = None
    previous = previous_months(month, 1)[0]
    for step in STEPS:
        if step == "evaluate" and not _evaluable(ctx, raw_root, previous):
            continue
        ended = done.get(step)
        if ended is not None and (after is None or ended >= after):
            log.info("run %s: %s is current (ran %s), skipped", month, step, ended.isoformat(timespec="seconds"),
                     extra={"progress": True})
            result.skipped.append(step)
            after = ended
            continue
        if step == "ingest":
            ingest(ctx, raw_root, month=month, definitions=definitions)
        elif step == "evaluate":
            result.evaluation = run_evaluate(ctx, previous, definitions)
        elif step == "tags":
            run_tags(ctx, month, definitions)
        elif step == "segment":
            _, result.stages = run_segment(ctx, month, definitions)
        else:
            result.targets = run_target(ctx, month, definitions=definitions)
        result.ran.append(step)
        after = dt.datetime.now(dt.UTC)
        done = {}   # everything after a step that ran is stale


def _finished(ctx: Context, raw_root: Path, month: str) -> dict[str, dt.datetime]:
    """When each step last finished successfully for `month`. Ingest counts only when every file landed for the
    month is in a successful ingest (accepted or quarantined: a broken file is ingested as a quarantine row; a
    file replaced under the same name is not noticed — ingest it again with `flowops ingest`); tags count only
    when they ended after the latest ingest of any month they read (the month and the three before it)."""
    lake = ctx.lake
    if not lake.exists("ops/runs"):
        return {}
    runs = lake.read("ops/runs").where(F.col("status") == "ok").select(
        "job", F.col("params")["month"].alias("month"), "ended_at",
        F.transform(F.coalesce("files", F.array()), lambda f: f["source_file"]).alias("files")).collect()
    ingests = [r for r in runs if r.job in ("ingest", "ingest-monthly")]
    recorded = {f for r in ingests for f in r.files or []}

    def ingested(of_month: str) -> dt.datetime | None:
        landed = _landed(raw_root, of_month)
        covering = [_utc(r.ended_at) for r in ingests if set(r.files or []) & landed]
        return max(covering) if landed and landed <= recorded and covering else None

    finished: dict[str, dt.datetime] = {}
    if (this_month := ingested(month)) is not None:
        finished["ingest"] = max([this_month, *[t for m in previous_months(month, HISTORY) if (t := ingested(m))]])
    previous = previous_months(month, 1)[0]
    for step in ("evaluate", "tags", "segment", "target"):
        of = previous if step == "evaluate" else month
        ended = [_utc(r.ended_at) for r in runs if r.job == step and r.month == of]
        if ended:
            finished[step] = max(ended)
    # An evaluation is stale once M-1 was targeted again (a wave 2): its new contacts have no outcome yet.
    retargeted = [_utc(r.ended_at) for r in runs if r.job == "target" and r.month == previous]
    if "evaluate" in finished and retargeted and max(retargeted) > finished["evaluate"]:
        del finished["evaluate"]
    return finished


def _evaluable(ctx: Context, raw_root: Path, month: str) -> bool:
    """Month M's campaign can be evaluated: it exported contacts and receipts of its campaign month have landed."""
    lake = ctx.lake
    exported = lake.exists(CONTACT_HISTORY.name) and month in lake.partition_values(CONTACT_HISTORY.name, "month")
    receipts, _ = feedback_files(raw_root, next_month(month)) if exported else ([], [])
    if exported and not receipts:
        log.info("run: %s's campaign is not evaluated: no channel receipts have landed for the month after it", month)
    return bool(exported and receipts)


def _landed(raw_root: Path, month: str) -> set[str]:
    days = set(available_days(raw_root))
    files = {p for day in month_days(month) if day in days for p in usage_files(raw_root, day)[0]}
    for source in SOURCES:
        try:
            files.add(monthly_file(raw_root, source.name, month))
        except FlowopsError:   # not landed yet: the ingest step says so when it runs
            return set()
    files.update(feedback_files(raw_root, month)[0])
    return {p.relative_to(raw_root).as_posix() for p in files}


def _utc(value: dt.datetime) -> dt.datetime:
    """A collected timestamp (PySpark gives naive local time) as an aware UTC time."""
    return value.astimezone(dt.UTC)
