"""`flowops demo`: a small synthetic dataset through every pipeline step for three months, with the channel
simulator answering each month's campaign, then a summary ending with the last evaluated campaign."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowops import logs, tracking
from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError
from flowops.landing import month_days, previous_months
from flowops.segments import format_stages
from flowops.steps.evaluate import run_evaluate
from flowops.steps.ingest import Reference, ingest_days, ingest_monthly
from flowops.steps.report import run_report
from flowops.steps.segment import run_segment
from flowops.steps.simulate import run_simulate
from flowops.steps.tags import run_tags
from flowops.steps.target import run_target

log = logging.getLogger(__name__)

# The demo runs three months; trend tags compare a month with the ones before it, so one more month lands first.
RUN_MONTHS = 3
TABLES = ("bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
          "silver/subscribers", "silver/billing_monthly", "silver/orders", "silver/feedback", "gold/subscriber_tags",
          "gold/flow_stages", "gold/scenario_targets", "gold/campaign_members", "gold/campaign_results",
          "ops/contact_history",
          "restricted/subscriber_keys", "ops/runs")


@dataclass
class MonthsRun:
    """What `run_months` did: the last month's tags, stages and targets, the last evaluation, every simulated wave
    and second wave."""

    monthly: Any = None
    tagged: Any = None
    stages: Any = None
    targets: Any = None
    evaluation: Any = None
    simulated: list = field(default_factory=list)
    second_waves: list = field(default_factory=list)
    report: Path | None = None


def run_months(ctx: Context, raw: Path, months: list[str], reference: Reference, definitions: Definitions,
               seed: int, target_last: bool = True) -> MonthsRun:
    """Months[1:] in turn after months[0] (usage already ingested): each lands its monthly files, measures the
    previous month's campaign (wave 1, then wave 2 to its non-converters, then the whole campaign), tags, segments
    and targets; the channel simulator answers every campaign but the last month's. With `target_last` False the
    last month only lands and measures (its campaign month exists to evaluate the one before)."""
    out = MonthsRun()
    for m, previous in zip(months[1:], months, strict=False):
        with tracking.month_run(ctx.settings, ctx.lake, m, command="demo"):   # the month's jobs nest under it
            # The month's CRM, bills, orders and the receipts of the previous month's campaign (simulated) land.
            out.monthly = ingest_monthly(ctx, raw, m, reference)
            if previous != months[0]:
                # Wave 1 measured, wave 2 goes to its non-converters, then the whole campaign is measured again.
                run_evaluate(ctx, previous, definitions)
                out.second_waves.append(run_target(ctx, previous, 2, definitions))
                out.simulated.append(run_simulate(ctx, raw, previous, 2, seed, definitions))
                out.monthly = ingest_monthly(ctx, raw, m, reference)
                out.evaluation = run_evaluate(ctx, previous, definitions)
            if m == months[-1] and not target_last:
                break
            out.tagged = run_tags(ctx, m, definitions)
            _, out.stages = run_segment(ctx, m, definitions)
            out.targets = run_target(ctx, m, definitions=definitions)
            if m != months[-1]:
                out.simulated.append(run_simulate(ctx, raw, m, 1, seed, definitions))
            else:
                out.report = run_report(ctx, m)   # the last month's, inside its MLflow run
    return out


def tracked_at(ctx: Context) -> str:
    """Where the demo's MLflow runs are, as the command that opens them."""
    if not tracking.enabled(ctx.settings):
        return "off (mlflow.enabled: false or FLOWOPS_TRACKING=off)"
    where = tracking.tracking(ctx.settings)
    return f"mlflow ui --backend-store-uri {where.uri}  (experiment {where.experiment})"


def run_demo(ctx: Context, *, out: Path, subscribers: int, month: str, seed: int, bad_rate: float,
             records_per_day: float | None = None) -> str:
    """Generate RAW under `out/raw`; run the two months before `month` and `month` itself into the lake, the channel
    simulator answering each campaign's two waves in between (wave 2 after wave 1 is evaluated); return a
    printable summary."""
    from flowops.commands import format_counts, format_evaluation, format_targets
    from flowops.synth import generate

    definitions = Definitions.load(ctx.settings.conf_dir)   # all of conf/ checked before the long steps
    started = time.perf_counter()
    raw = out / "raw"
    months = [*previous_months(month, RUN_MONTHS), month]       # one history month, then the three run months
    try:
        generated = generate(raw, subscribers=subscribers, start_month=months[0], months=len(months), seed=seed,
                             bad_rate=bad_rate, records_per_day=records_per_day)
    except ValueError as exc:   # the generator's check of its arguments: one line, as `flowops generate` says it
        raise FlowopsError(f"demo: {exc}") from None
    log.info("generated %s", generated.summary().splitlines()[0], extra={logs.PROGRESS: True})
    lake = ctx.lake
    # The usage of every month as one batch, as an operator backfills history: one pass, one commit per table.
    reference = Reference.load(ctx, definitions)
    ingested = ingest_days(ctx, raw, [day for m in months for day in month_days(m)], reference,
                           label={"months": f"{months[0]}..{month}"})
    monthly = ingest_monthly(ctx, raw, months[0], reference)
    loop = run_months(ctx, raw, months, reference, definitions, seed)
    monthly = loop.monthly or monthly
    evaluation, targets, stages, tagged = loop.evaluation, loop.targets, loop.stages, loop.tagged
    simulated, second_waves = loop.simulated, loop.second_waves
    counts = ingested.counts
    landed_monthly = ", ".join(f"{_source(f.source_file)} {f.accepted:,} rows" for f in monthly.files
                               if f.status == "ok")
    key_env = ctx.settings.pii.key_env
    pseudonyms = (f"sub_id keyed from ${key_env}" if os.environ.get(key_env) else
                  f"sub_id keyed with the labelled DEMO key (set ${key_env} for real data)")
    lines = [
        "",
        "flowops demo",
        f"  landing data   {raw}/  ({generated.xdr_lines:,} xDR lines in {generated.files:,} files, "
        f"{subscribers:,} subscribers, {months[0]} .. {month})",
        f"  planted truth  {raw}/_truth/",
        f"  lake           {lake.root}/  (engine: {lake.engine_name})",
        f"  ingest         {months[0]} .. {month} as one batch: {ingested.rows_in:,} lines in = "
        f"{counts.get('accepted', 0):,} accepted + "
        f"{counts.get('quarantined', 0):,} quarantined + {counts.get('duplicates', 0):,} duplicates; "
        f"unknown app share {counts.get('unknown_app_bytes_ppm', 0) / 1e4:.1f}% of bytes",
        f"  months run     {', '.join(months[1:])}: each lands its monthly files, evaluates the campaign before it, "
        "tags, segments and targets",
        *[f"  simulated      {s.month} wave {s.wave}: {s.receipts:,} receipts, {s.orders:,} orders, "
          f"{s.unsubscribes:,} unsubscribe replies (SIMULATED: {s.truth})" for s in simulated],
        *[f"  wave 2 {t.month}  {sum(t.targeted.values()):,} contacts to wave-1 non-converters, "
          f"{sum(t.control.values()):,} in control groups; suppressed: {format_counts(t.suppressed)}"
          for t in second_waves],
        f"  monthly files  {month}: {landed_monthly} (+{sum(f.quarantined for f in monthly.files):,} quarantined)",
        f"  tags {month}    {tagged.counts['tags']} tags x {tagged.counts['subscribers']:,} subscribers "
        "(catalogue: flowops tags --catalog)",
        f"  stages {month}  {format_stages(stages)}",
        *[f"  {line}" for line in format_targets(targets).splitlines()],
        *([f"  {line}" for line in format_evaluation(evaluation, channels=False).splitlines()] if evaluation else []),
        "  tables         " + ", ".join(t for t in TABLES if lake.exists(t)),
        f"  pseudonyms     {pseudonyms}",
        f"  run records    flowops show ops/runs --lake {lake.root}",
        f"  tracking       {tracked_at(ctx)}",
        *([f"  report         {loop.report}  (open it in a browser; `flowops report --month M` for another month)"]
          if loop.report else []),
        f"  took           {time.perf_counter() - started:.0f}s",
    ]
    return "\n".join(lines)


def _source(landed: str) -> str:
    """`crm`, `billing`, `orders`, or `feedback sms` for a landed monthly file's path."""
    parts = landed.split("/")
    return f"feedback {Path(parts[-1]).stem}" if parts[0] == "feedback" else parts[0]
