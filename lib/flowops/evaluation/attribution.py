"""Which contact, if any, each order is owed to (last touch), for the per-channel funnel.

An order is attributed to a contact when the subscriber ordered a product that contact offered, on a day inside
the contact's attribution window: from the contact's day to the wave's last day, or to `attribution_days` after
the contact day (that day included) when the scenario sets it. When several contacts qualify (two channels, or
two scenarios offering the same product), the latest contact on or before the order's day takes it, so an order is
counted once. Contacts on the same day are told apart by what the subscriber did with them: one they engaged with
(clicked, opened or replied, per the channel's receipt) before one they did not, a delivered one before one that
was not (or has no receipt), an active contact (pushed to them) before a passive one (shown when they came by),
and only then by channel id, so the order never depends on the alphabet when a receipt can decide.
An order by a control-group member of a product their scenario would have offered, inside the window it would
have had, is a control conversion. Every other order is organic.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from flowops.scenarios.policy import lookup


def attribution_end(attribution_days: dict[str, int]) -> Column:
    """The last day an order counts for a contact (or a would-be contact): the window's end, or earlier when the
    scenario sets `evaluation.attribution_days`."""
    days = lookup(attribution_days, F.col("scenario"))
    start = F.coalesce(F.col("contact_date"), F.col("window_start"))
    return F.when(days.isNull(), F.col("window_end")).otherwise(
        F.least(F.col("window_end"), F.date_add(start, (days - 1).cast("int"))))


def attribute(orders: DataFrame, contacts: DataFrame, control: DataFrame,
              attribution_days: dict[str, int] | None = None) -> DataFrame:
    """One row per order: order_id, sub_id, product_id, ordered (date), kind, and the scenario, wave and channel
    it is owed to (null when organic).

    Args:
        orders: sub_id, order_id, product_id, order_time — cancellations already left out.
        contacts: sub_id, scenario, wave, channel, offers, contact_date, window_end, and optionally mode, engaged
            and delivered (booleans from the receipts) — what was exported.
        control: sub_id, scenario, wave, offers, window_start, window_end, and optionally contact_date and channel
            (the day and channel they would have been contacted on) — control-group members.
        attribution_days: scenario -> days an order counts after the contact (absent: until the window's end).
    """
    days = attribution_days or {}
    placed = orders.select("order_id", "sub_id", "product_id", F.to_date("order_time").alias("ordered"))

    def optional(frame: DataFrame, name: str, default: Column) -> Column:
        return (F.col(name) if name in frame.columns else default).alias(name)

    held = control.withColumn("contact_date", optional(control, "contact_date", F.lit(None).cast("date")))
    held_out = held.select("sub_id", "scenario", "wave", F.explode("offers").alias("product_id"),
                           optional(held, "channel", F.lit(None).cast("string")),
                           F.coalesce("contact_date", "window_start").alias("from_day"),
                           attribution_end(days).alias("until"), F.lit("control").alias("kind"),
                           F.lit(False).alias("engaged"), F.lit(False).alias("delivered"),
                           F.lit(1).alias("passive"))
    sent = contacts.withColumn("window_start", optional(contacts, "window_start", F.col("contact_date")))
    exposed = sent.select("sub_id", "scenario", "wave", F.explode("offers").alias("product_id"), "channel",
                          F.col("contact_date").alias("from_day"), attribution_end(days).alias("until"),
                          F.lit("campaign").alias("kind"),
                          F.coalesce(optional(sent, "engaged", F.lit(False)), F.lit(False)).alias("engaged"),
                          F.coalesce(optional(sent, "delivered", F.lit(False)), F.lit(False)).alias("delivered"),
                          F.when(optional(sent, "mode", F.lit("active")) == "active", 0).otherwise(1)
                          .alias("passive"))
    touches = exposed.unionByName(held_out)
    matched = placed.join(touches, ["sub_id", "product_id"]).where(
        (F.col("ordered") >= F.col("from_day")) & (F.col("ordered") <= F.col("until")))
    latest = Window.partitionBy("order_id").orderBy(
        F.col("from_day").desc(), F.col("engaged").desc(), F.col("delivered").desc(), F.col("passive"),
        F.col("kind"), F.col("channel"), F.col("scenario"))
    owed = (matched.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
            .select("order_id", "kind", "scenario", "wave", "channel"))
    return (placed.join(owed, "order_id", "left")
            .withColumn("kind", F.coalesce(F.col("kind"), F.lit("organic"))))
