"""Archetypes: the planted truth each subscriber carries per month, and how it maps to stages.

Each subscriber has exactly one archetype per month. The segmentation rules (retain -> alert ->
upgrade -> order -> lift -> wake) must recover the stage; so every archetype plants its own signal
clearly and none of the signals of the stages ranked above it.

Flow customer type (the eight types of the training syllabus) is derived from planted numbers,
not from the archetype name, with these rules (see :func:`flow_type`):

* usage = the month's planned data in MB; allowance = base-plan MB + data-plan MB (boosters and
  idle packs excluded); prev = mean planned usage over up to 3 previous generated months;
* usage == 0: ``plan_zero_usage`` if allowance > 0 else ``no_plan_low_usage``;
* allowance == 0 (data used, no plan): ``no_plan_low_usage`` (the syllabus has no "no plan,
  medium usage" type; the order-stage scenario is recognised from the pay-per-use charge);
* usage > 110% of allowance: ``allowance_exhausted`` if boosters were bought, else
  ``over_allowance``;
* usage < 100 MB: ``plan_low_usage``; with history, usage < 55% of prev: ``falling``;
  usage >= 130% of prev: ``rising``; otherwise ``steady``.
"""

from __future__ import annotations

import numpy as np

ARCHETYPES: tuple[str, ...] = (
    "zero_smart", "zero_feature", "new_subscriber", "low_smart", "low_feature", "no_plan_usage",
    "idle_no_pack", "overflow", "falling", "complainer", "churn_risk", "steady",
)
STAGE_OF: dict[str, str] = {
    "zero_smart": "wake", "zero_feature": "wake", "new_subscriber": "wake",
    "low_smart": "lift", "low_feature": "lift",
    "no_plan_usage": "order", "idle_no_pack": "order",
    "overflow": "upgrade",
    "falling": "alert", "complainer": "alert",
    "churn_risk": "retain", "steady": "retain",
}
STAGES: tuple[str, ...] = ("retain", "alert", "upgrade", "order", "lift", "wake")

ZERO_SMART, ZERO_FEATURE, NEW, LOW_SMART, LOW_FEATURE, NO_PLAN, IDLE_NO_PACK, OVERFLOW, FALLING, \
    COMPLAINER, CHURN_RISK, STEADY = range(len(ARCHETYPES))

FLOW_TYPES: tuple[str, ...] = (
    "plan_zero_usage", "plan_low_usage", "no_plan_low_usage", "steady", "falling", "rising",
    "allowance_exhausted", "over_allowance",
)

# Home archetypes of subscribers who exist before the first month. Overlays (falling, complainer,
# churn_risk) are drawn each month from steady subscribers; new_subscriber comes from activation.
HOME_SHARES: dict[int, float] = {
    ZERO_SMART: 0.065, ZERO_FEATURE: 0.055, LOW_SMART: 0.095, LOW_FEATURE: 0.055,
    NO_PLAN: 0.075, IDLE_NO_PACK: 0.075, OVERFLOW: 0.085, STEADY: 0.495,
}
# Monthly overlay targets as shares of the month's active subscribers.
FALLING_SHARE = 0.06
COMPLAINER_SHARE = 0.05
CHURN_RISK_SHARE = 0.06
NEW_SHARE = 0.045

LOW_MB = 100.0
OVER_RATIO = 1.10
FALL_RATIO = 0.55
RISE_RATIO = 1.30


def flow_type(usage_mb: np.ndarray, allowance_mb: np.ndarray, prev_avg_mb: np.ndarray,
              boosters: np.ndarray) -> np.ndarray:
    """Expected flow customer type per subscriber (index into FLOW_TYPES); see module doc.

    ``prev_avg_mb`` is NaN where there is no history.
    """
    has_prev = ~np.isnan(prev_avg_mb)
    prev = np.where(has_prev, prev_avg_mb, 1.0)
    out = np.full(usage_mb.shape, FLOW_TYPES.index("steady"), dtype=np.int8)
    rules = [  # first matching rule wins, so the list runs from most to least specific
        (usage_mb <= 0, np.where(allowance_mb > 0, 0, 2)),
        (allowance_mb <= 0, 2),
        (usage_mb > OVER_RATIO * allowance_mb, np.where(boosters > 0, 6, 7)),
        (usage_mb < LOW_MB, 1),
        (has_prev & (usage_mb < FALL_RATIO * prev), 4),
        (has_prev & (usage_mb >= RISE_RATIO * prev), 5),
    ]
    decided = np.zeros(usage_mb.shape, dtype=bool)
    for cond, value in rules:
        hit = cond & ~decided
        out[hit] = np.broadcast_to(value, usage_mb.shape)[hit]
        decided |= hit
    return out
