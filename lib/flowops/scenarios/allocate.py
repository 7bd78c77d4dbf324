"""The contact policy's optimisation model: which options to contact, for the most expected value within the caps,
the attempts, the scarce channels' daily capacity and the scenarios' budgets.

An option is one way to contact a decision unit (subscriber, scenario, wave, mode): one channel, with its value,
cost and window. `solve` finds the optimum. Subscribers whose constraints cannot interact (no scarce channel, no
budgeted scenario, attempts that cannot bind) form a partition matroid per (subscriber, mode) and are solved exactly
by sorting; the rest, the contested options, go into one mixed-integer program (HiGHS through `scipy.optimize.milp`).
`greedy` is the pass-by-pass policy being replaced, kept as a baseline; `check` lists an allocation's violations
independently of both.

Days are exact without a variable per day: a scarce channel's days split into elementary intervals, the maximal runs
of days covered by the same set of windows. Every option covering an interval covers all of its days, so the days
inside are interchangeable and only the interval's total capacity matters. The options sharing a window send their
contacts into its intervals as a flow (a variable per window and interval, not per option and interval: at a
million options that halves the program). After solving, each chosen option gets an interval by earliest deadline,
then a day: the interval's days in date order, filled by the chosen options in descending value.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

REQUIRED = ("unit", "sub", "scenario", "wave", "mode", "channel", "rank", "value", "cost", "window_start",
            "window_end")
NO_DAY = -1  # the option's channel is unlimited: it is contacted on window_start
_NONE = np.zeros(0, np.int64)
BUDGET_TOLERANCE = 1e-9  # relative: sums of float costs in a different order differ in the last bits
GAP = 1e-4  # relative optimality gap the solver stops at: options of values closer than this are ties to it


@dataclass(frozen=True)
class Limits:
    """The constraints of one month's allocation. What earlier runs used is given apart and subtracted.

    Attributes:
        caps: contacts per subscriber and mode, across scenarios and waves; every mode of the options is required.
        attempts: contacts per subscriber and scenario; every scenario of the options is required.
        daily: contacts per day of each scarce channel; channels absent are unlimited.
        budgets: remaining yuan per scenario; scenarios absent are unlimited, a negative remainder allows no spend.
        used_caps: contacts already made per (sub, mode).
        used_attempts: contacts already made per (sub, scenario).
        booked: contacts already booked per (channel, day).
    """

    caps: Mapping[str, int]
    attempts: Mapping[str, int]
    daily: Mapping[str, int] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    used_caps: Mapping[tuple[Hashable, str], int] = field(default_factory=dict)
    used_attempts: Mapping[tuple[Hashable, str], int] = field(default_factory=dict)
    booked: Mapping[tuple[str, dt.date], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Stats:
    """How an allocation was found. `bound` is an upper bound on the optimum (NaN for the greedy)."""

    options: int
    contested: int
    value: float
    bound: float
    gap: float
    seconds: float
    status: str
    method: str
    note: str = ""


@dataclass(frozen=True)
class Allocation:
    """The chosen rows of `options` (original index) with their `contact_date`, and how they were found."""

    chosen: pd.DataFrame
    stats: Stats


@dataclass(frozen=True)
class _Picks:
    """Chosen positions into a work frame and their day (`NO_DAY`: window_start)."""

    pos: np.ndarray
    day: np.ndarray


def solve(options: pd.DataFrame, limits: Limits, *, time_limit: float = 60.0, gap: float = GAP,
          _decompose: bool = True) -> Allocation:
    """The allocation of most total value that meets every limit.

    Args:
        options: one row per option, with the columns in `REQUIRED`.
        limits: caps, attempts, daily capacities and budgets.
        time_limit: seconds for the mixed-integer program; on expiry its best solution is used and the gap reported.
        gap: relative optimality gap at which the program stops.
        _decompose: False sends every option to the program (tests compare it with the fast path).

    Returns:
        The allocation; `stats.status` is "optimal", "time_limit", "greedy_fallback" or "empty".
    """
    started = time.perf_counter()
    method = "matroid+milp" if _decompose else "milp"
    work = _drop_dominated(_prepare(options, limits, presolve=True))
    if work.empty:
        return _allocation(options, _NONE, _NONE, started, contested=0, bound=0.0, status="empty", method=method)
    is_contested = _contested(work) if _decompose else np.ones(len(work), bool)
    simple = work[~is_contested].reset_index(drop=True)
    hard = work[is_contested].reset_index(drop=True)
    simple_picks = _matroid_picks(simple)
    simple_value = float(simple["value"].to_numpy()[simple_picks.pos].sum())
    hard_picks, hard_bound, status, note = _milp_picks(hard, limits, time_limit, gap)

    def combine() -> Allocation:
        rows = np.r_[simple["row"].to_numpy()[simple_picks.pos], hard["row"].to_numpy()[hard_picks.pos]]
        return _allocation(options, rows, np.r_[simple_picks.day, hard_picks.day], started, contested=len(hard),
                           bound=simple_value + hard_bound, status=status, method=method, note=note)

    allocation = combine()
    problems = check(options, limits, allocation)
    if problems and status != "greedy_fallback":
        # A solution off by the solver's feasibility tolerance (a budget by a fraction of a fen) is not returned.
        hard_picks, status = _greedy_picks(hard, limits), "greedy_fallback"
        note = f"the solver's allocation broke {len(problems)} limits, e.g. {problems[0]}"
        allocation = combine()
        problems = check(options, limits, allocation)
    if problems:
        raise RuntimeError(f"allocation breaks {len(problems)} limits, e.g. {problems[:3]}")
    return allocation


def greedy(options: pd.DataFrame, limits: Limits) -> Allocation:
    """The old policy, pass by pass: cap, attempts, capacity down each route, then budget prefixes by value."""
    started = time.perf_counter()
    work = _prepare(options, limits, presolve=False)
    picks = _greedy_picks(work, limits)
    return _allocation(options, work["row"].to_numpy()[picks.pos], picks.day, started, contested=0,
                       bound=float("nan"), status="heuristic", method="greedy")


def check(options: pd.DataFrame, limits: Limits, allocation: Allocation) -> list[str]:
    """Every constraint an allocation breaks, one readable line each; empty when it is feasible."""
    chosen = allocation.chosen
    missing = chosen.index.difference(options.index)
    if len(missing) or chosen.index.has_duplicates:
        return [f"chosen rows must be distinct rows of options: {len(missing)} unknown, "
                f"{int(chosen.index.duplicated().sum())} repeated"]
    rows = options.loc[chosen.index, list(REQUIRED)].assign(contact_date=chosen["contact_date"])
    problems = [f"row {i}: no contact_date" for i in rows.index[rows["contact_date"].isna()]]
    problems += [f"unit {u}: {n} options chosen, at most 1" for u, n in rows["unit"].value_counts().items() if n > 1]
    problems += _count_problems(rows, ["sub", "mode"], limits.caps, limits.used_caps, "cap")
    problems += _count_problems(rows, ["sub", "scenario"], limits.attempts, limits.used_attempts, "attempts")
    problems += _day_problems(rows.dropna(subset=["contact_date"]), limits)
    spent = rows[rows["scenario"].isin(list(limits.budgets))].groupby("scenario")["cost"].sum()
    for scenario, total in spent.items():
        budget = max(0.0, float(limits.budgets[scenario]))
        if total > budget + BUDGET_TOLERANCE * max(1.0, budget):
            problems.append(f"scenario {scenario}: spends {total:.6f} yuan, budget {budget:.6f}")
    return problems


def _count_problems(rows: pd.DataFrame, keys: list[str], limit: Mapping[str, int],
                    used: Mapping[tuple[Hashable, str], int], name: str) -> list[str]:
    counts = rows.groupby(keys).size()
    return [f"{keys[0]} {sub}, {keys[1]} {key}: {n} contacts, {name} {limit.get(key, 0)} with "
            f"{used.get((sub, key), 0)} used" for (sub, key), n in counts.items()
            if n > limit.get(key, 0) - used.get((sub, key), 0)]


def _day_problems(rows: pd.DataFrame, limits: Limits) -> list[str]:
    scarce = rows[rows["channel"].isin(list(limits.daily))]
    day = pd.to_datetime(scarce["contact_date"])
    outside = (day < pd.to_datetime(scarce["window_start"])) | (day > pd.to_datetime(scarce["window_end"]))
    problems = [f"row {i}: contact_date outside its window" for i in scarce.index[outside.to_numpy()]]
    for (channel, date), n in scarce.groupby(["channel", day.dt.date]).size().items():
        free = limits.daily[channel] - limits.booked.get((channel, date), 0)
        if n > free:
            problems.append(f"channel {channel} on {date}: {n} contacts, {max(free, 0)} free")
    return problems


def _prepare(options: pd.DataFrame, limits: Limits, *, presolve: bool) -> pd.DataFrame:
    """Options of positive value as a work frame sorted by (unit, rank, channel), with each limit's remainder.

    `presolve` also drops options that can never be chosen (no cap or attempt left, a cost over the whole budget,
    an empty window on a scarce channel); the greedy keeps them because the old passes did.
    """
    _validate(options, limits)
    is_valued = options["value"].to_numpy(dtype=float) > 0
    opts = options[is_valued]
    scenario = opts["scenario"].astype(str)
    is_scarce = opts["channel"].isin(list(limits.daily)).to_numpy()
    start = np.zeros(len(opts), np.int64)
    end = np.zeros(len(opts), np.int64)
    start[is_scarce] = _days(opts["window_start"][is_scarce])
    end[is_scarce] = _days(opts["window_end"][is_scarce])
    work = pd.DataFrame({
        "row": np.flatnonzero(is_valued), "unit": opts["unit"].to_numpy(),
        "sub": pd.factorize(opts["sub"])[0], "scen": pd.factorize(scenario, sort=True)[0],
        "mode": opts["mode"].to_numpy(), "channel": opts["channel"].to_numpy(),
        "ch": pd.factorize(opts["channel"], sort=True)[0], "rank": opts["rank"].to_numpy(),
        "value": opts["value"].to_numpy(dtype=float), "cost": opts["cost"].to_numpy(dtype=float),
        "cap_left": _left(opts, "mode", limits.caps, limits.used_caps),
        "att_left": _left(opts, "scenario", limits.attempts, limits.used_attempts),
        "budget": scenario.map({k: max(0.0, float(v)) for k, v in limits.budgets.items()}).fillna(np.inf).to_numpy(),
        "is_scarce": is_scarce, "start": start, "end": end,
    })
    work = work.iloc[np.lexsort((work["ch"], work["rank"], work["unit"]))]
    if presolve:
        is_possible = ((work["cap_left"] > 0) & (work["att_left"] > 0) & (work["cost"] <= work["budget"])
                       & ~(work["is_scarce"] & (work["end"] < work["start"])))
        work = work[is_possible]
    work = work.reset_index(drop=True)
    # Codes in (unit, rank, channel) order: the program, and so its choice among equal optima, is the same whatever
    # the order of the rows.
    work["g_cap"] = work.groupby(["sub", "mode"], sort=False).ngroup().to_numpy()
    work["g_att"] = work.groupby(["sub", "scen"], sort=False).ngroup().to_numpy()
    return work


def _validate(options: pd.DataFrame, limits: Limits) -> None:
    missing = [c for c in REQUIRED if c not in options.columns]
    if missing:
        raise ValueError(f"options have the columns {list(options.columns)}, but these are required: {missing}")
    if not options.index.is_unique:
        raise ValueError("options need a unique index: the allocation returns chosen rows by it")
    for column, limit, name in (("mode", limits.caps, "caps"), ("scenario", limits.attempts, "attempts")):
        absent = sorted(set(options[column].astype(str)) - set(limit))
        if absent:
            raise ValueError(f"Limits.{name} has {sorted(limit)}, but options also have {column} {absent}")
    cost = options["cost"].to_numpy(dtype=float)
    if not (cost >= 0).all():
        raise ValueError(f"cost must be >= 0 and not null; found {int((~(cost >= 0)).sum())} rows that are not")
    by_unit = options.sort_values("unit", kind="stable")
    parts = [pd.factorize(by_unit[c])[0] for c in ("sub", "scenario", "wave", "mode")]
    same_unit = by_unit["unit"].to_numpy()[1:] == by_unit["unit"].to_numpy()[:-1]
    mixed = same_unit & np.any([p[1:] != p[:-1] for p in parts], axis=0)
    if mixed.any():
        raise ValueError(f"unit {by_unit['unit'].iloc[1:][mixed].iloc[0]} spans more than one "
                         "(sub, scenario, wave, mode); a unit's options may differ only by channel")


def _days(dates: pd.Series) -> np.ndarray:
    return pd.to_datetime(dates).to_numpy().astype("datetime64[D]").astype(np.int64)


def _left(opts: pd.DataFrame, key: str, limit: Mapping[str, int], used: Mapping[tuple[Hashable, str], int]
          ) -> np.ndarray:
    """Per option, what is left of the limit on (sub, key)."""
    left = opts[key].astype(str).map(limit).to_numpy(dtype=np.int64)
    if used:
        used_df = pd.DataFrame([(s, k, n) for (s, k), n in used.items()], columns=["sub", key, "_used"])
        merged = opts[["sub", key]].merge(used_df, how="left", on=["sub", key])["_used"]
        left = left - merged.fillna(0).to_numpy(dtype=np.int64)
    return left


def _unit_starts(work: pd.DataFrame) -> np.ndarray:
    unit = work["unit"].to_numpy()
    return np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]]) if len(unit) else np.zeros(0, int)


def _drop_dominated(work: pd.DataFrame) -> pd.DataFrame:
    """Without the options that the unit's best unlimited option beats: no more value and, under a budget, no less
    cost. Swapping one for it keeps every limit and frees a scarce day, so the optimum is unchanged; equal options
    go to the unlimited channel so as not to spend scarce days."""
    is_free = ~work["is_scarce"].to_numpy()
    unit, value, cost, ch = (work[c].to_numpy() for c in ("unit", "value", "cost", "ch"))
    free = np.flatnonzero(is_free)
    order = free[np.lexsort((ch[free], cost[free], -value[free], unit[free]))]
    ref = order[np.r_[True, unit[order][1:] != unit[order][:-1]]] if len(order) else order
    starts = _unit_starts(work)
    unit_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(work)]))
    ref_value = np.full(len(starts), -np.inf)
    ref_cost = np.full(len(starts), np.inf)
    ref_value[unit_of[ref]], ref_cost[unit_of[ref]] = value[ref], cost[ref]
    is_ref = np.zeros(len(work), bool)
    is_ref[ref] = True
    costs_more = ~np.isfinite(work["budget"].to_numpy()) | (cost >= ref_cost[unit_of])
    is_dominated = ~is_ref & (value <= ref_value[unit_of]) & costs_more
    return work[~is_dominated].reset_index(drop=True)


def _contested(work: pd.DataFrame) -> np.ndarray:
    """Per option, whether its subscriber needs the solver: a scarce channel, a budget or attempts that can bind."""
    starts = _unit_starts(work)
    g_att = work["g_att"].to_numpy()
    units = np.bincount(g_att[starts], minlength=g_att.max() + 1)
    att_left = np.zeros(len(units), np.int64)
    att_left[g_att] = work["att_left"].to_numpy()
    is_hard = work["is_scarce"].to_numpy() | np.isfinite(work["budget"].to_numpy()) | (units > att_left)[g_att]
    sub = work["sub"].to_numpy()
    is_hard_sub = np.zeros(sub.max() + 1, bool)
    is_hard_sub[sub[is_hard]] = True
    return is_hard_sub[sub]


def _top_k(work: pd.DataFrame, pos: np.ndarray, group: str, limit: str) -> np.ndarray:
    """Which of `pos` (one option per unit) are among their group's `limit` best by value; ties go to lower units."""
    g = work[group].to_numpy()[pos]
    order = np.lexsort((work["unit"].to_numpy()[pos], -work["value"].to_numpy()[pos], g))
    sorted_g = g[order]
    place = np.arange(len(order)) - np.searchsorted(sorted_g, sorted_g, side="left")
    keep = np.zeros(len(pos), bool)
    keep[order] = place < work[limit].to_numpy()[pos][order]
    return keep


def _matroid_picks(work: pd.DataFrame) -> _Picks:
    """Exact when neither days, budgets nor attempts bind: each unit's best option, then each cap's best units."""
    unit = work["unit"].to_numpy()
    order = np.lexsort((work["ch"].to_numpy(), -work["value"].to_numpy(), unit))
    best = order[np.r_[True, unit[order][1:] != unit[order][:-1]]] if len(order) else order
    pos = best[_top_k(work, best, "g_cap", "cap_left")]
    return _Picks(pos, np.full(len(pos), NO_DAY))


def _calendar(work: pd.DataFrame, limits: Limits) -> dict[str, tuple[int, np.ndarray]]:
    """Per scarce channel, its first day and the free contacts of each day up to the last window's end."""
    calendar = {}
    booked = pd.DataFrame([(c, d, n) for (c, d), n in limits.booked.items()], columns=["channel", "date", "n"])
    booked_day = _days(booked["date"])
    scarce = work[work["is_scarce"]]
    for channel, rows in scarce.groupby("channel", sort=True):
        first, last = int(rows["start"].min()), int(max(rows["end"].max(), rows["start"].min()))
        free = np.full(last - first + 1, int(limits.daily[channel]), np.int64)
        mine = (booked["channel"].to_numpy() == channel) & (booked_day >= first) & (booked_day <= last)
        np.add.at(free, booked_day[mine] - first, -booked["n"].to_numpy(dtype=np.int64)[mine])
        calendar[channel] = (first, np.maximum(free, 0))
    return calendar


def _greedy_picks(work: pd.DataFrame, limits: Limits) -> _Picks:
    starts = _unit_starts(work)
    ends = np.r_[starts[1:], len(work)]
    for group, limit in (("g_cap", "cap_left"), ("g_att", "att_left")):
        keep = _top_k(work, starts, group, limit)
        starts, ends = starts[keep], ends[keep]
    pos, day = _fit_days(work, starts, ends, _calendar(work, limits))
    is_kept = pos >= 0
    pos, day = pos[is_kept], day[is_kept]
    is_kept = _budget_prefix(work, pos)
    return _Picks(pos[is_kept], day[is_kept])


def _fit_days(work: pd.DataFrame, pos: np.ndarray, ends: np.ndarray, calendar: dict[str, tuple[int, np.ndarray]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """The capacity pass: by descending value, a unit on a scarce channel takes the first free day of its window or
    goes down its route; -1 in the positions marks a unit whose route ran out."""
    pos, day = pos.copy(), np.full(len(pos), NO_DAY)
    is_scarce, value, unit = (work[c].to_numpy() for c in ("is_scarce", "value", "unit"))
    channel, start, end = work["channel"].tolist(), work["start"].tolist(), work["end"].tolist()
    todo = np.flatnonzero(is_scarce[pos])
    for i in todo[np.lexsort((unit[pos[todo]], -value[pos[todo]]))].tolist():
        p, pos[i] = int(pos[i]), -1
        while p < ends[i]:
            if not is_scarce[p]:
                pos[i] = p
                break
            first, free = calendar[channel[p]]
            window = free[start[p] - first:end[p] - first + 1]
            if window.any():
                d = int(window.argmax())  # the first day with a free contact: free counts are >= 0
                window[d] -= 1
                pos[i], day[i] = p, start[p] + d
                break
            p += 1
    return pos, day


def _budget_prefix(work: pd.DataFrame, pos: np.ndarray) -> np.ndarray:
    """The budget pass: per budgeted scenario, units by descending value while the running cost fits."""
    budget = work["budget"].to_numpy()[pos]
    idx = np.flatnonzero(np.isfinite(budget))
    scen = work["scen"].to_numpy()[pos[idx]]
    order = idx[np.lexsort((work["unit"].to_numpy()[pos[idx]], -work["value"].to_numpy()[pos[idx]], scen))]
    sorted_scen = work["scen"].to_numpy()[pos[order]]
    spent = np.cumsum(work["cost"].to_numpy()[pos[order]])
    group_start = np.searchsorted(sorted_scen, sorted_scen, side="left")
    spent = spent - np.r_[0.0, spent][group_start]
    keep = np.ones(len(pos), bool)
    keep[order] = spent <= budget[order]
    return keep


@dataclass(frozen=True)
class _Intervals:
    """The scarce channels' elementary intervals, numbered channel after channel, and each option's range of them."""

    first: np.ndarray  # per option: the first interval of its window (0 on unlimited channels)
    stop: np.ndarray  # per option: one past the last interval of its window
    channel: np.ndarray  # per interval
    start: np.ndarray  # per interval: its first day
    cap: np.ndarray  # per interval: free contacts over its days


def _intervals(work: pd.DataFrame, calendar: dict[str, tuple[int, np.ndarray]]) -> _Intervals:
    first, stop = np.zeros(len(work), np.int64), np.zeros(len(work), np.int64)
    channel, start, cap = [np.zeros(0, object)], [_NONE], [_NONE]
    names, is_scarce = work["channel"].to_numpy(), work["is_scarce"].to_numpy()
    offset = 0
    for name, (day0, free) in calendar.items():
        idx = np.flatnonzero(is_scarce & (names == name))
        s, e = work["start"].to_numpy()[idx], work["end"].to_numpy()[idx] + 1
        breaks = np.unique(np.r_[s, e])  # every window starts and ends (exclusive) on one
        first[idx], stop[idx] = offset + np.searchsorted(breaks, s), offset + np.searchsorted(breaks, e)
        total = np.r_[0, np.cumsum(free)]
        channel.append(np.full(len(breaks) - 1, name, object))
        start.append(breaks[:-1])
        cap.append(total[breaks[1:] - day0] - total[breaks[:-1] - day0])
        offset += len(breaks) - 1
    return _Intervals(first, stop, np.concatenate(channel), np.concatenate(start), np.concatenate(cap))


def _rows(group: np.ndarray, cols: np.ndarray, coef: np.ndarray, ub: np.ndarray, binding: np.ndarray
          ) -> tuple[np.ndarray, ...]:
    """Rows `sum coef x <= ub`, one per binding group: (row, column, coefficient) triples and the bounds."""
    keep = binding[group] & (coef != 0)
    row_of_group = np.cumsum(binding) - 1
    return row_of_group[group[keep]], cols[keep], coef[keep], ub[binding]


def _limit_rows(work: pd.DataFrame, x_pos: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Rows of the unit, cap, attempts and budget limits over the option columns (0..n-1: `x_pos`). A row that
    cannot bind (no more units than its limit) or that another implies is left out: the program stays small."""
    ones, cols = np.ones(len(x_pos)), np.arange(len(x_pos))
    starts = _unit_starts(work)
    unit_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(work)]))
    blocks, is_implied = [], np.zeros(len(starts), bool)
    for group, limit in (("g_cap", "cap_left"), ("g_att", "att_left")):
        codes = np.unique(work[group].to_numpy(), return_inverse=True)[1]
        left = np.zeros(codes.max() + 1)
        left[codes] = work[limit].to_numpy()
        binding = np.bincount(codes[starts], minlength=len(left)) > left
        blocks.append(_rows(codes[x_pos], cols, ones, left, binding))
        is_implied |= (binding & (left == 1))[codes[starts]]  # at most one of the group: one of the unit too
    blocks.append(_rows(unit_of[x_pos], cols, ones, np.ones(len(starts)),
                        (np.bincount(unit_of[x_pos], minlength=len(starts)) > 1) & ~is_implied))
    scen, cost = work["scen"].to_numpy(), work["cost"].to_numpy()
    budget = np.full(scen.max() + 1, np.inf)
    budget[scen] = work["budget"].to_numpy()
    worst = np.zeros(len(budget))
    np.add.at(worst, scen[starts], np.maximum.reduceat(cost, starts))
    blocks.append(_rows(scen[x_pos], cols, cost[x_pos], budget, np.isfinite(budget) & (worst > budget)))
    return blocks


def _day_rows(work: pd.DataFrame, x_pos: np.ndarray, ivs: _Intervals) -> tuple[list[tuple[np.ndarray, ...]],
                                                                               np.ndarray]:
    """Rows of the scarce days, and the interval of each flow column (n..: after the options).

    Days are a transportation problem: the options sharing a window send their contacts into the window's
    intervals, each interval takes up to its capacity. The flows may be continuous: with integral choices, a network
    flow has an integral solution too.
    """
    n = len(x_pos)
    sc = np.flatnonzero(work["is_scarce"].to_numpy()[x_pos])
    windows, window_of = np.unique(ivs.first[x_pos[sc]] * (len(ivs.cap) + 1) + ivs.stop[x_pos[sc]],
                                   return_inverse=True)
    w_first, w_stop = windows // (len(ivs.cap) + 1), windows % (len(ivs.cap) + 1)
    length = w_stop - w_first
    flow_window = np.repeat(np.arange(len(windows)), length)
    flow_iv = np.repeat(w_first - np.r_[0, np.cumsum(length)[:-1]], length) + np.arange(length.sum())
    has_room = ivs.cap[flow_iv] > 0
    flow_window, flow_iv = flow_window[has_room], flow_iv[has_room]
    flow_cols = n + np.arange(len(flow_iv))
    sends = _rows(np.r_[window_of, flow_window], np.r_[sc, flow_cols], np.r_[np.ones(len(sc)), -np.ones(len(flow_iv))],
                  np.zeros(len(windows)), np.ones(len(windows), bool))
    takes = _rows(flow_iv, flow_cols, np.ones(len(flow_iv)), ivs.cap.astype(float), np.ones(len(ivs.cap), bool))
    return [sends, takes], flow_iv


def _milp_picks(work: pd.DataFrame, limits: Limits, time_limit: float, gap: float
                ) -> tuple[_Picks, float, str, str]:
    """The contested options' optimum: the picks, an upper bound on their value, a status and a note."""
    calendar = _calendar(work, limits)
    ivs = _intervals(work, calendar)
    room = np.r_[0, np.cumsum(ivs.cap)]
    x_pos = np.flatnonzero(~work["is_scarce"].to_numpy() | (room[ivs.stop] > room[ivs.first]))
    if not len(x_pos):
        return _Picks(_NONE, _NONE), 0.0, "optimal", ""
    day_blocks, flow_iv = _day_rows(work, x_pos, ivs)
    blocks = _limit_rows(work, x_pos) + day_blocks
    value = work["value"].to_numpy()
    result = _run_milp(np.r_[-value[x_pos], np.zeros(len(flow_iv))], np.r_[np.ones(len(x_pos)), ivs.cap[flow_iv]],
                       len(x_pos), blocks, time_limit, gap)
    starts = _unit_starts(work)
    bound = float(np.maximum.reduceat(value, starts).sum())  # each unit at its best: when the solver has no bound
    if result.mip_dual_bound is not None and np.isfinite(result.mip_dual_bound):
        bound = -result.mip_dual_bound
    status = {0: "optimal", 1: "time_limit"}.get(result.status, "solver_stopped")
    picks = None
    if result.x is not None:
        pos = x_pos[result.x[:len(x_pos)] > 0.5]
        picks = _Picks(pos, _assign_days(work, pos, ivs, calendar))
    note = "" if status == "optimal" else str(result.message)
    if status != "optimal":
        # Stopped early, the solver's best can be a first heuristic point: worse than the old policy.
        fallback = _greedy_picks(work, limits)
        if picks is None or value[fallback.pos].sum() > value[picks.pos].sum():
            note += f"; {'no' if picks is None else 'a worse'} solution from the solver, the greedy's is used"
            picks, status = fallback, "greedy_fallback"
    return picks, max(bound, float(value[picks.pos].sum())), status, note


def _run_milp(c: np.ndarray, ub: np.ndarray, n_integer: int, blocks: list[tuple[np.ndarray, ...]],
              time_limit: float, gap: float) -> OptimizeResult:
    """Minimise c @ x over 0 <= x <= ub under the blocks' rows, the first `n_integer` columns binary."""
    row, col, coef, rhs, offset = [], [], [], [], 0
    for r, k, a, u in blocks:
        row.append(r + offset)
        col.append(k)
        coef.append(a)
        rhs.append(u)
        offset += len(u)
    constraints = []
    if offset:
        matrix = sparse.csr_array((np.concatenate(coef), (np.concatenate(row), np.concatenate(col))),
                                  shape=(offset, len(c)))
        constraints = [LinearConstraint(matrix, -np.inf, np.concatenate(rhs))]
    integrality = np.r_[np.ones(n_integer), np.zeros(len(c) - n_integer)]
    # HiGHS's presolve took 44 of 46 s on a generated month of 100k options, for a model whose relaxation is nearly
    # integral: without it, the root LP solves the month.
    return milp(c, integrality=integrality, bounds=Bounds(0, ub), constraints=constraints,
                options={"time_limit": time_limit, "mip_rel_gap": gap, "presolve": False, "disp": False})


def _assign_days(work: pd.DataFrame, pos: np.ndarray, ivs: _Intervals, calendar: dict[str, tuple[int, np.ndarray]]
                 ) -> np.ndarray:
    """Concrete days for the chosen options: an interval each, then its days in date order, filled by value."""
    day = np.full(len(pos), NO_DAY)
    idx = np.flatnonzero(work["is_scarce"].to_numpy()[pos])
    value, unit, ch = (work[c].to_numpy()[pos[idx]] for c in ("value", "unit", "ch"))
    iv = _earliest_deadline(ivs.first[pos[idx]], ivs.stop[pos[idx]], -value, unit, ch, cap=ivs.cap)
    order = np.lexsort((ch, unit, -value, iv))
    idx, sorted_iv = idx[order], iv[order]
    place = np.arange(len(idx)) - np.searchsorted(sorted_iv, sorted_iv, side="left")
    for channel, (first, free) in calendar.items():
        mine = ivs.channel[sorted_iv] == channel
        total = np.r_[0, np.cumsum(free)]
        before = total[ivs.start[sorted_iv[mine]] - first]
        day[idx[mine]] = first + np.searchsorted(total, before + place[mine], side="right") - 1
    return day


def _earliest_deadline(first: np.ndarray, stop: np.ndarray, *ties: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """An interval per option, each interval up to its capacity: Glover's rule, interval by interval the waiting
    options whose windows end first. It places every option of any set that fits (the program's choice does); an
    option it cannot place stays on its last interval, where `check` reports the overflow."""
    out = stop - 1
    order = np.lexsort((*ties[::-1], first))
    waiting: list[tuple] = []
    k = 0
    for j, room in enumerate(cap.tolist()):
        while k < len(order) and first[order[k]] == j:
            i = int(order[k])
            heapq.heappush(waiting, (int(stop[i]), *(t[i] for t in ties), i))
            k += 1
        while waiting and (waiting[0][0] <= j or room > 0):
            i = heapq.heappop(waiting)[-1]
            if stop[i] > j:
                out[i], room = j, room - 1
    return out


def _allocation(options: pd.DataFrame, rows: np.ndarray, day: np.ndarray, started: float, *, contested: int,
                bound: float, status: str, method: str, note: str = "") -> Allocation:
    """The chosen rows (positions in `options`) in their original order, dated, with their stats."""
    order = np.argsort(rows, kind="stable")
    rows, day = rows[order], day[order]
    chosen = options.iloc[rows].copy()
    dates = chosen["window_start"].to_numpy(dtype=object).copy()
    has_day = day != NO_DAY
    dates[has_day] = day[has_day].astype("datetime64[D]").astype(object)
    chosen["contact_date"] = dates
    value = float(chosen["value"].sum())
    gap = (bound - value) / max(abs(bound), 1e-9) if np.isfinite(bound) else float("nan")
    stats = Stats(options=len(options), contested=contested, value=value, bound=bound, gap=gap,
                  seconds=time.perf_counter() - started, status=status, method=method, note=note)
    return Allocation(chosen, stats)
