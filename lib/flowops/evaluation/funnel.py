"""A campaign's funnel per scenario x wave x channel, each contact's outcome, and uplift against the control group.

The seed's evaluation (数据评估): addressable (可营销) -> pushed (推送) -> delivered -> reached (触达: the
subscriber opened, clicked or replied) -> converted (转化), with satisfaction, per channel. Uplift compares the
conversion of the contacted with the conversion of the control group, who were chosen by the same rules and held
out at random. The row `channel = all` of a scenario and wave compares subscribers (one contacted on two channels
counts once), each arm's conversion measured for the scenario on its own (an order of an offered product inside
the window). The per-channel rows, each contact's outcome and the revenue use last touch: an order counts once,
for the latest contact (or would-be contact, in the control group) that offered the product.

Wave 1's rows compare two random halves of the same candidates. Wave 2 goes to wave 1's non-converters and its
control rows are the control members who did not convert in wave 1: those two groups were selected differently
(one did not answer a contact, the other did not order unprompted), so a wave-2 uplift is descriptive. When a
campaign has a second wave, the row `wave = 0` measures the whole campaign: everyone wave 1 contacted against the
whole control group, converted in any wave — the causal number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.evaluation.attribution import attribute
from flowops.evaluation.uplift import Uplift
from flowops.scenarios.policy import lookup

ALL = "all"
UNASSIGNED = "unassigned"
WHOLE_CAMPAIGN = 0   # the `wave` of a scenario's row over every wave
# Candidates a scenario could have contacted: chosen, held out, or crowded out by the cap, a full channel, the
# budget or a message that did not render (not: churned, opted out, nothing to offer, immune, no channel).
ADDRESSABLE = ("targeted", "control", "cap", "capacity", "budget", "no_message")


@dataclass(frozen=True)
class Costs:
    """What contacts cost: per channel contact; per scenario, which pay their incentive only on ordering (credit,
    coupons) and what a non-credit incentive costs the operator (trial data, gifts: not their value to the
    subscriber; absent: the contact's own `incentive_yuan`, e.g. a credit capped by the bill)."""

    channel_yuan: dict[str, float]
    incentive_on_order: dict[str, bool]
    margin_share: float
    incentive_cost_yuan: dict[str, float] = field(default_factory=dict)


def placed_orders(orders: DataFrame) -> DataFrame:
    """The orders that stand: each order id once, an order followed by a cancellation of the same product by
    the same subscriber (in the same month) left out, and the cancellations themselves left out."""
    orders = orders.dropDuplicates(["order_id"])
    cancels = orders.where(F.col("action") == "cancel").select(
        "sub_id", "product_id", F.col("order_time").alias("_cancelled"))
    kept = orders.where(F.col("action") != "cancel")
    undone = kept.join(cancels, ["sub_id", "product_id"]).where(F.col("_cancelled") >= F.col("order_time"))
    return kept.join(undone.select("order_id").distinct(), "order_id", "left_anti")


def outcomes(contacts: DataFrame, feedback: DataFrame, owed: DataFrame) -> DataFrame:
    """Each exported contact with its receipt and `outcome`: converted (an order owed to it), else undelivered
    (the channel said so), no_receipt (the channel sent nothing back), not_converted.

    Args:
        contacts: sub_id, scenario, wave, mode, channel, ... — the exported contacts.
        feedback: sub_id, scenario, wave, channel, delivered, opened, clicked, replied, satisfaction.
        owed: from `attribute`: order_id, sub_id, kind, scenario, wave, channel, fee_yuan.
    """
    receipts = feedback.groupBy("sub_id", "scenario", "wave", "channel").agg(
        F.bool_or("delivered").alias("delivered"),
        F.bool_or(F.coalesce("opened", F.lit(False)) | F.coalesce("clicked", F.lit(False))
                  | F.coalesce("replied", F.lit(False))).alias("reached"),
        F.avg("satisfaction").alias("satisfaction"))
    conversions = owed.where(F.col("kind") == "campaign").groupBy("sub_id", "scenario", "wave", "channel").agg(
        F.count("*").alias("orders"), F.sum("fee_yuan").cast("double").alias("revenue_yuan"))
    keys = ["sub_id", "scenario", "wave", "channel"]
    out = contacts.join(receipts, keys, "left").join(conversions, keys, "left")
    outcome = (F.when(F.col("orders") > 0, "converted").when(F.col("delivered").isNull(), "no_receipt")
               .when(~F.col("delivered"), "undelivered").otherwise("not_converted"))
    return out.withColumns({"outcome": outcome, "orders": F.coalesce("orders", F.lit(0)),
                            "revenue_yuan": F.coalesce("revenue_yuan", F.lit(0.0)),
                            "reached": F.coalesce(F.col("delivered") & F.col("reached"), F.lit(False))})


def ordered(arm: DataFrame, placed: DataFrame, until: DataFrame | None = None) -> DataFrame:
    """sub_id, scenario, wave, converted: whether each member of a scenario's arm (its contacted, or its control
    group) ordered an offered product between their contact day (control: the day they would have had) and the
    window's end — or, with `until` (scenario, until), that scenario's last campaign day. Measured for each
    scenario on its own: another scenario's contact for the same product does not take the order away, as it
    does in last-touch attribution (uplift compares the scenario's two arms, whatever else reached them)."""
    rows = arm.select("sub_id", "scenario", "wave", "offers",
                      F.coalesce("contact_date", "window_start").alias("from_day"), "window_end")
    if until is not None:
        rows = rows.join(until, "scenario").withColumn("window_end", F.col("until")).drop("until")
    days = placed.select("sub_id", "product_id", F.to_date("order_time").alias("day"))
    hits = (rows.join(days, "sub_id").where(F.array_contains("offers", F.col("product_id"))
                                            & F.col("day").between(F.col("from_day"), F.col("window_end")))
            .select("sub_id", "scenario", "wave").distinct().withColumn("converted", F.lit(True)))
    members = rows.select("sub_id", "scenario", "wave").distinct()
    return members.join(hits, ["sub_id", "scenario", "wave"], "left").withColumn(
        "converted", F.coalesce("converted", F.lit(False)))


def evaluate(targets: DataFrame, feedback: DataFrame, orders: DataFrame, costs: Costs) -> tuple[DataFrame, list[dict]]:
    """(each exported contact with its outcome, the funnel rows) of one month's targets.

    Args:
        targets: gold/scenario_targets rows of the month: every candidate with its decision and reason.
        feedback: silver/feedback rows of the campaign month.
        orders: silver/orders rows of the campaign month, cancellations included.
    """
    placed = placed_orders(orders).localCheckpoint()
    contacts = targets.where(F.col("decision") == "targeted")
    control = targets.where(F.col("decision") == "control")
    owed = attribute(placed, contacts, control).join(placed.select("order_id", "fee_yuan"), "order_id")
    done = outcomes(contacts, feedback, owed)
    on_order = F.coalesce(lookup(costs.incentive_on_order, F.col("scenario")), F.lit(False))
    unit = F.coalesce(lookup(costs.incentive_cost_yuan, F.col("scenario")).cast("double"), F.col("incentive_yuan"),
                      F.lit(0.0))
    done = done.withColumns({
        "channel_cost_yuan": F.coalesce(lookup(costs.channel_yuan, F.col("channel")).cast("double"), F.lit(0.0)),
        # Credit and coupons are paid when the subscriber orders; trial data and gifts to everyone contacted.
        "incentive_cost_yuan": F.when(on_order & (F.col("outcome") != "converted"), 0.0).otherwise(unit),
    }).localCheckpoint()
    keys = ["sub_id", "scenario", "wave"]
    # Per channel (last touch: an order counts once, for the latest contact or would-be contact).
    held = control.join(owed.where(F.col("kind") == "control").select(*keys, "channel").distinct()
                        .withColumn("converted", F.lit(True)), [*keys, "channel"], "left")
    held = held.withColumn("converted", F.coalesce("converted", F.lit(False)))
    rows = [_row(r, costs) for r in _counts(targets, done, held, ["scenario", "wave", "channel"])]
    # Per scenario and wave, in subscribers, each arm's conversion measured for the scenario on its own.
    arms = ordered(targets.where(F.col("decision").isin("targeted", "control")), placed)
    flagged = done.drop("converted").join(arms, keys, "left")
    held = control.drop("converted").join(arms, keys, "left")
    rows += [_row({**r.asDict(), "channel": ALL}, costs)
             for r in _counts(targets, flagged, held, ["scenario", "wave"], distinct=True)]
    if targets.where(F.col("wave") > 1).limit(1).count():
        # The whole campaign: wave 1's two arms, converted from their first day to the scenario's last.
        first = targets.where((F.col("wave") == 1) & F.col("decision").isin("targeted", "control"))
        until = targets.groupBy("scenario").agg(F.max("window_end").alias("until"))
        campaign = ordered(first, placed, until).drop("wave")
        whole = done.drop("converted").join(campaign, ["sub_id", "scenario"], "left")
        held = first.where(F.col("decision") == "control").join(campaign, ["sub_id", "scenario"], "left")
        rows += [_row({**r.asDict(), "wave": WHOLE_CAMPAIGN, "channel": ALL}, costs)
                 for r in _counts(targets, whole, held, ["scenario"], distinct=True)]
    return done, sorted(rows, key=lambda r: (r["scenario"], r["wave"], r["channel"] != ALL, r["channel"]))


def _counts(targets: DataFrame, done: DataFrame, held: DataFrame, keys: list[str], distinct: bool = False) -> list:
    """Funnel counts per `keys`; with `distinct`, subscribers instead of contacts, converted by the `converted`
    column of `done` (each arm measured on its own) instead of the contact's attributed outcome."""
    def n(condition: F.Column | None = None) -> F.Column:
        who = F.col("sub_id") if condition is None else F.when(condition, F.col("sub_id"))
        return F.countDistinct(who) if distinct else F.count(who)

    # A candidate crowded out of every channel of its route (capacity) has none: counted under `unassigned`.
    candidates = targets.where(F.col("reason").isin(*ADDRESSABLE)).withColumn(
        "channel", F.coalesce("channel", F.lit(UNASSIGNED)))
    addressable = candidates.groupBy(*keys).agg(n().alias("addressable"))
    converted = F.coalesce(F.col("converted"), F.lit(False)) if distinct else F.col("outcome") == "converted"
    funnel = done.groupBy(*keys).agg(
        n().alias("pushed"), n(F.col("delivered")).alias("delivered"), n(F.col("reached")).alias("reached"),
        n(converted).alias("converted"), F.sum("orders").alias("orders"),
        F.avg("satisfaction").alias("satisfaction"), F.count("satisfaction").alias("satisfaction_n"),
        F.sum("revenue_yuan").alias("revenue_yuan"),
        F.sum("incentive_cost_yuan").alias("incentive_cost_yuan"),
        F.sum("channel_cost_yuan").alias("channel_cost_yuan"))
    held_out = held.groupBy(*keys).agg(n().alias("control"), n(F.col("converted")).alias("control_converted"))
    return addressable.join(funnel, keys, "full").join(held_out, keys, "full").collect()


def _row(r: dict, costs: Costs) -> dict:
    r = r.asDict() if hasattr(r, "asDict") else dict(r)
    count = {k: int(r.get(k) or 0) for k in ("addressable", "pushed", "delivered", "reached", "converted", "orders",
                                               "control", "control_converted", "satisfaction_n")}
    uplift = Uplift(count["pushed"], count["converted"], count["control"], count["control_converted"])
    interval = uplift.interval()
    channel_cost = float(r.get("channel_cost_yuan") or 0.0)
    incentive = float(r.get("incentive_cost_yuan") or 0.0)
    revenue = float(r.get("revenue_yuan") or 0.0)
    per_order = revenue / count["converted"] if count["converted"] else 0.0
    incremental = uplift.incremental if count["control"] and count["pushed"] else None
    incremental_revenue = incremental * per_order if incremental is not None else None
    cost = channel_cost + incentive
    roi = ((incremental_revenue * costs.margin_share - cost) / cost
           if incremental_revenue is not None and cost > 0 else None)
    return {
        "scenario": r["scenario"], "wave": int(r["wave"]), "channel": r["channel"], **count,
        "satisfaction": None if r.get("satisfaction") is None else round(float(r["satisfaction"]), 3),
        "treated_rate": round(uplift.treated_rate, 6), "control_rate": round(uplift.control_rate, 6) if count["control"]
        else None, "uplift": round(uplift.uplift, 6) if interval else None,
        "uplift_low": round(interval[0], 6) if interval else None,
        "uplift_high": round(interval[1], 6) if interval else None,
        "incremental_orders": None if incremental is None else round(incremental, 3),
        "revenue_yuan": round(revenue, 2),
        "incremental_revenue_yuan": None if incremental_revenue is None else round(incremental_revenue, 2),
        "incentive_cost_yuan": round(incentive, 2), "channel_cost_yuan": round(channel_cost, 2),
        "roi": None if roi is None else round(roi, 4),
    }
