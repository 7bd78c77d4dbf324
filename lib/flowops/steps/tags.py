"""`flowops tags --month M`: every tag of conf/tags for the subscribers of month M into gold/subscriber_tags.

Definitions are loaded and checked (including Spark's analysis of every expression) before anything is read.
Reads: silver/subscribers, silver/usage_daily, silver/device_daily, silver/billing_monthly, silver/orders (the
month and the three before it), silver/feedback (every month up to it: the channel preference), and the churn
model's `champion` in the MLflow registry when there is one: it then scores `churn_risk_score` (and the tags read
from it are recomputed), otherwise the rule's score stands; `churn_score_source` and the run's params say which.
Writes: gold/subscriber_tags (one overwrite of the month's partition, after its quality gate passed), and the
gate's rows of ops/quality_results.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.ingest.terminals import reference_df
from flowops.lake import Lake
from flowops.lake.tables import SUBSCRIBER_TAGS, TableSpec, spec_for, subscriber_tags_spec
from flowops.landing import month_days, parse_month, previous_months
from flowops.models.churn import Champion, score_tags
from flowops.models.registry import load_champion
from flowops.products import products_df
from flowops.runs import Run, recorded_run
from flowops.steps.quality import gate, passed
from flowops.tags.base import Sources, Window, base_aggregates, spark_type
from flowops.tags.definitions import TagLibrary
from flowops.tags.engine import check_expressions, select_tags, with_tags

log = logging.getLogger(__name__)


def tags_spec(library: TagLibrary, existing: T.StructType | None = None) -> TableSpec:
    """gold/subscriber_tags for `library` (see `lake.tables.subscriber_tags_spec`)."""
    return subscriber_tags_spec([(tag.name, spark_type(tag.type)) for tag in library.tags], existing)


def read_sources(lake: Lake, window: Window, definitions: Definitions) -> Sources:
    """Silver partitions of the window and the reference tables.

    The tag month must have landed whole: its CRM snapshot, its bills and every day of usage (a partial month
    would read as falling usage). A history month counts only when every one of its days landed; otherwise its
    history columns are null and trends use the months that did.
    """
    spark = lake.spark
    days = [d for m in window.months for d in month_days(m)]
    landed_days = lake.partition_values("silver/usage_daily", "dt")
    usage_months = frozenset(m for m in window.months if all(d in landed_days for d in month_days(m)))
    billing_months = frozenset(lake.partition_values("silver/billing_monthly", "month"))
    ingest = f"run `flowops ingest --month {window.month}` first"
    for table, landed in (("silver/subscribers", lake.partition_values("silver/subscribers", "month")),
                          ("silver/billing_monthly", billing_months)):
        if window.month not in landed:
            raise LakeError(f"{table} has nothing for {window.month}: {ingest}")
    missing_days = [d for d in month_days(window.month) if d not in landed_days]
    if missing_days:
        shown = ", ".join(missing_days[:5]) + (f" and {len(missing_days) - 5} more" if len(missing_days) > 5 else "")
        raise LakeError(f"silver/usage_daily lacks {len(missing_days)} day(s) of {window.month} ({shown}): {ingest} "
                        "(tags need the whole month)")
    missing = [m for m in window.months[1:] if m not in usage_months]
    if missing:
        log.info("tags %s: no complete usage history for %s (trend tags use the months that landed)", window.month,
                 ", ".join(missing))
    months = {"month": list(window.months)}
    receipts = sorted(m for m in lake.partition_values("silver/feedback", "month") if m <= window.month)
    this_month = {"month": [window.month]}
    return Sources(
        subscribers=lake.read("silver/subscribers", partitions=months),
        usage=lake.read("silver/usage_daily", partitions={"dt": days}),
        devices=lake.read("silver/device_daily", partitions={"dt": month_days(window.month)}),
        billing=lake.read("silver/billing_monthly", partitions=months),
        orders=_read_or_empty(lake, "silver/orders", this_month),
        feedback=_read_or_empty(lake, "silver/feedback", {"month": receipts}),
        products=products_df(spark, definitions.catalogue),
        terminals=reference_df(spark, definitions.terminals),
        usage_months=usage_months,
        billing_months=billing_months,
    )


def _read_or_empty(lake: Lake, table: str, partitions: dict[str, list[str]]) -> DataFrame:
    if lake.exists(table) and all(partitions.values()):
        return lake.read(table, partitions=partitions)
    return lake.spark.createDataFrame([], spec_for(table).schema)


def compute_tags(sources: Sources, library: TagLibrary, month: str, champion: Champion | None = None) -> DataFrame:
    """Every tag for every subscriber in the month's CRM snapshot; the churn score the champion's when given."""
    window = Window(month)
    tagged_df = with_tags(base_aggregates(sources, window), library)
    return select_tags(score_tags(tagged_df, library, champion), library, month)


def run_tags(ctx: Context, month: str, definitions: Definitions | None = None) -> Run:
    """`flowops tags --month M`: compute the tag library for month M into gold/subscriber_tags."""
    parse_month(month)
    definitions = definitions or Definitions.load(ctx.settings.conf_dir)
    library = definitions.library
    lake = ctx.lake
    check_expressions(ctx.spark, library)
    with recorded_run(lake, "tags", {"month": month, "tags": len(library.tags)}) as run:
        with run.step("compute") as counts:
            champion = load_champion(ctx.settings)
            run.params["churn_score_source"] = champion.source if champion else "rule"
            sources = read_sources(lake, Window(month), definitions)
            tags_df = compute_tags(sources, library, month, champion).persist(StorageLevel.MEMORY_AND_DISK)
            # The month's tags are checked before they replace what downstream reads (the segment step checks
            # them again as it reads them).
            gate(lake, ctx.settings, run, SUBSCRIBER_TAGS, tags_df, month,
                 previous=(SUBSCRIBER_TAGS, {"month": previous_months(month, 1)}))
            existing = lake.read(SUBSCRIBER_TAGS).schema if lake.exists(SUBSCRIBER_TAGS) else None
            spec = tags_spec(library, existing)
            extra = {f.name: F.lit(None).cast(f.dataType) for f in spec.schema.fields if f.name not in tags_df.columns}
            version = lake.write(tags_df.withColumns(extra), spec, mode="overwrite", partitions={"month": [month]},
                                 metadata={"flowops.runId": run.run_id})
            tags_df.unpersist()
            run.wrote(SUBSCRIBER_TAGS, version)
            passed(lake, SUBSCRIBER_TAGS, month, version)   # the segment step need not check it again
            rows = lake.count(SUBSCRIBER_TAGS, partitions={"month": [month]})
            run.rows_out = rows
            counts.update(subscribers=rows, tags=len(library.tags))
        run.count("subscribers", rows)
        run.count("tags", len(library.tags))
    return run
