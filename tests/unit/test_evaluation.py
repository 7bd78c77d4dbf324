"""Attribution edge cases on hand-built contacts and orders; the uplift interval's coverage by simulation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F

from flowops.evaluation.attribution import attribute
from flowops.evaluation.funnel import Costs, evaluate
from flowops.evaluation.uplift import Uplift

D = dt.date
CONTACTS = "sub_id string, scenario string, wave int, channel string, offers array<string>, contact_date date, " \
           "window_end date"
CONTROL = "sub_id string, scenario string, wave int, offers array<string>, window_start date, window_end date"
ORDERS = "sub_id string, order_id string, product_id string, order_time string"


def owed(spark, orders, contacts, control=()):
    # Order times as the order system writes them: local time, read in the pipeline's zone like silver/orders.
    placed = spark.createDataFrame(orders, ORDERS).withColumn("order_time", F.to_timestamp("order_time"))
    out = attribute(placed, spark.createDataFrame(list(contacts), CONTACTS),
                    spark.createDataFrame(list(control), CONTROL))
    return {r.order_id: (r.kind, r.scenario, r.channel) for r in out.collect()}


def at(day: int, hour: int = 12) -> str:
    return f"2026-04-{day:02d} {hour:02d}:00:00"


def test_an_order_inside_the_window_is_the_contacts_and_one_day_after_is_organic(spark):
    contacts = [("a", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9)),
                ("b", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    orders = [("a", "o1", "DP_20", at(9, 23)),    # the last day of the window, late evening
              ("b", "o2", "DP_20", at(10, 0)),    # one day after the window
              ("a", "o3", "DP_20", at(4))]        # before the contact
    assert owed(spark, orders, contacts) == {"o1": ("campaign", "data_no_plan", "sms"),
                                             "o2": ("organic", None, None), "o3": ("organic", None, None)}


def test_any_product_of_a_contacts_offers_counts(spark):
    contacts = [("a", "low_usage_app_lift", 1, "sms", ["APP_MIGU_VIDEO", "APP_MIGU_READ"], D(2026, 4, 5),
                 D(2026, 4, 12))]
    orders = [("a", "o1", "APP_MIGU_READ", at(7)), ("a", "o2", "APP_MIGU_MUSIC", at(7))]
    assert owed(spark, orders, contacts) == {"o1": ("campaign", "low_usage_app_lift", "sms"),
                                             "o2": ("organic", None, None)}


def test_a_product_not_offered_is_organic_and_a_control_member_converts_for_the_control_group(spark):
    contacts = [("a", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    control = [("c", "data_no_plan", 1, ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    orders = [("a", "o1", "BST_5", at(6)),        # something else than the offer
              ("c", "o2", "DP_20", at(6)),        # a control member buys the product
              ("z", "o3", "DP_20", at(6))]        # never contacted
    assert owed(spark, orders, contacts, control) == {"o1": ("organic", None, None),
                                                      "o2": ("control", "data_no_plan", None),
                                                      "o3": ("organic", None, None)}


def test_two_contacts_for_the_same_product_count_the_order_once_for_the_latest(spark):
    contacts = [("a", "new_subscriber", 1, "crm_popup", ["DP_20"], D(2026, 4, 1), D(2026, 4, 5)),
                ("a", "new_subscriber", 1, "sms", ["DP_20"], D(2026, 4, 3), D(2026, 4, 5)),
                ("a", "falling_usage_retention", 1, "sms", ["DP_20"], D(2026, 4, 4), D(2026, 4, 10))]
    orders = [("a", "o1", "DP_20", at(2)), ("a", "o2", "DP_20", at(5))]
    out = owed(spark, orders, contacts)
    assert out == {"o1": ("campaign", "new_subscriber", "crm_popup"),
                   "o2": ("campaign", "falling_usage_retention", "sms")}


def test_the_uplift_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    p_treated, p_control, n_treated, n_control = 0.08, 0.05, 400, 100
    covered = 0
    for _ in range(400):
        treated, control = int(rng.binomial(n_treated, p_treated)), int(rng.binomial(n_control, p_control))
        u = Uplift(n_treated, treated, n_control, control)
        low, high = u.interval()
        covered += low <= p_treated - p_control <= high
    assert 0.92 <= covered / 400 <= 0.99


def test_a_zero_effect_interval_covers_zero_and_no_control_gives_no_interval():
    u = Uplift(500, 25, 100, 5)
    assert u.uplift == pytest.approx(0.0) and u.interval()[0] < 0 < u.interval()[1]
    assert Uplift(500, 25, 0, 0).interval() is None
    assert Uplift(400, 40, 100, 5).incremental == pytest.approx(20.0)


TARGETS = ("sub_id string, scenario string, wave int, mode string, decision string, reason string, channel string, "
           "offers array<string>, window_start date, window_end date, contact_date date, incentive_yuan double")
FEEDBACK = ("sub_id string, scenario string, wave int, channel string, delivered boolean, opened boolean, "
            "clicked boolean, replied boolean, satisfaction int")


def funnel(spark, targets, feedback, orders):
    placed = (spark.createDataFrame(orders, "sub_id string, order_id string, product_id string, order_time string, "
                                            "action string, fee_yuan double")
              .withColumn("order_time", F.to_timestamp("order_time")))
    costs = Costs({"sms": 0.05, "outbound": 3.0}, {"data_no_plan": True}, 0.6)
    return evaluate(spark.createDataFrame(targets, TARGETS), spark.createDataFrame(feedback, FEEDBACK), placed, costs)


def test_the_funnel_counts_each_stage_and_compares_with_the_control_group(spark):
    start, end = D(2026, 4, 5), D(2026, 4, 9)

    def row(sub, decision, reason, channel="sms"):
        return (sub, "data_no_plan", 1, "active", decision, reason, channel, ["DP_20"], start, end, start, 5.0)

    targets = [row("a", "targeted", "targeted"), row("b", "targeted", "targeted"), row("c", "targeted", "targeted"),
               row("d", "targeted", "targeted"), row("x", "control", "control"), row("y", "control", "control"),
               row("e", "suppressed", "cap"),                       # crowded out: still addressable
               row("f", "suppressed", "opt_out", channel=None)]     # opted out: not addressable
    feedback = [("a", "data_no_plan", 1, "sms", True, None, True, True, 5),
                ("b", "data_no_plan", 1, "sms", True, None, False, False, 3),
                ("c", "data_no_plan", 1, "sms", False, None, None, None, None)]   # d: no receipt at all
    orders = [("a", "o1", "DP_20", at(6), "order", 20.0),
              ("a", "o1", "DP_20", at(6), "order", 20.0),       # the same order delivered twice counts once
              ("d", "o5", "DP_20", at(6), "order", 20.0),       # ordered, then cancelled: no conversion
              ("d", "o6", "DP_20", at(8), "cancel", 0.0),
              ("b", "o2", "DP_20", at(10), "order", 20.0),      # one day after the window
              ("x", "o3", "DP_20", at(7), "order", 20.0),       # a control member orders on their own
              ("c", "o4", "DP_20", at(7), "cancel", 0.0)]       # a cancellation converts nobody
    done, rows = funnel(spark, targets, feedback, orders)
    assert {r.sub_id: r.outcome for r in done.collect()} == {"a": "converted", "b": "not_converted",
                                                            "c": "undelivered", "d": "no_receipt"}
    by = {(r["wave"], r["channel"]): r for r in rows}
    sms = by[(1, "sms")]
    assert {k: sms[k] for k in ("addressable", "pushed", "delivered", "reached", "converted", "control",
                                "control_converted", "satisfaction")} == {
        "addressable": 7, "pushed": 4, "delivered": 2, "reached": 1, "converted": 1, "control": 2,
        "control_converted": 1, "satisfaction": 4.0}
    assert sms["uplift"] == pytest.approx(0.25 - 0.5)
    assert sms["uplift_low"] < sms["uplift"] < sms["uplift_high"]
    assert sms["incremental_orders"] == pytest.approx(-1.0)
    # Four SMS at 0.05, and the 5-yuan credit paid only to the one who ordered.
    assert sms["channel_cost_yuan"] == pytest.approx(0.2) and sms["incentive_cost_yuan"] == pytest.approx(5.0)
    assert sms["revenue_yuan"] == pytest.approx(20.0) and sms["orders"] == 1
    assert by[(1, "all")]["pushed"] == 4 and (0, "all") not in by    # one wave: no whole-campaign row


def test_a_subscriber_on_two_channels_counts_once_in_the_scenario_row_and_wave_two_adds_the_campaign_row(spark):
    start, end, later = D(2026, 4, 5), D(2026, 4, 9), D(2026, 4, 20)
    targets = [("a", "data_no_plan", 1, "active", "targeted", "targeted", "sms", ["DP_20"], start, end, start, 0.0),
               ("a", "data_no_plan", 1, "passive", "targeted", "targeted", "outbound", ["DP_20"], start, end, start,
                0.0),
               ("b", "data_no_plan", 1, "active", "targeted", "targeted", "sms", ["DP_20"], start, end, start, 0.0),
               ("b", "data_no_plan", 2, "passive", "targeted", "targeted", "outbound", ["DP_20"], D(2026, 4, 10),
                later, D(2026, 4, 10), 0.0)]
    orders = [("a", "o1", "DP_20", at(6), "order", 20.0), ("b", "o2", "DP_20", at(15), "order", 20.0)]
    _, rows = funnel(spark, targets, [], orders)
    by = {(r["wave"], r["channel"]): r for r in rows}
    assert by[(1, "all")]["pushed"] == 2 and by[(1, "all")]["converted"] == 1
    assert by[(1, "sms")]["pushed"] == 2 and by[(1, "outbound")]["pushed"] == 1
    assert by[(2, "all")]["converted"] == 1
    assert by[(0, "all")]["pushed"] == 2 and by[(0, "all")]["converted"] == 2
    assert by[(1, "all")]["uplift"] is None     # no control group: no uplift, no interval


def test_each_scenario_measures_its_arms_on_their_own_and_wave_zero_counts_the_whole_campaign(spark):
    w1, w2 = (D(2026, 4, 5), D(2026, 4, 9)), (D(2026, 4, 10), D(2026, 4, 20))

    def row(sub, scenario, wave, decision, channel, offers=("DP_20",), incentive=0.0):
        start, end = w1 if wave == 1 else w2
        return (sub, scenario, wave, "active", decision, decision if decision != "suppressed" else "cap", channel,
                list(offers), start, end, start, incentive)

    targets = [row("a", "data_no_plan", 1, "control", "sms"),          # held out of data_no_plan ...
               row("a", "new_subscriber", 1, "targeted", "outbound"),  # ... and contacted by another scenario
               row("b", "data_no_plan", 1, "targeted", "sms"),
               row("b", "data_no_plan", 2, "suppressed", "sms"),       # crowded out of wave 2
               row("c", "data_no_plan", 1, "targeted", "sms"), row("c", "data_no_plan", 2, "targeted", "sms"),
               row("g", "handset_changer_lift", 1, "targeted", "sms", incentive=0.0)]
    orders = [("a", "o1", "DP_20", at(6), "order", 20.0),     # last touch: new_subscriber's outbound call
              ("b", "o2", "DP_20", at(15), "order", 20.0),    # in wave 2's window, without a wave-2 contact
              ("c", "o3", "DP_20", at(16), "order", 20.0)]
    placed = (spark.createDataFrame(orders, "sub_id string, order_id string, product_id string, order_time string, "
                                            "action string, fee_yuan double")
              .withColumn("order_time", F.to_timestamp("order_time")))
    costs = Costs({"sms": 0.05, "outbound": 3.0}, {"data_no_plan": True}, 0.6, {"handset_changer_lift": 1.0})
    done, rows = evaluate(spark.createDataFrame(targets, TARGETS), spark.createDataFrame([], FEEDBACK), placed, costs)
    by = {(r["scenario"], r["wave"], r["channel"]): r for r in rows}
    # Per channel, last touch: the order is the outbound call's, so data_no_plan's control member did not convert.
    assert by[("data_no_plan", 1, "sms")]["control_converted"] == 0
    assert by[("new_subscriber", 1, "outbound")]["converted"] == 1
    # Per scenario, each arm on its own: the control member did order data_no_plan's offer in its window.
    assert by[("data_no_plan", 1, "all")]["control_converted"] == 1
    # The whole campaign: b (no wave-2 contact) and c both ordered before the last window closed.
    whole = by[("data_no_plan", 0, "all")]
    assert (whole["pushed"], whole["converted"], whole["control"], whole["control_converted"]) == (2, 2, 1, 1)
    # A gift's cost is what it costs the operator, for everyone contacted, converted or not.
    assert by[("handset_changer_lift", 1, "sms")]["incentive_cost_yuan"] == pytest.approx(1.0)
