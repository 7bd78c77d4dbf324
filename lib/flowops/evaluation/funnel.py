"""A campaign's funnel per scenario x wave x channel, each contact's outcome, each experiment member's conversion,
and uplift against the control group.

The seed's evaluation (数据评估): addressable (可营销) -> pushed (推送) -> delivered -> reached (触达: the
subscriber opened, clicked or replied) -> converted (转化), with satisfaction, per channel. The contacted are what
ops/contact_history says was exported (a refused or failed export never counts as sent).

Uplift (the row `channel = all` of a scenario and wave, counted in subscribers) compares like with like: the
members of the treated arm the allocation chose against the members of the held arm it would have chosen had they
been treated (`would_contact`: each judged against the treated arm's market, `scenarios/plan.py`), each converting
when they ordered an offered product inside the wave's window (from its first day, the same for both arms); the
difference, over the share of the chosen actually contacted (an export that failed made no contact), is the effect
per contact (`comparison = chosen`). Both groups come from one random split and one rule, and a member the
allocation left out gets no contact of the scenario, so nothing is lost by leaving the rest out — but their
ordering, noise around the same rate in both arms, is left out too: where the allocation contacts a small share
of the treated arm (a binding channel budget), comparing the arms whole multiplies that noise by the arm over its
contacted. The whole-arm comparison (intention to treat: the treated arm, contacted or not, against the held arm,
over the share contacted) is written beside it as `uplift_arms`, the check that needs no would-be rule, and is the
row's uplift where the held arm has no would-be member (`comparison = arms`). Wave 1's control group is drawn
among the eligible and never contacted; a later wave goes to the earlier wave's non-converters and holds out its
own random part of them (`holdout`), so its uplift is that wave's contact's effect. When a campaign has a second
wave, the row `wave = 0` measures the whole campaign: wave 1's treated arm against its control group, whole
(a member left out of wave 1 may be contacted in wave 2, so no wave's choice delimits the campaign's contacted),
converted in any wave until the scenario's last day.

The per-channel rows, each contact's outcome and the revenue use last touch (`evaluation/attribution.py`): an
order counts once, for the latest contact (or would-be contact, in the comparison group) that offered the product.
Their control columns count the comparison group by the channel it would have had: descriptive, since who gets
which channel is chosen by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.evaluation.attribution import attribute, attribution_end
from flowops.evaluation.uplift import Uplift
from flowops.scenarios.policy import in_compared_arm

ALL = "all"
UNASSIGNED = "unassigned"
WHOLE_CAMPAIGN = 0   # the `wave` of a scenario's row over every wave
# What a row's uplift compares (campaign_results.comparison): the treated arm's chosen against the held arm's
# would-be chosen; the two arms whole; a channel's contacts against the held members it would have had (last touch).
CHOSEN_COMPARISON, ARMS, LAST_TOUCH = "chosen", "arms", "last_touch"
CHOSEN = ("chosen", "chosen_converted", "control_chosen", "control_chosen_converted")
# Decisions of candidates a scenario could have contacted: chosen, held out, or crowded out by a contact slot,
# the scenario's attempts, a full channel, the budget or contacts worth more (not: churned, opted out, nothing to
# offer, immune, no channel, no message, worth nothing).
ADDRESSABLE = ("targeted", "explore", "control", "holdout", "cap", "attempts", "capacity", "budget", "outvalued")


@dataclass(frozen=True)
class Costs:
    """What the evaluation needs besides the tables: the margin share of revenue (ROI) and each scenario's
    attribution window (days after the contact; absent: until the wave's last day)."""

    margin_share: float
    attribution_days: dict[str, int] = field(default_factory=dict)


def placed_orders(orders: DataFrame) -> DataFrame:
    """The orders that stand: each order id once, an order followed by a cancellation of the same product by
    the same subscriber (in the same month) left out, and the cancellations themselves left out."""
    orders = orders.dropDuplicates(["order_id"])
    cancels = orders.where(F.col("action") == "cancel").select(
        "sub_id", "product_id", F.col("order_time").alias("_cancelled"))
    kept = orders.where(F.col("action") != "cancel")
    undone = kept.join(cancels, ["sub_id", "product_id"]).where(F.col("_cancelled") >= F.col("order_time"))
    return kept.join(undone.select("order_id").distinct(), "order_id", "left_anti")


def comparison_group(targets: DataFrame) -> DataFrame:
    """The members each wave's contacted are compared with: wave 1's control group, a later wave's holdout."""
    return targets.where((F.col("decision") == "control") & in_compared_arm())


def receipts(feedback: DataFrame) -> DataFrame:
    """Per contact (sub_id, scenario, wave, channel): delivered, engaged (opened, clicked or replied) and the mean
    satisfaction, from the channels' receipts."""
    return feedback.groupBy("sub_id", "scenario", "wave", "channel").agg(
        F.bool_or("delivered").alias("delivered"),
        F.bool_or(F.coalesce("opened", F.lit(False)) | F.coalesce("clicked", F.lit(False))
                  | F.coalesce("replied", F.lit(False))).alias("engaged"),
        F.avg("satisfaction").alias("satisfaction"))


def outcomes(contacts: DataFrame, owed: DataFrame) -> DataFrame:
    """Each exported contact (with its receipt columns) and its `outcome`: converted (an order owed to it), else
    undelivered (the channel said so), no_receipt (the channel sent nothing back), not_converted."""
    conversions = owed.where(F.col("kind") == "campaign").groupBy("sub_id", "scenario", "wave", "channel").agg(
        F.count("*").alias("orders"), F.sum("fee_yuan").cast("double").alias("revenue_yuan"))
    out = contacts.join(conversions, ["sub_id", "scenario", "wave", "channel"], "left")
    outcome = (F.when(F.col("orders") > 0, "converted").when(F.col("delivered").isNull(), "no_receipt")
               .when(~F.col("delivered"), "undelivered").otherwise("not_converted"))
    return out.withColumns({"outcome": outcome, "orders": F.coalesce("orders", F.lit(0)),
                            "revenue_yuan": F.coalesce("revenue_yuan", F.lit(0.0)),
                            "reached": F.coalesce(F.col("delivered") & F.col("engaged"), F.lit(False))})


def ordered(arm: DataFrame, placed: DataFrame, until: DataFrame | None = None,
            attribution_days: dict[str, int] | None = None) -> DataFrame:
    """sub_id, scenario, wave, converted: whether each member of a scenario's arm ordered an offered product
    between their contact day (or, without one, the window's first day) and the attribution window's end — or,
    with `until` (scenario, until), that scenario's last campaign day. Measured for each scenario on its own:
    another scenario's contact for the same product does not take the order away, as it does in last-touch
    attribution."""
    if "contact_date" not in arm.columns:
        arm = arm.withColumn("contact_date", F.lit(None).cast("date"))
    rows = arm.select("sub_id", "scenario", "wave", "offers", F.coalesce("contact_date", "window_start")
                      .alias("from_day"), attribution_end(attribution_days or {}).alias("window_end"))
    if until is not None:
        rows = rows.join(until, "scenario").withColumn("window_end", F.col("until")).drop("until")
    days = placed.select("sub_id", "product_id", F.to_date("order_time").alias("day"))
    hits = (rows.join(days, "sub_id").where(F.array_contains("offers", F.col("product_id"))
                                            & F.col("day").between(F.col("from_day"), F.col("window_end")))
            .select("sub_id", "scenario", "wave").distinct().withColumn("converted", F.lit(True)))
    members = rows.select("sub_id", "scenario", "wave").distinct()
    return members.join(hits, ["sub_id", "scenario", "wave"], "left").withColumn(
        "converted", F.coalesce("converted", F.lit(False)))


def campaign_members(targets: DataFrame, done: DataFrame, placed: DataFrame, costs: Costs) -> DataFrame:
    """One row per member of each wave's experiment: sub_id, scenario, wave, arm, channel (intended before the
    allocation, active first: the same rule in both arms), contacted and contacted_channel, would_contact (the
    allocation chose the member, or in the held arm would have: the same rule in both arms), delivered, converted
    (ordered an offered product from the wave's first day to its attribution end: the same window for both
    arms)."""
    keys = ["sub_id", "scenario", "wave"]
    units = targets.where(F.col("arm").isNotNull() & F.col("reason").isin(*ADDRESSABLE))
    first = units.groupBy(*keys).agg(
        F.first("arm").alias("arm"), F.first("offers").alias("offers"), F.min("window_start").alias("window_start"),
        F.max("window_end").alias("window_end"),
        F.min_by("intended_channel", F.when(F.col("intended_channel").isNotNull(), F.col("mode"))).alias("intended"),
        F.bool_or(F.coalesce("would_contact", F.lit(False))).alias("would_contact"))
    touched = done.groupBy(*keys).agg(F.min_by("channel", F.col("mode")).alias("contact_channel"),
                                      F.bool_or("delivered").alias("delivered"))
    converted = ordered(first, placed, attribution_days=costs.attribution_days)
    return (first.join(touched, keys, "left").join(converted, keys, "left")
            .select(*keys, "arm", F.col("contact_channel").isNotNull().alias("contacted"), "would_contact",
                    F.col("intended").alias("channel"), F.col("contact_channel").alias("contacted_channel"),
                    "delivered", F.coalesce("converted", F.lit(False)).alias("converted")))


def evaluate(targets: DataFrame, contacts: DataFrame, feedback: DataFrame, orders: DataFrame, costs: Costs
             ) -> tuple[DataFrame, list[dict], DataFrame]:
    """(each exported contact with its outcome, the funnel rows, the experiment members) of one month's campaign.

    Args:
        targets: gold/scenario_targets rows of the month: every candidate with its decision, reason and arm.
        contacts: ops/contact_history rows of the month: what was exported, with its channel and incentive cost.
        feedback: silver/feedback rows of the campaign month.
        orders: silver/orders rows of the campaign month, cancellations included.
    """
    placed = placed_orders(orders).localCheckpoint()
    sent = contacts.join(receipts(feedback), ["sub_id", "scenario", "wave", "channel"], "left")
    held = comparison_group(targets)
    owed = attribute(placed, sent, held, costs.attribution_days).join(placed.select("order_id", "fee_yuan"),
                                                                       "order_id")
    done = outcomes(sent, owed).withColumn(
        # Credit and coupons are paid when the subscriber orders; trial data and gifts to everyone contacted.
        "incentive_cost_yuan", F.when(F.col("incentive_on_order") & (F.col("outcome") != "converted"), 0.0)
        .otherwise(F.coalesce("incentive_cost_yuan", F.lit(0.0)))).localCheckpoint()
    members = campaign_members(targets, done, placed, costs).localCheckpoint()
    keys = ["sub_id", "scenario", "wave"]
    # Per channel (last touch: an order counts once, for the latest contact or would-be contact).
    held_conv = held.join(owed.where(F.col("kind") == "control").select(*keys, "channel").distinct()
                          .withColumn("converted", F.lit(True)), [*keys, "channel"], "left")
    held_conv = held_conv.withColumn("converted", F.coalesce("converted", F.lit(False)))
    rows = [_row(r, costs) for r in _channel_counts(targets, done, held_conv)]
    rows += [_row({**r.asDict(), "channel": ALL}, costs) for r in _arm_counts(members, done, ["scenario", "wave"])]
    if targets.where(F.col("wave") > 1).limit(1).count():
        whole = _whole_campaign(targets, members, placed)
        # The whole campaign's contacts: those of wave 1's members, in any wave.
        of_wave_one = done.join(whole.select("sub_id", "scenario"), ["sub_id", "scenario"], "left_semi")
        rows += [_row({**r.asDict(), "wave": WHOLE_CAMPAIGN, "channel": ALL}, costs)
                 for r in _arm_counts(whole, of_wave_one, ["scenario"]) if r["addressable"]]
    return done, sorted(rows, key=lambda r: (r["scenario"], r["wave"], r["channel"] != ALL, r["channel"])), members


def _whole_campaign(targets: DataFrame, members: DataFrame, placed: DataFrame) -> DataFrame:
    """Wave 1's members (treated arm and control group), contacted in any wave, converted from wave 1's first
    day to the scenario's last campaign day."""
    first = members.where(F.col("wave") == 1)
    until = targets.groupBy("scenario").agg(F.max("window_end").alias("until"))
    windows = (targets.where((F.col("wave") == 1) & F.col("arm").isNotNull()).groupBy("sub_id", "scenario")
               .agg(F.first("offers").alias("offers"), F.min("window_start").alias("window_start"),
                    F.max("window_end").alias("window_end")).withColumn("wave", F.lit(1)))
    converted = ordered(windows, placed, until).select("sub_id", "scenario", F.col("converted").alias("_any"))
    contacted = members.where(F.col("contacted")).select("sub_id", "scenario").distinct().withColumn(
        "_touched", F.lit(True))
    return (first.join(converted, ["sub_id", "scenario"], "left").join(contacted, ["sub_id", "scenario"], "left")
            .withColumn("converted", F.coalesce("_any", F.lit(False)))
            .withColumn("contacted", F.coalesce("_touched", F.lit(False))).drop("_any", "_touched"))


def _arm_counts(members: DataFrame, done: DataFrame, keys: list[str]) -> list:
    """Per `keys`, in subscribers: the arms (assigned, control) and their conversion, the contacted and the
    funnel of their contacts."""
    treated = F.col("arm") == "treated"
    compared = F.when(F.col("wave") == 1, F.col("arm") == "control").otherwise(F.col("arm") == "holdout")

    def n(condition: F.Column) -> F.Column:
        return F.sum(F.when(condition, 1).otherwise(0))

    chosen = F.coalesce("would_contact", F.lit(False))
    arms = members.groupBy(*keys).agg(
        F.count("*").alias("addressable"), n(treated).alias("assigned"),
        n(treated & F.col("converted")).alias("assigned_converted"), n(treated & F.col("contacted")).alias("pushed"),
        n(treated & F.col("contacted") & F.col("converted")).alias("converted"),
        n(compared).alias("control"), n(compared & F.col("converted")).alias("control_converted"),
        n(treated & chosen).alias("chosen"), n(treated & chosen & F.col("converted")).alias("chosen_converted"),
        n(compared & chosen).alias("control_chosen"),
        n(compared & chosen & F.col("converted")).alias("control_chosen_converted"))
    per_sub = done.groupBy("sub_id", *keys).agg(
        F.bool_or("delivered").alias("delivered"), F.bool_or("reached").alias("reached"),
        F.sum("orders").alias("orders"), F.avg("satisfaction").alias("satisfaction"),
        F.sum("revenue_yuan").alias("revenue_yuan"), F.sum("incentive_cost_yuan").alias("incentive_cost_yuan"),
        F.sum("channel_cost_yuan").alias("channel_cost_yuan"))
    funnel = per_sub.groupBy(*keys).agg(
        n(F.coalesce("delivered", F.lit(False))).alias("delivered"), n(F.col("reached")).alias("reached"),
        F.sum("orders").alias("orders"), F.avg("satisfaction").alias("satisfaction"),
        F.count("satisfaction").alias("satisfaction_n"), F.sum("revenue_yuan").alias("revenue_yuan"),
        F.sum("incentive_cost_yuan").alias("incentive_cost_yuan"),
        F.sum("channel_cost_yuan").alias("channel_cost_yuan"))
    return arms.join(funnel, keys, "full").collect()


def _channel_counts(targets: DataFrame, done: DataFrame, held: DataFrame) -> list:
    """Funnel counts per scenario, wave and channel, in contacts, converted by last touch."""
    keys = ["scenario", "wave", "channel"]
    # A candidate crowded out of every channel has none: counted under `unassigned`.
    candidates = targets.where(F.col("reason").isin(*ADDRESSABLE)).withColumn(
        "channel", F.coalesce("channel", F.lit(UNASSIGNED)))
    addressable = candidates.groupBy(*keys).agg(F.count("*").alias("addressable"))
    funnel = done.groupBy(*keys).agg(
        F.count("*").alias("pushed"), F.count(F.when(F.col("delivered"), 1)).alias("delivered"),
        F.count(F.when(F.col("reached"), 1)).alias("reached"),
        F.count(F.when(F.col("outcome") == "converted", 1)).alias("converted"), F.sum("orders").alias("orders"),
        F.avg("satisfaction").alias("satisfaction"), F.count("satisfaction").alias("satisfaction_n"),
        F.sum("revenue_yuan").alias("revenue_yuan"), F.sum("incentive_cost_yuan").alias("incentive_cost_yuan"),
        F.sum("channel_cost_yuan").alias("channel_cost_yuan"))
    held_out = held.groupBy(*keys).agg(F.count("*").alias("control"),
                                       F.count(F.when(F.col("converted"), 1)).alias("control_converted"))
    return addressable.join(funnel, keys, "full").join(held_out, keys, "full").collect()


def _row(r: dict, costs: Costs) -> dict:
    r = r.asDict() if hasattr(r, "asDict") else dict(r)
    count = {k: int(r.get(k) or 0) for k in ("addressable", "assigned", "assigned_converted", "pushed", "delivered",
                                               "reached", "converted", "orders", "control", "control_converted",
                                               "satisfaction_n")}
    arms = comparison = None
    chosen = {k: None for k in CHOSEN}
    if r["channel"] != ALL:   # contacts against the comparison group by would-be channel (descriptive)
        comparison = LAST_TOUCH
        uplift = Uplift(count["pushed"], count["converted"], count["control"], count["control_converted"])
    else:                     # the whole arms, per contact (intention to treat over the share contacted)
        comparison = ARMS
        uplift = arms = Uplift(count["assigned"], count["assigned_converted"], count["control"],
                               count["control_converted"], contacted=count["pushed"])
        if r["wave"] != WHOLE_CAMPAIGN:
            chosen = {k: int(r.get(k) or 0) for k in CHOSEN}
            if chosen["chosen"] and chosen["control_chosen"]:   # like with like: the chosen against the would-be
                comparison = CHOSEN_COMPARISON
                uplift = Uplift(chosen["chosen"], chosen["chosen_converted"], chosen["control_chosen"],
                                chosen["control_chosen_converted"], contacted=count["pushed"])
    interval = uplift.interval()
    arms_interval = arms.interval() if arms else None
    channel_cost = float(r.get("channel_cost_yuan") or 0.0)
    incentive = float(r.get("incentive_cost_yuan") or 0.0)
    revenue = float(r.get("revenue_yuan") or 0.0)
    per_order = revenue / count["orders"] if count["orders"] else 0.0
    incremental = uplift.incremental if interval else None
    incremental_revenue = incremental * per_order if incremental is not None else None
    cost = channel_cost + incentive
    roi = ((incremental_revenue * costs.margin_share - cost) / cost
           if incremental_revenue is not None and cost > 0 else None)
    treated_rate = count["converted"] / count["pushed"] if count["pushed"] else 0.0
    return {
        "scenario": r["scenario"], "wave": int(r["wave"]), "channel": r["channel"], **count,
        "satisfaction": None if r.get("satisfaction") is None else round(float(r["satisfaction"]), 3),
        "treated_rate": round(treated_rate, 6), "control_rate": round(uplift.control_rate, 6) if count["control"]
        else None, "uplift": round(uplift.uplift, 6) if interval else None,
        "uplift_low": round(interval[0], 6) if interval else None,
        "uplift_high": round(interval[1], 6) if interval else None,
        "incremental_orders": None if incremental is None else round(incremental, 3),
        "comparison": comparison, **chosen,
        "uplift_arms": round(arms.uplift, 6) if arms_interval else None,
        "uplift_arms_low": round(arms_interval[0], 6) if arms_interval else None,
        "uplift_arms_high": round(arms_interval[1], 6) if arms_interval else None,
        "revenue_yuan": round(revenue, 2),
        "incremental_revenue_yuan": None if incremental_revenue is None else round(incremental_revenue, 2),
        "incentive_cost_yuan": round(incentive, 2), "channel_cost_yuan": round(channel_cost, 2),
        "roi": None if roi is None else round(roi, 4),
    }
