"""How simulated subscribers answer a campaign: receipts and orders from planted propensities. For `flowops
simulate` (demo and tests) only; no production command imports it.

Every candidate of a scenario, contacted or held out, may order the offered product on their own inside the
window (organic: `ORGANIC_SHARE` of their mean acceptance over channels). A contacted subscriber who receives the
offer (`DELIVERY` per channel) also accepts it with probability `effect x p_accept(channel, offer type)`: the
scenario's planted effect multiplier times the generator's planted propensity. The planted uplift of a scenario's
wave is the mean, over its contacted subscribers, of P(order | contacted) - P(order | not contacted): what the
evaluation's uplift should recover. Some SMS receivers reply TD instead (unsubscribe).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowops.synth.planning import CONTACT_CHANNELS
from flowops.synth.truth import OFFER_TYPES

# Share of contacts a channel gets to the subscriber (SMS delivered, call connected, offer shown at login).
DELIVERY = {"sms": 0.95, "outbound": 0.7, "manager": 0.85, "app": 0.6, "web": 0.35, "toolbar": 0.6,
            "kiosk": 0.15, "crm_popup": 0.25}
# Channels without a planted propensity of their own answer like the nearest one that has one.
PROPENSITY_CHANNEL = {"toolbar": "app", "kiosk": "web", "crm_popup": "outbound"}
ORGANIC_SHARE = 0.25
UNSUBSCRIBE = 0.03      # of delivered SMS that did not accept
SURVEYED = 0.3          # of delivered contacts that leave a rating
# Planted effect multiplier per scenario (1 when absent); one scenario has no effect at all.
EFFECTS = {"high_value_care": 0.0, "complaint_stabilise": 0.5, "plan_migration_4g": 1.5}
PRODUCT_OFFER = {"data_plan": "data_plan", "booster": "booster", "idle_pack": "idle_pack",
                 "base_plan": "plan_upgrade", "app": "app", "terminal": "terminal"}
RETENTION_STAGES = ("alert", "retain")


@dataclass(frozen=True)
class Propensities:
    """p_accept per msisdn, channel and offer type (the generator's `_truth/propensities.csv`)."""

    index: dict[str, int]
    p: np.ndarray   # subscribers x CONTACT_CHANNELS x OFFER_TYPES

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Propensities:
        msisdns = pd.unique(frame["msisdn"].astype(str))
        index = {m: i for i, m in enumerate(msisdns)}
        p = np.zeros((len(msisdns), len(CONTACT_CHANNELS), len(OFFER_TYPES)))
        rows = frame["msisdn"].astype(str).map(index).to_numpy()
        cols = frame["channel"].map({c: i for i, c in enumerate(CONTACT_CHANNELS)}).to_numpy()
        kinds = frame["offer_type"].map({o: i for i, o in enumerate(OFFER_TYPES)}).to_numpy()
        p[rows, cols, kinds] = frame["p_accept"].astype(float).to_numpy()
        return cls(index, p)

    def accept(self, msisdn: pd.Series, channel: pd.Series, offer: pd.Series) -> np.ndarray:
        """p_accept of each row (0 for a number the generator never planted)."""
        i = msisdn.astype(str).map(self.index)
        known = i.notna().to_numpy()
        c = channel.map(lambda ch: CONTACT_CHANNELS.index(PROPENSITY_CHANNEL.get(ch, ch))).to_numpy()
        o = offer.map(OFFER_TYPES.index).to_numpy()
        out = np.zeros(len(msisdn))
        out[known] = self.p[i[known].astype(int).to_numpy(), c[known], o[known]]
        return out

    def organic(self, msisdn: pd.Series, offer: pd.Series) -> np.ndarray:
        """Probability of ordering the offer unprompted inside a window."""
        i = msisdn.astype(str).map(self.index)
        known = i.notna().to_numpy()
        o = offer.map(OFFER_TYPES.index).to_numpy()
        out = np.zeros(len(msisdn))
        out[known] = ORGANIC_SHARE * self.p[i[known].astype(int).to_numpy(), :, o[known]].mean(axis=1)
        return out


def offer_type(product_type: str, stage: str) -> str:
    return "retention" if stage in RETENTION_STAGES else PRODUCT_OFFER.get(product_type, "data_plan")


@dataclass
class Responses:
    receipts: pd.DataFrame   # channel, contact_date, msisdn, scenario, wave, delivered, ... (the receipt header)
    orders: pd.DataFrame     # msisdn, day, product_id, channel
    planted: pd.DataFrame    # scenario, wave, contacted, planted_uplift, held_out, expected_difference, effect


def respond(contacted: pd.DataFrame, held_out: pd.DataFrame, propensities: Propensities,
            rng: np.random.Generator) -> Responses:
    """Receipts and orders for one wave.

    Args:
        contacted: one row per exported contact: msisdn, scenario, wave, channel, kind, product_id, offer_type,
            contact_date, window_end (dates).
        held_out: one row per control member: msisdn, scenario, wave, product_id, offer_type, contact_date,
            window_end.
    """
    contacted = contacted.reset_index(drop=True)
    effect = contacted["scenario"].map(lambda s: EFFECTS.get(s, 1.0)).to_numpy()
    p = np.clip(effect * propensities.accept(contacted["msisdn"], contacted["channel"], contacted["offer_type"]), 0, 1)
    delivery = contacted["channel"].map(DELIVERY).fillna(0.5).to_numpy()
    n = len(contacted)
    delivered = rng.random(n) < delivery
    accepted = delivered & (rng.random(n) < p)
    unsubscribed = delivered & ~accepted & (contacted["kind"] == "sms").to_numpy() & (rng.random(n) < UNSUBSCRIBE)
    receipts = _receipts(contacted, delivered, accepted, unsubscribed, rng)

    # Organic ordering: once per subscriber, scenario and wave, for the contacted and the held out alike.
    people = pd.concat([contacted.assign(group="contacted"), held_out.assign(group="held_out")], ignore_index=True)
    first = people.groupby(["msisdn", "scenario", "wave"], sort=True, as_index=False).agg(
        group=("group", "first"), product_id=("product_id", "first"), offer_type=("offer_type", "first"),
        contact_date=("contact_date", "min"), window_end=("window_end", "max"))
    p0 = propensities.organic(first["msisdn"], first["offer_type"])
    organic = rng.random(len(first)) < p0
    orders = [_orders(first[organic], "organic", rng),
              _orders(contacted[accepted], "campaign", rng)]

    # Planted uplift per subscriber: 1 - (1 - p0) * prod(1 - q p) - p0, over each of their contacts.
    contacted["_miss"] = 1.0 - delivery * p
    miss = contacted.groupby(["msisdn", "scenario", "wave"], sort=True)["_miss"].prod()
    treated = first[first["group"] == "contacted"].set_index(["msisdn", "scenario", "wave"])
    p0_treated = pd.Series(p0[(first["group"] == "contacted").to_numpy()], index=treated.index)
    lift = (1.0 - p0_treated) * (1.0 - miss.reindex(treated.index))
    planted = (lift.rename("lift").reset_index().groupby(["scenario", "wave"], as_index=False)
               .agg(contacted=("lift", "size"), planted_uplift=("lift", "mean")))
    held = first["group"] == "held_out"
    control = pd.DataFrame({"scenario": first["scenario"][held], "wave": first["wave"][held],
                            "p0": p0[held.to_numpy()]})
    control = control.groupby(["scenario", "wave"], as_index=False).agg(held_out=("p0", "size"),
                                                                         control_p0=("p0", "mean"))
    treated_p = (p0_treated + lift).rename("p1").reset_index().groupby(["scenario", "wave"], as_index=False).agg(
        treated_p1=("p1", "mean"))
    planted = planted.merge(treated_p, on=["scenario", "wave"]).merge(control, on=["scenario", "wave"], how="outer")
    # What treated minus control conversion is in expectation for this very split (the chance difference between
    # the two groups' unprompted ordering included): the interval's target when only the answers are redrawn.
    planted["expected_difference"] = planted["treated_p1"] - planted["control_p0"]
    planted = planted.drop(columns=["treated_p1", "control_p0"]).fillna(
        {"contacted": 0, "held_out": 0, "planted_uplift": 0.0})
    planted["effect"] = planted["scenario"].map(lambda s: EFFECTS.get(s, 1.0))
    return Responses(receipts, pd.concat(orders, ignore_index=True), planted)


def _days(start: pd.Series, end: pd.Series, rng: np.random.Generator) -> pd.Series:
    """A uniform day in [start, end] per row."""
    span = (pd.to_datetime(end) - pd.to_datetime(start)).dt.days.clip(lower=0).to_numpy()
    offset = np.floor(rng.random(len(span)) * (span + 1)).astype(int)
    return (pd.to_datetime(start) + pd.to_timedelta(offset, unit="D")).dt.date


def _orders(rows: pd.DataFrame, source: str, rng: np.random.Generator) -> pd.DataFrame:
    channel = rows["channel"] if "channel" in rows and source == "campaign" else pd.Series("app", index=rows.index)
    return pd.DataFrame({"msisdn": rows["msisdn"].to_numpy(), "day": _days(rows["contact_date"], rows["window_end"],
                                                                          rng).to_numpy(),
                         "product_id": rows["product_id"].to_numpy(), "channel": channel.to_numpy(),
                         "source": source})


def _receipts(contacted: pd.DataFrame, delivered: np.ndarray, accepted: np.ndarray, unsubscribed: np.ndarray,
              rng: np.random.Generator) -> pd.DataFrame:
    n = len(contacted)
    kind = contacted["kind"].to_numpy()
    display, sms = kind == "display", kind == "sms"
    # A passive offer's contact is the day the subscriber touched the channel inside the window.
    day = np.where(display, _days(contacted["contact_date"], contacted["window_end"], rng).to_numpy(),
                   contacted["contact_date"].to_numpy())
    opened = display & delivered & (accepted | (rng.random(n) < 0.4))
    replied = sms & (unsubscribed | (accepted & (rng.random(n) < 0.6)))
    reply = np.where(unsubscribed, np.where(rng.random(n) < 0.5, "TD", "退订"), np.where(replied, "KT", ""))
    rated = delivered & (rng.random(n) < SURVEYED)
    score = np.where(accepted, rng.integers(4, 6, n), rng.integers(1, 5, n))

    def flag(values: np.ndarray, applies: np.ndarray | bool = True) -> np.ndarray:
        return np.where(applies, np.where(values, "1", "0"), "")

    return pd.DataFrame({
        "channel": contacted["channel"].to_numpy(),
        "contact_date": [d.isoformat() if isinstance(d, dt.date) else str(d) for d in day],
        "msisdn": contacted["msisdn"].astype(str).to_numpy(), "scenario": contacted["scenario"].to_numpy(),
        "wave": contacted["wave"].astype(int).to_numpy(), "delivered": flag(delivered),
        "opened": flag(opened, display), "clicked": flag(accepted), "replied": flag(replied, sms),
        "reply_text": reply, "satisfaction": np.where(rated, score.astype(str), ""),
    })
