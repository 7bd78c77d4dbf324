"""How people use data: app taste by identity, daily and hourly rhythm, sessions, radio access.

Plain tables plus a few functions that turn them into probability matrices.
"""

from __future__ import annotations

import numpy as np

from flowops.synth.catalog import CATEGORIES, Apps

# Rows: identities (see population.IDENTITIES); columns: CATEGORIES. Multiplies app popularity.
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
CATEGORY_TASTE = np.ones((6, len(CATEGORIES)))
for _row, _boost in enumerate([
    {"games": 3.0, "short_video": 2.0, "social": 1.5, "video": 1.5, "music": 1.5, "finance": 0.3,
     "travel": 0.4},                                                         # student
    {"social": 1.6, "news": 1.6, "tools": 2.2, "shopping": 1.6, "life": 1.4, "finance": 1.2},
    {"short_video": 2.5, "video": 1.8, "games": 0.5, "tools": 0.4, "travel": 0.2,
     "navigation": 0.5},                                                     # farmer
    {"navigation": 3.0, "travel": 3.5, "social": 1.4, "news": 1.3, "games": 0.4},
    {"social": 1.8, "finance": 2.5, "shopping": 2.0, "life": 1.5, "games": 0.5},
    {},                                                                      # other
]):
    for _c, _v in _boost.items():
        CATEGORY_TASTE[_row, _CAT[_c]] = _v

FEATURE_PROFILE = 6          # profile number for feature phones (after the six identities)
N_PROFILES = 7
UNKNOWN_RECORD_SHARE = 0.05  # share of records that hit no known app (DNS, bare IPs, odd CDNs)

# Hour weights: busy hours 07-22 peak at lunch and 20-22; idle hours 23-06 fall off after 01.
HOUR_WEIGHT = np.array([
    2.0, 1.2, 0.7, 0.4, 0.3, 0.4, 1.0,                      # 00-06 (idle)
    2.5, 4.0, 4.5, 4.5, 5.0, 6.0, 5.5, 4.5,                  # 07-14 (busy)
    4.5, 4.8, 5.0, 5.5, 6.0, 7.5, 8.0, 7.0,                  # 15-22 (busy)
    3.5,                                                    # 23 (idle)
])
IDLE_MASK = np.zeros(24, dtype=bool)
IDLE_MASK[[23, 0, 1, 2, 3, 4, 5, 6]] = True

# Weekend usage factor per identity (students and farmers use more at weekends, office less).
WEEKEND_FACTOR = np.array([1.35, 0.85, 1.15, 0.9, 1.05, 1.1])

# Median session length in seconds per category (lognormal around it).
DURATION_MEDIAN_S = np.array([
    600, 300, 900, 60, 120, 150, 90, 400, 300, 60, 240, 30, 90, 45,  # CATEGORIES order
    20,                                                                # unknown
], dtype=float)

# Radio access technology mix by handset generation (rows 2G..5G; cols 2G, 3G, 4G, 5G).
RAT_MIX = np.array([
    [1.00, 0.00, 0.00, 0.00],
    [0.20, 0.80, 0.00, 0.00],
    [0.05, 0.05, 0.90, 0.00],
    [0.01, 0.01, 0.28, 0.70],
])

# Probability that a subscriber with data uses it on a given day, by archetype (index order).
ACTIVE_DAY_P = np.array([0.0, 0.0, 0.85, 0.55, 0.30, 0.90, 0.95, 0.97, 0.80, 0.93, 0.75, 0.93])


def app_weights(apps: Apps) -> np.ndarray:
    """(N_PROFILES, n_apps) busy-hour app weights; feature phones only reach WAP-capable apps."""
    w = apps.popularity[None, :] * CATEGORY_TASTE[:, apps.category]
    feature = np.where(apps.on_feature, apps.popularity, 0.0)[None, :]
    return np.vstack([w, feature])


def app_cdfs(apps: Apps) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative app distributions (busy, idle) per profile, with the unknown app as last column.

    Idle hours weight apps by their idle-time affinity (video, music, reading go up at night).
    """
    busy = app_weights(apps)
    idle = busy * apps.idle_affinity[None, :]
    out = []
    for w in (busy, idle):
        w = w / w.sum(axis=1, keepdims=True) * (1.0 - UNKNOWN_RECORD_SHARE)
        w = np.hstack([w, np.full((w.shape[0], 1), UNKNOWN_RECORD_SHARE)])
        out.append(np.cumsum(w, axis=1))
    return out[0], out[1]


def hour_cdfs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(busy hours, busy cdf, idle hours, idle cdf) for drawing a record's start hour."""
    busy_h = np.flatnonzero(~IDLE_MASK)
    idle_h = np.flatnonzero(IDLE_MASK)
    busy = np.cumsum(HOUR_WEIGHT[busy_h] / HOUR_WEIGHT[busy_h].sum())
    idle = np.cumsum(HOUR_WEIGHT[idle_h] / HOUR_WEIGHT[idle_h].sum())
    return busy_h, busy, idle_h, idle


def records_per_day(mb: np.ndarray) -> np.ndarray:
    """Mean number of xDR records for a subscriber-day with ``mb`` megabytes.

    Grows with the log of volume: heavy users have longer sessions, not proportionally more.
    """
    return np.clip(3.0 + 6.5 * np.log1p(mb), 2.0, 60.0)
