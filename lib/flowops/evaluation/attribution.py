"""Which contact, if any, each order is owed to.

An order is attributed to a contact when the subscriber ordered a product that contact offered, on a day
inside the contact's window (from the contact's day to the wave's feedback day, both included). When several
contacts qualify (two channels, or two scenarios offering the same product), the latest contact on or before
the order's day takes it, so an order is counted once. An order by a control-group member of a product their
scenario would have offered, inside the window it would have had, is a control conversion. Every other order is organic.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def attribute(orders: DataFrame, contacts: DataFrame, control: DataFrame) -> DataFrame:
    """One row per order: order_id, sub_id, product_id, ordered (date), kind, and the scenario, wave and channel
    it is owed to (null when organic).

    Args:
        orders: sub_id, order_id, product_id, order_time — cancellations already left out.
        contacts: sub_id, scenario, wave, channel, offers, contact_date, window_end — what was exported.
        control: sub_id, scenario, wave, offers, window_start, window_end, and optionally contact_date and channel
            (the day and channel they would have been contacted on: their window starts then, as a contact's
            does) — control-group members.
    """
    placed = orders.select("order_id", "sub_id", "product_id", F.to_date("order_time").alias("ordered"))
    held_out = control.select("sub_id", "scenario", "wave", F.explode("offers").alias("product_id"),
                              (F.col("channel") if "channel" in control.columns
                               else F.lit(None).cast("string")).alias("channel"),
                              (F.coalesce("contact_date", "window_start") if "contact_date" in control.columns
                               else F.col("window_start")).alias("from_day"),
                              "window_end", F.lit("control").alias("kind"))
    exposed = contacts.select("sub_id", "scenario", "wave", F.explode("offers").alias("product_id"), "channel",
                              F.col("contact_date").alias("from_day"), "window_end", F.lit("campaign").alias("kind"))
    touches = exposed.unionByName(held_out)
    matched = placed.join(touches, ["sub_id", "product_id"]).where(
        (F.col("ordered") >= F.col("from_day")) & (F.col("ordered") <= F.col("window_end")))
    latest = Window.partitionBy("order_id").orderBy(F.col("from_day").desc(), F.col("kind"), F.col("scenario"),
                                                    F.col("channel"))
    owed = (matched.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
            .select("order_id", "kind", "scenario", "wave", "channel"))
    return (placed.join(owed, "order_id", "left")
            .withColumn("kind", F.coalesce(F.col("kind"), F.lit("organic"))))
