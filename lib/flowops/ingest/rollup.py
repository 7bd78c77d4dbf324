"""Compress bronze records into the silver daily tables."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.ingest.terminals import HandsetClasses, identify_terminals


def usage_daily(bronze_df: DataFrame) -> DataFrame:
    """subscriber x day x app x RAT x idle/busy: bytes, records and duration."""
    return (
        bronze_df.groupBy("dt", "sub_id", "app_id", "app_category", "rat", "is_idle")
        .agg(F.sum("ul_bytes").alias("ul_bytes"), F.sum("dl_bytes").alias("dl_bytes"),
             F.count("*").alias("records"), (F.sum("duration_ms") / 1000.0).alias("duration_s"))
        .select("dt", "sub_id", "app_id", "app_category", "rat", "is_idle", "ul_bytes", "dl_bytes",
                (F.col("ul_bytes") + F.col("dl_bytes")).alias("total_bytes"), "records", "duration_s")
    )


def handsets_daily(bronze_df: DataFrame, reference_df: DataFrame | None = None) -> DataFrame:
    """subscriber x day x TAC: records, bytes, and the user agent it sent most (to identify it by). Given the TAC
    table (`reference_df`), the agent is looked for only where the table lacks the TAC: a known TAC identifies the
    handset, and grouping by the long agent texts is most of this aggregation's cost."""
    agent = F.col("user_agent")
    if reference_df is not None:
        known = F.broadcast(reference_df.select(F.col("tac").alias("_known_tac")))
        bronze_df = bronze_df.join(known, bronze_df["tac"] == F.col("_known_tac"), how="left")
        agent = F.when(F.col("_known_tac").isNull(), agent)
    by_agent = (
        bronze_df.groupBy("dt", "sub_id", "tac", agent.alias("user_agent"))
        .agg(F.count("*").alias("records"), F.sum(F.col("ul_bytes") + F.col("dl_bytes")).alias("total_bytes"))
    )
    # The handset's own agent is the one it sends most; app agents (aweme/..., okhttp/...) vary more. Of agents sent
    # equally often, the greatest text: whatever order the rows come in, the same one.
    most = F.when(F.col("user_agent").isNotNull(), F.struct("records", "user_agent"))
    return (
        by_agent.groupBy("dt", "sub_id", "tac")
        .agg(F.max_by("user_agent", most).alias("user_agent"),
             F.sum("records").alias("records"), F.sum("total_bytes").alias("total_bytes"))
    )


def device_daily(handsets_df: DataFrame, reference_df: DataFrame, classes: HandsetClasses | None = None,
                 agents: DataFrame | None = None) -> DataFrame:
    """`handsets_daily` with the handset identified (TAC table, else the user agent: `agents` already read, see
    `identify_terminals`). Pass a cached `handsets_df`: identification reads it twice (the agents it must
    parse, then every row)."""
    return identify_terminals(handsets_df, reference_df, classes, agents).select(
        "dt", "sub_id", "tac", "brand", "model", "os", "network_gen", "is_smart", "price_tier",
        "terminal_source", "records", "total_bytes",
    )
