"""Planted truth under ``OUT/_truth/``: what later pipeline steps should find. For tests only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flowops.synth import archetypes as A
from flowops.synth.catalog import CATEGORIES, load_devices
from flowops.synth.monthly import iso
from flowops.synth.planning import CONTACT_CHANNELS, MonthPlan, Planner
from flowops.synth.population import IDENTITIES, Population

OFFER_TYPES = ("data_plan", "booster", "idle_pack", "plan_upgrade", "app", "terminal", "retention")
USAGE_COLUMNS = ("month", "msisdn", "bytes", "idle_bytes", "records", "active_days") + tuple(
    f"bytes_{c}" for c in CATEGORIES + ("unknown",))

# Potential outcomes per subscriber x offer type (see write_propensities). Kinds, in the order of their codes:
KINDS = ("persuadable", "sure_thing", "lost_cause", "do_not_disturb")
PERSUADABLE, SURE_THING, LOST_CAUSE, DO_NOT_DISTURB = range(len(KINDS))
# Offers people buy for themselves in the app once they see the need (young digital subscribers self-serve them).
SELF_SERVE = ("data_plan", "booster", "idle_pack", "plan_upgrade", "app")

# Fit: how well an offer type suits the subscriber's situation, as added scores (0 = no reason to want it).
_FIT = {
    A.ZERO_SMART: {"app": 1.0, "data_plan": 0.6}, A.ZERO_FEATURE: {"terminal": 1.2},
    A.NEW: {"data_plan": 0.8, "app": 0.8}, A.LOW_SMART: {"app": 1.0, "data_plan": 0.4},
    A.LOW_FEATURE: {"terminal": 1.3}, A.NO_PLAN: {"data_plan": 1.8},
    A.IDLE_NO_PACK: {"idle_pack": 2.0}, A.OVERFLOW: {"plan_upgrade": 1.6, "booster": 1.2},
    A.FALLING: {"retention": 1.5}, A.COMPLAINER: {"retention": 1.0},
    A.CHURN_RISK: {"retention": 1.5}, A.STEADY: {"app": 0.2, "retention": 0.9},
}
_IDENTITY = [  # per identity (population.IDENTITIES order)
    {"app": 0.5, "booster": 0.3}, {"plan_upgrade": 0.2}, {"terminal": 0.2, "app": -0.3},
    {"plan_upgrade": 0.4, "terminal": 0.3}, {"booster": 0.2}, {},
]
FIT_FROM, FIT_TO = 0.3, 1.3     # fit score -> fit level 0..1 (linear in between)
FITS = 0.5                      # fit level from which the offer counts as fitting (`fits` in the truth file)
NO_FIT_SCALE = 0.1              # organic probability and effects of an offer that does not fit at all

# Kind log-weights: a base, then (who, which offers, kind, added weight) for attributes the tags show.
_KIND_BASE = (0.3, -0.6, -0.3, -1.4)
_KIND_RULES = (
    ("student", "self_serve", SURE_THING, 1.6), ("student", "all", PERSUADABLE, -0.6),
    ("white_collar", "self_serve", SURE_THING, 1.2),
    ("farmer", "all", PERSUADABLE, 1.3), ("farmer", "self_serve", SURE_THING, -1.0),
    ("business_traveller", "all", DO_NOT_DISTURB, 1.6), ("business_traveller", "upgrade", SURE_THING, 0.5),
    ("individual_merchant", "app", LOST_CAUSE, 1.5), ("individual_merchant", "all", LOST_CAUSE, 0.3),
    ("other", "all", PERSUADABLE, 0.3),
    ("age_16_24", "self_serve", SURE_THING, 0.5), ("age_45_plus", "all", PERSUADABLE, 0.6),
    ("age_55_plus", "app", LOST_CAUSE, 0.8),
    ("tenure_under_1y", "all", PERSUADABLE, 0.9), ("tenure_8y_plus", "all", DO_NOT_DISTURB, 0.5),
    ("vip", "all", DO_NOT_DISTURB, 0.7), ("vip", "premium", SURE_THING, 0.5), ("vip", "booster", LOST_CAUSE, 0.6),
    ("feature_phone", "app", LOST_CAUSE, 1.5), ("feature_phone", "terminal", PERSUADABLE, 0.6),
    ("smartphone", "self_serve", SURE_THING, 0.3),
)
_OFFER_GROUPS = {"all": OFFER_TYPES, "self_serve": SELF_SERVE, "upgrade": ("plan_upgrade", "terminal", "booster"),
                 "premium": ("plan_upgrade", "terminal", "retention"), "app": ("app",), "booster": ("booster",),
                 "terminal": ("terminal",)}
# The situation behind each scenario's pool (the subscriber's usual archetype) x the offer: who pays pay-per-use
# for data or overflows every month mostly orders the plan that saves them money on their own; who never used
# data, or little of it, or is new, needs the push; an idle-time user rarely cares for an idle pack; falling users
# can be won back; churn risks either stay for an offer or are put off by it; complainers do not want marketing;
# steady subscribers stay anyway.
_SITUATION = (
    (A.NO_PLAN, ("data_plan",), SURE_THING, 3.0), (A.OVERFLOW, ("plan_upgrade", "booster"), SURE_THING, 3.0),
    (A.ZERO_SMART, ("data_plan", "app"), PERSUADABLE, 2.0), (A.LOW_SMART, ("app", "data_plan"), PERSUADABLE, 1.6),
    (A.NEW, ("data_plan", "app"), PERSUADABLE, 1.6), (A.ZERO_FEATURE, ("terminal",), PERSUADABLE, 1.6),
    (A.LOW_FEATURE, ("terminal",), PERSUADABLE, 1.6), (A.IDLE_NO_PACK, ("idle_pack",), LOST_CAUSE, 1.2),
    (A.FALLING, ("retention",), PERSUADABLE, 1.4), (A.CHURN_RISK, ("retention",), PERSUADABLE, 0.8),
    (A.CHURN_RISK, ("retention",), DO_NOT_DISTURB, 1.0), (A.COMPLAINER, ("retention",), DO_NOT_DISTURB, 1.8),
    (A.STEADY, ("retention",), SURE_THING, 1.0),
)
FIT_WEIGHT = {PERSUADABLE: 0.4, SURE_THING: 1.1}    # times the fit level
NO_FIT_WEIGHT = {LOST_CAUSE: 2.0}                   # times (1 - fit level)

# Per kind, for a fitting offer: organic probability per window, unsubscribe chance, and the effect of one
# delivered contact per channel (CONTACT_CHANNELS order: sms, app, web, outbound, manager).
_ORGANIC = (0.005, 0.07, 0.003, 0.03)
_UNSUBSCRIBE = (0.01, 0.005, 0.03, 0.25)
_EFFECT = np.array([
    [0.030, 0.020, 0.012, 0.150, 0.200],
    [0.002, 0.002, 0.001, 0.004, 0.005],
    [0.002, 0.001, 0.001, 0.008, 0.010],
    [-0.012, -0.004, -0.002, -0.020, -0.020],
])
PREFERRED_BONUS = 1.6           # a positive effect on the preferred channel (a negative one is halved)
MANAGER_WITHOUT_VIP = 0.4       # an account manager's call means less to someone who has none


def write_csv(df: pd.DataFrame, path: Path, append: bool = False) -> None:
    """UTF-8 CSV with a header (unless appending to an existing file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = not (append and path.exists())
    df.to_csv(path, mode="a" if append else "w", header=header, index=False,
              lineterminator="\n", quoting=csv.QUOTE_MINIMAL, encoding="utf-8")


def archetype_rows(plan: MonthPlan, pop: Population) -> pd.DataFrame:
    """``archetypes.csv`` rows of a month."""
    names = np.array(A.ARCHETYPES)[plan.arch]
    return pd.DataFrame({
        "month": plan.month,
        "msisdn": pop.msisdn[plan.subs].astype("U11"),
        "archetype": names,
        "expected_stage": [A.STAGE_OF[a] for a in names],
        "expected_flow_type": np.array(A.FLOW_TYPES)[plan.flow],
    })


def write_handsets(path: Path, pop: Population) -> None:
    """Every handset each subscriber had during the run, with the day it came into use."""
    dev = load_devices()
    tac = np.array(dev.tac, dtype=object)
    model = np.array(dev.model, dtype=object)
    first = pd.DataFrame({"msisdn": pop.msisdn.astype("U11"), "from_date": iso(pop.handset_from),
                          "tac": tac[pop.dev], "model": model[pop.dev],
                          "imei": pop.imei1.astype("U15")})
    ch = np.flatnonzero(pop.dev2 >= 0)
    second = pd.DataFrame({"msisdn": pop.msisdn[ch].astype("U11"),
                           "from_date": iso(pop.change_ord[ch]), "tac": tac[pop.dev2[ch]],
                           "model": model[pop.dev2[ch]], "imei": pop.imei2[ch].astype("U15")})
    df = pd.concat([first, second]).sort_values(["msisdn", "from_date"], kind="stable")
    write_csv(df, path)


def fit_levels(planner: Planner) -> np.ndarray:
    """How well each offer type suits each subscriber, 0 (no reason to want it) to 1: (subscribers, OFFER_TYPES)."""
    pop = planner.pop
    score = np.zeros((pop.n, len(OFFER_TYPES)))
    for h, fits in _FIT.items():
        for offer, v in fits.items():
            score[pop.home == h, OFFER_TYPES.index(offer)] += v
    for offer, v in _FIT[A.NEW].items():    # joiners settle into an ordinary home but start out new
        score[pop.join_month >= 0, OFFER_TYPES.index(offer)] += v
    for i, fits in enumerate(_IDENTITY):
        for offer, v in fits.items():
            score[pop.identity == i, OFFER_TYPES.index(offer)] += v
    vip = planner.vip.astype(float)
    for offer in ("plan_upgrade", "terminal", "retention"):
        score[:, OFFER_TYPES.index(offer)] += 0.25 * vip
    score[:, OFFER_TYPES.index("booster")] -= 0.2 * vip
    return np.clip((score - FIT_FROM) / (FIT_TO - FIT_FROM), 0.0, 1.0)


def observable(planner: Planner) -> dict[str, np.ndarray]:
    """The subscriber attributes the kinds depend on, each something the pipeline's tags show."""
    pop = planner.pop
    tenure = planner.bounds[0][0] - pop.activation      # days at the run's start (negative for joiners)
    who = {name: pop.identity == i for i, name in enumerate(IDENTITIES)}
    who.update(age_16_24=pop.age_band == 0, age_45_plus=pop.age_band >= 3, age_55_plus=pop.age_band >= 4,
               tenure_under_1y=tenure < 365, tenure_8y_plus=tenure >= 8 * 365, vip=planner.vip > 0,
               feature_phone=planner.feature, smartphone=~planner.feature)
    return who


def planted_outcomes(planner: Planner, seed: int) -> pd.DataFrame:
    """Potential outcomes per subscriber, offer type and contact channel (``propensities.csv``, see the README).

    Each subscriber x offer type gets a kind drawn from log-weights of observable attributes plus noise (a
    subscriber's temper, shared by their offers, and the draw itself), then the kind's organic probability,
    unsubscribe chance and per-channel effect of a delivered contact, scaled by how well the offer fits.
    """
    kind, p_organic, p_unsubscribe, effect = _outcomes(planner, np.random.default_rng(np.random.SeedSequence(
        [seed, 6])))
    n_of, n_ch = len(OFFER_TYPES), len(CONTACT_CHANNELS)

    def each_channel(values: np.ndarray) -> np.ndarray:
        return np.repeat(values.ravel(), n_ch)

    return pd.DataFrame({
        "msisdn": np.repeat(planner.pop.msisdn.astype("U11"), n_of * n_ch),
        "offer_type": np.tile(np.repeat(np.array(OFFER_TYPES), n_ch), planner.pop.n),
        "kind": each_channel(np.array(KINDS)[kind]),
        "fits": each_channel((fit_levels(planner) >= FITS).astype(np.int8)),
        "p_organic": each_channel(np.round(p_organic, 6)),
        "p_unsubscribe": each_channel(np.round(p_unsubscribe, 6)),
        "channel": np.tile(np.array(CONTACT_CHANNELS), planner.pop.n * n_of),
        "effect": np.round(effect.ravel(), 6) + 0.0,    # + 0.0: no "-0.000000"
    })


def expected_effects(planner: Planner, seed: int, draws: int = 32) -> np.ndarray:
    """Each subscriber's expected effect per offer type and channel (subscribers x OFFER_TYPES x CONTACT_CHANNELS)
    over the draws `planted_outcomes` makes (the temper, the kind, the sizes) and the preferred channel's (a trait
    no tag shows: the pipeline learns it from responses alone), everything else as planted: the most any targeting
    could know of a subscriber from their attributes (validation only). The mean of `draws` fresh draws, each
    independent of the planted ones."""
    total = np.zeros((planner.pop.n, len(OFFER_TYPES), len(CONTACT_CHANNELS)))
    for d in range(draws):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 6, 1 + d]))
        total += _outcomes(planner, rng, planner.draw_preference(rng))[3]
    return total / draws


def _outcomes(planner: Planner, rng: np.random.Generator, pref: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(kind, p_organic, p_unsubscribe, effect) of every subscriber x offer type (x channel, for effect), the noise
    drawn from `rng`; `pref` in place of the planted preferred channels."""
    pop = planner.pop
    n, n_of, n_ch, n_k = pop.n, len(OFFER_TYPES), len(CONTACT_CHANNELS), len(KINDS)
    fit = fit_levels(planner)
    who = observable(planner)
    offers = {g: np.isin(np.array(OFFER_TYPES), group) for g, group in _OFFER_GROUPS.items()}
    w = np.tile(np.array(_KIND_BASE), (n, n_of, 1))
    for name, group, kind, v in _KIND_RULES:
        w[:, :, kind] += v * (who[name][:, None] & offers[group][None, :])
    for home, group, kind, v in _SITUATION:
        w[:, :, kind] += v * ((pop.home == home)[:, None] & np.isin(np.array(OFFER_TYPES), group)[None, :])
    for kind, v in FIT_WEIGHT.items():
        w[:, :, kind] += v * fit
    for kind, v in NO_FIT_WEIGHT.items():
        w[:, :, kind] += v * (1.0 - fit)
    w += rng.normal(0.0, 0.5, (n, 1, n_k))
    kind = np.argmax(w + rng.gumbel(size=w.shape), axis=2)

    scale = NO_FIT_SCALE + (1.0 - NO_FIT_SCALE) * fit
    p_organic = np.minimum(np.array(_ORGANIC)[kind] * scale * rng.lognormal(0.0, 0.35, (n, n_of)), 0.3)
    p_unsubscribe = np.minimum(np.array(_UNSUBSCRIBE)[kind] * rng.lognormal(0.0, 0.3, (n, n_of)), 0.6)
    effect = (_EFFECT[kind] * scale[:, :, None] * rng.lognormal(0.0, 0.3, (n, n_of, 1))
              * rng.lognormal(0.0, 0.15, (n, n_of, n_ch)))
    pref = planner.pref_channel if pref is None else pref
    rows = np.flatnonzero(pref >= 0)
    on_pref = effect[rows, :, pref[rows]]
    effect[rows, :, pref[rows]] = np.where(on_pref > 0, PREFERRED_BONUS * on_pref, 0.5 * on_pref)
    effect[planner.vip == 0, :, CONTACT_CHANNELS.index("manager")] *= MANAGER_WITHOUT_VIP
    # A contact can put off at most what the subscriber would have ordered anyway.
    return kind, p_organic, p_unsubscribe, np.maximum(effect, -0.9 * p_organic[:, :, None])


def write_propensities(truth: Path, planner: Planner, seed: int) -> None:
    """Planted potential outcomes (``propensities.csv``) and channel preference (``channel_preference.csv``)."""
    frame = planted_outcomes(planner, seed)
    step = 50_000 * len(OFFER_TYPES) * len(CONTACT_CHANNELS)     # rows of 50,000 subscribers at a time
    for start in range(0, max(len(frame), 1), step):
        part = frame.iloc[start:start + step].copy()
        for column in ("p_organic", "p_unsubscribe", "effect"):
            part[column] = np.char.mod("%.6f", part[column].to_numpy())
        write_csv(part, truth / "propensities.csv", append=start > 0)
    pref = planner.pref_channel
    write_csv(pd.DataFrame({
        "msisdn": planner.pop.msisdn.astype("U11"),
        "preferred_channel": np.where(pref >= 0, np.array(CONTACT_CHANNELS)[np.maximum(pref, 0)], ""),
    }), truth / "channel_preference.csv")


def usage_rows(month: str, subs: np.ndarray, pop: Population, acc: np.ndarray,
               active: np.ndarray) -> pd.DataFrame:
    """``usage_monthly.csv`` rows: every subscriber of the month's CRM, zeros included."""
    data = {"month": month, "msisdn": pop.msisdn[subs].astype("U11"), "bytes": acc[:, 0],
            "idle_bytes": acc[:, 1], "records": acc[:, 2], "active_days": active.sum(axis=1)}
    for i, c in enumerate(CATEGORIES + ("unknown",)):
        data[f"bytes_{c}"] = acc[:, 3 + i]
    return pd.DataFrame(data, columns=list(USAGE_COLUMNS))


def write_json(path: Path, obj: dict) -> None:
    """Pretty, key-sorted JSON (stable bytes for the same content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")
