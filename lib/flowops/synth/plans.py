"""Which products a subscriber holds, and how much data that implies, per home archetype.

Rule kept throughout: a base plan's generation is never below the handset's, so nobody looks like
"4G/5G handset on an old plan" (an upgrade-stage signal) unless an archetype plants it.
"""

from __future__ import annotations

import numpy as np

from flowops.synth import archetypes as A
from flowops.synth.catalog import Products

# (base plan, data plan or None, weight) per home archetype and handset generation.
PLAN_CHOICES: dict[int, dict[int, list[tuple[str, str | None, float]]]] = {
    A.ZERO_SMART: {
        3: [("BP_EASY19", None, 1.0)],
        4: [("BP_4G38", None, 0.45), ("BP_4G58", None, 0.35), ("BP_EASY4G18", None, 0.20)],
        5: [("BP_5G58", None, 0.6), ("BP_5G128", None, 0.4)]},
    A.ZERO_FEATURE: {
        2: [("BP_EASY8", None, 0.7), ("BP_MZ18", None, 0.3)],
        4: [("BP_EASY4G18", None, 0.8), ("BP_4G38", None, 0.2)]},
    A.LOW_SMART: {
        3: [("BP_EASY19", "DP_20", 1.0)],
        4: [("BP_4G38", None, 0.5), ("BP_4G58", None, 0.35), ("BP_4G88", None, 0.15)],
        5: [("BP_5G58", None, 0.7), ("BP_5G128", None, 0.3)]},
    A.LOW_FEATURE: {
        2: [("BP_MZ18", None, 0.6), ("BP_EASY8", "DP_5", 0.4)],
        4: [("BP_EASY4G18", "DP_5", 0.5), ("BP_4G38", None, 0.5)]},
    A.NO_PLAN: {
        3: [("BP_EASY19", None, 1.0)],
        4: [("BP_EASY4G18", None, 1.0)]},
    A.IDLE_NO_PACK: {
        3: [("BP_EASY19", "DP_50", 1.0)],
        4: [("BP_4G88", None, 0.35), ("BP_4G138", None, 0.2), ("BP_4G58", "DP_50", 0.25),
            ("BP_4G38", "DP_100", 0.2)],
        5: [("BP_5G58", None, 0.6), ("BP_5G128", None, 0.4)]},
    A.OVERFLOW: {
        3: [("BP_EASY19", "DP_20", 1.0)],
        4: [("BP_4G38", None, 0.4), ("BP_4G58", None, 0.35), ("BP_4G38", "DP_10", 0.25)],
        5: [("BP_5G58", None, 1.0)]},
    A.STEADY: {
        3: [("BP_EASY19", "DP_30", 0.6), ("BP_MZ18", "DP_50", 0.4)],
        4: [("BP_4G38", None, 0.2), ("BP_4G58", None, 0.25), ("BP_4G88", None, 0.2),
            ("BP_4G138", None, 0.1), ("BP_GT188", None, 0.05), ("BP_EASY4G18", "DP_50", 0.2)],
        5: [("BP_5G58", None, 0.35), ("BP_5G128", None, 0.45), ("BP_5G198", None, 0.2)]},
}
STEADY_IDLE_PACK_SHARE = 0.08
DATA_PLAN_LADDER = ("DP_5", "DP_10", "DP_20", "DP_30", "DP_50", "DP_100", "DP_200")


def choose_plans(rng: np.random.Generator, products: Products, home: np.ndarray,
                 gen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base plan, data plan and idle pack rows (-1 = none) fitting each home archetype."""
    n = home.size
    base = np.full(n, -1, dtype=np.int16)
    data = np.full(n, -1, dtype=np.int16)
    for h, by_gen in PLAN_CHOICES.items():
        for g in np.unique(gen[home == h]):
            key = int(g) if int(g) in by_gen else min(by_gen, key=lambda k: abs(k - int(g)))
            options = by_gen[key]
            rows = np.flatnonzero((home == h) & (gen == g))
            w = np.array([o[2] for o in options])
            pick = rng.choice(len(options), size=rows.size, p=w / w.sum())
            base[rows] = products.ids(*[o[0] for o in options])[pick]
            dp = np.array([products.index[o[1]] if o[1] else -1 for o in options], dtype=np.int16)
            data[rows] = dp[pick]
    idle = np.full(n, -1, dtype=np.int16)
    pack = (home == A.STEADY) & (rng.random(n) < STEADY_IDLE_PACK_SHARE)
    idle[pack] = products.ids("IDLE_5", "IDLE_10")[rng.integers(0, 2, int(pack.sum()))]
    return base, data, idle


def allowance_mb(products: Products, base: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Monthly allowance (MB) of base plan plus data plan; idle packs and boosters not included."""
    a = np.where(base >= 0, products.allowance_mb[np.maximum(base, 0)], 0.0)
    return a + np.where(data >= 0, products.allowance_mb[np.maximum(data, 0)], 0.0)


def usage_level(rng: np.random.Generator, home: np.ndarray, allowance: np.ndarray,
                u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Typical monthly MB and idle-time share per subscriber for its home archetype."""
    n = home.size
    level = np.zeros(n)
    idle = 0.04 + 0.10 * rng.random(n)
    steady = home == A.STEADY
    level[steady] = np.clip(allowance[steady] * (0.3 + 0.5 * u[steady]), 200.0,
                            0.85 * allowance[steady])
    over = home == A.OVERFLOW
    level[over] = allowance[over] * (1.3 + 0.9 * u[over])
    idle_np = home == A.IDLE_NO_PACK
    level[idle_np] = allowance[idle_np] * (0.45 + 0.4 * u[idle_np])
    idle[idle_np] = 0.38 + 0.2 * rng.random(int(idle_np.sum()))
    no_plan = home == A.NO_PLAN
    level[no_plan] = 220.0 + 560.0 * u[no_plan]
    low = home == A.LOW_SMART
    level[low] = np.minimum(5.0 + 85.0 * u[low] ** 1.5, 0.7 * allowance[low])
    low_f = home == A.LOW_FEATURE
    level[low_f] = np.minimum(0.3 + 19.7 * u[low_f] ** 2, 0.7 * allowance[low_f])
    return level, idle


def fitting_data_plan(products: Products, base: np.ndarray, need_mb: np.ndarray) -> np.ndarray:
    """The cheapest data plan that, with the base plan, keeps ``need_mb`` under 80% of allowance."""
    ladder = products.ids(*DATA_PLAN_LADDER)
    total = allowance_mb(products, base, np.full(base.size, -1))[:, None] \
        + products.allowance_mb[ladder][None, :]
    fits = total * 0.8 >= need_mb[:, None]
    first = np.where(fits.any(axis=1), fits.argmax(axis=1), ladder.size - 1)
    return ladder[first]
