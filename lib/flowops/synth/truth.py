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
from flowops.synth.population import Population

OFFER_TYPES = ("data_plan", "booster", "idle_pack", "plan_upgrade", "app", "terminal", "retention")
USAGE_COLUMNS = ("month", "msisdn", "bytes", "idle_bytes", "records", "active_days") + tuple(
    f"bytes_{c}" for c in CATEGORIES + ("unknown",))

# Log-odds added per home archetype and offer type: people take what fits their situation.
_FIT = {
    A.ZERO_SMART: {"app": 1.0, "data_plan": 0.3}, A.ZERO_FEATURE: {"terminal": 1.2},
    A.NEW: {"data_plan": 0.8, "app": 0.8}, A.LOW_SMART: {"app": 1.0, "data_plan": 0.4},
    A.LOW_FEATURE: {"terminal": 1.3}, A.NO_PLAN: {"data_plan": 1.8},
    A.IDLE_NO_PACK: {"idle_pack": 2.0}, A.OVERFLOW: {"plan_upgrade": 1.6, "booster": 1.2},
    A.FALLING: {"retention": 1.5}, A.COMPLAINER: {"retention": 1.0},
    A.CHURN_RISK: {"retention": 1.5}, A.STEADY: {"app": 0.2},
}
_IDENTITY = [  # per identity (population.IDENTITIES order)
    {"app": 0.5, "booster": 0.3}, {"plan_upgrade": 0.2}, {"terminal": 0.2, "app": -0.3},
    {"plan_upgrade": 0.4, "terminal": 0.3}, {"booster": 0.2}, {},
]
_CHANNEL_BASE = {"sms": -0.4, "app": 0.0, "web": -0.5, "outbound": 0.3, "manager": 0.6}
PREFERRED_BONUS = 1.2


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


def write_propensities(truth: Path, planner: Planner, seed: int) -> None:
    """Planted acceptance probability per subscriber, channel and offer, and channel preference."""
    pop = planner.pop
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
    n, n_ch, n_of = pop.n, len(CONTACT_CHANNELS), len(OFFER_TYPES)
    logit = np.full((n, n_ch, n_of), -2.0)
    home = pop.home
    for h, fits in _FIT.items():
        for offer, v in fits.items():
            logit[home == h, :, OFFER_TYPES.index(offer)] += v
    for i, fits in enumerate(_IDENTITY):
        for offer, v in fits.items():
            logit[pop.identity == i, :, OFFER_TYPES.index(offer)] += v
    vip = planner.vip.astype(float)
    for offer in ("plan_upgrade", "terminal", "retention"):
        logit[:, :, OFFER_TYPES.index(offer)] += 0.25 * vip[:, None]
    logit[:, :, OFFER_TYPES.index("booster")] -= 0.2 * vip[:, None]
    for c, ch in enumerate(CONTACT_CHANNELS):
        logit[:, c, :] += _CHANNEL_BASE[ch]
    logit[:, CONTACT_CHANNELS.index("manager"), :] -= np.where(vip > 0, 0.0, 2.5)[:, None]
    pref = planner.pref_channel
    has = pref >= 0
    logit[np.flatnonzero(has), pref[has], :] += PREFERRED_BONUS
    logit += rng.normal(0, 0.5, (n, 1, 1)) + rng.normal(0, 0.25, (n, n_ch, n_of))
    p = 1.0 / (1.0 + np.exp(-logit))
    msisdn = pop.msisdn.astype("U11")
    write_csv(pd.DataFrame({
        "msisdn": np.repeat(msisdn, n_ch * n_of),
        "channel": np.tile(np.repeat(np.array(CONTACT_CHANNELS), n_of), n),
        "offer_type": np.tile(np.array(OFFER_TYPES), n * n_ch),
        "p_accept": np.char.mod("%.4f", p.ravel()),
    }), truth / "propensities.csv")
    write_csv(pd.DataFrame({
        "msisdn": msisdn,
        "preferred_channel": np.where(has, np.array(CONTACT_CHANNELS)[np.maximum(pref, 0)], ""),
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
