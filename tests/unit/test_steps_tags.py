"""gold/subscriber_tags keeps its columns across tag-library changes; a month must land whole to be tagged."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.lake.tables import BILLING_MONTHLY, SUBSCRIBERS, USAGE_DAILY
from flowops.landing import month_days
from flowops.steps.tags import read_sources, tags_spec
from flowops.tags.base import Window
from flowops.tags.definitions import TagModel, build_library
from tests.conftest import CONF


def library(**types: str):
    exprs = {"double": "data_mb_m0", "string": "crm_identity"}
    models = [(TagModel(name=n, description="d", type=t, expr=exprs[t]), "g", "x.yml") for n, t in types.items()]
    return build_library(models, {})


def test_a_new_tag_adds_a_column_and_a_removed_tag_keeps_its_old_values(lake, spark):
    first = tags_spec(library(kept="double", dropped="string"))
    lake.write(spark.createDataFrame([("2026-02", "s1", 1.0, "x")], first.schema), first, mode="overwrite",
               partitions={"month": ["2026-02"]})
    second = tags_spec(library(kept="double", added="string"), lake.read(first.name).schema)
    assert second.schema.fieldNames() == ["month", "sub_id", "kept", "added", "dropped"]
    rows = spark.createDataFrame([("2026-03", "s1", 2.0, "new")], "month string, sub_id string, kept double, "
                                 "added string").withColumn("dropped", F.lit(None).cast("string"))
    lake.write(rows, second, mode="overwrite", partitions={"month": ["2026-03"]})
    got = {(r.month, r.kept, r.added, r.dropped) for r in lake.read(first.name).collect()}
    assert got == {("2026-02", 1.0, None, "x"), ("2026-03", 2.0, "new", None)}


def test_a_tag_whose_type_changed_is_refused(lake, spark):
    first = tags_spec(library(value="double"))
    lake.write(spark.createDataFrame([("2026-02", "s1", 1.0)], first.schema), first, mode="overwrite",
               partitions={"month": ["2026-02"]})
    with pytest.raises(LakeError, match=r"tag value is string in the conf but double in gold/subscriber_tags"):
        tags_spec(library(value="string"), lake.read(first.name).schema)


def test_a_month_with_missing_usage_days_is_refused(lake, spark):
    crm = spark.createDataFrame([("2026-03", "s1", "active", dt.date(2020, 1, 1))],
                                "month string, sub_id string, status string, activation_date date")
    lake.write(crm.select(*[F.col(c) if c in crm.columns else F.lit(None).cast(f.dataType).alias(c)
                            for c, f in zip(SUBSCRIBERS.schema.fieldNames(), SUBSCRIBERS.schema.fields, strict=True)]),
               SUBSCRIBERS, mode="overwrite", partitions={"month": ["2026-03"]})
    bills = spark.createDataFrame([], BILLING_MONTHLY.schema).unionByName(
        spark.createDataFrame([("2026-03", "s1")], "month string, sub_id string"), allowMissingColumns=True)
    lake.write(bills, BILLING_MONTHLY, mode="overwrite", partitions={"month": ["2026-03"]})
    days = month_days("2026-03")[:29]
    usage = spark.createDataFrame([(d, "s1") for d in days], "dt string, sub_id string")
    lake.write(spark.createDataFrame([], USAGE_DAILY.schema).unionByName(usage, allowMissingColumns=True),
               USAGE_DAILY, mode="append")
    with pytest.raises(LakeError, match=r"silver/usage_daily lacks 2 day\(s\) of 2026-03 \(2026-03-30, 2026-03-31\)"):
        read_sources(lake, Window("2026-03"), Definitions.load(CONF))
