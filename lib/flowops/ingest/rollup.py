"""Compress bronze records into the silver daily tables."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.ingest.terminals import identify_terminals


def usage_daily(bronze_df: DataFrame) -> DataFrame:
    """subscriber x day x app x RAT x idle/busy: bytes, records and duration."""
    return (
        bronze_df.groupBy("dt", "sub_id", "app_id", "app_category", "rat", "is_idle")
        .agg(F.sum("ul_bytes").alias("ul_bytes"), F.sum("dl_bytes").alias("dl_bytes"),
             F.count("*").alias("records"), (F.sum("duration_ms") / 1000.0).alias("duration_s"))
        .select("dt", "sub_id", "app_id", "app_category", "rat", "is_idle", "ul_bytes", "dl_bytes",
                (F.col("ul_bytes") + F.col("dl_bytes")).alias("total_bytes"), "records", "duration_s")
    )


def device_daily(bronze_df: DataFrame, reference_df: DataFrame) -> DataFrame:
    """subscriber x day x TAC with the handset identified (TAC table, else the most used user agent)."""
    by_agent = (
        bronze_df.groupBy("dt", "sub_id", "tac", "user_agent")
        .agg(F.count("*").alias("records"), F.sum(F.col("ul_bytes") + F.col("dl_bytes")).alias("total_bytes"))
    )
    # The handset's own agent is the one it sends most; app agents (aweme/..., okhttp/...) vary more.
    devices = (
        by_agent.groupBy("dt", "sub_id", "tac")
        .agg(F.max_by("user_agent", F.when(F.col("user_agent").isNotNull(), F.col("records"))).alias("user_agent"),
             F.sum("records").alias("records"), F.sum("total_bytes").alias("total_bytes"))
    )
    return identify_terminals(devices, reference_df).select(
        "dt", "sub_id", "tac", "brand", "model", "os", "network_gen", "is_smart", "price_tier",
        "terminal_source", "records", "total_bytes",
    )
