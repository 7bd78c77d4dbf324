"""`flowops report --month M`: month M's run report, one self-contained HTML page at LAKE/reports/month=M/index.html.

Reads, through `flowops.analysis` (each figure aggregated where it is read: only small frames reach the driver):
gold/flow_stages (M and the month before: sizes and transitions), gold/scenario_targets (M: candidates, contacts and
why the others were not contacted), gold/campaign_results (every evaluated month up to M: funnels, uplift with
intervals, cost against incremental revenue), silver/usage_daily (M's days: top apps, categories, unknown-app share),
bronze/quarantine (M's days), ops/runs (the jobs of M: step seconds), ops/quality_results when it exists (M's
results). A table with nothing for the month leaves its sections out, and the page says which.
Writes: LAKE/reports/month=M/index.html (replaced whole: written beside it, then renamed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from flowops import analysis as A
from flowops import logs
from flowops import report as page
from flowops.context import Context
from flowops.lake import Lake
from flowops.landing import parse_month, previous_months

log = logging.getLogger(__name__)

REPORTS = "reports"


def report_path(lake: Lake, month: str) -> Path:
    return Path(lake.root) / REPORTS / f"month={month}" / "index.html"


def run_report(ctx: Context, month: str) -> Path:
    """Write month M's report and return its path."""
    parse_month(month)
    lake = ctx.lake
    sections: list[page.Section] = []
    facts: list[tuple[str, str]] = []
    missing: list[str] = []
    for build in (_stages, _targets, _campaigns, _usage, _quarantine, _steps, _quality):
        built = build(lake, month, facts)
        if isinstance(built, str):
            missing.append(built)
        else:
            sections += built
    if missing:
        sections.append(page.Section("Not in this report", ", ".join(missing), pd.DataFrame({"table": missing}),
                                     note="These tables have nothing for the month yet."))
    html = page.render(page.Report(month=month, lake=str(lake.root), sections=sections, facts=facts))
    path = report_path(lake, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_text(html, encoding="utf-8")
    os.replace(staged, path)
    log.info("report %s: %s", month, path, extra={logs.PROGRESS: True})
    return path


def _stages(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    moves = A.stage_transitions(lake, month)
    if moves.empty:
        return A.FLOW_STAGES
    previous = previous_months(month, 1)[0]
    sizes = A.stage_sizes(moves)
    facts.append(("subscribers staged", f"{int(sizes['subscribers'].sum()):,}"))
    matrix = A.transition_matrix(moves)
    return [page.Section("Stage distribution", f"{A.FLOW_STAGES} ({month})", sizes,
                         page.bar_chart(sizes["stage"].tolist(), sizes["subscribers"].tolist(), xlabel="subscribers")),
            page.Section(f"Stage transitions {previous} to {month}", f"{A.FLOW_STAGES} ({previous}, {month})",
                         matrix.reset_index(),
                         page.heatmap(matrix, xlabel=f"stage in {month}", ylabel=f"stage in {previous}"),
                         note="Rows: the stage the month before ((new): not staged then). Columns: this month.")]


def _targets(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    decided = A.decisions(lake, month)
    if decided.empty:
        return A.SCENARIO_TARGETS
    by_channel = A.contacts_by_channel(decided)
    per_scenario = A.candidates_by_scenario(decided)
    reasons = A.suppression_reasons(decided)
    facts.append(("contacts targeted", f"{int(by_channel['contacts'].sum()):,}"))
    labels = [f"wave {w} {c}" for w, c in zip(by_channel["wave"], by_channel["channel"], strict=True)]
    return [
        page.Section("Contacts per channel", f"{A.SCENARIO_TARGETS} ({month}, decision targeted)", by_channel,
                     page.bar_chart(labels, by_channel["contacts"].tolist(), xlabel="contacts")),
        page.Section("Candidates and contacts per scenario", f"{A.SCENARIO_TARGETS} ({month})", per_scenario,
                     page.stacked_bars(per_scenario["scenario"].tolist(),
                                       {k: per_scenario[k].tolist() for k in ("targeted", "control", "suppressed")},
                                       xlabel="candidates")),
        page.Section("Why candidates were not contacted",
                     f"{A.SCENARIO_TARGETS} ({month}, decision suppressed, or control: held out to measure)", reasons,
                     page.bar_chart([f"{d}: {r}" for d, r in zip(reasons["decision"], reasons["reason"], strict=True)],
                                    reasons["candidates"].tolist(), xlabel="candidates")),
    ]


def _campaigns(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    results = A.campaign_results(lake, up_to=month)
    if results.empty:
        return A.CAMPAIGN_RESULTS
    latest = results["month"].max()
    funnel = A.channel_funnel(results, latest)
    uplift = A.uplift_by_scenario(results)
    money = A.cost_and_revenue(results)
    this = uplift[uplift["month"] == latest]
    facts.append((f"incremental orders ({latest} campaign)", f"{this['incremental_orders'].sum():,.1f}"))
    both = funnel.groupby("channel", as_index=False)[A.FUNNEL].sum().sort_values("pushed", ascending=False)
    return [
        page.Section(f"Funnel per channel ({latest} campaign)", f"{A.CAMPAIGN_RESULTS} (month {latest}, per wave)",
                     funnel, page.funnel_chart(both, A.FUNNEL, "channel") if not both.empty else "",
                     note="The chart adds the waves up; the table has each wave."),
        page.Section(f"Uplift per scenario ({latest} campaign, 95% interval)", f"{A.CAMPAIGN_RESULTS} (wave 0)",
                     uplift, page.interval_chart(this["scenario"].tolist(), this["uplift"].tolist(),
                                                 this["uplift_low"].tolist(), this["uplift_high"].tolist(),
                                                 xlabel="treated minus control conversion")
                     if not this.empty else "",
                     note="Every evaluated month is in the table; the chart shows the latest. A scenario without "
                          "a control group this month has no uplift."),
        page.Section("Cost against incremental revenue", f"{A.CAMPAIGN_RESULTS} (wave 0, summed per month)", money,
                     page.line_chart(money["month"].tolist(), {"incremental revenue": money["incremental_revenue_yuan"],
                                                               "cost": money["cost_yuan"]}, ylabel="yuan")),
    ]


def _usage(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    daily = A.usage_daily(lake, month)
    if daily.empty:
        return A.USAGE
    apps, kinds = A.top_apps(lake, month), A.categories(lake, month)
    facts.append(("unknown-app share of bytes", f"{daily['unknown_mb'].sum() / max(daily['mb'].sum(), 1e-9):.1%}"))
    return [
        page.Section("Top apps by traffic", f"{A.USAGE} ({month})", apps,
                     page.bar_chart(apps["app_id"].tolist(), apps["mb"].tolist(), xlabel="MB")),
        page.Section("Traffic per app category", f"{A.USAGE} ({month})", kinds,
                     page.bar_chart(kinds["app_category"].astype(str).tolist(), kinds["mb"].tolist(), xlabel="MB")),
        page.Section("Unknown-app share per day", f"{A.USAGE} ({month})", daily,
                     page.line_chart(daily["dt"].tolist(), {"unknown share of bytes": daily["unknown_share"]},
                                     ylabel="share")),
    ]


def _quarantine(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    reasons = A.quarantine_daily(lake, month)
    if reasons.empty:
        return A.QUARANTINE
    totals = reasons.groupby("reason", as_index=False)["lines"].sum().sort_values("lines", ascending=False)
    matrix = reasons.pivot_table(index="dt", columns="reason", values="lines", aggfunc="sum", fill_value=0)
    facts.append(("quarantined lines", f"{int(totals['lines'].sum()):,}"))
    return [page.Section("Quarantine reasons", f"{A.QUARANTINE} ({month})", totals,
                         page.bar_chart(totals["reason"].tolist(), totals["lines"].tolist(), xlabel="lines")),
            page.Section("Quarantine per day and reason", f"{A.QUARANTINE} ({month})", matrix.reset_index(),
                         page.line_chart(matrix.index.tolist(), {"all reasons": matrix.sum(axis=1)}, ylabel="lines"))]


def _steps(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    steps = A.step_timings(lake, month)
    if steps.empty:
        return A.RUNS
    labels = [f"{i}. {j}" for i, j in enumerate(steps["job"], start=1)]
    return [page.Section("Step timings", f"{A.RUNS} (jobs of {month})", steps,
                         page.bar_chart(labels, steps["seconds"].tolist(), xlabel="seconds"))]


def _quality(lake: Lake, month: str, facts: list) -> list[page.Section] | str:
    results = A.quality_results(lake, month)
    if results.empty:
        return A.QUALITY_RESULTS
    failed_mask = ~results["success"].astype(bool)
    facts.append(("expectations failed", f"{int(failed_mask.sum()):,} of {len(results):,}"))
    by = "table" if "table" in results.columns else "run_id"
    summary = (results.assign(failed=failed_mask).groupby(by, as_index=False)
               .agg(checked=("success", "size"), failed=("failed", "sum")))
    shown = [c for c in ("table", "expectation", "column", "severity", "unexpected_count", "observed_value")
             if c in results.columns]
    return [page.Section("Data quality", f"{A.QUALITY_RESULTS} ({month})", summary),
            page.Section("Failed expectations", f"{A.QUALITY_RESULTS} ({month})", results[failed_mask][shown],
                         note="Great Expectations' Data Docs (under the lake) need the internet for their styles; "
                              "this table is the offline view.")]
