"""The contact policy's allocation on a generated month: the optimum (`allocate.solve`) against the old greedy passes.

    .venv/bin/python -m tests.benchmarks.allocate --options 1000000 [--seed 7] [--time-limit 60] [--gap 1e-4]

The month: options/3 subscribers, 15 scenarios (2 with budgets set to 40% of what their first-choice channels would
spend), 2 waves, active and passive modes. Active routes are sms (then app); 5% of subscribers also have the scarce
outbound calls (60 a day) and an account manager (20 a day, 40% of them) first. Passive routes are app and/or web.
Windows last 5-20 days of a 30-day month, values are lognormal; caps are one active and one passive contact per
subscriber, attempts two per scenario.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import time

import numpy as np
import pandas as pd

from flowops.scenarios.allocate import Limits, check, greedy, solve

MONTH = dt.date(2026, 3, 1)
SCENARIOS = [f"s{k:02d}" for k in range(15)]
BUDGETED = ["s02", "s07"]
LIFT = {"manager": 4.0, "outbound": 2.5, "sms": 1.0, "app": 0.7, "web": 0.5}
CHANNEL_COST = {"manager": 6.0, "outbound": 2.0, "sms": 0.05, "app": 0.0, "web": 0.0}
DAILY = {"outbound": 60, "manager": 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", type=int, default=100_000, help="about this many options")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--gap", type=float, default=1e-4)
    args = parser.parse_args()

    started = time.perf_counter()
    options, limits = month(args.options, np.random.default_rng(args.seed))
    print(f"generated {len(options):,} options for {options['sub'].nunique():,} subscribers in "
          f"{time.perf_counter() - started:.1f} s (peak RSS {peak_rss_mb():,.0f} MB)", flush=True)

    cpu = time.process_time()
    best = solve(options, limits, time_limit=args.time_limit, gap=args.gap)
    solve_cpu = time.process_time() - cpu
    old = greedy(options, limits)
    s, g = best.stats, old.stats
    print(f"options            {s.options:>14,}")
    print(f"contested options  {s.contested:>14,}  ({s.contested / max(s.options, 1):.1%})")
    print(f"solve seconds      {s.seconds:>14.1f}  ({solve_cpu:.1f} CPU-s; load average {os.getloadavg()[0]:.1f})")
    print(f"status             {s.status:>14}  gap {s.gap:.2e}, bound {s.bound:,.0f} {s.note}")
    print(f"greedy seconds     {g.seconds:>14.1f}")
    print(f"value (optimum)    {s.value:>14,.0f}  chosen {len(best.chosen):,}")
    print(f"value (greedy)     {g.value:>14,.0f}  chosen {len(old.chosen):,}")
    print(f"gain over greedy   {(s.value - g.value) / g.value:>14.2%}")
    for name, allocation in (("optimum", best), ("greedy", old)):
        spent = allocation.chosen[allocation.chosen["scenario"].isin(BUDGETED)].groupby("scenario")["cost"].sum()
        budgets = ", ".join(f"{k} {spent.get(k, 0.0):,.0f} of {v:,.0f}" for k, v in sorted(limits.budgets.items()))
        scarce = allocation.chosen["channel"].isin(list(DAILY)).sum()
        print(f"{name:8} spends {budgets} yuan, {scarce:,} scarce contacts, "
              f"violations {len(check(options, limits, allocation))}")
    print(f"peak RSS           {peak_rss_mb():>14,.0f} MB")


def month(n_options: int, rng: np.random.Generator) -> tuple[pd.DataFrame, Limits]:
    """A random month of about `n_options` options and the limits that bind on it."""
    subs = np.arange(max(1, n_options // 3))
    is_scarce_sub = rng.random(len(subs)) < 0.05
    has_manager = is_scarce_sub & (rng.random(len(subs)) < 0.4)
    # Each subscriber: 1-3 scenarios by popularity; each (sub, scenario): one (wave, mode) and sometimes more.
    pair_sub = np.repeat(subs, 1 + rng.binomial(2, 0.15, len(subs)))
    popularity = 1 / np.arange(1, len(SCENARIOS) + 1) ** 0.7
    pair_scen = rng.choice(len(SCENARIOS), len(pair_sub), p=popularity / popularity.sum())
    pairs = np.unique(np.c_[pair_sub, pair_scen], axis=0)
    combo = rng.random((len(pairs), 4)) < 0.15
    combo[np.arange(len(pairs)), rng.integers(4, size=len(pairs))] = True
    pair_idx, kind = np.nonzero(combo)
    units = pd.DataFrame({"unit": np.arange(len(pair_idx)), "sub": pairs[pair_idx, 0],
                          "scenario": np.array(SCENARIOS)[pairs[pair_idx, 1]], "wave": 1 + kind // 2,
                          "mode": np.where(kind % 2 == 0, "active", "passive")})
    starts = np.where(units["wave"] == 1, rng.integers(0, 10, len(units)), rng.integers(12, 21, len(units)))
    units["start"] = starts
    units["end"] = np.minimum(starts + rng.integers(4, 20, len(units)), 29)
    units["base"] = rng.lognormal(1.5, 0.5, len(SCENARIOS))[pairs[pair_idx, 1]] * rng.lognormal(0, 0.75, len(units))
    options = _routes(units, is_scarce_sub, has_manager, rng)

    gross = options["base"] * options["channel"].map(LIFT)
    is_budgeted = options["scenario"].isin(BUDGETED)
    incentive = np.where(is_budgeted, rng.lognormal(0.5, 0.5, len(options)), 0.0)
    options["cost"] = options["channel"].map(CHANNEL_COST) + incentive
    options["value"] = gross - options["cost"]
    for column in ("start", "end"):
        days = np.datetime64(MONTH, "D") + options[column].to_numpy()
        options[f"window_{column}"] = days.astype("datetime64[D]").astype(object)
    first_choice = options[(options["rank"] == 0) & is_budgeted]
    budgets = (0.4 * first_choice.groupby("scenario")["cost"].sum()).to_dict()
    limits = Limits(caps={"active": 1, "passive": 1}, attempts=dict.fromkeys(SCENARIOS, 2), daily=DAILY,
                    budgets=budgets)
    columns = ["unit", "sub", "scenario", "wave", "mode", "channel", "rank", "value", "cost", "window_start",
               "window_end"]
    return options[columns], limits


def _routes(units: pd.DataFrame, is_scarce_sub: np.ndarray, has_manager: np.ndarray, rng: np.random.Generator
            ) -> pd.DataFrame:
    """One row per channel of each unit's route, ranked."""
    is_active = (units["mode"] == "active").to_numpy()
    sub = units["sub"].to_numpy()
    draw = rng.random(len(units))
    route = np.where(is_active, np.where(draw < 0.5, "sms,app", "sms"),
                     np.where(draw < 0.6, "app,web", np.where(draw < 0.8, "app", "web")))
    route = np.where(is_active & is_scarce_sub[sub], np.char.add("outbound,", route), route)
    route = np.where(is_active & has_manager[sub], np.char.add("manager,", route), route)
    channels = pd.Series(route, index=units.index).str.split(",").explode()
    options = units.loc[channels.index].assign(channel=channels.to_numpy())
    options["rank"] = options.groupby("unit").cumcount()
    return options.reset_index(drop=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
