"""`flowops demo`: a small synthetic dataset through every pipeline step that exists, then a summary."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.landing import month_days, previous_months
from flowops.segments import format_stages
from flowops.steps.ingest import Reference, ingest_days, ingest_monthly
from flowops.steps.segment import run_segment
from flowops.steps.tags import run_tags
from flowops.steps.target import run_target

log = logging.getLogger(__name__)

# Trend tags compare a month with the ones before it, so the demo lands three months and runs the last.
HISTORY_MONTHS = 2
TABLES = ("bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
          "silver/subscribers", "silver/billing_monthly", "silver/orders", "gold/subscriber_tags",
          "gold/flow_stages", "gold/scenario_targets", "ops/contact_history", "restricted/subscriber_keys", "ops/runs")


def run_demo(ctx: Context, *, out: Path, subscribers: int, month: str, seed: int, bad_rate: float) -> str:
    """Generate RAW under `out/raw`, run the pipeline for `month` into the lake, return a printable summary."""
    from flowops.commands import format_targets
    from flowops.synth import generate

    definitions = Definitions.load(ctx.settings.conf_dir)   # all of conf/ checked before the long steps
    started = time.perf_counter()
    raw = out / "raw"
    first_month = previous_months(month, HISTORY_MONTHS)[0]
    generated = generate(raw, subscribers=subscribers, start_month=first_month, months=HISTORY_MONTHS + 1,
                         seed=seed, bad_rate=bad_rate)
    log.info("generated %s", generated.summary().splitlines()[0])
    lake = ctx.lake
    months = [*previous_months(month, HISTORY_MONTHS), month]
    # The usage of all three months as one batch, as an operator backfills history: one pass, one commit per table.
    reference = Reference.load(ctx, definitions)
    ingested = ingest_days(ctx, raw, [day for m in months for day in month_days(m)], reference,
                           label={"months": f"{months[0]}..{month}"})
    monthly = [ingest_monthly(ctx, raw, m, reference) for m in months][-1]
    counts = ingested.counts
    tagged = run_tags(ctx, month, definitions)
    _, stages = run_segment(ctx, month, definitions)
    targets = run_target(ctx, month, definitions=definitions)
    # Accepted lines of a monthly file include its header.
    landed_monthly = ", ".join(f"{f.source_file.split('/')[0]} {f.accepted - 1:,} rows" for f in monthly.files
                               if f.accepted)
    key_env = ctx.settings.pii.key_env
    pseudonyms = (f"sub_id keyed from ${key_env}" if os.environ.get(key_env) else
                  f"sub_id keyed with the labelled DEMO key (set ${key_env} for real data)")
    lines = [
        "",
        "flowops demo",
        f"  landing data   {raw}/  ({generated.xdr_lines:,} xDR lines in {generated.files:,} files, "
        f"{subscribers:,} subscribers, {first_month} .. {month})",
        f"  planted truth  {raw}/_truth/",
        f"  lake           {lake.root}/  (engine: {lake.engine_name})",
        f"  ingest         {months[0]} .. {month} as one batch: {ingested.rows_in:,} lines in = "
        f"{counts.get('accepted', 0):,} accepted + "
        f"{counts.get('quarantined', 0):,} quarantined + {counts.get('duplicates', 0):,} duplicates; "
        f"unknown app share {counts.get('unknown_app_bytes_ppm', 0) / 1e4:.1f}% of bytes",
        f"  monthly files  {month}: {landed_monthly} (+{sum(f.quarantined for f in monthly.files):,} quarantined)",
        f"  tags {month}    {tagged.counts['tags']} tags x {tagged.counts['subscribers']:,} subscribers "
        "(catalogue: flowops tags --catalog)",
        f"  stages {month}  {format_stages(stages)}",
        *[f"  {line}" for line in format_targets(targets).splitlines()],
        "  tables         " + ", ".join(t for t in TABLES if lake.exists(t)),
        f"  pseudonyms     {pseudonyms}",
        f"  run records    flowops show ops/runs --lake {lake.root}",
        f"  took           {time.perf_counter() - started:.0f}s",
    ]
    return "\n".join(lines)
