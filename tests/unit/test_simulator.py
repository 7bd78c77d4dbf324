"""The channel simulator's answers (`synth.response`, demo and tests only): planted effects, determinism, replies."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from flowops.synth.planning import CONTACT_CHANNELS
from flowops.synth.response import EFFECTS, Propensities, respond
from flowops.synth.truth import OFFER_TYPES

ZERO = next(s for s, k in EFFECTS.items() if k == 0)
START, END = dt.date(2026, 4, 5), dt.date(2026, 4, 12)


def world(n: int, p: float) -> tuple[Propensities, pd.DataFrame, pd.DataFrame]:
    """n contacted and n held-out subscribers of two scenarios (one with no effect), everyone accepting with p."""
    msisdn = [f"138{i:08d}" for i in range(4 * n)]
    rows = [(m, c, o, p) for m in msisdn for c in CONTACT_CHANNELS for o in OFFER_TYPES]
    props = Propensities.from_frame(pd.DataFrame(rows, columns=["msisdn", "channel", "offer_type", "p_accept"]))

    def group(numbers, scenario):
        return pd.DataFrame({"msisdn": numbers, "scenario": scenario, "wave": 1, "channel": "sms", "kind": "sms",
                             "product_id": "DP_20", "offer_type": "data_plan", "contact_date": START,
                             "window_end": END})

    contacted = pd.concat([group(msisdn[:n], "data_no_plan"), group(msisdn[n:2 * n], ZERO)], ignore_index=True)
    held = pd.concat([group(msisdn[2 * n:3 * n], "data_no_plan"), group(msisdn[3 * n:], ZERO)], ignore_index=True)
    return props, contacted, held.drop(columns=["channel", "kind"])


def test_a_zero_effect_scenario_gets_no_campaign_order_and_the_others_get_their_planted_uplift():
    props, contacted, held = world(4000, 0.3)
    out = respond(contacted, held, props, np.random.default_rng(1))
    campaign = out.orders[out.orders["source"] == "campaign"].merge(
        contacted[["msisdn", "scenario"]], on="msisdn")
    assert ZERO not in set(campaign["scenario"]) and len(campaign) > 0
    planted = out.planted.set_index("scenario")
    assert planted.loc[ZERO, "planted_uplift"] == 0
    # 1 - (1 - p0) * (1 - q p) - p0 with p0 = 0.25 * 0.3, SMS delivery q = 0.95.
    p0 = 0.25 * 0.3
    assert planted.loc["data_no_plan", "planted_uplift"] == pytest.approx((1 - p0) * 0.95 * 0.3)
    # Measured on the draws: ordering share of the contacted minus the held out is close to the planted uplift.
    buyers = set(out.orders["msisdn"])
    for scenario in ("data_no_plan", ZERO):
        treated = contacted[contacted["scenario"] == scenario]["msisdn"].isin(buyers).mean()
        control = held[held["scenario"] == scenario]["msisdn"].isin(buyers).mean()
        assert treated - control == pytest.approx(planted.loc[scenario, "planted_uplift"], abs=0.03)


def test_the_answers_are_deterministic_by_seed_and_only_sms_receivers_reply():
    props, contacted, held = world(300, 0.2)
    contacted.loc[contacted.index[:100], ["channel", "kind"]] = ["app", "display"]
    first = respond(contacted, held, props, np.random.default_rng(7))
    again = respond(contacted, held, props, np.random.default_rng(7))
    other = respond(contacted, held, props, np.random.default_rng(8))
    pd.testing.assert_frame_equal(first.receipts, again.receipts)
    pd.testing.assert_frame_equal(first.orders, again.orders)
    assert not first.receipts.equals(other.receipts)
    replies = first.receipts[first.receipts["reply_text"] != ""]
    assert set(replies["channel"]) == {"sms"} and {"TD", "退订", "KT"} >= set(replies["reply_text"])
    display = first.receipts[first.receipts["channel"] == "app"]
    assert (display["replied"] == "").all() and set(display["opened"]) <= {"0", "1"}
    # Every contact has one receipt; a passive contact's day is inside its window.
    assert len(first.receipts) == len(contacted)
    days = pd.to_datetime(display["contact_date"]).dt.date
    assert days.between(START, END).all()
