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
    uniform,
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
    opts = with_values(opts, conf.channels, estimates, wave, policy.objective, policy.maximise)
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
    would = _would_contact(opts, chosen, limits, wave)
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


def _would_contact(opts: pd.DataFrame, chosen: pd.DataFrame, limits: allocate.Limits, wave: int) -> pd.MultiIndex:
    """The units of the compared held arm (wave 1's control group, a later wave's holdout) that the allocation would
    have contacted had they been treated. Their contacts are never made; comparing them with the treated arm's
    contacted is comparing like with like (both chosen by the same rule from the same random split), so a cell's
    uplift per contact is measured on the contacted alone, not diluted by the treated arm's members the allocation
    left out (the "ghost ads" design of Johnson, Lewis and Nubbemeyer, 2017: the auction is run for the control user
    too, against the same bids, and its winner recorded).

    A held option is judged against the market the treated arm's allocation (`chosen`) made, as one option more
    would have been: where a scarce channel's days in its window are full, it must be worth more than the least
    valuable contact booked on them; where its scenario's budget is spent, worth more per yuan than the scenario's
    least efficient contact; where the member's contact cap is filled by contacts of other scenarios, worth more
    than the least valuable of those (one solve would have swapped them); and the member's attempts must be left. Of
    the options worth exactly the marginal contact, the share the treated options of that worth got is chosen (the
    first in a keyed draw: the same on every run). Each held member then takes their passing options best first, one
    per unit, within their cap and attempts. Judging each held member against the treated market, rather than
    allocating the held arm on its own with scaled-down capacities, keeps each scenario's share chosen the same in
    both arms when the scenarios' control rates differ (a scenario with a larger control group crowded the others'
    held members out of a scarce channel there)."""
    held_arm = compared_arm(wave)
    held = opts[(opts["arm"] == held_arm) & (opts["weight"] > 0)].reset_index(drop=True)
    if held.empty:
        return pd.MultiIndex.from_tuples([], names=UNIT)
    draw = uniform([f"{r.sub_id}|{r.scenario}|{r.wave}|{r.mode}|{r.channel}|would"
                    for r in held[[*UNIT, "channel"]].itertuples(index=False)])
    value = held["weight"].to_numpy(float)
    passes = _within_capacity(held, value, draw, opts, chosen, limits) & _within_budget(
        held, value, draw, opts, chosen, limits)
    return _within_caps(held[passes], chosen, limits, wave)


def _at_margin(value: np.ndarray, draw: np.ndarray, market: np.ndarray, picked: np.ndarray, offered: np.ndarray
               ) -> np.ndarray:
    """Whether options of `value` would beat a market whose picks are worth `market`: above the least valuable pick,
    yes; at it, as many as the rate their treated peers of that worth were picked at (`picked` of `offered`: the
    treated options of their own window, whose competition they share), those first in the keyed draw. Values
    within the solver's optimality gap of each other are one worth to it (a fallback channel's weight sits a
    millionth below its first channel's; a care contact's is constant)."""
    margin = float(market.min())
    tolerance = allocate.GAP * max(abs(margin), 1e-12)

    def at(values: np.ndarray) -> np.ndarray:
        return np.abs(values - margin) <= tolerance

    offered_at = int(at(offered).sum())
    rate = min(1.0, int(at(picked).sum()) / offered_at) if offered_at else 0.0
    tied = np.flatnonzero(at(value))
    out = value > margin + tolerance
    out[tied[np.argsort(draw[tied], kind="stable")[:int(round(rate * len(tied)))]]] = True
    return out


def _within_capacity(held: pd.DataFrame, value: np.ndarray, draw: np.ndarray, opts: pd.DataFrame,
                     chosen: pd.DataFrame, limits: allocate.Limits) -> np.ndarray:
    """Per held option: its channel is unlimited, has a free day in its window, or it beats the least valuable
    contact booked on the window's days."""
    ok = np.ones(len(held), bool)
    offered = opts[opts["arm"] == TREATED]
    for channel, daily in limits.daily.items():
        mine = (held["channel"] == channel).to_numpy()
        if not mine.any():
            continue
        booked = chosen[chosen["channel"] == channel]
        days = pd.to_datetime(booked["contact_date"]).dt.date
        per_day = days.value_counts()
        competing = offered[offered["channel"] == channel]
        for (start, end), rows in held[mine].groupby(["window_start", "window_end"]).groups.items():
            window = pd.date_range(start, end).date
            if any(daily - limits.booked.get((channel, d), 0) - int(per_day.get(d, 0)) > 0 for d in window):
                continue
            inside = (days >= start) & (days <= end)
            if not inside.any():
                ok[rows] = False
                continue
            # Peers: the treated options of the same window (a window that only overlaps competes for other days).
            peers = (competing["window_start"] == start) & (competing["window_end"] == end)
            same = ((booked["window_start"] == start) & (booked["window_end"] == end)).to_numpy()
            ok[rows] = _at_margin(value[rows], draw[rows], booked.loc[inside.to_numpy(), "weight"].to_numpy(float),
                                  booked.loc[same, "weight"].to_numpy(float),
                                  competing.loc[peers, "weight"].to_numpy(float))
    return ok


def _within_budget(held: pd.DataFrame, value: np.ndarray, draw: np.ndarray, opts: pd.DataFrame,
                   chosen: pd.DataFrame, limits: allocate.Limits) -> np.ndarray:
    """Per held option: its scenario has no budget, what is left of it pays for the option, or the option is worth
    more per yuan than the scenario's least efficient contact."""
    ok = np.ones(len(held), bool)
    cost = held["cost_yuan"].to_numpy(float)
    for scenario, budget in limits.budgets.items():
        mine = (held["scenario"] == scenario).to_numpy()
        if not mine.any():
            continue
        spent = chosen[chosen["scenario"] == scenario]
        left = max(0.0, float(budget)) - float(spent["cost_yuan"].sum())
        fits = cost <= left + allocate.BUDGET_TOLERANCE * max(1.0, abs(float(budget)))
        dear = np.flatnonzero(mine & ~fits)
        if not len(dear):
            continue
        per_yuan = _per_yuan(spent["weight"], spent["cost_yuan"])
        if not len(per_yuan):
            ok[dear] = False
            continue
        rivals = opts[(opts["arm"] == TREATED) & (opts["scenario"] == scenario)]
        ok[dear] = _at_margin(_per_yuan(value[dear], cost[dear]), draw[dear], per_yuan, per_yuan,
                              _per_yuan(rivals["weight"], rivals["cost_yuan"]))
    return ok


def _per_yuan(weight: pd.Series | np.ndarray, cost: pd.Series | np.ndarray) -> np.ndarray:
    """Weight per yuan of cost (a free option counts as worth a trillion times its weight per yuan)."""
    return np.asarray(weight, float) / np.maximum(np.asarray(cost, float), 1e-12)


def _within_caps(held: pd.DataFrame, chosen: pd.DataFrame, limits: allocate.Limits, wave: int) -> pd.MultiIndex:
    """The held units a member takes: their passing options best first, one per unit, while their contact cap
    (after the treated allocation's contacts of other scenarios, the least valuable of which a better option
    displaces) and the scenario's attempts allow."""
    used = dict(limits.used_caps)
    displaceable: dict[tuple[str, str], list[float]] = {}
    chosen = chosen[chosen["sub_id"].isin(held["sub_id"].unique())]
    for (sub, mode), values in chosen.groupby(["sub_id", "mode"])["weight"]:
        used[(sub, mode)] = used.get((sub, mode), 0) + len(values)
        displaceable[(sub, mode)] = sorted(values.tolist())
    attempts = dict(limits.used_attempts)
    for key, n in chosen.groupby(["sub_id", "scenario"]).size().items():
        attempts[key] = attempts.get(key, 0) + int(n)
    taken: list[tuple] = []
    units: set[tuple] = set()
    for row in held.sort_values(["sub_id", "weight", "rank"], ascending=[True, False, True]).itertuples(index=False):
        unit = (row.sub_id, row.scenario, row.wave, row.mode)
        if unit in units or attempts.get((row.sub_id, row.scenario), 0) >= limits.attempts[row.scenario]:
            continue
        slot = (row.sub_id, row.mode)
        if used.get(slot, 0) >= limits.caps[row.mode]:
            cheaper = displaceable.get(slot, [])
            if not cheaper or row.weight <= cheaper[0] * (1 + allocate.GAP):
                continue
            cheaper.pop(0)
        else:
            used[slot] = used.get(slot, 0) + 1
        attempts[(row.sub_id, row.scenario)] = attempts.get((row.sub_id, row.scenario), 0) + 1
        units.add(unit)
        if row.wave == wave:
            taken.append(unit)
    return pd.MultiIndex.from_tuples(taken, names=UNIT)


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
