"""Replays: the same record delivered twice, within one delivery or again after it landed.

A record is identified by (dt, record_id). Within a delivery the first copy, in file-name and line order,
is kept and later copies are replays. Against the lake, a record is either the very line bronze already
holds (a rerun: it was accepted before) or a copy of a record bronze holds from another line (a
duplicate). Only narrow key columns are ever shuffled; the wide rows are filtered by anti-joins.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

KEY = ["dt", "record_id"]
POSITION = ["source_file", "line_no"]


def later_copies(accepted_df: DataFrame) -> DataFrame:
    """Positions (`source_file`, `line_no`) of the copies that are not the first of their key.

    A count per 64-bit hash of the key finds the hashes seen twice or more (a hash aggregation on a number: no
    sort, no strings shuffled); the rows holding those few hashes, every copy of a repeated key and the rare rows
    whose different keys share a hash, are then ranked by position within their exact key."""
    hashed = accepted_df.select(*KEY, *POSITION, F.xxhash64(*KEY).alias("_hash"))
    twice = hashed.groupBy("_hash").count().where(F.col("count") > 1).select("_hash")
    first = Window.partitionBy(*KEY).orderBy(*POSITION)
    return (
        hashed.join(F.broadcast(twice), on="_hash", how="left_semi")
        .withColumn("_copy", F.row_number().over(first))
        .where(F.col("_copy") > 1)
        .select(*POSITION)
    )


def lake_matches(firsts_df: DataFrame, bronze_keys_df: DataFrame) -> DataFrame:
    """Records of the delivery that bronze already holds: their `source_file`, `line_no`, and `is_same_line`
    (bronze holds this very line, so it was accepted by an earlier run).

    Args:
        firsts_df: the delivery's accepted first copies (`dt`, `record_id`, `source_file`, `line_no`).
        bronze_keys_df: bronze's `dt`, `record_id`, `source_file`, `line_no` for the days concerned.
    """
    known = bronze_keys_df.select(*KEY, F.col("source_file").alias("_file"), F.col("line_no").alias("_line"))
    return (
        firsts_df.select(*KEY, *POSITION)
        .join(known, on=KEY, how="inner")
        .select("source_file", "line_no",
                ((F.col("_file") == F.col("source_file")) & (F.col("_line") == F.col("line_no"))).alias("is_same_line"))
    )
