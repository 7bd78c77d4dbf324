"""Scenario templates, product fit, the contact policy and messages on hand-built subscribers.

The three worked examples of the seed (004, 2.10-2.12) are run as the seed states them: who lands on which
channel in which wave, not what the YAML says.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest

from flowops.definitions import Definitions
from flowops.errors import ConfigError
from flowops.scenarios.estimates import Cell, Estimate, estimate
from flowops.scenarios.plan import Earlier, Scorer, plan_wave
from flowops.scenarios.templates import load_channels
from flowops.segments import STAGES
from flowops.tags.definitions import load_library
from flowops.tags.engine import check_expressions
from tests.conftest import CONF

MONTH, CAMPAIGN = "2026-03", "2026-04"


@pytest.fixture(scope="module")
def conf() -> Definitions:
    return Definitions.load(CONF)


@pytest.fixture(scope="module")
def tag_schema(spark):
    from pyspark.sql import types as T

    empty = check_expressions(spark, load_library(CONF))
    fields = [T.StructField(f.name, f.dataType, True) for f in empty.schema.fields]
    return T.StructType(fields + [T.StructField(c, T.StringType(), True) for c in ("stage", "reason", "flow_type")])


def subscriber(**tags) -> dict:
    """A subscriber of MONTH with plain defaults: smartphone, mid value, no preference, active, no plans."""
    base = {"month": MONTH, "sub_id": "s1", "stage": "order", "reason": "data_without_plan", "value_tier": "mid",
            "is_smartphone": True, "has_account_manager": False, "channel_preference": None,
            "churned_this_month": False, "status": "active", "arpu_yuan": 40.0, "base_plan": "BP_EASY19",
            "data_plan": None, "idle_pack": None, "has_data_plan": False, "has_idle_pack": False,
            "base_allowance_mb_held": 0.0, "allowance_mb": 0.0, "dou_mb": 0.0, "idle_mb": 0.0,
            "payperuse_yuan": 0.0, "payperuse_mb": 0.0, "plan_fee": 19.0, "is_new_subscriber": False,
            "terminal_network_gen": "4G"}
    return {**base, **tags}


NO_PLAN = {"dou_mb": 250.0, "payperuse_yuan": 60.0}   # data without a plan: DP_20 saves 40 yuan


def frame(spark, schema, rows):
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


def estimates(conf, scenarios, uplift=None, organic=None):
    """The priors, with some cells' uplift (and scenarios' organic rate) set as if measured."""
    base = estimate([], [s.id for s in scenarios], conf.channels)
    cells = {**base.uplift, **{k: Estimate(v, 0.001, True) for k, v in (uplift or {}).items()}}
    organics = {**base.organic, **{k: Estimate(v, 0.001, True) for k, v in (organic or {}).items()}}
    return replace(base, uplift=cells, organic=organics)


def target(spark, schema, conf, rows, only=None, opt_outs=(), immunity=(), channels=None, budgets=None,
           control=False, wave=1, earlier=None, uplift=None, organic=None, exploration=0.0):
    """The plan of one wave for hand-built subscribers: every unit of the wave with its decision (pandas). No
    control group and no exploration unless asked."""
    scenarios = [s for s in conf.scenarios if only is None or s.id in only]
    update = {}
    if not control:
        update["control_rate"] = 0.0
    scenarios = [replace(s, model=s.model.model_copy(update={
        **update, **({"budget_yuan": budgets.get(s.id)} if budgets is not None else {})})) for s in scenarios]
    channels = channels or conf.channels
    policy = channels.policy.model_copy(update={"exploration_share": exploration})
    channels = replace(channels, policy=policy)
    outs = spark.createDataFrame(list(opt_outs), "sub_id string, opt_out_all boolean, opt_out_channels array<string>")
    imm = spark.createDataFrame(list(immunity), "sub_id string, family string, rounds int")
    plan = plan_wave(frame(spark, schema, rows), replace(conf, channels=channels, scenarios=scenarios), MONTH,
                     CAMPAIGN, wave, opt_outs=outs, immunity=imm,
                     estimates=estimates(conf, scenarios, uplift, organic), scorer=Scorer("estimates"),
                     earlier=earlier)
    return plan


def rows_of(plan) -> list[dict]:
    return sorted(plan.units.to_dict("records"), key=lambda r: (r["sub_id"], r["scenario"], r["mode"]))


def earlier_wave(spark, members, undelivered=(), used_caps=None, spent=None) -> Earlier:
    """What wave 1 left for wave 2: its non-converters (sub_id, scenario, arm) and whose contact failed."""
    return Earlier(members=spark.createDataFrame(list(members), "sub_id string, scenario string, arm string"),
                   undelivered=spark.createDataFrame(list(undelivered), "sub_id string, scenario string"),
                   used_caps=used_caps or {}, used_attempts={}, booked={}, spent=spent or {})


# ------------------------------------------------------------------------------------------------ templates
def test_the_shipped_scenarios_cover_every_stage_and_check(conf):
    assert len(conf.scenarios) >= 12
    assert {s.model.stage for s in conf.scenarios} == set(STAGES)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("NOT has_data_plan", "NOT has_data_plan_x"), r"data_no_plan\.yml: target: unknown tag\(s\) "
                                                                       r"has_data_plan_x"),
    (lambda t: t.replace("{fit: cheapest_data_plan}", "{fit: fixed, ids: [NO_SUCH]}"),
     r"product\.ids: unknown product NO_SUCH"),
    (lambda t: t.replace("{fit: cheapest_data_plan}", "{fit: fixed, ids: [DP_5, DP_10, DP_20, DP_30]}"),
     r"product\.ids: at most 3 offers per contact"),
    (lambda t: t.replace("active: sms, start_day: 5", "active: pigeon, start_day: 5"),
     r"waves\[0\]\.active: unknown channel 'pigeon'"),
    (lambda t: t.replace("passive: web, start_day: 10", "passive: sms, start_day: 10"),
     r"waves\[1\]\.passive: channel sms is active"),
    (lambda t: t.replace("passive: web, start_day: 10", "passive: web, start_day: 8"),
     r"waves\[1\]: waves overlap: wave 2 starts on day 8"),
    (lambda t: t.replace("{{ saving_yuan|round(1) }}元{% if", "{{ savings }}元{% if"),
     r"messages\.sms: unknown variable\(s\) savings"),
    (lambda t: t.replace("{fit: cheapest_data_plan}", "{fit: cheapest_data_plan, allow_extra_cost: true}"),
     r"messages\.sms: product\.allow_extra_cost .* must say so with \{\{ extra_cost_yuan \}\}"),
    (lambda t: t.replace("NOT has_data_plan AND", "reflect('java.lang.System', 'exit', 0) AND"),
     r"target: refused: reflect\(\) calls Java methods"),
    (lambda t: t + "control_rate: 0.2\n", r"key 'control_rate' is given twice"),
    (lambda t: t + "evaluation: {metrics: [uplift]}\n", r"evaluation\.metrics"),   # removed: it did nothing
])
def test_a_broken_template_fails_naming_its_file_and_key(tmp_path, edit, message):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "scenarios" / "data_no_plan.yml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")

    with pytest.raises(ConfigError, match=message):
        Definitions.load(conf)


def test_a_policy_naming_a_passive_channel_for_vips_or_an_unknown_model_feature_is_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "channels.yml").read_text(encoding="utf-8")
    (conf / "channels.yml").write_text(text.replace("vip_channel: manager", "vip_channel: app"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"channels\.yml: .*policy\.vip_channel: channel app is passive, not active"):
        load_channels(conf)
    (conf / "channels.yml").write_text(text.replace("numeric: []", "numeric: [tenure_monthsx]"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"policy\.uplift_model\.numeric: unknown tag\(s\) tenure_monthsx"):
        Definitions.load(conf)


# ------------------------------------------------------------------------------------------ worked examples
def test_example_1_data_without_a_plan_gets_the_cheapest_tier_by_sms_then_the_web_hall(spark, tag_schema, conf):
    # 250 MB billed pay-per-use at 0.29 yuan/MB (capped at 60): DP_10 would cost 10 + 150 x 0.29 = 53.5,
    # DP_20 (300 MB) 20, DP_30 30: DP_20, saving 60 - 20 = 40.
    heavy = subscriber(sub_id="heavy", **NO_PLAN)
    # 20 MB pay-per-use cost 5.8; DP_5 (30 MB) costs 5: the cheapest tier, saving 0.8.
    light = subscriber(sub_id="light", dou_mb=20.0, payperuse_yuan=5.8, payperuse_mb=20.0)
    out = rows_of(target(spark, tag_schema, conf, [heavy, light], only={"data_no_plan"}))

    assert [(r["sub_id"], r["product_id"], r["saving_yuan"]) for r in out] == [("heavy", "DP_20", 40.0),
                                                                               ("light", "DP_5", 0.8)]
    for r in out:   # no preference, not high value: SMS from the 5th, results on the 9th
        assert (r["decision"], r["mode"], r["channel"], r["window_start"], r["window_end"]) == (
            "targeted", "active", "sms", dt.date(2026, 4, 5), dt.date(2026, 4, 9))
        assert (r["incentive"], r["incentive_yuan"]) == ("credit", 5.0)
    assert "20元300M流量包可省40.0元，再赠5元话费" in out[0]["message"]
    # Wave 2 (from the 10th to month end): wave 1's non-converters on the web hall.
    wave2 = rows_of(target(spark, tag_schema, conf, [heavy, light], only={"data_no_plan"}, wave=2,
                           earlier=earlier_wave(spark, [("heavy", "data_no_plan", "treated")])))
    assert [(r["sub_id"], r["mode"], r["channel"], r["window_start"], r["window_end"]) for r in wave2] == [
        ("heavy", "passive", "web", dt.date(2026, 4, 10), dt.date(2026, 4, 30))]


def test_example_1_high_value_goes_to_dear_channels_when_they_pay_and_low_value_never(spark, tag_schema, conf):
    rows = [subscriber(sub_id="vip", value_tier="vip", has_account_manager=True, **NO_PLAN),
            subscriber(sub_id="high", value_tier="high", **NO_PLAN),
            subscriber(sub_id="low", value_tier="low", **NO_PLAN),
            subscriber(sub_id="prefers_sms", value_tier="high", channel_preference="sms", **NO_PLAN)]
    # Calls and visits measured to change far more than an SMS (as the seed's high-cost channels should).
    dear = {("data_no_plan", "outbound"): 0.20, ("data_no_plan", "manager"): 0.30}
    out = {r["sub_id"]: r["channel"] for r in rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"},
                                                             uplift=dear))}
    # VIPs without a preference: their account manager; high value: an outbound call; low value: never a call
    # for a cheap product (value-cost matching), whatever it would change; a stated preference is followed.
    assert out == {"vip": "manager", "high": "outbound", "low": "sms", "prefers_sms": "sms"}
    # When a call or a visit changes no more than an SMS, it is not worth its cost: the SMS carries it.
    same = {("data_no_plan", "outbound"): 0.02, ("data_no_plan", "manager"): 0.02}
    plain = {r["sub_id"]: r["channel"] for r in rows_of(target(spark, tag_schema, conf, rows[:3],
                                                               only={"data_no_plan"}, uplift=same))}
    assert plain == {"vip": "sms", "high": "sms", "low": "sms"}


def test_example_2_new_subscribers_sms_first_then_app_hall_if_it_failed_or_toolbar_after_five_days(
        spark, tag_schema, conf):
    new = {"stage": "wake", "reason": "new_subscriber", "is_new_subscriber": True}
    rows = [subscriber(sub_id=name, **new) for name in ("delivered", "failed", "ordered", "feature")]
    rows[3]["is_smartphone"] = False
    first = rows_of(target(spark, tag_schema, conf, rows, only={"new_subscriber"}))
    # Wave 1, days 1-5: an SMS (active first), with the trial data, and nothing passive yet.
    assert {(r["sub_id"], r["mode"], r["channel"]) for r in first} == {
        (name, "active", "sms") for name in ("delivered", "failed", "ordered", "feature")}
    assert all("300M体验流量" in r["message"] and r["window_end"] == dt.date(2026, 4, 5) for r in first)
    # Wave 2, from day 6: "ordered" converted in wave 1 and is not in it; the SMS to "failed" was not delivered:
    # the mobile-app hall; "delivered" had no result after 5 days: the browser toolbar; a feature phone has
    # neither app hall nor browser toolbar.
    after = earlier_wave(spark, [(s, "new_subscriber", "treated") for s in ("delivered", "failed", "feature")],
                         undelivered=[("failed", "new_subscriber"), ("feature", "new_subscriber")],
                         used_caps={(s, "active"): 1 for s in ("delivered", "failed", "ordered", "feature")})
    worth = {("new_subscriber", "app"): 0.04, ("new_subscriber", "toolbar"): 0.04}   # measured: they pay their way
    second = {r["sub_id"]: (r["mode"], r["channel"], r["reason"]) for r in rows_of(target(
        spark, tag_schema, conf, rows, only={"new_subscriber"}, wave=2, earlier=after, uplift=worth))}
    assert second == {"delivered": ("passive", "toolbar", "targeted"), "failed": ("passive", "app", "targeted"),
                      "feature": ("passive", None, "unreachable")}


def test_example_3_idle_time_data_without_a_pack_gets_the_seeds_message_with_the_opt_out_line(
        spark, tag_schema, conf):
    idle = subscriber(sub_id="idle", stage="order", reason="idle_without_pack", dou_mb=80.0, idle_mb=32.0,
                      payperuse_yuan=12.0, arpu_yuan=31.0)
    [row] = rows_of(target(spark, tag_schema, conf, [idle], only={"idle_no_pack"}))

    assert (row["decision"], row["product_id"], row["channel"]) == ("targeted", "IDLE_5", "sms")
    assert row["message"] == "您上月闲时流量32M，建议您办理5元闲时包！办理即赠5元话费哦！回复TD退订"
    assert row["sms_segments"] == 1
    # Wave 2: the app hall, or the web hall on a feature phone.
    feature = subscriber(sub_id="feature", stage="order", reason="idle_without_pack", dou_mb=80.0, idle_mb=32.0,
                         payperuse_yuan=12.0, arpu_yuan=31.0, is_smartphone=False)
    after = earlier_wave(spark, [("idle", "idle_no_pack", "treated"), ("feature", "idle_no_pack", "treated")])
    worth = {("idle_no_pack", "app"): 0.03, ("idle_no_pack", "web"): 0.02}
    assert {r["sub_id"]: r["channel"] for r in rows_of(target(spark, tag_schema, conf, [idle, feature],
                                                              only={"idle_no_pack"}, wave=2, earlier=after,
                                                              uplift=worth))} == {
        "idle": "app", "feature": "web"}


# ------------------------------------------------------------------------------------------------ the policy
def test_never_an_offer_the_subscriber_holds_or_one_that_costs_more_than_it_saves(spark, tag_schema, conf):
    holds = subscriber(sub_id="holds", stage="lift", reason="low_usage", dou_mb=20.0)
    rows = [subscriber(sub_id="tiny", dou_mb=2.0, payperuse_yuan=0.58, payperuse_mb=2.0),   # DP_5 costs 5 > 0.58
            {**holds, "data_plan": "DP_10"}]
    out = {r["sub_id"]: r for r in rows_of(target(spark, tag_schema, conf, rows,
                                                  only={"data_no_plan", "handset_changer_lift"}))}
    assert out["tiny"]["reason"] == "no_saving" and out["tiny"]["extra_cost_yuan"] == pytest.approx(4.42)
    held = target(spark, tag_schema, conf, [{**holds, "handset_changed": True, "data_plan": "DP_10"}],
                  only={"handset_changer_lift"})
    assert [r["reason"] for r in rows_of(held)] == ["no_fit"]


def test_credit_never_above_half_the_bill(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"bill{b}", dou_mb=250.0, payperuse_yuan=60.0, arpu_yuan=b) for b in (30.0, 7.0, 1.5)]
    out = {r["sub_id"]: (r["incentive"], r["incentive_yuan"]) for r in
           rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}))}
    assert out == {"bill30.0": ("credit", 5.0), "bill7.0": ("credit", 3.0), "bill1.5": ("none", 0.0)}


def test_one_active_contact_per_cycle_goes_to_the_scenario_worth_most(spark, tag_schema, conf):
    both = subscriber(sub_id="both", stage="order", dou_mb=250.0, payperuse_yuan=60.0, idle_mb=120.0)
    plan = target(spark, tag_schema, conf, [both], only={"data_no_plan", "idle_no_pack"})
    active = [r for r in rows_of(plan) if r["mode"] == "active"]
    assert sorted(r["reason"] for r in active) == ["cap", "targeted"]
    kept = next(r for r in active if r["reason"] == "targeted")
    assert kept["scenario"] == "data_no_plan"   # DP_20 for 6 months is worth more than a 5-yuan idle pack
    # The passive slot of the cycle: one of the two scenarios' wave-2 contacts was planned, not both.
    assert plan.planned_later == 1


def maximising(conf, maximise: str):
    """The conf's channels with `policy.maximise` set."""
    return replace(conf.channels, policy=conf.channels.policy.model_copy(update={"maximise": maximise}))


def test_maximising_orders_gives_the_slot_to_the_contact_that_adds_most_orders_not_most_yuan(spark, tag_schema,
                                                                                             conf):
    # One active slot, two scenarios worth making: the data plan's SMS adds fewer orders (2 points) but each is
    # worth far more than an idle pack's (6 points).
    both = subscriber(sub_id="both", stage="order", dou_mb=250.0, payperuse_yuan=60.0, idle_mb=120.0)
    uplift = {("data_no_plan", "sms"): 0.02, ("idle_no_pack", "sms"): 0.06}

    def kept(maximise: str) -> dict:
        plan = target(spark, tag_schema, conf, [both], only={"data_no_plan", "idle_no_pack"},
                      channels=maximising(conf, maximise), uplift=uplift)
        active = [r for r in rows_of(plan) if r["mode"] == "active"]
        assert sorted(r["reason"] for r in active) == ["cap", "targeted"]
        return {r["scenario"]: r for r in active}

    by_value, by_orders = kept("value"), kept("orders")
    assert by_value["data_no_plan"]["reason"] == "targeted"
    assert by_orders["idle_no_pack"]["reason"] == "targeted"
    # Both contacts are worth making either way; the yuan are what the value policy gives up.
    assert by_orders["idle_no_pack"]["expected_value"] > 0
    assert by_value["data_no_plan"]["expected_value"] > by_orders["idle_no_pack"]["expected_value"]


def test_opted_out_churned_and_immune_subscribers_are_suppressed(spark, tag_schema, conf):
    rows = [subscriber(sub_id=s, **NO_PLAN) for s in ("out", "gone", "immune", "twice", "other_family", "ok")]
    rows[1]["churned_this_month"] = True
    out = {r["sub_id"]: r["reason"] for r in rows_of(target(
        spark, tag_schema, conf, rows, only={"data_no_plan"}, opt_outs=[("out", True, [])],
        immunity=[("immune", "data_plan", 3), ("twice", "data_plan", 2), ("other_family", "booster", 3)]))}
    # Immunity is per offer family: three cycles unconverted on any data plan, whatever the tier offered.
    assert out == {"out": "opt_out", "gone": "churned", "immune": "immune", "twice": "targeted",
                   "other_family": "targeted", "ok": "targeted"}


def test_a_full_scarce_channel_goes_to_the_contacts_worth_most_and_the_rest_fall_back(spark, tag_schema, conf):
    channels = conf.channels
    manager = channels["manager"].model_copy(update={"daily_capacity": 1})
    tight = replace(channels, channels=tuple(manager if c.id == "manager" else c for c in channels.channels))
    # data_no_plan's wave 1 lasts 5 days: 5 manager slots for 8 VIPs; the 5 worth most keep them (DP_30 for the
    # heavier users), the others fall back to their SMS; every visit on its own day.
    rows = [subscriber(sub_id=f"vip{i}", value_tier="vip", has_account_manager=True, dou_mb=100.0 + 60 * i,
                       payperuse_yuan=min(60.0, 0.29 * (100 + 60 * i))) for i in range(8)]
    out = rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}, channels=tight,
                         uplift={("data_no_plan", "manager"): 0.30}))
    visits = [r for r in out if r["channel"] == "manager"]
    assert len(visits) == 5 and Counter(r["channel"] for r in out)["sms"] == 3
    # vip4-7 (DP_30) are worth most; vip2 and vip3 (both DP_20, equal value) tie for the fifth slot, which the
    # options' fixed order gives to one of them.
    visited = {r["sub_id"] for r in visits}
    assert {"vip4", "vip5", "vip6", "vip7"} < visited and len(visited & {"vip2", "vip3"}) == 1
    assert sorted(r["contact_date"] for r in visits) == [dt.date(2026, 4, d) for d in range(5, 10)]
    assert all(r["decision"] == "targeted" for r in out)


def test_a_budget_goes_to_the_most_value_per_yuan_and_counts_what_earlier_waves_spent(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"s{i}", **NO_PLAN) for i in range(6)]
    plan = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, budgets={"data_no_plan": 1.0})
    spent = sum(r["cost_yuan"] for r in rows_of(plan) if r["decision"] == "targeted")
    assert 0 < spent <= 1.0
    assert Counter(r["reason"] for r in rows_of(plan))["budget"] >= 1
    # Wave 2 with 0.9 of the 1.0 already spent by wave 1: at most 0.1 more, across the whole campaign.
    after = earlier_wave(spark, [(f"s{i}", "data_no_plan", "treated") for i in range(6)],
                         spent={"data_no_plan": 0.9})
    second = rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}, wave=2, earlier=after,
                            budgets={"data_no_plan": 1.0}))
    assert sum(r["cost_yuan"] for r in second if r["decision"] == "targeted") <= 0.1 + 1e-9
    assert {r["reason"] for r in second} <= {"budget", "targeted"}


@pytest.mark.parametrize("maximise", ["value", "orders"])
def test_no_contact_is_worth_less_than_nothing_unless_the_scenario_is_care(spark, tag_schema, conf, maximise):
    # Measured: an SMS for data_no_plan changes nothing, and these subscribers order on their own anyway: the
    # credit would be paid for orders that would have come regardless. high_value_care is care: a gift at a loss.
    # Maximising orders changes which contacts worth making come first, never which are worth making.
    rows = [subscriber(sub_id="sure", **NO_PLAN),
            subscriber(sub_id="vip", stage="retain", reason="steady_usage", value_tier="vip",
                       churn_risk_level="low", arpu_yuan=150.0)]
    plan = target(spark, tag_schema, conf, rows, only={"data_no_plan", "high_value_care"},
                  uplift={("data_no_plan", "sms"): 0.0, ("high_value_care", "sms"): 0.0},
                  organic={"data_no_plan": 0.3}, channels=maximising(conf, maximise))
    out = {r["sub_id"]: r for r in rows_of(plan)}
    assert out["sure"]["reason"] == "no_value"
    assert out["vip"]["decision"] == "targeted" and out["vip"]["expected_value"] < 0
    assert out["vip"]["cost_yuan"] <= conf.scenarios[[s.id for s in conf.scenarios].index("high_value_care")
                                                     ].model.care.max_cost_yuan


def test_the_draw_comes_after_eligibility_a_message_that_fails_leaves_both_arms(spark, tag_schema, conf):
    # idle_no_pack's SMS rounds idle_mb: a null there fails to render for everyone alike, before the draw.
    rows = [subscriber(sub_id=f"c{i:04d}", dou_mb=80.0, idle_mb=None if i % 4 == 0 else 40.0, payperuse_yuan=12.0)
            for i in range(1200)]
    plan = target(spark, tag_schema, conf, rows, only={"idle_no_pack"}, control=True)
    out = plan.units
    broken = out["sub_id"].isin([f"c{i:04d}" for i in range(0, 1200, 4)])
    assert (out.loc[broken, "reason"] != "targeted").all() and out.loc[broken, "arm"].isna().all()
    assert set(out.loc[broken, "reason"]) <= {"no_fit", "no_message"}
    drawn = out[~broken]
    share = (drawn["arm"] == "control").mean()
    assert abs(share - 0.1) < 3 * (0.1 * 0.9 / len(drawn)) ** 0.5
    assert drawn.loc[drawn["arm"] == "control", "message"].isna().all()   # never rendered for the export
    again = target(spark, tag_schema, conf, rows, only={"idle_no_pack"}, control=True).units
    assert set(again.loc[again["arm"] == "control", "sub_id"]) == set(drawn.loc[drawn["arm"] == "control", "sub_id"])


def test_control_members_take_no_scarce_slot(spark, tag_schema, conf):
    channels = conf.channels
    manager = channels["manager"].model_copy(update={"daily_capacity": 1})
    tight = replace(channels, channels=tuple(manager if c.id == "manager" else c for c in channels.channels))
    rows = [subscriber(sub_id=f"vip{i:02d}", value_tier="vip", has_account_manager=True, **NO_PLAN)
            for i in range(40)]
    out = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, channels=tight, control=True,
                 uplift={("data_no_plan", "manager"): 0.30}).units
    # 5 days x 1 visit: all five go to the contacted, whatever the control group would have had.
    assert (out[(out["decision"] == "targeted")]["channel"] == "manager").sum() == 5
    assert (out["decision"] == "control").sum() >= 1


def test_the_control_group_is_chosen_by_the_same_rule_as_the_contacted(spark, tag_schema, conf):
    # A budget for 80 SMS with credit: the heavier pay-per-use users (DP_20, worth more per yuan) get them, the
    # lighter ones (DP_10) none. The control group is marked as the same optimisation would have contacted it, with
    # the budget scaled to its size: its heavier members, in about the same share, never a lighter one.
    rows = [subscriber(sub_id=f"s{i:03d}", dou_mb=100.0 + (200 if i % 2 else 0), payperuse_yuan=60.0)
            for i in range(600)]
    out = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, control=True,
                 budgets={"data_no_plan": 20.0}).units
    heavy = out["sub_id"].str[1:].astype(int) % 2 == 1
    treated, control = out["arm"] == "treated", out["arm"] == "control"
    assert (out.loc[treated, "would_contact"] == (out.loc[treated, "decision"] == "targeted")).all()
    contacted = out[treated & (out["decision"] == "targeted")]
    would = out[control & out["would_contact"].eq(True)]
    assert len(contacted) == 80 and heavy[contacted.index].all()
    assert len(would) >= 3 and heavy[would.index].all()
    assert not out.loc[control & ~heavy, "would_contact"].any()
    share_treated, share_control = len(contacted) / treated.sum(), len(would) / control.sum()
    assert abs(share_control - share_treated) < 0.06
    assert (out.loc[control, "decision"] == "control").all() and out.loc[control, "message"].isna().all()


def test_a_held_member_treated_elsewhere_would_have_been_contacted_only_if_worth_more_than_that_contact():
    from flowops.scenarios import allocate
    from flowops.scenarios.plan import _problem, _would_contact

    day = dt.date(2026, 4, 5)

    def option(sub, scenario, arm, weight):
        return {"sub_id": sub, "scenario": scenario, "wave": 1, "mode": "active", "channel": "sms", "rank": 0,
                "weight": weight, "cost_yuan": 0.05, "window_start": day, "window_end": day, "arm": arm}

    # x and y are treated in scenario a (contacted: one active contact each, their cap) and held out of b; b would
    # have been worth more than a to x (one solve would have given x b instead), less to y. z is held out of b only.
    opts = pd.DataFrame([option("x", "a", "treated", 1.0), option("y", "a", "treated", 1.0),
                         option("x", "b", "control", 2.0), option("y", "b", "control", 0.5),
                         option("z", "b", "control", 0.3), option("w", "b", "treated", 0.3)])
    limits = allocate.Limits(caps={"active": 1, "passive": 1}, attempts={"a": 1, "b": 1})
    treated = _problem(opts[opts["arm"] == "treated"])
    chosen = allocate.solve(treated, limits).chosen
    would = _would_contact(opts, chosen, limits, wave=1)
    assert sorted(u[0] for u in would) == ["x", "z"]


def test_each_scenarios_held_members_are_chosen_as_often_as_its_treated_ones_whatever_the_control_rates():
    from flowops.scenarios import allocate
    from flowops.scenarios.plan import _problem, _would_contact

    day = dt.date(2026, 4, 5)

    def option(sub, scenario, arm, weight):
        return {"sub_id": sub, "scenario": scenario, "wave": 1, "mode": "active", "channel": "sms", "rank": 0,
                "weight": weight, "cost_yuan": 0.05, "window_start": day, "window_end": day, "arm": arm}

    # 100 SMS on the day. A retention scenario worth 5 a contact holds out 40%: 60 treated, 40 held. A plan offer
    # worth 1 to 2 holds out 10%: 90 treated, 10 held. The treated allocation sends the 60 retention SMS and the 40
    # best offers (worth 1.556 and more): a held member would have had an SMS if worth more than that — all 40
    # retention members and the 4 offers worth 1.65 to 1.95. Allocated on their own with the capacity scaled to the
    # held arm's share (a third: 33 SMS), the retention members took every one and no offer was chosen.
    opts = pd.DataFrame([option(f"r{i}", "retain", "treated", 5.0) for i in range(60)]
                        + [option(f"q{i}", "retain", "control", 5.0) for i in range(40)]
                        + [option(f"p{i}", "plan", "treated", 1 + i / 90) for i in range(90)]
                        + [option(f"h{i}", "plan", "control", 1.05 + i / 10) for i in range(10)])
    limits = allocate.Limits(caps={"active": 1, "passive": 1}, attempts={"retain": 1, "plan": 1}, daily={"sms": 100})
    chosen = allocate.solve(_problem(opts[opts["arm"] == "treated"]), limits).chosen
    assert len(chosen) == 100 and chosen["weight"].min() == pytest.approx(1 + 50 / 90)
    would = {u[0] for u in _would_contact(opts, chosen, limits, wave=1)}
    assert would == {f"q{i}" for i in range(40)} | {"h6", "h7", "h8", "h9"}
    # Options worth the marginal SMS: held ones are chosen at the treated ones' rate (2 of 4 here). Within the
    # solver's gap is the same worth: a fallback channel's weight sits a millionth below its first channel's.
    for treated_worth in (1.0, 1.0 * (1 - 1e-6)):
        tied = pd.DataFrame([option(f"t{i}", "plan", "treated", treated_worth) for i in range(4)]
                            + [option(f"u{i}", "plan", "control", 1.0) for i in range(10)])
        limits = allocate.Limits(caps={"active": 1, "passive": 1}, attempts={"plan": 1}, daily={"sms": 2})
        chosen = allocate.solve(_problem(tied[tied["arm"] == "treated"]), limits).chosen
        assert len(_would_contact(tied, chosen, limits, wave=1)) == 5


def test_a_tie_at_the_margin_is_settled_at_the_rate_of_the_same_windows_options_not_every_overlapping_one():
    from flowops.scenarios import allocate
    from flowops.scenarios.plan import _would_contact

    d1, d3 = dt.date(2026, 4, 1), dt.date(2026, 4, 3)

    def option(sub, scenario, arm, end):
        return {"sub_id": sub, "scenario": scenario, "wave": 1, "mode": "active", "channel": "sms", "rank": 0,
                "weight": 0.001, "cost_yuan": 0.05, "window_start": d1, "window_end": end, "arm": arm}

    # Two care scenarios worth the same, 2 SMS a day: an apology on the 1st only (100 treated, 100 held), a thank-you
    # over the 1st to the 3rd (1,000 treated). The allocation sent 2 apologies on the 1st and 4 thank-yous after:
    # 2% of the apologies, so 2 of the 100 held ones. The 1,000 thank-yous overlap the 1st but competed for the
    # other days: counted as the apology's rivals, they settled the tie at 2 in 1,100, no held apology at all.
    opts = pd.DataFrame([option(f"a{i}", "apology", "treated", d1) for i in range(100)]
                        + [option(f"h{i}", "apology", "control", d1) for i in range(100)]
                        + [option(f"t{i}", "thanks", "treated", d3) for i in range(1000)])
    chosen = opts.iloc[[0, 1, 200, 201, 202, 203]].assign(
        contact_date=[d1, d1, dt.date(2026, 4, 2), dt.date(2026, 4, 2), d3, d3])
    limits = allocate.Limits(caps={"active": 1, "passive": 1}, attempts={"apology": 1, "thanks": 1},
                             daily={"sms": 2})
    assert len(_would_contact(opts, chosen, limits, wave=1)) == 2


def test_an_exploring_unit_gets_a_random_worthwhile_channel(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"h{i:03d}", value_tier="high", **NO_PLAN) for i in range(300)]
    dear = {("data_no_plan", "outbound"): 0.20}
    out = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, uplift=dear, exploration=0.3).units
    explorers = out[out["reason"] == "explore"]
    assert 0.2 < len(explorers) / len(out) < 0.4
    # The best channel is the call; explorers draw between the call and the SMS, both worth making.
    assert set(explorers["channel"]) == {"outbound", "sms"}
    assert set(out.loc[out["reason"] == "targeted", "channel"]) == {"outbound"}
    assert (out["expected_value"] > 0).all()


def test_held_members_draw_exploration_alike_and_would_be_contacted_on_the_drawn_channel(spark, tag_schema, conf):
    # The call is the best channel; a tenth of the SMS explorers' would be sent. The control group draws
    # exploration at the treated arm's rate, and its explorers are marked would-be on the channel they drew: the
    # intended channel of both arms' explorers is the drawn one (before, held members were judged on the call only).
    rows = [subscriber(sub_id=f"h{i:04d}", value_tier="high", **NO_PLAN) for i in range(1500)]
    dear = {("data_no_plan", "outbound"): 0.20}
    out = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, uplift=dear, exploration=0.3,
                 control=True).units
    treated, held = out[out["arm"] == "treated"], out[out["arm"] == "control"]
    assert len(held) > 60
    for arm in (treated, held):
        assert 0.2 < arm["explore"].mean() < 0.4
        assert set(arm.loc[arm["explore"], "intended_channel"]) == {"outbound", "sms"}
        assert set(arm.loc[~arm["explore"], "intended_channel"]) == {"outbound"}
    would = held[held["would_contact"].eq(True)]
    assert set(would.loc[would["explore"], "channel"]) == {"outbound", "sms"}
    assert (held.loc[held["explore"], "decision"] == "control").all()


def test_the_sms_opt_out_line_counts_toward_the_segments():
    from flowops.scenarios.messages import segments, with_opt_out

    assert with_opt_out("回复KT办理") == "回复KT办理，回复TD退订"
    assert with_opt_out("办理即赠5元话费哦！") == "办理即赠5元话费哦！回复TD退订"
    assert with_opt_out("已含回复TD退订") == "已含回复TD退订"
    conf = Definitions.load(CONF)
    assert segments(pd.Series(["x" * 64 + "，回复TD退订"]), pd.Series(["sms"]), conf.channels) == [2]


def test_cells_a_spreadsheet_would_run_are_neutralised():
    from flowops.scenarios.exports import safe_cell

    assert [safe_cell(v) for v in ("=HYPERLINK(\"x\")", "+86", "-1", "@SUM(A1)", "\tx", "\rx", "AM01001", 13800000001,
                                   None, "您上月")] == [
        "'=HYPERLINK(\"x\")", "'+86", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "AM01001", "13800000001", "", "您上月"]


def test_estimates_learn_uplift_against_the_control_group_not_raw_response():
    conf = Definitions.load(CONF)
    ids = [s.id for s in conf.scenarios]
    # data_no_plan converts 12% of its contacted, but 12% of its control group order anyway: no uplift. idle_no_pack
    # converts 6% against 1%.
    cells = [Cell("data_no_plan", "sms", 4000, 480, 600, 72), Cell("idle_no_pack", "sms", 4000, 240, 600, 6)]
    for other in ("falling_usage_retention", "zero_usage_smartphone", "low_usage_app_lift"):
        cells.append(Cell(other, "sms", 2000, 60, 300, 6))
    e = estimate(cells, ids, conf.channels)
    assert e.uplift[("data_no_plan", "sms")].mean < 0.01 < e.uplift[("idle_no_pack", "sms")].mean
    assert e.response[("data_no_plan", "sms")] > e.response[("idle_no_pack", "sms")]   # what the old policy ranked by
    assert e.organic["data_no_plan"].mean == pytest.approx(0.12, abs=0.02)
    # A cell measured on few members moves little from its prior; an unmeasured one keeps prior + the common shift.
    few = estimate([Cell("data_no_plan", "outbound", 10, 2, 2, 0)], ids, conf.channels)
    prior = conf.channels["outbound"].uplift_prior
    assert abs(few.uplift[("data_no_plan", "outbound")].mean - prior) < 0.04
    assert few.uplift[("idle_no_pack", "outbound")].measured is False


def test_a_cell_is_measured_on_the_chosen_of_both_arms_unbiased_and_tighter_than_the_whole_arms():
    import numpy as np

    from flowops.scenarios.estimates import Chosen, measured

    # The allocation contacts a third of the treated arm, mostly those who order anyway (6% against 1%); a contact
    # adds 4 points. The control members the same rule would have chosen are marked alike.
    rng = np.random.default_rng(7)
    n_t, n_c, effect = 30_000, 3_000, 0.04
    organic = Estimate(0.035, 0.002, True)
    fits = {"chosen": [], "whole": [], "naive": []}
    for _ in range(200):
        p_t, p_c = rng.choice([0.01, 0.06], n_t), rng.choice([0.01, 0.06], n_c)
        chosen_t = rng.random(n_t) < np.where(p_t > 0.05, 0.6, 0.07)
        chosen_c = rng.random(n_c) < np.where(p_c > 0.05, 0.6, 0.07)
        y_t = rng.random(n_t) < p_t + effect * chosen_t
        y_c = rng.random(n_c) < p_c
        chosen = Chosen(int(chosen_t.sum()), int(y_t[chosen_t].sum()), int(chosen_c.sum()), int(y_c[chosen_c].sum()))
        cell = Cell("s", "sms", n_t, int(y_t.sum()), n_c, int(y_c.sum()), int(chosen_t.sum()), chosen)
        fits["chosen"].append(measured(cell, organic, 0.02, 30))
        fits["whole"].append(measured(replace(cell, chosen=None), organic, 0.02, 30))
        fits["naive"].append(y_t[chosen_t].mean() - y_c.mean())
    chosen, whole = np.array(fits["chosen"]), np.array(fits["whole"])
    assert abs(chosen[:, 0].mean() - effect) < 0.002 and abs(whole[:, 0].mean() - effect) < 0.004
    assert np.mean(fits["naive"]) > effect + 0.015          # the contacted against the whole control group: biased
    # Tighter, and the variance it reports is the one it has.
    assert chosen[:, 0].std() < 0.8 * whole[:, 0].std()       # variance about halved here
    # Without a chosen control member: the whole arms alone, never the contacted against the whole control group.
    lone = Cell("s", "sms", 600, 30, 60, 3, 60, Chosen(60, 6, 0, 0))
    assert measured(lone, organic, 0.02, 30) == measured(replace(lone, chosen=None), organic, 0.02, 30)
    assert 0.7 < np.sqrt(chosen[:, 1].mean()) / chosen[:, 0].std() < 1.4


def test_a_handset_offer_is_worth_its_margin_and_dear_enough_for_a_call(spark, tag_schema, conf):
    # Terminals have no monthly fee: their price makes them dear enough for an outbound call even for a low-value
    # subscriber (value-cost matching), and their margin makes the offer worth a contact at all.
    old = {"stage": "upgrade", "reason": "over_allowance", "terminal_network_gen": "3G", "dou_mb": 400.0}
    rows = [subscriber(sub_id="low", value_tier="low", channel_preference="outbound", **old)]
    [row] = [r for r in rows_of(target(spark, tag_schema, conf, rows, only={"handset_change_2g"}))
             if r["mode"] == "active"]
    assert (row["product_id"], row["decision"], row["channel"]) == ("TERM_4G_LOW", "targeted", "outbound")
    assert row["expected_value"] > 0


def test_the_stored_draw_is_kept_when_the_control_rate_changes_between_waves(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"s{i:03d}", **NO_PLAN) for i in range(200)]
    arms = {f"s{i:03d}": ("control" if i % 5 == 0 else "treated") for i in range(200)}
    after = earlier_wave(spark, [(s, "data_no_plan", arm) for s, arm in arms.items()])
    edited = replace(conf, scenarios=[replace(s, model=s.model.model_copy(update={"control_rate": 0.5}))
                                      if s.id == "data_no_plan" else s for s in conf.scenarios])
    plan = plan_wave(frame(spark, tag_schema, rows), edited, MONTH, CAMPAIGN, 2,
                     opt_outs=spark.createDataFrame([], "sub_id string, opt_out_all boolean, "
                                                        "opt_out_channels array<string>"),
                     immunity=spark.createDataFrame([], "sub_id string, family string, rounds int"),
                     estimates=estimates(conf, conf.scenarios), scorer=Scorer("estimates"), earlier=after)
    got = dict(zip(plan.units["sub_id"], plan.units["arm"], strict=True))
    # Wave 1's control group stays it whatever the rate says now; only its treated arm draws wave 2's holdout.
    assert {s for s, a in got.items() if a == "control"} == {s for s, a in arms.items() if a == "control"}
    assert all(arms[s] == "treated" for s, a in got.items() if a == "holdout")
    assert 0.3 < sum(a == "holdout" for a in got.values()) / 160 < 0.7   # the new rate, for the holdout only


def test_max_attempts_limits_a_scenarios_contacts_per_subscriber_and_cycle(spark, tag_schema, conf):
    def pop_up(scenario, attempts):
        first, *rest = scenario.model.waves
        model = scenario.model.model_copy(update={
            "waves": [first.model_copy(update={"passive": "crm_popup"}), *rest],
            "strategy": scenario.model.strategy.model_copy(update={"max_attempts": attempts})})
        return replace(scenario, model=model)

    row = subscriber(sub_id="both", **NO_PLAN)
    worth = {("data_no_plan", "crm_popup"): 0.05}
    for attempts, expected in ((2, 2), (1, 1)):
        edited = replace(conf, scenarios=[pop_up(s, attempts) if s.id == "data_no_plan" else s
                                          for s in conf.scenarios])
        plan = target(spark, tag_schema, edited, [row], only={"data_no_plan"}, uplift=worth)
        # Wave 1's SMS and pop-up, and wave 2's web hall, compete for the scenario's attempts.
        made = (plan.units["decision"] == "targeted").sum() + plan.planned_later
        assert made == expected, attempts
