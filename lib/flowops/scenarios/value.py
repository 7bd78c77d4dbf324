"""What one contact is worth: expected incremental value = uplift x margin - channel cost - incentive cost.

- uplift: the contact's incremental conversion (orders it causes beyond those the subscriber would have placed
  anyway): the per scenario x channel estimate (`scenarios/estimates.py`), or the uplift model's per-subscriber
  score where the model won on a held-out month (`models/uplift.py`);
- margin: what one order of the offered product is worth to the operator (`Catalogue.margin`);
- incentive cost: credit and coupons are paid to everyone who orders, incremental or not, so they cost
  P(order | contacted) x their value = (organic + uplift) x value — a coupon sent to a sure thing is pure cost;
  trial data, free minutes, double data and gifts go to everyone contacted and cost their whole value.

`cost_yuan` (what the scenario's budget counts) is the channel cost plus the expected incentive cost.

The allocator maximises `weight`: the expected value under the policy's objective `uplift`; under `response`
(the old ranking, kept as a baseline) conversion of the contacted x margin - costs, organic buyers included. With
`policy.maximise: orders` the weight of a contact worth making (a positive value under the objective) is instead
the conversions it is expected to add, in orders per ORDERS_PER contacts: its uplift (the conversion of the
contacted under `response`); one worth nothing stays out either way. A
care scenario's contact is worth making at a loss within its cost ceiling: its weight is then a token
CARE_WEIGHT, so it only takes slots nothing of positive value wants. Options of a later wave, valued when the
first wave is planned, are discounted by the chance that the subscriber orders before it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowops.scenarios.estimates import Estimates
from flowops.scenarios.policy import uniform
from flowops.scenarios.templates import Channels

CARE_WEIGHT = 0.001
# The orders weight's unit (orders per this many contacts): a contact's weight stays far above CARE_WEIGHT and
# keeps its figures at the six decimals weights are rounded to.
ORDERS_PER = 1000
UNIT = ["sub_id", "scenario", "wave", "mode"]


def options(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per unit and channel of its route, `rank` = the channel's position in it."""
    out = frame.assign(channel=frame["route"], rank=frame["route"].map(lambda r: list(range(len(r)))))
    out = out.explode(["channel", "rank"], ignore_index=True)
    out = out[out["channel"].notna()].reset_index(drop=True)
    out["rank"] = out["rank"].astype(int)
    return out


def with_values(rows: pd.DataFrame, channels: Channels, estimates: Estimates, wave: int, objective: str,
                maximise: str = "value") -> pd.DataFrame:
    """organic, uplift, response, conversion, channel_cost, incentive_expected, expected_value, cost_yuan and
    weight of each option (see the module text). Rows carrying `model_organic` and `model_uplift` (the uplift
    model's scores) use them instead of the estimates."""
    out = rows.copy()
    cell = list(zip(out["scenario"], out["channel"], strict=True))
    out["organic"] = out["scenario"].map({s: e.mean for s, e in estimates.organic.items()}).astype(float)
    out["uplift"] = pd.Series([estimates.uplift[c].mean for c in cell], index=out.index, dtype=float)
    out["response"] = pd.Series([estimates.response[c] for c in cell], index=out.index, dtype=float)
    if "model_uplift" in out:
        out["organic"] = out["model_organic"].fillna(out["organic"])
        out["uplift"] = out["model_uplift"].fillna(out["uplift"])
    out["channel_cost"] = out["channel"].map({c.id: c.cost_yuan for c in channels.channels}).astype(float)
    out["conversion"] = (out["organic"] + out["uplift"]).clip(0.0, 1.0)
    margin = out["margin_yuan"].fillna(0.0)
    on_order = out["incentive_on_order"].to_numpy(bool)

    def incentive(p: pd.Series) -> np.ndarray:
        return np.where(on_order, p * out["incentive_cost"], out["incentive_cost"])

    out["incentive_expected"] = incentive(out["conversion"]).round(4)
    out["expected_value"] = (out["uplift"] * margin - out["channel_cost"] - out["incentive_expected"]).round(4)
    cost = out["channel_cost"] + out["incentive_expected"]
    by_uplift = objective == "uplift"
    score = (out["expected_value"] if by_uplift
             else out["response"] * margin - out["channel_cost"] - incentive(out["response"]))
    if maximise == "orders":
        score = np.where(score > 0, ORDERS_PER * (out["uplift"] if by_uplift else out["response"]), 0.0)
    is_care = out["care_max_cost"].notna() & (cost <= out["care_max_cost"])
    weight = np.where(score > 0, score, np.where(is_care, CARE_WEIGHT, 0.0))
    # A later wave's option only happens if the subscriber has not ordered before it.
    reach = np.where(out["wave"] > wave, 1 - out["organic"], 1.0)
    out["weight"] = (weight * reach).round(6)
    out["cost_yuan"] = (cost * reach).round(4)
    return out


def worthwhile(priced: pd.DataFrame, month: str, scarce: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """The options a unit may take: the first channel of its route worth making (weight > 0) — the route is the
    seed's strategy: preference, VIP's account manager, high value's dear channel, the wave's channel — and, when
    that channel is scarce, the next worthwhile ones up to an unlimited one, as fallbacks for a full day; a
    fallback is never worth more to the optimiser than the channel it stands in for. An exploring unit keeps one
    worthwhile channel drawn at random (stable per subscriber, scenario, wave, mode and month) instead."""
    kept = priced[priced["weight"] > 0].sort_values([*UNIT, "rank"])
    exploring = kept["explore"].to_numpy(bool)
    routed = _route_choice(kept[~exploring], scarce)
    if not exploring.any():
        return routed.reset_index(drop=True)
    kept = pd.concat([routed, kept[exploring]])
    exploring = kept["explore"].to_numpy(bool)
    explorers = kept[exploring]
    position = explorers.groupby(UNIT, sort=False).cumcount()
    count = explorers.groupby(UNIT, sort=False)["channel"].transform("size")
    keys = (explorers["sub_id"] + "|" + explorers["scenario"] + "|" + explorers["wave"].astype(str) + "|"
            + explorers["mode"] + "|" + month + "|explore-channel").tolist()
    pick = np.floor(uniform(keys) * count.to_numpy()).astype(int)
    # Every row of a unit draws from the same key, so they agree on the pick.
    chosen = explorers[position.to_numpy() == pick]
    return pd.concat([kept[~exploring], chosen]).sort_index().reset_index(drop=True)


def _route_choice(kept: pd.DataFrame, scarce: set[str] | frozenset[str]) -> pd.DataFrame:
    """Per unit (rows sorted by rank within each unit): its first option, and while the options so far are all
    on scarce channels, the next one, its weight capped just below the first's."""
    if kept.empty:
        return kept
    position = kept.groupby(UNIT, sort=False).cumcount().to_numpy()
    is_scarce = kept["channel"].isin(list(scarce)).to_numpy()
    # Scarce options met before this one in the unit: the row is kept when all earlier ones were scarce.
    earlier_unlimited = kept.assign(_u=~is_scarce).groupby(UNIT, sort=False)["_u"].cumsum().to_numpy() - (~is_scarce)
    keep = (position == 0) | (earlier_unlimited == 0)
    out = kept[keep].copy()
    first = out.groupby(UNIT, sort=False)["weight"].transform("first")
    capped = out["weight"].where(position[keep] == 0, np.minimum(out["weight"], first * (1 - 1e-6)))
    out["weight"] = capped
    return out
