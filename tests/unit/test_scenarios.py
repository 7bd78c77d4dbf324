"""Scenario templates, product fit, the contact policy and messages on hand-built subscribers.

The three worked examples of the seed (004, 2.10-2.12) are checked as the seed states them.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.errors import ConfigError
from flowops.scenarios.policy import acceptance_rates, candidates, decide
from flowops.scenarios.templates import load_channels
from flowops.segments import STAGES
from flowops.steps.target import _with_messages
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


def frame(spark, schema, rows):
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


def target(spark, schema, conf, rows, only=None, opt_outs=(), immune=(), channels=None, budgets=None, control=False):
    """Candidates and decisions (with messages) for hand-built subscribers; no control group unless `control`."""
    scenarios = [s for s in conf.scenarios if only is None or s.id in only]
    if not control:
        scenarios = [replace(s, model=s.model.model_copy(update={"control_rate": 0.0})) for s in scenarios]
    channels = channels or conf.channels
    cands = candidates(frame(spark, schema, rows), scenarios, conf.catalogue, channels, CAMPAIGN)
    outs = spark.createDataFrame(list(opt_outs), "sub_id string, opt_out_all boolean, opt_out_channels array<string>")
    imm = spark.createDataFrame(list(immune), "sub_id string, product_id string, rounds int")
    decided = decide(cands, channels, acceptance_rates(scenarios, channels), outs, imm, budgets or {})
    return _with_messages(decided, replace(conf, channels=channels, scenarios=scenarios))


def rows_of(df):
    return sorted((r.asDict() for r in df.collect()), key=lambda r: (r["sub_id"], r["scenario"], r["mode"]))


# ------------------------------------------------------------------------------------------------ templates
def test_the_shipped_scenarios_cover_every_stage_and_check(conf):
    assert len(conf.scenarios) >= 12
    assert {s.model.stage for s in conf.scenarios} == set(STAGES)


def test_the_worked_examples_are_configured_as_the_seed_says(conf):
    by_id = {s.id: s for s in conf.scenarios}
    no_plan = by_id["data_no_plan"].model
    assert (no_plan.product.fit, no_plan.incentive.kind, no_plan.incentive.yuan) == ("cheapest_data_plan", "credit", 5)
    assert [(w.active, w.passive, w.start_day, w.feedback_day) for w in no_plan.waves] == [
        ("sms", None, 5, 9), (None, "web", 10, "end")]
    new = by_id["new_subscriber"].model
    assert new.incentive.mb == 300 and new.strategy.max_attempts == 2
    first, second = new.waves
    assert (first.passive, first.active, first.fallback, first.feedback_day - first.start_day) == (
        "crm_popup", "sms", "app", 4)   # SMS fails -> app hall; no result after 5 days ...
    assert (second.passive, second.start_day) == ("toolbar", first.feedback_day + 1)   # ... -> toolbar
    idle = by_id["idle_no_pack"].model
    assert idle.product.fit == "idle_pack_for_idle" and idle.incentive.yuan == 5


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
])
def test_a_broken_template_fails_naming_its_file_and_key(tmp_path, edit, message):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "scenarios" / "data_no_plan.yml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")

    with pytest.raises(ConfigError, match=message):
        Definitions.load(conf)


def test_a_policy_naming_a_passive_channel_for_vips_is_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "channels.yml").read_text(encoding="utf-8")
    (conf / "channels.yml").write_text(text.replace("vip_channel: manager", "vip_channel: app"), encoding="utf-8")

    with pytest.raises(ConfigError, match=r"channels\.yml: .*policy\.vip_channel: channel app is passive, not active"):
        load_channels(conf)


# ------------------------------------------------------------------------------------------ worked examples
def test_data_without_a_plan_gets_the_tier_that_would_have_cost_least(spark, tag_schema, conf):
    # 250 MB billed pay-per-use at 0.29 yuan/MB (capped at 60): DP_10 would cost 10 + 150 x 0.29 = 53.5,
    # DP_20 (300 MB) 20, DP_30 30: DP_20, saving 60 - 20 = 40.
    heavy = subscriber(sub_id="heavy", dou_mb=250.0, payperuse_yuan=60.0, payperuse_mb=250.0)
    # 20 MB pay-per-use cost 5.8; DP_5 (30 MB) costs 5: the cheapest tier, saving 0.8.
    light = subscriber(sub_id="light", dou_mb=20.0, payperuse_yuan=5.8, payperuse_mb=20.0)
    out = rows_of(target(spark, tag_schema, conf, [heavy, light], only={"data_no_plan"}))

    assert [(r["sub_id"], r["product_id"], r["saving_yuan"]) for r in out] == [("heavy", "DP_20", 40.0),
                                                                               ("light", "DP_5", 0.8)]
    for r in out:
        assert (r["mode"], r["channel"], r["window_start"], r["window_end"]) == (
            "active", "sms", dt.date(2026, 4, 5), dt.date(2026, 4, 9))
        assert (r["incentive"], r["incentive_yuan"]) == ("credit", 5.0)
    assert "20元300M流量包可省40.0元，再赠5元话费" in out[0]["message"]


def test_idle_time_data_without_a_pack_gets_the_seeds_message(spark, tag_schema, conf):
    idle = subscriber(sub_id="idle", stage="order", reason="idle_without_pack", dou_mb=80.0, idle_mb=32.0,
                      payperuse_yuan=12.0, arpu_yuan=31.0)
    [row] = rows_of(target(spark, tag_schema, conf, [idle], only={"idle_no_pack"}))

    assert (row["decision"], row["product_id"], row["channel"]) == ("targeted", "IDLE_5", "sms")
    assert row["message"] == "您上月闲时流量32M，建议您办理5元闲时包！办理即赠5元话费哦！"
    assert row["sms_segments"] == 1


def test_a_new_subscriber_gets_the_crm_pop_up_and_an_sms_and_an_sms_opt_out_keeps_the_pop_up(
        spark, tag_schema, conf):
    new = subscriber(sub_id="new", stage="wake", reason="new_subscriber", is_new_subscriber=True)
    no_sms = subscriber(sub_id="no_sms", stage="wake", reason="new_subscriber", is_new_subscriber=True)
    out = rows_of(target(spark, tag_schema, conf, [new, no_sms], only={"new_subscriber"},
                         opt_outs=[("no_sms", False, ["sms"])]))

    got = {(r["sub_id"], r["mode"]): (r["channel"], r["reason"]) for r in out}
    assert got == {("new", "active"): ("sms", "targeted"), ("new", "passive"): ("crm_popup", "targeted"),
                   ("no_sms", "active"): (None, "opt_out_channel"), ("no_sms", "passive"): ("crm_popup", "targeted")}
    assert all(r["offers"] == ["DP_20"] and "300M体验流量" in r["message"] for r in out if r["decision"] == "targeted")
    assert {r["window_start"] for r in out} == {dt.date(2026, 4, 1)}


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
    assert [r.reason for r in held.collect()] == ["no_fit"]


def test_credit_never_above_half_the_bill(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"bill{b}", dou_mb=250.0, payperuse_yuan=60.0, arpu_yuan=b) for b in (30.0, 7.0, 1.5)]
    out = {r["sub_id"]: (r["incentive"], r["incentive_yuan"]) for r in
           rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}))}
    assert out == {"bill30.0": ("credit", 5.0), "bill7.0": ("credit", 3.0), "bill1.5": ("none", 0.0)}


def test_one_active_and_one_passive_contact_per_subscriber_across_scenarios(spark, tag_schema, conf):
    both = subscriber(sub_id="both", stage="order", dou_mb=250.0, payperuse_yuan=60.0, idle_mb=120.0)
    out = rows_of(target(spark, tag_schema, conf, [both], only={"data_no_plan", "idle_no_pack"}))
    active = [r for r in out if r["mode"] == "active"]
    assert sorted(r["reason"] for r in active) == ["cap", "targeted"]
    kept = next(r for r in active if r["reason"] == "targeted")
    assert kept["expected_value"] == max(r["expected_value"] for r in active)
    assert [r["reason"] for r in out if r["mode"] == "passive"] == []   # wave 1 of both is SMS only


def test_opted_out_churned_and_immune_subscribers_are_suppressed(spark, tag_schema, conf):
    base = {"dou_mb": 250.0, "payperuse_yuan": 60.0}
    rows = [subscriber(sub_id="out", **base), subscriber(sub_id="gone", churned_this_month=True, **base),
            subscriber(sub_id="immune", **base), subscriber(sub_id="twice", **base), subscriber(sub_id="ok", **base)]
    out = {r["sub_id"]: r["reason"] for r in rows_of(target(
        spark, tag_schema, conf, rows, only={"data_no_plan"}, opt_outs=[("out", True, [])],
        immune=[("immune", "DP_20", 3), ("twice", "DP_20", 2)]))}
    assert out == {"out": "opt_out", "gone": "churned", "immune": "immune", "twice": "targeted", "ok": "targeted"}


def test_routing_follows_preference_then_vip_manager_reach_and_value(spark, tag_schema, conf):
    base = {"dou_mb": 250.0, "payperuse_yuan": 60.0}
    rows = [subscriber(sub_id="prefers_call", value_tier="high", channel_preference="outbound", **base),
            subscriber(sub_id="low_prefers_call", value_tier="low", channel_preference="outbound", **base),
            subscriber(sub_id="vip", value_tier="vip", has_account_manager=True, **base),
            subscriber(sub_id="vip_no_manager", value_tier="vip", has_account_manager=False, **base),
            subscriber(sub_id="prefers_app", channel_preference="app", **base)]
    out = {r["sub_id"]: r["channel"] for r in rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}))}
    # Outbound calls only for high value (or dear products); the app hall is passive: SMS carries wave 1.
    assert out == {"prefers_call": "outbound", "low_prefers_call": "sms", "vip": "manager", "vip_no_manager": "sms",
                   "prefers_app": "sms"}
    # Passive: the preferred app hall, but never on a feature phone (the CRM pop-up at the counter instead).
    old = {"stage": "upgrade", "reason": "over_allowance", "terminal_network_gen": "3G", "dou_mb": 400.0,
           "channel_preference": "app"}
    rows = [subscriber(sub_id="smart", **old), subscriber(sub_id="feature", is_smartphone=False, **old)]
    out = {r["sub_id"]: r["channel"] for r in rows_of(target(spark, tag_schema, conf, rows,
                                                             only={"handset_change_2g"})) if r["mode"] == "passive"}
    assert out == {"smart": "app", "feature": "crm_popup"}


def test_a_full_scarce_channel_overflows_to_the_next_channel_by_expected_value(spark, tag_schema, conf):
    channels = conf.channels
    manager = channels["manager"].model_copy(update={"daily_capacity": 1})
    tight = type(channels)(channels.policy, tuple(manager if c.id == "manager" else c for c in channels.channels),
                           channels.source)
    # data_no_plan's wave 1 lasts 5 days: 5 manager slots for 8 VIPs; the 5 of highest expected value keep them.
    rows = [subscriber(sub_id=f"vip{i}", value_tier="vip", has_account_manager=True, dou_mb=100.0 + 60 * i,
                       payperuse_yuan=min(60.0, 0.29 * (100 + 60 * i))) for i in range(8)]
    out = rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}, channels=tight))
    on_manager = [r for r in out if r["channel"] == "manager" and r["decision"] != "suppressed"]
    on_sms = [r for r in out if r["channel"] == "sms"]
    assert len(on_manager) == 5 and len(on_sms) == 3
    # vip4..vip7 are offered DP_30 (the most value), vip1..vip3 DP_20: the fifth slot goes to vip1 (ties by sub_id).
    assert {r["sub_id"] for r in on_manager} == {"vip1", "vip4", "vip5", "vip6", "vip7"}
    assert all(r["reason"] in ("targeted", "control") for r in out)


def test_a_scarce_channel_is_booked_day_by_day_within_each_contacts_window(spark, tag_schema, conf):
    channels = conf.channels
    manager = channels["manager"].model_copy(update={"daily_capacity": 1})
    tight = replace(channels, channels=tuple(manager if c.id == "manager" else c for c in channels.channels))
    vip = {"value_tier": "vip", "has_account_manager": True, "churn_risk_level": "low"}
    # complaint_stabilise's window is days 1-5, high_value_care's days 5-15: one manager visit a day.
    rows = [subscriber(sub_id=f"c{i:02d}", stage="alert", reason="complaints", **vip) for i in range(12)]
    rows.append(subscriber(sub_id="care", stage="retain", reason="steady_usage", arpu_yuan=150.0, **vip))
    out = rows_of(target(spark, tag_schema, conf, rows, only={"complaint_stabilise", "high_value_care"},
                         channels=tight))
    visits = Counter(r["contact_date"] for r in out if r["channel"] == "manager")

    assert max(visits.values()) == 1
    assert sum(1 for r in out if r["channel"] == "manager" and r["scenario"] == "complaint_stabilise") == 5
    assert all(r["window_start"] <= r["contact_date"] <= r["window_end"] for r in out if r["contact_date"])
    assert {r["channel"] for r in out if r["scenario"] == "complaint_stabilise"} == {"manager", "sms"}


def test_one_passive_contact_per_subscriber_across_scenarios(spark, tag_schema, conf):
    def with_pop_up(scenario):
        first, *rest = scenario.model.waves
        waves = [first.model_copy(update={"passive": "crm_popup"}), *rest]
        return replace(scenario, model=scenario.model.model_copy(update={"waves": waves}))
    both = replace(conf, scenarios=[with_pop_up(s) if s.id in ("data_no_plan", "idle_no_pack") else s
                                    for s in conf.scenarios])
    row = subscriber(sub_id="both", dou_mb=250.0, payperuse_yuan=60.0, idle_mb=120.0)
    out = rows_of(target(spark, tag_schema, both, [row], only={"data_no_plan", "idle_no_pack"}))

    by_mode = Counter((r["mode"], r["reason"]) for r in out)
    assert by_mode == {("active", "targeted"): 1, ("active", "cap"): 1, ("passive", "targeted"): 1,
                       ("passive", "cap"): 1}


def test_a_budget_stops_contacts_by_expected_value(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"s{i}", dou_mb=250.0, payperuse_yuan=60.0) for i in range(6)]
    # Each contact's expected spend: 0.05 (SMS) + 3% acceptance x 5 yuan credit (paid on ordering) = 0.20 yuan:
    # a 0.5-yuan budget pays for two.
    out = rows_of(target(spark, tag_schema, conf, rows, only={"data_no_plan"}, budgets={"data_no_plan": 0.5}))
    assert [r["cost_yuan"] for r in out] == [pytest.approx(0.2)] * 6
    assert sorted(r["reason"] for r in out) == ["budget"] * 4 + ["targeted"] * 2


def test_the_control_draw_is_deterministic_and_near_its_rate(spark, tag_schema, conf):
    rows = [subscriber(sub_id=f"c{i:04d}", dou_mb=250.0, payperuse_yuan=60.0) for i in range(2000)]
    first = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, control=True)
    second = target(spark, tag_schema, conf, rows, only={"data_no_plan"}, control=True)
    controls = {r.sub_id for r in first.where("control").collect()}
    assert controls == {r.sub_id for r in second.where("control").collect()}
    assert 0.1 * 2000 - 3 * (2000 * 0.1 * 0.9) ** 0.5 < len(controls) < 0.1 * 2000 + 3 * (2000 * 0.1 * 0.9) ** 0.5
    assert first.where(F.col("control")).select("message").distinct().collect() == [(None,)]   # never rendered


def test_acceptance_is_the_prior_until_conversions_are_measured(conf):
    from flowops.scenarios.policy import Observed

    prior = acceptance_rates(conf.scenarios, conf.channels)
    assert prior[("data_no_plan", "sms")] == conf.channels["sms"].acceptance_prior
    learnt = acceptance_rates(conf.scenarios, conf.channels, [Observed("data_no_plan", "sms", 900, 90)])
    n0 = conf.channels.policy.prior_strength
    assert learnt[("data_no_plan", "sms")] == pytest.approx((0.03 * n0 + 90) / (n0 + 900))
    assert learnt[("data_no_plan", "web")] == prior[("data_no_plan", "web")]
