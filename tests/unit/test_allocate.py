"""The contact policy's optimisation model on hand-built months: the optimum against the old greedy passes, days of
scarce channels, and random small instances checked against brute force."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import OptimizeResult

from flowops.scenarios import allocate
from flowops.scenarios.allocate import Allocation, Limits, check, greedy, solve

DAY0 = dt.date(2026, 3, 1)
CAPS = {"active": 1, "passive": 1}


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def option(unit: int, sub: int, scenario: str, channel: str, value: float, *, mode: str = "active", rank: int = 0,
           cost: float = 0.0, start: int = 0, end: int = 0, wave: int = 1) -> dict:
    return {"unit": unit, "sub": sub, "scenario": scenario, "wave": wave, "mode": mode, "channel": channel,
            "rank": rank, "value": value, "cost": cost, "window_start": day(start), "window_end": day(end)}


def frame(*rows: dict) -> pd.DataFrame:
    # An index that is not 0..n-1 shows that chosen rows keep the caller's index.
    return pd.DataFrame(list(rows), index=[100 + i for i in range(len(rows))])


def picked(allocation: Allocation) -> dict[int, dt.date]:
    return dict(zip(allocation.chosen["unit"], allocation.chosen["contact_date"], strict=True))


# Matroid intersection: caps allow A-active or B-active, attempts allow A-active or A-passive.
ATTEMPTS_BIND = (option(1, 1, "A", "sms", 10.0), option(2, 1, "A", "app", 9.0, mode="passive"),
                 option(3, 1, "B", "sms", 8.0))


def test_optimum_takes_the_runner_up_scenario_that_the_cap_pass_dropped() -> None:
    # Sub 1's best scenario A wants the only outbound slot, which sub 2's scenario C deserves more.
    options = frame(option(1, 1, "A", "outbound", 10.0), option(2, 1, "B", "sms", 6.0),
                    option(3, 2, "C", "outbound", 20.0))
    limits = Limits(caps=CAPS, attempts={"A": 1, "B": 1, "C": 1}, daily={"outbound": 1})

    best, old = solve(options, limits), greedy(options, limits)

    assert picked(best) == {2: day(0), 3: day(0)}
    assert best.stats.value == 26.0
    assert best.stats.status == "optimal"
    assert best.stats.bound == pytest.approx(26.0)
    assert list(best.chosen.index) == [101, 102]
    assert picked(old) == {3: day(0)}
    assert old.stats.value == 20.0


def test_greedy_goes_down_the_route_when_a_scarce_channel_is_full() -> None:
    options = frame(option(1, 1, "A", "outbound", 9.0), option(2, 2, "A", "outbound", 5.0),
                    option(2, 2, "A", "sms", 2.0, rank=1), option(3, 3, "A", "outbound", 4.0))
    limits = Limits(caps=CAPS, attempts={"A": 1}, daily={"outbound": 1})

    old = greedy(options, limits)

    # Unit 1 takes the slot, unit 2 moves to sms, unit 3 has no route left.
    assert list(old.chosen.index) == [100, 102]
    assert picked(old) == {1: day(0), 2: day(0)}
    assert check(options, limits, old) == []
    assert solve(options, limits).stats.value == 11.0


def test_budget_optimum_buys_value_per_yuan_and_greedy_keeps_a_prefix() -> None:
    options = frame(option(1, 1, "A", "sms", 10.0, cost=10.0), option(2, 2, "A", "sms", 6.0, cost=5.0),
                    option(3, 3, "A", "sms", 6.0, cost=5.0), option(4, 4, "A", "sms", 1.0, cost=0.0),
                    option(5, 5, "B", "sms", 3.0, cost=50.0))
    limits = Limits(caps=CAPS, attempts={"A": 1, "B": 1}, budgets={"A": 10.0})

    best, old = solve(options, limits), greedy(options, limits)

    assert set(picked(best)) == {2, 3, 4, 5}
    assert best.stats.value == 16.0
    assert best.chosen.loc[best.chosen["scenario"] == "A", "cost"].sum() <= 10.0
    # Unit 4 costs nothing, but the old pass stops at the first unit over budget.
    assert set(picked(old)) == {1, 5}
    assert old.stats.value == 13.0


def test_attempts_bind_across_modes() -> None:
    options = frame(*ATTEMPTS_BIND)
    limits = Limits(caps=CAPS, attempts={"A": 1, "B": 1})

    best, old = solve(options, limits), greedy(options, limits)

    assert set(picked(best)) == {2, 3}
    assert best.stats.value == 17.0
    assert set(picked(old)) == {1}
    assert old.stats.value == 10.0


def test_under_a_budget_a_cheaper_channel_of_less_value_stays_a_candidate() -> None:
    options = frame(option(1, 1, "A", "sms", 10.0, cost=10.0), option(1, 1, "A", "app", 9.0, cost=1.0, rank=1),
                    option(2, 2, "A", "sms", 8.0, cost=4.0))
    limits = Limits(caps=CAPS, attempts={"A": 1}, budgets={"A": 5.0})

    best = solve(options, limits)

    assert list(best.chosen.index) == [101, 102]
    assert best.stats.value == 17.0


def test_a_cap_of_two_still_takes_one_option_per_unit() -> None:
    # Unit 1's two channels both fit the budget and the cap of two; only one of them may be taken.
    options = frame(option(1, 1, "A", "sms", 10.0, cost=10.0), option(1, 1, "A", "app", 9.0, cost=1.0, rank=1),
                    option(2, 1, "B", "sms", 2.0), option(3, 1, "C", "sms", 1.0))
    limits = Limits(caps={"active": 2, "passive": 1}, attempts={"A": 1, "B": 1, "C": 1}, budgets={"A": 20.0})

    best = solve(options, limits)

    assert best.stats.status == "optimal"
    assert list(best.chosen.index) == [100, 102]
    assert best.stats.value == 12.0


def test_used_caps_and_attempts_are_subtracted() -> None:
    options = frame(option(1, 1, "A", "sms", 5.0), option(2, 2, "A", "sms", 4.0), option(3, 3, "A", "sms", 3.0))
    limits = Limits(caps=CAPS, attempts={"A": 1}, used_caps={(1, "active"): 1}, used_attempts={(2, "A"): 1})

    assert set(picked(solve(options, limits))) == {3}
    assert set(picked(greedy(options, limits))) == {3}


def test_scarce_days_fill_each_interval_by_value_and_respect_booked() -> None:
    # Days 0-5 at one contact a day, day 3 already booked: five free slots for seven units.
    options = frame(option(1, 1, "A", "outbound", 10.0, start=4, end=4),
                    *(option(u, u, "A", "outbound", v, start=0, end=5) for u, v in zip(range(2, 8), [7, 6, 5, 4, 3, 2],
                                                                                       strict=True)))
    limits = Limits(caps=CAPS, attempts={"A": 1}, daily={"outbound": 1}, booked={("outbound", day(3)): 1})

    best = solve(options, limits)

    dates = picked(best)
    assert set(dates) == {1, 2, 3, 4, 5}
    assert sorted(dates.values()) == [day(0), day(1), day(2), day(4), day(5)]
    assert dates[1] == day(4)
    # Days 0-3 are one interval (breaks come from windows, not bookings); its free days are filled by value.
    early = sorted((d, -best.chosen.set_index("unit").loc[u, "value"]) for u, d in dates.items() if d < day(3))
    assert [v for _, v in early] == sorted(v for _, v in early)
    assert check(options, limits, best) == []
    assert check(options, limits, greedy(options, limits)) == []
    unbooked = solve(options, Limits(caps=CAPS, attempts={"A": 1}, daily={"outbound": 1}))
    assert set(picked(unbooked)) == {1, 2, 3, 4, 5, 6}
    assert sorted(picked(unbooked).values()) == [day(n) for n in range(6)]


def test_overlapping_windows_use_every_day() -> None:
    # Greedy puts unit 1 (highest) on day 0, then unit 2 finds day 1 free but unit 3 (window 0-0) finds nothing.
    options = frame(option(1, 1, "A", "outbound", 5.0, start=0, end=1), option(2, 2, "A", "outbound", 4.0, start=1,
                                                                                 end=2),
                    option(3, 3, "A", "outbound", 3.0, start=0, end=0), option(4, 4, "A", "outbound", 2.0, start=2,
                                                                                 end=2))
    limits = Limits(caps=CAPS, attempts={"A": 1}, daily={"outbound": 1})

    best, old = solve(options, limits), greedy(options, limits)

    assert picked(best) == {3: day(0), 1: day(1), 2: day(2)}
    assert picked(old) == {1: day(0), 2: day(1), 4: day(2)}
    assert (best.stats.value, old.stats.value) == (12.0, 11.0)


def test_check_names_every_broken_limit() -> None:
    options = frame(option(1, 1, "A", "outbound", 5.0, cost=8.0, start=0, end=1),
                    option(1, 1, "A", "sms", 4.0, cost=8.0, rank=1),
                    option(2, 1, "B", "outbound", 3.0, start=2, end=2))
    limits = Limits(caps=CAPS, attempts={"A": 1, "B": 1}, daily={"outbound": 1}, budgets={"A": 10.0},
                    booked={("outbound", day(1)): 1})
    chosen = options.assign(contact_date=[day(1), day(0), day(1)])

    problems = check(options, limits, Allocation(chosen, greedy(options, limits).stats))

    assert problems == [
        "unit 1: 2 options chosen, at most 1",
        "sub 1, mode active: 3 contacts, cap 1 with 0 used",
        "sub 1, scenario A: 2 contacts, attempts 1 with 0 used",
        "row 102: contact_date outside its window",
        "channel outbound on 2026-03-02: 2 contacts, 0 free",
        "scenario A: spends 16.000000 yuan, budget 10.000000",
    ]


def test_unknown_mode_fails_fast() -> None:
    options = frame(option(1, 1, "A", "sms", 5.0, mode="inbound"))
    with pytest.raises(ValueError, match=r"Limits.caps has \['active', 'passive'\].*mode \['inbound'\]"):
        solve(options, Limits(caps=CAPS, attempts={"A": 1}))


def stopped_solver(monkeypatch: pytest.MonkeyPatch, x: str) -> None:
    """Make the solver stop on its time limit with its own best ("real"), a poor point ("zeros") or nothing."""
    real = allocate.milp

    def stopped(c, **kwargs) -> OptimizeResult:
        result = real(c, **kwargs)
        solution = {"real": result.x, "zeros": np.zeros(len(c)), "none": None}[x]
        return OptimizeResult(x=solution, status=1, message="Time limit reached", mip_dual_bound=-30.0)

    monkeypatch.setattr(allocate, "milp", stopped)


def test_time_limit_keeps_the_solvers_best(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped_solver(monkeypatch, "real")
    options, limits = frame(*ATTEMPTS_BIND), Limits(caps=CAPS, attempts={"A": 1, "B": 1})

    result = solve(options, limits)

    assert (result.stats.status, result.stats.note) == ("time_limit", "Time limit reached")
    assert set(picked(result)) == {2, 3}
    assert (result.stats.value, result.stats.bound) == (17.0, 30.0)
    assert result.stats.gap == pytest.approx(13 / 30)


@pytest.mark.parametrize("x", ["zeros", "none"])
def test_time_limit_falls_back_to_greedy_when_the_solver_has_nothing_better(monkeypatch: pytest.MonkeyPatch,
                                                                            x: str) -> None:
    stopped_solver(monkeypatch, x)
    options, limits = frame(*ATTEMPTS_BIND), Limits(caps=CAPS, attempts={"A": 1, "B": 1})

    result = solve(options, limits)

    assert result.stats.status == "greedy_fallback"
    assert result.stats.note.endswith("the greedy's is used")
    assert set(picked(result)) == {1}
    assert (result.stats.value, result.stats.bound) == (10.0, 30.0)
    assert result.stats.gap == pytest.approx(2 / 3)
    assert check(options, limits, result) == []


def random_instance(rng: np.random.Generator, n_options: int) -> tuple[pd.DataFrame, Limits]:
    """A small month with every kind of limit switched on at random."""
    rows: list[dict] = []
    unit = 0
    while len(rows) < n_options:
        sub, scenario = int(rng.integers(4)), str(rng.choice(["A", "B", "C"]))
        mode, wave = str(rng.choice(["active", "passive"])), int(rng.integers(1, 3))
        channels = rng.permutation(["sms", "app", "out", "mgr"])[: rng.integers(1, 4)]
        for rank, channel in enumerate(channels):
            start = int(rng.integers(5))
            rows.append(option(unit, sub, scenario, str(channel), round(float(rng.uniform(-1, 10)), 2), mode=mode,
                               rank=rank, wave=wave, cost=round(float(rng.uniform(0, 5)), 2), start=start,
                               end=start + int(rng.integers(-1, 4))))
        unit += 1
    options = frame(*rows[:n_options])
    limits = Limits(caps={"active": int(rng.integers(0, 3)), "passive": int(rng.integers(1, 3))},
                    attempts={s: int(rng.integers(1, 3)) for s in "ABC"},
                    daily={"out": int(rng.integers(0, 3)), "mgr": 1},
                    budgets={s: round(float(rng.uniform(-1, 12)), 2) for s in "AB" if rng.random() < 0.6},
                    used_caps={(int(rng.integers(4)), "passive"): 1},
                    used_attempts={(int(rng.integers(4)), "C"): 1},
                    booked={("out", day(int(rng.integers(6)))): int(rng.integers(1, 3))})
    return options, limits


def brute_force(options: pd.DataFrame, limits: Limits) -> float:
    """The best value over every feasible choice of at most one option per unit, days by earliest deadline."""
    records = options[options["value"] > 0].to_dict("records")
    units = [[r for r in records if r["unit"] == u] for u in sorted({r["unit"] for r in records})]
    best = 0.0
    for choice in itertools.product(*[[None, *unit] for unit in units]):
        rows = [r for r in choice if r is not None]
        if feasible(rows, limits):
            best = max(best, sum(r["value"] for r in rows))
    return best


def feasible(rows: list[dict], limits: Limits) -> bool:
    caps = Counter((r["sub"], r["mode"]) for r in rows)
    if any(n > limits.caps[mode] - limits.used_caps.get((sub, mode), 0) for (sub, mode), n in caps.items()):
        return False
    attempts = Counter((r["sub"], r["scenario"]) for r in rows)
    if any(n > limits.attempts[s] - limits.used_attempts.get((sub, s), 0) for (sub, s), n in attempts.items()):
        return False
    for scenario, budget in limits.budgets.items():
        if sum(r["cost"] for r in rows if r["scenario"] == scenario) > max(0.0, budget) + 1e-9:
            return False
    return all(fits_days([r for r in rows if r["channel"] == channel], channel, limits) for channel in limits.daily)


def fits_days(rows: list[dict], channel: str, limits: Limits) -> bool:
    """Glover's rule, exact for unit jobs: each day, serve the waiting windows that end first."""
    waiting: list[dt.date] = []
    for n in range(10):
        today = day(n)
        waiting = sorted(waiting + [r["window_end"] for r in rows if r["window_start"] == today])
        if waiting and waiting[0] < today:
            return False
        waiting = waiting[max(0, limits.daily[channel] - limits.booked.get((channel, today), 0)):]
    return not waiting


@pytest.mark.parametrize("seed", range(300))
def test_random_instances_are_feasible_and_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    options, limits = random_instance(rng, int(rng.integers(1, 21)))

    best, old = solve(options, limits), greedy(options, limits)

    assert best.stats.status in {"optimal", "empty"}  # the guard's fallback would hide a wrong program
    assert check(options, limits, best) == []
    assert check(options, limits, old) == []
    assert best.stats.value >= old.stats.value - 1e-6
    assert best.stats.bound >= best.stats.value - 1e-6
    if len(options) <= 12:
        assert best.stats.value == pytest.approx(brute_force(options, limits), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_choice_among_equal_optima_does_not_depend_on_row_order(seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    options, limits = random_instance(rng, 20)
    options["value"] = options["value"].round(0)  # many ties

    first = solve(options, limits)
    shuffled = solve(options.sample(frac=1.0, random_state=seed), limits)

    assert list(shuffled.chosen.sort_index().index) == list(first.chosen.index)
    assert list(shuffled.chosen.sort_index()["contact_date"]) == list(first.chosen["contact_date"])


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_matches_one_program_for_everything(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    parts = []
    for block in range(10):
        options, limits = random_instance(rng, 15)
        # Disjoint subscribers and units per block; only block 0 keeps scarce channels and budgets.
        parts.append(options.assign(sub=options["sub"] + 10 * block, unit=options["unit"] + 100 * block))
    options = pd.concat(parts, ignore_index=True)
    is_plain = options["sub"] >= 10
    options.loc[is_plain, "channel"] = options.loc[is_plain, "channel"].map({"sms": "sms", "out": "app", "mgr": "web"})
    options.loc[is_plain, "scenario"] = "C"
    limits = Limits(caps=limits.caps, attempts={"A": 1, "B": 1, "C": 2}, daily=limits.daily, budgets=limits.budgets,
                    booked=limits.booked)

    fast, whole = solve(options, limits, gap=0.0), solve(options, limits, gap=0.0, _decompose=False)

    assert fast.stats.contested < whole.stats.contested
    assert fast.stats.value == pytest.approx(whole.stats.value, abs=1e-6)
    assert check(options, limits, fast) == []
