"""How simulated subscribers answer a campaign: receipts and orders from the generator's planted potential outcomes.
For `flowops simulate` (demo and tests only); no production command imports it.

The generator plants, per subscriber and offer type, a kind (persuadable, sure thing, lost cause, do not disturb),
the chance `p_organic` of ordering the offer unprompted inside a wave's window, and the absolute change in that
chance a *delivered* contact makes per channel (`effect`, negative for those who resent being contacted); see
`_truth/propensities.csv` in `synth/README.md`. Per subscriber, scenario and wave the simulator draws once whether
they order: with P = clip(p_organic + sum of effect x the scenario's multiplier over their delivered contacts, 0, 1)
for the contacted, p_organic for the held out. An order of someone a contact reached lands as a campaign order (the
pipeline cannot tell whether they would have ordered anyway: sure things look like responders), every other one as
organic. Conversion of the contacted is therefore response, and only treated minus control is uplift.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowops.synth.planning import CONTACT_CHANNELS
from flowops.synth.truth import KINDS, OFFER_TYPES

# Share of contacts a channel gets to the subscriber (SMS delivered, call connected, offer shown at login).
DELIVERY = {"sms": 0.95, "outbound": 0.7, "manager": 0.85, "app": 0.6, "web": 0.35, "toolbar": 0.6,
            "kiosk": 0.15, "crm_popup": 0.25}
# Channels without a planted effect of their own answer like the nearest one that has one.
PROPENSITY_CHANNEL = {"toolbar": "app", "kiosk": "web", "crm_popup": "outbound"}
CLICKED = 0.8           # of delivered contacts whose subscriber orders
SURVEYED = 0.3          # of delivered contacts that leave a rating
# Planted effect multiplier per scenario (1 when absent); one scenario has no effect at all.
EFFECTS = {"high_value_care": 0.0, "complaint_stabilise": 0.5, "plan_migration_4g": 1.5}
PRODUCT_OFFER = {"data_plan": "data_plan", "booster": "booster", "idle_pack": "idle_pack",
                 "base_plan": "plan_upgrade", "app": "app", "terminal": "terminal"}
RETENTION_STAGES = ("alert", "retain")
COLUMNS = ("msisdn", "offer_type", "kind", "fits", "p_organic", "p_unsubscribe", "channel", "effect")
KEYS = ["msisdn", "scenario", "wave"]


@dataclass(frozen=True)
class Propensities:
    """The generator's planted potential outcomes (`_truth/propensities.csv`) by msisdn, offer type and channel."""

    index: dict[str, int]
    kinds: np.ndarray           # subscribers x OFFER_TYPES, codes into KINDS
    fits: np.ndarray            # subscribers x OFFER_TYPES, bool
    p_organic: np.ndarray       # subscribers x OFFER_TYPES
    p_unsubscribe: np.ndarray   # subscribers x OFFER_TYPES
    effects: np.ndarray         # subscribers x CONTACT_CHANNELS x OFFER_TYPES

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Propensities:
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"the planted propensities have these columns {list(frame.columns)}, but these are "
                             f"required {missing}: generate RAW again with this flowops (`flowops generate`)")
        msisdns = pd.unique(frame["msisdn"].astype(str))
        index = {m: i for i, m in enumerate(msisdns)}
        shape = (len(msisdns), len(OFFER_TYPES))
        rows = frame["msisdn"].astype(str).map(index).to_numpy()
        offers = _codes(frame["offer_type"], OFFER_TYPES, "offer type")
        channels = _codes(frame["channel"], CONTACT_CHANNELS, "channel")
        kinds, fits = np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=bool)
        p_organic, p_unsubscribe = np.zeros(shape), np.zeros(shape)
        effects = np.zeros((len(msisdns), len(CONTACT_CHANNELS), len(OFFER_TYPES)))
        kinds[rows, offers] = _codes(frame["kind"], KINDS, "kind")
        fits[rows, offers] = frame["fits"].astype(int).to_numpy() == 1
        p_organic[rows, offers] = frame["p_organic"].astype(float).to_numpy()
        p_unsubscribe[rows, offers] = frame["p_unsubscribe"].astype(float).to_numpy()
        effects[rows, channels, offers] = frame["effect"].astype(float).to_numpy()
        return cls(index, kinds, fits, p_organic, p_unsubscribe, effects)

    def _rows(self, msisdn: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        i = msisdn.astype(str).map(self.index)
        known = i.notna().to_numpy()
        return i[known].astype(int).to_numpy(), known

    def _per_offer(self, values: np.ndarray, msisdn: pd.Series, offer: pd.Series) -> np.ndarray:
        rows, known = self._rows(msisdn)
        out = np.zeros(len(msisdn), dtype=values.dtype)
        out[known] = values[rows, _codes(offer, OFFER_TYPES, "offer type")[known]]
        return out

    def organic(self, msisdn: pd.Series, offer: pd.Series) -> np.ndarray:
        """Probability of ordering the offer unprompted inside a window (0 for a number never planted)."""
        return self._per_offer(self.p_organic, msisdn, offer)

    def unsubscribe(self, msisdn: pd.Series, offer: pd.Series) -> np.ndarray:
        """Chance a delivered SMS with this offer that leads to no order gets an unsubscribe reply."""
        return self._per_offer(self.p_unsubscribe, msisdn, offer)

    def kind(self, msisdn: pd.Series, offer: pd.Series) -> np.ndarray:
        """Each row's planted kind (KINDS), '' for a number never planted."""
        rows, known = self._rows(msisdn)
        out = np.full(len(msisdn), "", dtype=object)
        out[known] = np.array(KINDS, dtype=object)[self.kinds[rows, _codes(offer, OFFER_TYPES, "offer type")[known]]]
        return out

    def effect(self, msisdn: pd.Series, channel: pd.Series, offer: pd.Series) -> np.ndarray:
        """Change in P(order) a delivered contact on the channel makes, before the scenario's multiplier."""
        rows, known = self._rows(msisdn)
        planted = channel.map(lambda ch: PROPENSITY_CHANNEL.get(ch, ch))
        c = _codes(planted, CONTACT_CHANNELS, "channel")
        out = np.zeros(len(msisdn))
        out[known] = self.effects[rows, c[known], _codes(offer, OFFER_TYPES, "offer type")[known]]
        return out

    def accept(self, msisdn: pd.Series, channel: pd.Series, offer: pd.Series) -> np.ndarray:
        """P(order | one delivered contact on the channel): what a response model sees, organic ordering included."""
        return np.clip(self.organic(msisdn, offer) + self.effect(msisdn, channel, offer), 0.0, 1.0)


def _codes(values: pd.Series, names: tuple[str, ...], what: str) -> np.ndarray:
    codes = pd.Series(values).map({v: i for i, v in enumerate(names)})
    if codes.isna().any():
        raise ValueError(f"unknown {what} {sorted(set(pd.Series(values)[codes.isna()].astype(str)))}; "
                         f"known: {list(names)}")
    return codes.astype(int).to_numpy()


def offer_type(product_type: str, stage: str) -> str:
    return "retention" if stage in RETENTION_STAGES else PRODUCT_OFFER.get(product_type, "data_plan")


def multiplier(scenario: pd.Series) -> np.ndarray:
    """The scenario's planted effect multiplier per row (`EFFECTS`, 1 when absent)."""
    return scenario.map(lambda s: EFFECTS.get(s, 1.0)).to_numpy(dtype=float)


def delivery(channel: pd.Series) -> np.ndarray:
    """Share of a channel's contacts that reach the subscriber (0.5 for a channel `DELIVERY` does not name)."""
    return channel.map(DELIVERY).fillna(0.5).to_numpy(dtype=float)


def true_uplift(contacts: pd.DataFrame, propensities: Propensities) -> np.ndarray:
    """Planted expected incremental conversion of each contact, as the simulator applies a subscriber's only contact.

    Args:
        contacts: msisdn, scenario, channel, offer_type (one row per contact).

    Returns:
        delivery rate x (clip(p_organic + effect x scenario multiplier, 0, 1) - p_organic) per row: about delivery x
        effect x multiplier; summed over a policy's contacts, the orders it adds (negative for do-not-disturbs).
    """
    p0 = propensities.organic(contacts["msisdn"], contacts["offer_type"])
    effect = propensities.effect(contacts["msisdn"], contacts["channel"], contacts["offer_type"])
    reached = np.clip(p0 + effect * multiplier(contacts["scenario"]), 0.0, 1.0)
    return delivery(contacts["channel"]) * (reached - p0)


@dataclass
class Responses:
    receipts: pd.DataFrame   # channel, contact_date, msisdn, scenario, wave, delivered, ... (the receipt header)
    orders: pd.DataFrame     # msisdn, day, product_id, channel, source
    planted: pd.DataFrame    # scenario, wave, contacted, planted_uplift, held_out, expected_difference, effect


def respond(contacted: pd.DataFrame, held_out: pd.DataFrame, propensities: Propensities,
            rng: np.random.Generator) -> Responses:
    """Receipts and orders for one wave.

    Args:
        contacted: one row per exported contact: msisdn, scenario, wave, channel, kind, product_id, offer_type,
            contact_date, window_end (dates).
        held_out: one row per member not contacted: msisdn, scenario, wave, product_id, offer_type, contact_date,
            window_end, and optionally `group`: held_out (the control group, what the contacted are compared with;
            the default) or uncontacted (in the treated arm, left out by the allocation). Both order on their own.
    """
    contacted = contacted.reset_index(drop=True)
    n = len(contacted)
    q = delivery(contacted["channel"])
    effect = multiplier(contacted["scenario"]) * propensities.effect(contacted["msisdn"], contacted["channel"],
                                                                     contacted["offer_type"])
    delivered = rng.random(n) < q

    # One row per subscriber, scenario and wave (the contacted first), and which of them each contact belongs to.
    groups = held_out.get("group", "held_out")
    people = pd.concat([contacted.assign(group="contacted"), held_out.assign(group=groups)], ignore_index=True)
    first = people.groupby(KEYS, sort=True, as_index=False).agg(
        group=("group", "first"), product_id=("product_id", "first"), offer_type=("offer_type", "first"),
        contact_date=("contact_date", "min"), window_end=("window_end", "max"))
    member = pd.MultiIndex.from_frame(first[KEYS]).get_indexer(pd.MultiIndex.from_frame(contacted[KEYS]))
    m = len(first)
    p0 = propensities.organic(first["msisdn"], first["offer_type"])
    p = np.clip(p0 + np.bincount(member, weights=np.where(delivered, effect, 0.0), minlength=m), 0.0, 1.0)
    ordered = rng.random(m) < p
    # The channel an order is credited to: the first contact that reached the subscriber, if any did.
    reached = pd.Series(contacted["channel"].to_numpy()[delivered]).groupby(member[delivered]).first()
    channel = pd.Series("app", index=range(m), dtype=object)
    channel[reached.index] = reached.to_numpy()
    is_reached = np.zeros(m, dtype=bool)
    is_reached[reached.index.to_numpy(dtype=int)] = True
    buyers = first[ordered]
    orders = pd.DataFrame({
        "msisdn": buyers["msisdn"].to_numpy(),
        "day": _days(buyers["contact_date"], buyers["window_end"], rng).to_numpy(),
        "product_id": buyers["product_id"].to_numpy(), "channel": channel[ordered].to_numpy(),
        "source": np.where(is_reached[ordered], "campaign", "organic")})

    unsubscribe = propensities.unsubscribe(contacted["msisdn"], contacted["offer_type"])
    receipts = _receipts(contacted, delivered, ordered[member], unsubscribe, rng)
    expected = _expected_order(p0, member, q, effect)
    return Responses(receipts, orders, _planted(first, p0, expected))


def _expected_order(p0: np.ndarray, member: np.ndarray, q: np.ndarray, effect: np.ndarray) -> np.ndarray:
    """E[clip(p0 + sum of the delivered contacts' effects, 0, 1)] per person, over which of their contacts arrive.

    Exact: every delivered/undelivered combination of a person's contacts (a handful at most) with its probability.
    Summed as p0 plus the changes, so that contacts without effect change nothing, to the last bit.
    """
    position = pd.Series(member).groupby(member).cumcount().to_numpy()
    k = int(position.max()) + 1 if len(member) else 0
    reach, gain = np.zeros((len(p0), k)), np.zeros((len(p0), k))
    reach[member, position], gain[member, position] = q, effect
    change = np.zeros(len(p0))
    for combination in range(2 ** k):
        arrived = np.array([(combination >> j) & 1 for j in range(k)], dtype=bool)
        chance = np.prod(np.where(arrived, reach, 1.0 - reach), axis=1)
        change += chance * (np.clip(p0 + gain[:, arrived].sum(axis=1), 0.0, 1.0) - p0)
    return p0 + change


def _planted(first: pd.DataFrame, p0: np.ndarray, expected: np.ndarray) -> pd.DataFrame:
    """Per scenario and wave: the planted uplift of the contacted and the expected treated-minus-control difference."""
    treated = (first["group"] == "contacted").to_numpy()
    held = (first["group"] == "held_out").to_numpy()
    people = pd.DataFrame({"scenario": first["scenario"], "wave": first["wave"], "treated": treated,
                           "lift": np.where(treated, expected - p0, np.nan), "p1": np.where(treated, expected, np.nan),
                           "p0": np.where(held, p0, np.nan)})
    planted = people.groupby(["scenario", "wave"], sort=True, as_index=False).agg(
        contacted=("treated", "sum"), planted_uplift=("lift", "mean"), held_out=("p0", "count"),
        treated_p1=("p1", "mean"), control_p0=("p0", "mean"))
    # What treated minus control conversion is in expectation for this very split (the chance difference between
    # the two groups' unprompted ordering included): the interval's target when only the answers are redrawn.
    planted["expected_difference"] = planted["treated_p1"] - planted["control_p0"]
    planted["planted_uplift"] = planted["planted_uplift"].fillna(0.0)
    planted["effect"] = multiplier(planted["scenario"])
    return planted[["scenario", "wave", "contacted", "planted_uplift", "held_out", "expected_difference", "effect"]]


def _days(start: pd.Series, end: pd.Series, rng: np.random.Generator) -> pd.Series:
    """A uniform day in [start, end] per row."""
    span = (pd.to_datetime(end) - pd.to_datetime(start)).dt.days.clip(lower=0).to_numpy()
    offset = np.floor(rng.random(len(span)) * (span + 1)).astype(int)
    return (pd.to_datetime(start) + pd.to_timedelta(offset, unit="D")).dt.date


def _receipts(contacted: pd.DataFrame, delivered: np.ndarray, ordered: np.ndarray, unsubscribe: np.ndarray,
              rng: np.random.Generator) -> pd.DataFrame:
    """One receipt per contact; `ordered` is whether the contact's subscriber ordered the offer (for any reason)."""
    n = len(contacted)
    kind = contacted["kind"].to_numpy()
    display, sms = kind == "display", kind == "sms"
    # A passive offer's contact is the day the subscriber touched the channel inside the window.
    day = np.where(display, _days(contacted["contact_date"], contacted["window_end"], rng).to_numpy(),
                   contacted["contact_date"].to_numpy())
    clicked = delivered & ordered & (rng.random(n) < CLICKED)
    opened = display & delivered & (clicked | (rng.random(n) < 0.4))
    unsubscribed = sms & delivered & ~ordered & (rng.random(n) < unsubscribe)
    replied = sms & (unsubscribed | (delivered & ordered & (rng.random(n) < 0.6)))
    reply = np.where(unsubscribed, np.where(rng.random(n) < 0.5, "TD", "退订"), np.where(replied, "KT", ""))
    rated = delivered & (rng.random(n) < SURVEYED)
    score = np.where(ordered, rng.integers(4, 6, n), rng.integers(1, 5, n))

    def flag(values: np.ndarray, applies: np.ndarray | bool = True) -> np.ndarray:
        return np.where(applies, np.where(values, "1", "0"), "")

    return pd.DataFrame({
        "channel": contacted["channel"].to_numpy(),
        "contact_date": [d.isoformat() if isinstance(d, dt.date) else str(d) for d in day],
        "msisdn": contacted["msisdn"].astype(str).to_numpy(), "scenario": contacted["scenario"].to_numpy(),
        "wave": contacted["wave"].astype(int).to_numpy(), "delivered": flag(delivered),
        "opened": flag(opened, display), "clicked": flag(clicked), "replied": flag(replied, sms),
        "reply_text": reply, "satisfaction": np.where(rated, score.astype(str), ""),
    })
