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


def test_the_arms_are_compared_whole_so_choosing_whom_to_contact_cannot_bias_the_uplift():
    # The allocation contacts half the treated arm, chosen by value: those likely to order anyway. Contacts add 2
    # points. Contacted-versus-control counts the chosen ones' organic ordering as uplift; the whole arms do not.
    rng = np.random.default_rng(11)
    n = 200_000
    organic = rng.uniform(0.0, 0.1, n)
    control, treated = rng.random(n) < 0.2, None
    treated = ~control
    contacted = treated & (organic > np.median(organic))
    ordered = rng.random(n) < organic + 0.02 * contacted
    naive = ordered[contacted].mean() - ordered[control].mean()
    whole = Uplift(int(treated.sum()), int(ordered[treated].sum()), int(control.sum()), int(ordered[control].sum()),
                   contacted=int(contacted.sum()))
    assert naive > 0.04                                  # biased by who was chosen
    assert whole.uplift == pytest.approx(0.02, abs=0.004)
    low, high = whole.interval()
    assert low < 0.02 < high and whole.incremental == pytest.approx(whole.uplift * contacted.sum())


TARGETS = ("sub_id string, scenario string, wave int, mode string, decision string, reason string, arm string, "
           "channel string, offers array<string>, window_start date, window_end date, contact_date date")
HISTORY = ("sub_id string, scenario string, wave int, mode string, channel string, offers array<string>, "
           "window_start date, window_end date, contact_date date, channel_cost_yuan double, "
           "incentive_cost_yuan double, incentive_on_order boolean")
FEEDBACK = ("sub_id string, scenario string, wave int, channel string, delivered boolean, opened boolean, "
            "clicked boolean, replied boolean, satisfaction int")
COST = {"sms": 0.05, "outbound": 3.0, "crm_popup": 0.5}


def funnel(spark, targets, feedback, orders, days=None, would=()):
    """evaluate() on hand-built targets; the contacts are the targeted rows (what was exported); `would`: the held
    members the allocation would have chosen."""
    placed = (spark.createDataFrame(orders, "sub_id string, order_id string, product_id string, order_time string, "
                                            "action string, fee_yuan double")
              .withColumn("order_time", F.to_timestamp("order_time")))
    # The channel each unit was intended for before the allocation: here the one it had.
    targets_df = spark.createDataFrame(targets, TARGETS).withColumns({
        "intended_channel": F.col("channel"),
        "would_contact": (F.col("decision") == "targeted") | F.col("sub_id").isin(*would, "")})
    contacts = [(t[0], t[1], t[2], t[3], t[7], t[8], t[9], t[10], t[11], COST[t[7]], 5.0, True)
                for t in targets if t[4] == "targeted"]
    return evaluate(targets_df, spark.createDataFrame(contacts, HISTORY), spark.createDataFrame(feedback, FEEDBACK),
                    placed, Costs(0.6, days or {}))


def test_the_funnel_counts_each_stage_and_compares_the_arms(spark):
    start, end = D(2026, 4, 5), D(2026, 4, 9)

    def row(sub, decision, reason, arm, channel="sms"):
        return (sub, "data_no_plan", 1, "active", decision, reason, arm, channel, ["DP_20"], start, end, start)

    targets = [row("a", "targeted", "targeted", "treated"), row("b", "targeted", "targeted", "treated"),
               row("c", "targeted", "targeted", "treated"), row("d", "targeted", "targeted", "treated"),
               row("x", "control", "control", "control"), row("y", "control", "control", "control"),
               row("e", "suppressed", "cap", "treated", channel=None),   # crowded out: in the treated arm
               row("f", "suppressed", "opt_out", None, channel=None)]   # opted out: in no arm
    feedback = [("a", "data_no_plan", 1, "sms", True, None, True, True, 5),
                ("b", "data_no_plan", 1, "sms", True, None, False, False, 3),
                ("c", "data_no_plan", 1, "sms", False, None, None, None, None)]   # d: no receipt at all
    orders = [("a", "o1", "DP_20", at(6), "order", 20.0),
              ("a", "o1", "DP_20", at(6), "order", 20.0),       # the same order delivered twice counts once
              ("d", "o5", "DP_20", at(6), "order", 20.0),       # ordered, then cancelled: no conversion
              ("d", "o6", "DP_20", at(8), "cancel", 0.0),
              ("b", "o2", "DP_20", at(10), "order", 20.0),      # one day after the window
              ("x", "o3", "DP_20", at(7), "order", 20.0),       # a control member orders on their own
              ("e", "o7", "DP_20", at(7), "order", 20.0),       # so does the crowded-out one
              ("c", "o4", "DP_20", at(7), "cancel", 0.0)]       # a cancellation converts nobody
    done, rows, members = funnel(spark, targets, feedback, orders)
    assert {r.sub_id: r.outcome for r in done.collect()} == {"a": "converted", "b": "not_converted",
                                                            "c": "undelivered", "d": "no_receipt"}
    by = {(r["wave"], r["channel"]): r for r in rows}
    sms = by[(1, "sms")]
    assert {k: sms[k] for k in ("addressable", "pushed", "delivered", "reached", "converted", "control",
                                "control_converted", "satisfaction")} == {
        "addressable": 6, "pushed": 4, "delivered": 2, "reached": 1, "converted": 1, "control": 2,
        "control_converted": 1, "satisfaction": 4.0}
    # Four SMS at 0.05, and the 5-yuan credit paid only to the one who ordered.
    assert sms["channel_cost_yuan"] == pytest.approx(0.2) and sms["incentive_cost_yuan"] == pytest.approx(5.0)
    assert sms["revenue_yuan"] == pytest.approx(20.0) and sms["orders"] == 1
    # The scenario row compares the whole arms: 2 of the 5 in the treated arm (a, e) against 1 of 2, over the 4/5
    # contacted.
    whole = by[(1, "all")]
    assert (whole["addressable"], whole["assigned"], whole["assigned_converted"], whole["pushed"]) == (7, 5, 2, 4)
    assert whole["uplift"] == pytest.approx((2 / 5 - 1 / 2) / (4 / 5))
    assert whole["uplift_low"] < whole["uplift"] < whole["uplift_high"]
    assert (0, "all") not in by    # one wave: no whole-campaign row
    assert {(m.sub_id, m.arm, m.contacted, m.converted) for m in members.collect()} == {
        ("a", "treated", True, True), ("b", "treated", True, False), ("c", "treated", True, False),
        ("d", "treated", True, False), ("e", "treated", False, True), ("x", "control", False, True),
        ("y", "control", False, False)}


def test_a_wave_compares_the_chosen_with_the_would_be_chosen_and_keeps_the_whole_arms_as_a_check(spark):
    # A channel budget lets the allocation contact 40 of a treated arm of 400; the optimisation run on the control
    # group would have chosen 40 of its 400. The contacts add 20 points (12 of 40 against 4 of 40). The 360 left out
    # on each side order at rates that differ by noise alone (40 and 30), which the arms compared whole divide by the
    # tenth contacted.
    start, end = D(2026, 4, 5), D(2026, 4, 9)

    def row(sub, decision, reason, arm, channel="sms"):
        return (sub, "data_no_plan", 1, "active", decision, reason, arm, channel, ["DP_20"], start, end, start)

    targets = ([row(f"t{i}", "targeted", "targeted", "treated") for i in range(40)]
               + [row(f"u{i}", "suppressed", "capacity", "treated", channel=None) for i in range(360)]
               + [row(f"c{i}", "control", "control", "control") for i in range(40)]
               + [row(f"d{i}", "control", "control", "control") for i in range(360)])
    orders = [(f"{who}{i}", f"o-{who}{i}", "DP_20", at(7), "order", 20.0)
              for who, n in (("t", 12), ("c", 4), ("u", 40), ("d", 30)) for i in range(n)]
    _, rows, _ = funnel(spark, targets, [], orders, would=[f"c{i}" for i in range(40)])
    whole = next(r for r in rows if r["channel"] == "all")
    assert whole["comparison"] == "chosen"
    assert (whole["chosen"], whole["chosen_converted"], whole["control_chosen"],
            whole["control_chosen_converted"]) == (40, 12, 40, 4)
    assert whole["uplift"] == pytest.approx(0.2) and whole["incremental_orders"] == pytest.approx(8.0)
    assert whole["uplift_arms"] == pytest.approx((52 / 400 - 34 / 400) / (40 / 400))
    assert whole["uplift_high"] - whole["uplift_low"] < (whole["uplift_arms_high"] - whole["uplift_arms_low"]) / 2
    # Without a would-be member in the comparison group there is nothing to compare the chosen with: the arms whole.
    _, rows, _ = funnel(spark, targets, [], orders)
    whole = next(r for r in rows if r["channel"] == "all")
    assert (whole["comparison"], whole["control_chosen"]) == ("arms", 0)
    assert whole["uplift"] == pytest.approx(whole["uplift_arms"]) == pytest.approx(0.45)


def test_wave_two_is_measured_against_its_own_holdout_and_wave_zero_against_the_control_group(spark):
    w1, w2 = (D(2026, 4, 5), D(2026, 4, 9)), (D(2026, 4, 10), D(2026, 4, 20))

    def row(sub, wave, decision, arm, channel="sms", mode="active"):
        start, end = w1 if wave == 1 else w2
        reason = {"targeted": "targeted", "control": arm, "suppressed": "cap"}[decision]
        return (sub, "data_no_plan", wave, mode, decision, reason, arm, channel, ["DP_20"], start, end, start)

    targets = [row("a", 1, "targeted", "treated"), row("a", 1, "targeted", "treated", "crm_popup", "passive"),
               row("b", 1, "targeted", "treated"), row("c", 1, "targeted", "treated"),
               row("h", 1, "targeted", "treated"),
               row("x", 1, "control", "control"),
               row("b", 2, "targeted", "treated"), row("c", 2, "targeted", "treated"),
               row("h", 2, "control", "holdout"), row("x", 2, "control", "control")]
    orders = [("a", "o1", "DP_20", at(6), "order", 20.0), ("b", "o2", "DP_20", at(15), "order", 20.0),
              ("h", "o3", "DP_20", at(16), "order", 20.0), ("x", "o4", "DP_20", at(18), "order", 20.0)]
    _, rows, _ = funnel(spark, targets, [], orders)
    by = {(r["wave"], r["channel"]): r for r in rows}
    # A subscriber on two channels counts once in the scenario's row.
    assert by[(1, "all")]["pushed"] == 4 and by[(1, "sms")]["pushed"] == 4 and by[(1, "crm_popup")]["pushed"] == 1
    # Wave 2: b and c contacted against the holdout h (x, wave 1's control group, is not its comparison).
    second = by[(2, "all")]
    assert (second["assigned"], second["assigned_converted"], second["control"], second["control_converted"]) == (
        2, 1, 1, 1)
    # The whole campaign: wave 1's treated arm (a, b, c, h: three ordered in some wave) against x, who ordered too.
    whole = by[(0, "all")]
    assert (whole["assigned"], whole["assigned_converted"], whole["pushed"], whole["control"],
            whole["control_converted"]) == (4, 3, 4, 1, 1)


def test_a_same_day_tie_goes_to_the_contact_the_subscriber_acted_on_not_the_alphabet(spark):
    day = D(2026, 4, 1)
    contacts = [("a", "new_subscriber", 1, "active", "sms", ["DP_20"], day, D(2026, 4, 5), day, 0.05, 0.0, False),
                ("a", "new_subscriber", 1, "passive", "crm_popup", ["DP_20"], day, D(2026, 4, 5), day, 0.5, 0.0,
                 False)]
    placed = (spark.createDataFrame([("a", "o1", "DP_20", at(3))], ORDERS)
              .withColumn("order_time", F.to_timestamp("order_time")))
    sent = spark.createDataFrame(contacts, HISTORY)

    def owner(engaged: dict[str, bool]):
        receipts = spark.createDataFrame([(ch, flag, True) for ch, flag in engaged.items()],
                                         "channel string, engaged boolean, delivered boolean")
        out = attribute(placed, sent.join(receipts, "channel", "left"), spark.createDataFrame([], CONTROL))
        return out.collect()[0].channel

    assert owner({"sms": True, "crm_popup": False}) == "sms"          # clicked the SMS link
    assert owner({"sms": False, "crm_popup": True}) == "crm_popup"    # clicked the pop-up
    assert owner({"sms": False, "crm_popup": False}) == "sms"         # neither: the pushed (active) contact


def test_attribution_days_shorten_the_window_an_order_counts_in(spark):
    start, end = D(2026, 4, 5), D(2026, 4, 20)
    targets = [("a", "data_no_plan", 1, "active", "targeted", "targeted", "treated", "sms", ["DP_20"], start, end,
                start),
               ("b", "data_no_plan", 1, "active", "targeted", "targeted", "treated", "sms", ["DP_20"], start, end,
                start)]
    orders = [("a", "o1", "DP_20", at(7), "order", 20.0),     # the contact day + 2: inside 3 days
              ("b", "o2", "DP_20", at(8), "order", 20.0)]     # the contact day + 3: outside
    done, _, _ = funnel(spark, targets, [], orders, days={"data_no_plan": 3})
    assert {r.sub_id: r.outcome for r in done.collect()} == {"a": "converted", "b": "no_receipt"}
    done, _, _ = funnel(spark, targets, [], orders)
    assert {r.sub_id: r.outcome for r in done.collect()} == {"a": "converted", "b": "converted"}
