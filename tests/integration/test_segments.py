"""Tags and six-stage segmentation on generated data: the pipeline recovers the planted archetypes.

The generator plants one archetype per subscriber-month in RAW/_truth/archetypes.csv; the pipeline never reads
it. Here it is joined to the pipeline's stages through restricted/subscriber_keys (msisdn -> sub_id).
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.lake.tables import SUBSCRIBER_TAGS
from flowops.segments import STAGES, load_segments
from flowops.steps.segment import run_segment
from flowops.steps.tags import run_tags
from flowops.tags.definitions import load_library
from tests.conftest import CONF
from tests.integration.conftest import DEMO_MONTH, personal_leaks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def staged(demo_ctx, demo_run) -> pd.DataFrame:
    """Planted truth of the demo month joined to the pipeline's stages (one row per planted subscriber)."""
    truth = pd.read_csv(demo_run.raw / "_truth" / "archetypes.csv", dtype=str)
    truth = truth[truth["month"] == DEMO_MONTH]
    keys = demo_ctx.lake.to_pandas("restricted/subscriber_keys")[["sub_id", "msisdn"]]
    stages = demo_ctx.lake.read("gold/flow_stages", partitions={"month": [DEMO_MONTH]}).toPandas()
    return truth.merge(keys, on="msisdn", how="left").merge(stages, on="sub_id", how="left")


def test_stages_agree_with_the_planted_archetypes(staged):
    agreement = (staged["stage"] == staged["expected_stage"]).mean()
    table = pd.crosstab(staged["archetype"], staged["stage"].fillna("(none)"))
    print(f"\nstage agreement {agreement:.1%} over {len(staged)} subscribers\n{table}")
    assert agreement >= 0.95, f"stage agreement {agreement:.1%} < 95%\n{table}"


def test_flow_types_agree_with_the_planted_numbers(staged):
    agreement = (staged["flow_type"] == staged["expected_flow_type"]).mean()
    table = pd.crosstab(staged["expected_flow_type"], staged["flow_type"].fillna("(none)"))
    assert agreement >= 0.9, f"flow type agreement {agreement:.1%} < 90%\n{table}"


def test_every_subscriber_of_the_month_has_exactly_one_stage_with_its_reason(demo_ctx):
    crm = demo_ctx.lake.read("silver/subscribers", partitions={"month": [DEMO_MONTH]}).select("sub_id")
    tags = demo_ctx.lake.read(SUBSCRIBER_TAGS, partitions={"month": [DEMO_MONTH]})
    stages = demo_ctx.lake.read("gold/flow_stages", partitions={"month": [DEMO_MONTH]})
    n = crm.count()
    assert tags.count() == tags.select("sub_id").distinct().count() == n
    assert stages.count() == stages.select("sub_id").distinct().count() == n
    assert stages.join(crm, on="sub_id", how="left_anti").count() == 0
    assert stages.where(~F.col("stage").isin(*STAGES)).count() == 0
    segments = load_segments(CONF, load_library(CONF))
    rules = {r.name: r for r in (*segments.rules, segments.default)}
    for row in stages.select("stage", "reason", F.map_keys("evidence").alias("read")).distinct().collect():
        rule = rules[row.reason]
        assert row.stage == rule.stage
        assert set(row.read) == set(rule.reads)


def test_the_evidence_shows_why_the_rule_fired(demo_ctx):
    stages = demo_ctx.lake.read("gold/flow_stages", partitions={"month": [DEMO_MONTH]})
    over = stages.where(F.col("reason") == "over_allowance").select("evidence").collect()
    assert over and all(float(r.evidence["allowance_used_pct"]) > 110 for r in over)
    low = stages.where(F.col("reason") == "low_usage").select("evidence").collect()
    assert low and all(0 < float(r.evidence["dou_mb"]) < 100 for r in low)


def test_rerunning_segment_rewrites_the_month_with_the_same_content(demo_ctx):
    def content():
        df = demo_ctx.lake.read("gold/flow_stages", partitions={"month": [DEMO_MONTH]})
        cols = [F.col(c).cast("string") if not isinstance(df.schema[c].dataType, T.MapType)
                else F.to_json(F.col(c)) for c in df.columns]
        return sorted(tuple(r) for r in df.select(*cols).collect())

    before, version = content(), demo_ctx.lake.version("gold/flow_stages")
    run_segment(demo_ctx, DEMO_MONTH)
    assert demo_ctx.lake.version("gold/flow_stages") == version + 1
    assert content() == before


def test_no_table_outside_restricted_holds_a_phone_number(demo_ctx, demo_run):
    personal = set()
    for crm in (demo_run.raw / "crm").glob("month=*/subscribers.csv"):
        rows = pd.read_csv(crm, dtype=str)
        personal |= set(rows["msisdn"]) | set(rows["imsi"])
    personal |= set(pd.read_csv(demo_run.raw / "_truth" / "handsets.csv", dtype=str)["imei"])
    assert len(personal) > 300

    assert personal_leaks(demo_run.lake, personal) == []
    assert {SUBSCRIBER_TAGS, "gold/flow_stages", "ops/runs"} <= {
        p.parent.relative_to(demo_run.lake).as_posix() for p in demo_run.lake.rglob("_delta_log")}


def test_tags_and_segment_refuse_a_month_that_did_not_land(demo_ctx):
    with pytest.raises(LakeError, match=r"silver/subscribers has nothing for 2025-11: run `flowops ingest"):
        run_tags(demo_ctx, "2025-11")
    with pytest.raises(LakeError, match=r"gold/subscriber_tags has nothing for 2025-11: run `flowops tags"):
        run_segment(demo_ctx, "2025-11")


def test_each_silver_source_is_scanned_once_however_many_tags(demo_ctx, tmp_path):
    from flowops.steps.tags import compute_tags, read_sources
    from flowops.tags.base import Window

    def scans(library) -> int:
        sources = read_sources(demo_ctx.lake, Window(DEMO_MONTH), Definitions.load(CONF))
        plan = compute_tags(sources, library, DEMO_MONTH)._jdf.queryExecution().executedPlan().toString()
        return plan.count("FileScan parquet")

    shipped = load_library(CONF)
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    copies = [t.as_yaml(f"{t.name}_again") for t in shipped.tags]
    (conf / "tags" / "again.yml").write_text(yaml.safe_dump({"group": "again", "tags": copies}), encoding="utf-8")
    doubled = load_library(conf)
    assert len(doubled.tags) == 2 * len(shipped.tags)
    # subscribers, usage_daily, device_daily, billing_monthly, orders, feedback: one scan each.
    assert scans(shipped) == scans(doubled) == 6
