"""The planted potential outcomes (`synth.truth`) and the channel simulator's answers (`synth.response`, demo and
tests only): kinds tied to tags, response apart from uplift, realistic rates, measured = planted, determinism."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from flowops.synth import behaviour as B
from flowops.synth.catalog import load_apps
from flowops.synth.generator import month_bounds
from flowops.synth.planning import CONTACT_CHANNELS, Planner
from flowops.synth.population import build_population
from flowops.synth.response import EFFECTS, Propensities, respond, true_uplift
from flowops.synth.truth import KINDS, OFFER_TYPES, planted_outcomes, write_propensities

ZERO = next(s for s, k in EFFECTS.items() if k == 0)
START, END = dt.date(2026, 4, 5), dt.date(2026, 4, 12)
SUBSCRIBERS = 20_000


def planner_of(subscribers: int, seed: int) -> Planner:
    names, bounds = month_bounds(2026, 1, 1)
    pop = build_population(np.random.default_rng(np.random.SeedSequence([seed, 0])), subscribers, 1,
                           bounds[0][0], bounds, B.app_weights(load_apps())[:6])
    return Planner(pop, seed, bounds, names)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    """A generated population's potential outcomes, one row per subscriber and offer, effects per channel, tags."""
    planner = planner_of(SUBSCRIBERS, 5)
    frame = planted_outcomes(planner, 5)
    wide = frame.pivot(index=["msisdn", "offer_type"], columns="channel", values="effect").reset_index()
    per_offer = frame.drop_duplicates(["msisdn", "offer_type"]).drop(columns=["channel", "effect"])
    pop = planner.pop
    tags = pd.DataFrame({"msisdn": pop.msisdn.astype("U11"), "identity": pop.identity, "age_band": pop.age_band,
                         "home": pop.home, "vip": planner.vip > 0, "preferred": planner.pref_channel})
    out = per_offer.merge(wide, on=["msisdn", "offer_type"]).merge(tags, on="msisdn")
    out.attrs["propensities"] = Propensities.from_frame(frame)
    return out


def identity(name: str) -> int:
    from flowops.synth.population import IDENTITIES

    return IDENTITIES.index(name)


# ----------------------------------------------------------------------------- the planted world
def test_every_kind_is_planted_and_the_kind_follows_the_tags(planted):
    assert set(planted["kind"]) == set(KINDS)
    data = planted[planted["offer_type"] == "data_plan"]
    share = pd.crosstab(data["identity"], data["kind"], normalize="index")
    farmer, student = identity("farmer"), identity("student")
    # Farmers are mostly persuadable, students mostly self-serve (sure things) for data.
    assert share.loc[farmer, "persuadable"] - share.loc[student, "persuadable"] > 0.3, share
    assert share.loc[student, "sure_thing"] - share.loc[farmer, "sure_thing"] > 0.3, share
    assert share.loc[identity("business_traveller"), "do_not_disturb"] > 3 * share.loc[student, "do_not_disturb"]
    apps = planted[planted["offer_type"] == "app"]
    lost = apps.groupby("identity")["kind"].apply(lambda k: (k == "lost_cause").mean())
    assert lost[identity("individual_merchant")] > lost[identity("white_collar")] + 0.15, lost


def test_each_scenario_like_pool_mixes_kinds_and_the_mix_differs_between_pools(planted):
    from flowops.synth import archetypes as A

    pools = {"data_no_plan": (A.NO_PLAN, "data_plan"), "overflow_plan_upgrade": (A.OVERFLOW, "plan_upgrade"),
             "zero_usage_feature_phone": (A.ZERO_FEATURE, "terminal"), "idle_no_pack": (A.IDLE_NO_PACK, "idle_pack"),
             "retention": (A.STEADY, "retention"), "low_usage_app_lift": (A.LOW_SMART, "app")}
    mixes = {}
    for name, (home, offer) in pools.items():
        pool = planted[(planted["home"] == home) & (planted["offer_type"] == offer)]
        mix = pool["kind"].value_counts(normalize=True)
        assert (mix >= 0.05).sum() >= 2 and mix.max() < 0.9, (name, mix)
        mixes[name] = mix
    persuadable = pd.Series({name: mix["persuadable"] for name, mix in mixes.items()})
    sure = pd.Series({name: mix["sure_thing"] for name, mix in mixes.items()})
    # The situation behind a pool matters: who pays pay-per-use or overflows mostly orders on their own, a
    # feature-phone user with no data needs the push.
    assert persuadable.max() - persuadable.min() > 0.4, persuadable
    assert min(sure["data_no_plan"], sure["overflow_plan_upgrade"]) > 0.5 > sure["zero_usage_feature_phone"], sure


def test_within_a_pool_the_tags_predict_the_kind_usefully_but_not_perfectly(planted):
    from flowops.synth import archetypes as A

    pool = planted[(planted["home"] == A.LOW_SMART) & (planted["offer_type"] == "app")].reset_index(drop=True)
    train, test = pool[pool.index % 2 == 0], pool[pool.index % 2 == 1]
    guess = train.groupby("identity")["kind"].agg(lambda k: k.value_counts().index[0])
    accuracy = (test["identity"].map(guess) == test["kind"]).mean()
    majority = (test["kind"] == train["kind"].value_counts().index[0]).mean()
    assert majority + 0.05 < accuracy < 0.85, (majority, accuracy)


def test_ranking_by_response_picks_sure_things_and_ranking_by_effect_picks_persuadables(planted):
    props = planted.attrs["propensities"]
    fitting = planted[planted["fits"] == 1]
    sms = pd.Series("sms", index=fitting.index)
    response = props.accept(fitting["msisdn"], sms, fitting["offer_type"])       # P(order | delivered SMS)
    effect = props.effect(fitting["msisdn"], sms, fitting["offer_type"])
    by_response = response >= np.quantile(response, 0.9)
    by_effect = effect >= np.quantile(effect, 0.9)
    assert effect[by_response].mean() < 0.3 * effect[by_effect].mean(), (effect[by_response].mean(),
                                                                           effect[by_effect].mean())
    assert (fitting["kind"][by_response] == "sure_thing").mean() > 0.6
    assert (fitting["kind"][by_effect] == "persuadable").mean() > 0.9


def test_rates_are_realistic_and_outbound_and_managers_convert_more_than_sms(planted):
    fitting = planted[planted["fits"] == 1]
    order = {c: (fitting["p_organic"] + fitting[c]).clip(0, 1).mean() for c in CONTACT_CHANNELS}
    assert 0.005 <= order["sms"] <= 0.05, order
    assert order["app"] <= order["sms"] + 0.005 and order["web"] <= order["sms"] + 0.005, order
    assert order["outbound"] > order["sms"] + 0.02, order
    vip = fitting[fitting["vip"]]
    assert (vip["p_organic"] + vip["manager"]).mean() > (vip["p_organic"] + vip["sms"]).mean() + 0.03
    kinds = fitting.groupby("kind")
    persuadable = kinds.get_group("persuadable")
    assert 0.10 <= (persuadable["p_organic"] + persuadable["outbound"]).mean() <= 0.25
    assert 0.05 <= kinds.get_group("sure_thing")["p_organic"].mean() <= 0.15
    assert persuadable["p_organic"].mean() <= 0.01 and kinds.get_group("lost_cause")["p_organic"].mean() <= 0.01
    dnd = kinds.get_group("do_not_disturb")
    assert (dnd[["sms", "outbound"]] < 0).all().all() and dnd["p_unsubscribe"].mean() > 0.15
    assert (fitting["p_organic"] + fitting[list(CONTACT_CHANNELS)].min(axis=1) >= 0).all()
    # An offer that does not fit: everything much smaller.
    other = planted[planted["fits"] == 0]
    assert other["p_organic"].mean() < 0.3 * fitting["p_organic"].mean()
    assert (other["p_organic"] + other["sms"]).mean() < 0.3 * order["sms"]


def test_a_preferred_channel_has_a_larger_effect(planted):
    persuadable = planted[(planted["kind"] == "persuadable") & (planted["fits"] == 1)]
    prefers_sms = persuadable["preferred"] == CONTACT_CHANNELS.index("sms")
    assert persuadable["sms"][prefers_sms].mean() > 1.3 * persuadable["sms"][~prefers_sms].mean()


def test_the_planted_world_is_deterministic_by_seed_and_round_trips_through_its_file(tmp_path):
    planner = planner_of(300, 11)
    first, again = planted_outcomes(planner, 11), planted_outcomes(planner, 11)
    pd.testing.assert_frame_equal(first, again)
    assert not first["kind"].equals(planted_outcomes(planner, 12)["kind"])
    write_propensities(tmp_path, planner, 11)
    read = Propensities.from_frame(pd.read_csv(tmp_path / "propensities.csv", dtype=str))
    direct = Propensities.from_frame(first)
    assert read.index == direct.index and (read.kinds == direct.kinds).all()
    np.testing.assert_allclose(read.effects, direct.effects, atol=1e-9)
    np.testing.assert_allclose(read.p_organic, direct.p_organic, atol=1e-9)
    with pytest.raises(ValueError, match=r"required \['kind', 'fits', 'p_organic'"):
        Propensities.from_frame(pd.DataFrame(columns=["msisdn", "channel", "offer_type", "p_accept"]))


# ----------------------------------------------------------------------------- the simulator
def world(n: int, plants: dict[str, tuple[str, float, float, float]]) -> tuple[Propensities, pd.DataFrame,
                                                                                 pd.DataFrame]:
    """n contacted (one SMS each) and n held out per scenario; scenario -> (kind, p_organic, effect, p_unsubscribe)
    planted for every offer and channel of its subscribers."""
    numbers, kinds, organic, effects, unsubscribe, contacted, held = [], [], [], [], [], [], []
    for s, (scenario, (kind, p0, effect, unsub)) in enumerate(plants.items()):
        msisdn = [f"13{s}{i:08d}" for i in range(2 * n)]
        numbers += msisdn
        kinds += [KINDS.index(kind)] * 2 * n
        organic += [p0] * 2 * n
        effects += [effect] * 2 * n
        unsubscribe += [unsub] * 2 * n
        group = pd.DataFrame({"msisdn": msisdn, "scenario": scenario, "wave": 1, "channel": "sms", "kind": "sms",
                              "product_id": "DP_20", "offer_type": "data_plan", "contact_date": START,
                              "window_end": END})
        contacted.append(group[:n])
        held.append(group[n:].drop(columns=["channel", "kind"]))
    m, n_of = len(numbers), len(OFFER_TYPES)
    props = Propensities(
        index={x: i for i, x in enumerate(numbers)},
        kinds=np.repeat(np.array(kinds, dtype=np.int8)[:, None], n_of, axis=1),
        fits=np.ones((m, n_of), dtype=bool),
        p_organic=np.repeat(np.array(organic)[:, None], n_of, axis=1),
        p_unsubscribe=np.repeat(np.array(unsubscribe)[:, None], n_of, axis=1),
        effects=np.broadcast_to(np.array(effects)[:, None, None], (m, len(CONTACT_CHANNELS), n_of)).copy())
    return props, pd.concat(contacted, ignore_index=True), pd.concat(held, ignore_index=True)


PLANTS = {"data_no_plan": ("persuadable", 0.01, 0.05, 0.01), "idle_no_pack": ("do_not_disturb", 0.10, -0.05, 0.3),
          ZERO: ("persuadable", 0.05, 0.08, 0.01)}


def measured(out, contacted: pd.DataFrame, held: pd.DataFrame, scenario: str) -> tuple[float, float]:
    """Treated minus control conversion of a scenario, and its standard error."""
    buyers = set(out.orders["msisdn"])
    treated = contacted[contacted["scenario"] == scenario].drop_duplicates("msisdn")["msisdn"].isin(buyers)
    control = held[held["scenario"] == scenario]["msisdn"].isin(buyers)
    se = np.sqrt(treated.var() / len(treated) + control.var() / len(control))
    return treated.mean() - control.mean(), se


def test_measured_treated_minus_control_is_the_planted_difference_negative_and_zero_included():
    props, contacted, held = world(20_000, PLANTS)
    out = respond(contacted, held, props, np.random.default_rng(1))
    planted = out.planted.set_index("scenario")
    assert planted.loc["data_no_plan", "planted_uplift"] == pytest.approx(0.95 * 0.05)
    assert planted.loc["idle_no_pack", "planted_uplift"] == pytest.approx(0.95 * -0.05)
    assert planted.loc[ZERO, "planted_uplift"] == 0 and planted.loc[ZERO, "expected_difference"] == 0
    assert (planted[["contacted", "held_out"]] == 20_000).all().all()
    for scenario in PLANTS:
        difference, se = measured(out, contacted, held, scenario)
        assert abs(difference - planted.loc[scenario, "expected_difference"]) < 4 * se, (scenario, difference, se)
    assert measured(out, contacted, held, "idle_no_pack")[0] < -0.03
    # The planted expected incremental conversion of each (single) contact adds up to the planted uplift.
    per_contact = contacted.assign(uplift=true_uplift(contacted, props)).groupby("scenario")["uplift"].mean()
    assert per_contact.to_dict() == pytest.approx(planted["planted_uplift"].to_dict())
    # Organic buyers a contact reached look like responders: campaign orders even where contact changes nothing.
    campaign = out.orders[out.orders["source"] == "campaign"].merge(contacted[["msisdn", "scenario"]], on="msisdn")
    assert (campaign["scenario"] == ZERO).sum() > 500
    assert set(out.orders[out.orders["source"] == "organic"]["msisdn"]) >= set(held["msisdn"]) & set(
        out.orders["msisdn"])


def test_members_the_allocation_left_out_order_on_their_own_and_are_not_the_control_group():
    props, contacted, held = world(20_000, {"data_no_plan": ("sure_thing", 0.05, 0.0, 0.0)})
    # Half of the held-out rows are treated-arm members the allocation did not contact.
    held = held.assign(group=np.where(np.arange(len(held)) % 2 == 0, "held_out", "uncontacted"))
    out = respond(contacted, held, props, np.random.default_rng(3))
    buyers = set(out.orders["msisdn"])
    left_out = held[held["group"] == "uncontacted"]["msisdn"].isin(buyers).mean()
    control = held[held["group"] == "held_out"]["msisdn"].isin(buyers).mean()
    assert abs(left_out - 0.05) < 0.006 and abs(left_out - control) < 0.008   # they order like anybody not contacted
    assert out.planted.set_index("scenario").loc["data_no_plan", "held_out"] == 10_000   # only the control group


def test_several_contacts_add_their_effects_and_the_chance_never_falls_below_zero():
    props, contacted, held = world(20_000, {"idle_no_pack": ("do_not_disturb", 0.08, -0.06, 0.3)})
    call = contacted.assign(channel="crm_popup", kind="display")        # answers like outbound, reached 25%
    both = pd.concat([contacted, call], ignore_index=True)
    out = respond(both, held, props, np.random.default_rng(2))
    # Both arrive (0.95 x 0.25): 0.08 - 0.12 clipped to 0; one of them: 0.02; neither: 0.08.
    expected = 0.95 * 0.75 * 0.02 + 0.05 * 0.25 * 0.02 + 0.05 * 0.75 * 0.08
    planted = out.planted.set_index("scenario").loc["idle_no_pack"]
    assert planted["planted_uplift"] == pytest.approx(expected - 0.08)
    difference, se = measured(out, both, held, "idle_no_pack")
    assert abs(difference - planted["expected_difference"]) < 4 * se
    # Unsubscribe replies come from delivered SMS that led to no order, at the planted chance.
    sms = out.receipts[out.receipts["channel"] == "sms"]
    unsubscribed = sms["reply_text"].isin(["TD", "退订"]).mean()
    # P(order | SMS delivered) = 0.25 x 0 + 0.75 x 0.02.
    assert unsubscribed == pytest.approx(0.95 * (1 - 0.75 * 0.02) * 0.3, abs=0.015)
    assert not out.receipts[out.receipts["channel"] == "crm_popup"]["reply_text"].astype(bool).any()


def test_the_answers_are_deterministic_by_seed_and_only_sms_receivers_reply():
    props, contacted, held = world(300, PLANTS)
    contacted.loc[contacted.index[:100], ["channel", "kind"]] = ["app", "display"]
    first = respond(contacted, held, props, np.random.default_rng(7))
    again = respond(contacted, held, props, np.random.default_rng(7))
    other = respond(contacted, held, props, np.random.default_rng(8))
    pd.testing.assert_frame_equal(first.receipts, again.receipts)
    pd.testing.assert_frame_equal(first.orders, again.orders)
    pd.testing.assert_frame_equal(first.planted, again.planted)
    assert not first.receipts.equals(other.receipts)
    replies = first.receipts[first.receipts["reply_text"] != ""]
    assert set(replies["channel"]) == {"sms"} and {"TD", "退订", "KT"} >= set(replies["reply_text"])
    display = first.receipts[first.receipts["channel"] == "app"]
    assert (display["replied"] == "").all() and set(display["opened"]) <= {"0", "1"}
    # Every contact has one receipt; a passive contact's day is inside its window; a click needs a delivery.
    assert len(first.receipts) == len(contacted)
    days = pd.to_datetime(display["contact_date"]).dt.date
    assert days.between(START, END).all()
    assert (first.receipts[first.receipts["clicked"] == "1"]["delivered"] == "1").all()
