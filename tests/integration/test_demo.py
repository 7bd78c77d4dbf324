"""`flowops demo` end to end on a small dataset: it runs every step that exists and says where things are."""

from __future__ import annotations

import re

import pytest

from flowops.segments import STAGES
from tests.integration.conftest import DEMO_SUBSCRIBERS

pytestmark = pytest.mark.slow


def test_demo_runs_the_pipeline_and_prints_the_summary(demo_run):
    out = demo_run.stdout
    assert demo_run.code == 0
    assert "flowops demo" in out
    assert "2025-12 .. 2026-03" in out
    for table in ("bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
                  "silver/subscribers", "silver/billing_monthly", "silver/orders", "gold/subscriber_tags",
                  "gold/flow_stages", "gold/scenario_targets", "ops/contact_history", "restricted/subscriber_keys",
                  "silver/feedback", "gold/campaign_results"):
        assert table in out
    assert "labelled DEMO key" in out
    ingest_line = next(line for line in out.splitlines() if line.strip().startswith("ingest "))
    assert "2025-12 .. 2026-03 as one batch" in ingest_line
    assert " accepted + " in ingest_line and "unknown app share" in ingest_line


def test_demo_prints_targets_per_scenario_and_channel_and_where_the_exports_are(demo_run):
    lines = demo_run.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.strip().startswith("target 2026-03 wave 1:"))
    end = next(i for i in range(head, len(lines)) if lines[i].strip().startswith("exports "))
    block = [line.split() for line in lines[head + 1:end] if line.startswith("    ")]
    per_channel = [words for words in block if not words[0].endswith(":") and words[0] != "exports"]
    assert per_channel and all(len(w) == 3 and w[2].replace(",", "").isdigit() for w in per_channel)
    exports = next(line for line in lines if line.strip().startswith("exports "))
    assert str(demo_run.lake / "exports" / "month=2026-03" / "wave=1") in exports


def test_demo_prints_the_size_of_every_stage(demo_run):
    line = next(line for line in demo_run.stdout.splitlines() if line.strip().startswith("stages 2026-03"))
    sizes = {stage: int(n.replace(",", "")) for stage, n in re.findall(r"(\w+) ([\d,]+) \(", line)}
    assert list(sizes) == list(STAGES)
    assert all(n > 0 for n in sizes.values()), line
    # Everyone in the month's CRM snapshot: the starting population, plus new minus earlier churn.
    assert 0.9 * DEMO_SUBSCRIBERS < sum(sizes.values()) < 1.2 * DEMO_SUBSCRIBERS


def test_demo_prints_the_previous_months_funnel_and_uplift_per_scenario(demo_run):
    lines = demo_run.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.strip().startswith("evaluate 2026-02 (campaign 2026-03"))
    table = [line.split() for line in lines[head + 2:] if line.startswith("    ") and line.split()[1].isdigit()]
    assert table and all(words[2] == "all" for words in table)
    assert {int(words[1]) for words in table} >= {1, 2}
    assert any(re.search(r"[+-]\d+\.\dpp \[[+-]\d+\.\d, [+-]\d+\.\d\]", line) for line in lines[head:])
    assert sum("SIMULATED" in line for line in lines) == 4     # two months x two waves, labelled
