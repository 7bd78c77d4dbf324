"""One wave's targeting decisions, from the tagged month and what earlier waves and months left: the pure core of
`flowops target` (the step reads its inputs once, hands them here and writes what comes back).

Wave 1 plans the whole campaign in one optimisation: its own options and those of the later waves (valued by
the chance the subscriber has not ordered by then), so a first wave cannot spend a budget, a contact slot or a
scenario's attempts that a later wave would use better. Only wave 1's decisions are kept; each later wave is
solved again when its turn comes, with what the earlier waves really did fixed (contacts made, days booked,
budget actually spent).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.scenarios import allocate
from flowops.scenarios.estimates import Estimates
from flowops.scenarios.messages import Renderer, rendered, segments
from flowops.scenarios.policy import (
    CONTROL,
    HOLDOUT,
    PENDING,
    TREATED,
    compared_arm,
    draw_arms,
    selections,
    units,
    with_eligibility,
)
from flowops.scenarios.value import UNIT, options, with_values, worthwhile

# Reasons of a treated-arm unit the optimisation left out: which of its limits was used up.
CROWDED = ("cap", "attempts", "capacity", "budget", "outvalued")


@dataclass(frozen=True)
class Earlier:
    """What the campaign month's earlier waves did (wave 2 and later)."""

    members: DataFrame        # sub_id, scenario, arm: the previous wave's non-converters of both arms
    undelivered: DataFrame    # sub_id, scenario: their previous contact was not delivered
    used_caps: dict[tuple[str, str], int]        # (sub_id, mode) -> contacts made
    used_attempts: dict[tuple[str, str], int]    # (sub_id, scenario) -> contacts made
    booked: dict[tuple[str, dt.date], int]       # (channel, day) -> contacts booked
    spent: dict[str, float]                      # scenario -> yuan spent (channel cost, incentives paid)


@dataclass(frozen=True)
class Scorer:
    """Where each option's uplift comes from: the per scenario x channel estimates, or the uplift model
    (`models/uplift.py`, reading `features` of the tags) where it won on a held-out month."""

    name: str                          # "estimates" or "model"
    model: Any = None                  # an UpliftModel
    features: tuple[str, ...] | list[str] = ()


@dataclass
class Plan:
    """Every unit of the wave with its decision, and how the optimisation went (and the greedy baseline)."""

    units: pd.DataFrame
    optimal: allocate.Stats
    greedy: allocate.Stats
    planned_later: int = 0            # later-wave contacts the plan reserved room for
    counts: dict[str, int] = field(default_factory=dict)


def plan_wave(tagged: DataFrame, conf: Definitions, month: str, campaign_month: str, wave: int, *,
              opt_outs: DataFrame, immunity: DataFrame, estimates: Estimates, scorer: Scorer,
              earlier: Earlier | None = None, time_limit: float = 60.0) -> Plan:
    """Decide wave `wave` of month `month`'s campaign (contacts in `campaign_month`)."""
    policy = conf.channels.policy
    selected = _selected(tagged, conf, opt_outs, immunity, earlier)
    waves = range(wave, max(len(s.waves) for s in conf.scenarios) + 1)
    frame = units(selected, conf.scenarios, conf.catalogue, conf.channels, campaign_month, waves)
    frame["rounds"] = [(m or {}).get(f, 0) if isinstance(m, dict) else _entry(m, f)
                       for m, f in zip(frame["immunity"], frame["family"], strict=True)]
    frame = with_eligibility(frame, conf.channels)
    opts = options(frame[frame["reason"] == PENDING])
    if scorer.model is not None and len(opts):
        opts = _scored(opts, tagged, scorer)
    opts = with_values(opts, conf.channels, estimates, wave, policy.objective)
    opts["message"] = pd.Series(Renderer(conf.scenarios, conf.channels, conf.catalogue).render(opts),
                                index=opts.index, dtype=object)
    frame = _with_value_reasons(frame, opts)
    earlier_arms = ({(s, c): a for s, c, a in zip(selected["sub_id"], selected["scenario"], selected["earlier_arm"],
                                                  strict=True)} if earlier is not None else None)
    frame = draw_arms(frame, month, wave, policy.exploration_share, earlier_arms)
    scarce = {c.id for c in conf.channels.channels if c.daily_capacity}
    kept = worthwhile(opts[rendered(opts["message"])].merge(frame[[*UNIT, "arm", "explore"]], on=UNIT), month, scarce)
    return _decide(frame, kept, conf, wave, scorer.name, earlier, time_limit)


def _selected(tagged: DataFrame, conf: Definitions, opt_outs: DataFrame, immunity: DataFrame,
              earlier: Earlier | None) -> pd.DataFrame:
    """The scenarios' selections with each subscriber's opt-outs and immunity (and, from wave 2, the earlier
    arm and delivery) — one Spark query, collected."""
    sel = selections(tagged, conf.scenarios, conf.catalogue, conf.channels)
    if earlier is not None:
        sel = (sel.join(earlier.members.withColumnRenamed("arm", "earlier_arm"), ["sub_id", "scenario"])
               .join(earlier.undelivered.withColumn("undelivered", F.lit(True)), ["sub_id", "scenario"], "left"))
    by_sub = immunity.groupBy("sub_id").agg(F.map_from_entries(F.collect_list(F.struct("family", "rounds")))
                                            .alias("immunity"))
    sel = sel.join(opt_outs, "sub_id", "left").join(by_sub, "sub_id", "left")
    return sel.toPandas()


def _entry(entries: object, family: str) -> int:
    """A map cell as pandas gives it (a list of (key, value) pairs, or nothing)."""
    if entries is None or (isinstance(entries, float) and np.isnan(entries)):
        return 0
    return dict(entries).get(family, 0)


def _scored(opts: pd.DataFrame, tagged: DataFrame, scorer: Scorer) -> pd.DataFrame:
    """The options with the model's organic conversion and uplift (`model_organic`, `model_uplift`)."""
    keys = opts[["sub_id", "scenario", "channel"]].drop_duplicates()
    spark = tagged.sparkSession
    rows = spark.createDataFrame(keys)
    features = [c for c in scorer.features if c not in rows.columns]
    scored = scorer.model.transform(rows.join(tagged.select("sub_id", *features), "sub_id", "left")).select(
        "sub_id", "scenario", "channel", F.col("p_control").alias("model_organic"),
        F.col("uplift_score").alias("model_uplift")).toPandas()
    return opts.merge(scored, on=["sub_id", "scenario", "channel"], how="left")


def _with_value_reasons(frame: pd.DataFrame, opts: pd.DataFrame) -> pd.DataFrame:
    """no_message (no channel left whose message renders) and no_value (none left worth contacting)."""
    renders = rendered(opts["message"])
    per_unit = pd.DataFrame({"_renders": renders, "_worth": renders & (opts["weight"] > 0).to_numpy()}).groupby(
        [opts[k] for k in UNIT]).any()
    out = frame.merge(per_unit, left_on=UNIT, right_index=True, how="left")
    renders, worth = (out[c].astype("boolean").fillna(False).to_numpy(bool) for c in ("_renders", "_worth"))
    pending = (out["reason"] == PENDING).to_numpy()
    out.loc[pending & ~renders, "reason"] = "no_message"
    out.loc[pending & renders & ~worth, "reason"] = "no_value"
    return out.drop(columns=["_renders", "_worth"])


def limits_of(conf: Definitions, earlier: Earlier | None) -> allocate.Limits:
    """The allocation's limits: caps, attempts, capacities, and budgets less what earlier waves spent."""
    spent = earlier.spent if earlier else {}
    return allocate.Limits(
        caps=conf.channels.policy.contacts_per_cycle.model_dump(),
        attempts={s.id: s.model.strategy.max_attempts for s in conf.scenarios},
        daily={c.id: c.daily_capacity for c in conf.channels.channels if c.daily_capacity},
        budgets={s.id: s.model.budget_yuan - spent.get(s.id, 0.0) for s in conf.scenarios if s.model.budget_yuan},
        used_caps=earlier.used_caps if earlier else {}, used_attempts=earlier.used_attempts if earlier else {},
        booked=earlier.booked if earlier else {})


def _decide(frame: pd.DataFrame, opts: pd.DataFrame, conf: Definitions, wave: int, scorer: str,
            earlier: Earlier | None, time_limit: float) -> Plan:
    limits = limits_of(conf, earlier)
    problem = _problem(opts[opts["arm"] == TREATED])
    best = allocate.solve(problem, limits, time_limit=time_limit)
    baseline = allocate.greedy(problem, limits)
    chosen = best.chosen
    would = _would_contact(opts, problem, chosen, limits, wave, time_limit)
    out = frame[frame["wave"] == wave].reset_index(drop=True)
    picked = chosen[chosen["wave"] == wave].set_index(UNIT)
    # Every unit's intended channel: the first its route offers (an explorer's drawn one), chosen before the
    # allocation by the same rule in both arms, so experiments can be compared per channel. The control group and
    # holdouts get it as the channel and day (its window's first) they would have had.
    first = opts[opts["wave"] == wave].sort_values([*UNIT, "rank"]).drop_duplicates(UNIT).set_index(UNIT)
    held = first[first["arm"].isin([CONTROL, HOLDOUT])]
    held = held.assign(contact_date=held["window_start"])
    index = pd.MultiIndex.from_frame(out[UNIT])
    is_picked = index.isin(picked.index)
    is_held = index.isin(held.index) & out["arm"].isin([CONTROL, HOLDOUT]).to_numpy()
    both = pd.concat([picked, held])
    for column in ("channel", "contact_date", "organic", "uplift", "expected_value", "weight", "cost_yuan",
                   "message"):
        out[column] = both[column].reindex(index).to_numpy() if len(both) else None
    out["intended_channel"] = first["channel"].reindex(index).to_numpy() if len(first) else None
    out["decision"] = np.where(is_picked, "targeted", np.where(is_held, "control", "suppressed"))
    out["reason"] = _reasons(out, problem, chosen, limits, is_picked)
    out["control"] = out["decision"] == "control"
    out["would_contact"] = np.where(out["arm"].isna(), None, np.where(
        out["arm"].eq(TREATED).to_numpy(), is_picked,
        out["arm"].eq(compared_arm(wave)).to_numpy() & index.isin(would)).astype(object))
    out["scorer"] = scorer
    out.loc[~(is_picked | is_held), ["channel", "contact_date", "message"]] = None
    out.loc[is_held, "message"] = None
    out["sms_segments"] = segments(out["message"], out["channel"], conf.channels)
    counts = {"options": len(opts), "treated_options": len(problem)}
    return Plan(out, best.stats, baseline.stats, int((chosen["wave"] > wave).sum()), counts)


def _problem(rows: pd.DataFrame) -> pd.DataFrame:
    """The options as the allocation's problem, in one canonical order whatever order Spark collected them in: ties
    between equal options (the solver's and the greedy's) then break the same way on any cluster, partitioning and
    run. The order is a fixed hash of each unit, not its name, so a tie does not always go to the same scenario or
    subscriber."""
    rows = (rows.assign(_order=pd.util.hash_pandas_object(rows[UNIT], index=False).to_numpy())
            .sort_values(["_order", *UNIT, "rank", "channel"], kind="stable").drop(columns="_order")
            .reset_index(drop=True))
    return rows.assign(unit=rows.groupby(UNIT, sort=False).ngroup(), sub=rows["sub_id"], value=rows["weight"],
                       cost=rows["cost_yuan"])


def _would_contact(opts: pd.DataFrame, treated: pd.DataFrame, chosen: pd.DataFrame, limits: allocate.Limits,
                   wave: int, time_limit: float) -> pd.MultiIndex:
    """The units of the compared held arm (wave 1's control group, a later wave's holdout) that the allocation would
    have contacted had they been treated: the same optimisation over their own options, with each scarce channel's
    capacity scaled to the held arm's share of the units that can use it, and each scenario's budget to its own
    share. Their contacts are never made; comparing them with the treated arm's contacted is comparing like with
    like (both chosen by the same rule from the same random split), so a cell's uplift per contact is measured on the
    contacted alone, not diluted by the treated arm's members the allocation left out (the "ghost ads" design of
    Johnson, Lewis and Nubbemeyer, 2017).

    A held member may be treated in another scenario. Where the treated allocation filled their contact cap there,
    a held option worth more than the least valuable of those contacts takes the slot (in one solve it would have
    displaced it); one worth less finds the cap full."""
    held = opts[opts["arm"] == compared_arm(wave)]
    if held.empty or treated.empty:
        return pd.MultiIndex.from_tuples([], names=UNIT)

    def share(of: list[str], among: str) -> pd.Series:
        return (held[of].drop_duplicates().groupby(among).size()
                / treated[of].drop_duplicates().groupby(among).size()).dropna()

    overall = len(held[UNIT].drop_duplicates()) / len(treated[UNIT].drop_duplicates())
    per_channel = share([*UNIT, "channel"], "channel")
    per_scenario = share(["sub_id", "scenario"], "scenario")

    def scaled_capacity(channel: str, n: int) -> int:
        return int(round(n * float(per_channel.get(channel, overall))))

    used = dict(limits.used_caps)
    picks = chosen.groupby(["sub_id", "mode"])["value"].agg(["size", "min"])
    for key, n in picks["size"].items():
        used[key] = used.get(key, 0) + int(n)
    keys = list(zip(held["sub_id"], held["mode"], strict=True))
    full = np.array([used.get(k, 0) >= limits.caps[k[1]] for k in keys])
    cheapest = picks["min"].reindex(pd.MultiIndex.from_tuples(keys)).to_numpy(float)
    displaces = full & (held["weight"].to_numpy(float) > np.nan_to_num(cheapest, nan=np.inf))
    for key in {k for k, d in zip(keys, displaces, strict=True) if d}:
        used[key] = limits.caps[key[1]] - 1
    held = held[~full | displaces]
    if held.empty:
        return pd.MultiIndex.from_tuples([], names=UNIT)
    scaled = allocate.Limits(
        caps=limits.caps, attempts=limits.attempts,
        daily={c: scaled_capacity(c, n) for c, n in limits.daily.items()},
        budgets={s: b * float(per_scenario.get(s, overall)) for s, b in limits.budgets.items()},
        used_caps=used, used_attempts=limits.used_attempts,
        booked={(c, day): scaled_capacity(c, n) for (c, day), n in limits.booked.items()})
    picked = allocate.solve(_problem(held), scaled, time_limit=time_limit).chosen
    picked = picked[picked["wave"] == wave]
    return pd.MultiIndex.from_frame(picked[UNIT])


def _reasons(out: pd.DataFrame, problem: pd.DataFrame, chosen: pd.DataFrame, limits: allocate.Limits,
             is_picked: np.ndarray) -> pd.Series:
    """The decision's reason: the eligibility reason, control/holdout, targeted/explore, or for a treated unit the
    optimisation left out, the first of its limits that is used up (cap, attempts, budget, capacity: every
    option of it is on a scarce channel), else outvalued (its limits had room, but the optimum spent them on
    contacts worth more)."""
    reason = out["reason"].copy()
    pending = reason.eq(PENDING).to_numpy()
    reason[pending & out["arm"].eq(CONTROL).to_numpy()] = CONTROL
    reason[pending & out["arm"].eq(HOLDOUT).to_numpy()] = HOLDOUT
    reason[is_picked] = np.where(out.loc[is_picked, "explore"], "explore", "targeted")
    left = reason.eq(PENDING).to_numpy()
    if not left.any():
        return reason
    used_caps = chosen.groupby(["sub_id", "mode"]).size()
    used_attempts = chosen.groupby(["sub_id", "scenario"]).size()
    spent = chosen.groupby("scenario")["cost_yuan"].sum()
    cheapest = problem.groupby(UNIT)["cost_yuan"].min()
    unlimited = set(problem[~problem["channel"].isin(list(limits.daily))].groupby(UNIT).size().index)
    found = []
    for row in out[left].itertuples(index=False):
        unit = (row.sub_id, row.scenario, row.wave, row.mode)
        cap = limits.caps[row.mode] - limits.used_caps.get((row.sub_id, row.mode), 0)
        attempts = limits.attempts[row.scenario] - limits.used_attempts.get((row.sub_id, row.scenario), 0)
        budget = limits.budgets.get(row.scenario)
        if used_caps.get((row.sub_id, row.mode), 0) >= cap:
            found.append("cap")
        elif used_attempts.get((row.sub_id, row.scenario), 0) >= attempts:
            found.append("attempts")
        elif budget is not None and budget - spent.get(row.scenario, 0.0) < cheapest.get(unit, 0.0):
            found.append("budget")
        elif unit not in unlimited:
            found.append("capacity")
        else:
            found.append("outvalued")
    reason[left] = found
    return reason
