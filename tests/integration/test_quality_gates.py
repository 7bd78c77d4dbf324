"""Quality gates in the pipeline: the demo's lake holds results for every gated layer and month, all critical ones
passed; a broken batch through the real steps (a CRM snapshot with half the month before's rows, tags with
duplicated subscribers) is stopped with the one-line message, and nothing downstream of it is written."""

from __future__ import annotations

import math
import re
import shutil

import pytest
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.errors import QualityGateFailed
from flowops.lake.tables import FLOW_STAGES, QUALITY_RESULTS, RUNS, SUBSCRIBER_TAGS, subscriber_tags_spec
from flowops.steps.ingest import ingest_monthly
from flowops.steps.segment import run_segment
from tests.conftest import make_settings
from tests.integration.conftest import DEMO_MONTH

pytestmark = pytest.mark.slow   # reads the demo lake the integration tests share

GATED = {"bronze/reconciliation", "silver/usage_daily", "silver/subscribers", "gold/subscriber_tags",
         "gold/flow_stages", "gold/scenario_targets", "exports/contacts"}


def test_every_gated_layer_has_results_for_the_demo_months_and_every_critical_one_passed(demo_ctx, demo_run):
    results = demo_ctx.lake.read(QUALITY_RESULTS.name)
    tables = {r.table for r in results.select("table").distinct().collect()}
    assert tables == GATED
    months = {r.table: r.months for r in results.groupBy("table").agg(
        F.collect_set(F.substring("partition", 1, 7)).alias("months")).collect()}
    assert set(months["gold/flow_stages"]) == {"2026-01", "2026-02", DEMO_MONTH}
    assert set(months["silver/subscribers"]) == {"2025-12", "2026-01", "2026-02", DEMO_MONTH}
    failed = results.where((F.col("severity") == "critical") & ~F.col("success")).collect()
    assert failed == []
    runs = {r.run_id for r in demo_ctx.lake.read(RUNS.name).select("run_id").collect()}   # every job recorded
    assert {r.run_id for r in results.select("run_id").distinct().collect()} <= runs
    assert "  quality        " in demo_run.stdout and "_quality/gx/uncommitted/data_docs/local_site/index.html" in \
        demo_run.stdout
    assert (demo_run.lake / "_quality" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()


@pytest.fixture
def small_raw(demo_run, tmp_path):
    """The demo's CRM, billing and orders of two months, the second month's CRM cut to half its subscribers."""
    raw = tmp_path / "raw"
    for source in ("crm", "billing", "orders"):
        for month in ("2026-01", "2026-02"):
            shutil.copytree(demo_run.raw / source / f"month={month}", raw / source / f"month={month}")
    crm = raw / "crm" / "month=2026-02" / "subscribers.csv"
    lines = crm.read_text(encoding="utf-8").splitlines()
    crm.write_text("\n".join(lines[: 1 + (len(lines) - 1) // 2]) + "\n", encoding="utf-8")
    return raw


def test_a_month_with_half_its_subscribers_is_stopped_before_silver_and_nothing_downstream_is_written(
        small_raw, tmp_path):
    ctx = Context(make_settings(tmp_path / "lake"), demo=True)
    ingest_monthly(ctx, small_raw, "2026-01")
    with pytest.raises(QualityGateFailed) as stopped:
        ingest_monthly(ctx, small_raw, "2026-02")
    line = str(stopped.value)
    lake = ctx.lake
    before = lake.count("silver/subscribers", partitions={"month": ["2026-01"]})
    found = re.match(r"quality gate: silver/subscribers 2026-02 stopped by 1 critical expectation: "
                     r"row_count_vs_previous: observed (\d+), expected (\d+)\.\.(\d+); nothing downstream was written "
                     r"\(results: ops/quality_results run \S+; Data Docs: \S+index\.html\)$", line)
    assert found, line
    observed, low, high = map(int, found.groups())
    assert (low, high) == (math.floor(before * 0.8), math.ceil(before * 1.25))
    assert abs(observed - before / 2) <= 5
    for table in ("silver/subscribers", "silver/billing_monthly", "silver/orders"):
        assert lake.partition_values(table, "month") == {"2026-01"}, table
    failed_run = lake.read(RUNS.name).where(F.col("job") == "ingest-monthly").orderBy("started_at").collect()[-1]
    assert (failed_run.status, failed_run.error.split(":")[0]) == ("failed", "QualityGateFailed")
    recorded = lake.read(QUALITY_RESULTS.name).where(F.col("run_id") == failed_run.run_id).collect()
    assert [(r.expectation, r.success) for r in recorded if not r.success] == [("row_count_vs_previous", False)]


def test_tags_with_duplicated_subscribers_stop_the_segment_step_before_it_writes(demo_ctx, tmp_path):
    tags = demo_ctx.lake.read(SUBSCRIBER_TAGS, partitions={"month": [DEMO_MONTH]}).localCheckpoint()
    broken = tags.unionByName(tags.limit(4))
    ctx = Context(make_settings(tmp_path / "lake"), demo=True)
    spec = subscriber_tags_spec([(f.name, f.dataType) for f in tags.schema.fields[2:]])
    ctx.lake.write(broken.select(*spec.schema.fieldNames()), spec, mode="overwrite",
                   partitions={"month": [DEMO_MONTH]})
    with pytest.raises(QualityGateFailed, match=rf"^quality gate: gold/subscriber_tags {DEMO_MONTH} stopped by 1 "
                                                r"critical expectation: expect_column_values_to_be_unique\(sub_id\): "
                                                rf"8 of {tags.count() + 4} rows failed, e\.g\. \[sub_id=\w{{4}}…"):
        run_segment(ctx, DEMO_MONTH)
    assert not ctx.lake.exists(FLOW_STAGES.name)
    assert [r.status for r in ctx.lake.read(RUNS.name).where(F.col("job") == "segment").collect()] == ["failed"]
