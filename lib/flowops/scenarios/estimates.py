"""What a contact is expected to do, learnt from earlier months' randomised campaigns (empirical Bayes).

Every campaign holds out a random control group, so each scenario x channel of an earlier month is a small
experiment: treated members (contacted on the channel) against control members (who would have been). From
those experiments:

- `organic_rates`: per scenario, the share of candidates who order the offer unprompted (the control groups'
  conversion). A beta-binomial model: each scenario's rate is drawn from one Beta(a, b) fitted to every
  scenario's control group by maximum marginal likelihood; a scenario's estimate is its posterior mean
  (a + converted) / (a + b + members). The fit is worth at most `prior_strength` members (a + b is capped):
  with a few orders per control group the likelihood cannot tell the scenarios apart and its maximum would pool
  them all into one rate, while organic rates differ tenfold between situations (who already pays pay-per-use
  orders a plan on their own; who never used data does not). Until three scenarios have been measured, the Beta
  is the policy's prior (`organic_prior`, worth `prior_strength` members).
- `uplift_rates`: per scenario x channel, the incremental conversion of one contact: the contacted's conversion
  minus that of the control members the allocation would have contacted (both intended for the channel before the
  allocation and chosen by the same optimisation: the same rules in both arms), combined by precision with the
  whole treated arm against the whole control group divided by the share contacted (its control rate pooled toward
  the scenario's organic rate, above, so that a control group of three cannot make a channel look harmful).
  A normal-normal random-effects
  model: cell i measures u_i with sampling variance v_i around its true uplift; the true uplifts of a channel
  scatter with variance t2 around the channel's level. Each level is learnt from the channel's own cells (their
  precision-weighted mean) and its prior N(uplift_prior, uplift_prior^2) from conf/channels.yml, which may be off
  by its own size: a manager's 12 points come down to what managers' measured contacts show. t2 is fitted to
  all cells by DerSimonian and Laird's method of moments; each cell's estimate is its posterior mean, the
  measured uplift shrunk toward its channel's level by v_i / (v_i + t2) — a noisy cell moves little, a
  well-measured one a lot. A cell never measured gets its channel's level.
- `response_rates`: per scenario x channel, the conversion of the contacted, organic buyers included (a Beta
  prior updated by the counts): what targeting used before it measured uplift, kept as the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from flowops.scenarios.templates import Channels

# Smallest between-cell spread kept when the cells cannot tell it from zero (DerSimonian-Laird's t2 = 0): enough
# that a cell measured on thousands of members can still move away from the pooled mean.
MIN_SPREAD = 0.002 ** 2


@dataclass(frozen=True)
class Chosen:
    """The members of a cell the allocation chose: the treated arm's contacted, and the control members the same
    optimisation would have contacted (scenario_targets.would_contact), with who converted."""

    treated: int
    treated_converted: int
    control: int
    control_converted: int


@dataclass(frozen=True)
class Cell:
    """One scenario x channel experiment of earlier months: the treated arm and the control members intended for
    the channel, who converted, how many of the treated arm were contacted (None: all of them), and the chosen
    members of both arms (None: not recorded)."""

    scenario: str
    channel: str
    treated: int
    treated_converted: int
    control: int
    control_converted: int
    contacted: int | None = None
    chosen: Chosen | None = None


@dataclass(frozen=True)
class Estimate:
    mean: float
    sd: float
    measured: bool   # backed by data of its own (not only the prior)


@dataclass(frozen=True)
class Estimates:
    """Everything targeting needs to value a contact; `fit` records how the hyper-parameters came out."""

    organic: dict[str, Estimate]                 # scenario -> P(order unprompted)
    uplift: dict[tuple[str, str], Estimate]      # (scenario, channel) -> incremental conversion per contact
    response: dict[tuple[str, str], float]       # (scenario, channel) -> conversion of the contacted
    fit: dict[str, float]


def estimate(cells: Iterable[Cell], scenarios: Iterable[str], channels: Channels) -> Estimates:
    """All three estimates for every scenario x channel of the conf, from the measured `cells`."""
    cells = list(cells)
    scenarios = list(scenarios)
    organic, organic_fit = organic_rates(cells, scenarios, channels)
    uplift, uplift_fit = uplift_rates(cells, scenarios, channels, organic)
    return Estimates(organic, uplift, response_rates(cells, scenarios, channels, organic),
                     {**organic_fit, **uplift_fit})


def organic_rates(cells: list[Cell], scenarios: list[str], channels: Channels) -> tuple[dict[str, Estimate], dict]:
    """Per scenario, P(order unprompted): beta-binomial empirical Bayes over the scenarios' control groups."""
    policy = channels.policy
    members: dict[str, list[int]] = {s: [0, 0] for s in scenarios}
    for cell in cells:
        if cell.scenario in members:
            members[cell.scenario][0] += cell.control
            members[cell.scenario][1] += cell.control_converted
    measured = {s: nk for s, nk in members.items() if nk[0] > 0}
    a = policy.organic_prior * policy.prior_strength
    b = (1 - policy.organic_prior) * policy.prior_strength
    fitted = False
    if len(measured) >= 3:
        n = np.array([nk[0] for nk in measured.values()], dtype=float)
        k = np.array([nk[1] for nk in measured.values()], dtype=float)
        a, b, fitted = _fit_beta(n, k, a, b)
    out = {}
    for scenario, (n, k) in members.items():
        mean = (a + k) / (a + b + n)
        sd = (mean * (1 - mean) / (a + b + n + 1)) ** 0.5
        out[scenario] = Estimate(mean, sd, n > 0)
    return out, {"organic_a": a, "organic_b": b, "organic_fitted": float(fitted)}


def _fit_beta(n: np.ndarray, k: np.ndarray, a0: float, b0: float) -> tuple[float, float, bool]:
    """(a, b) maximising the beta-binomial marginal likelihood of the counts; the prior's when it fails."""
    def loss(params: np.ndarray) -> float:
        a, b = np.exp(params)
        return -float(stats.betabinom.logpmf(k, n, a, b).sum())

    result = optimize.minimize(loss, np.log([a0, b0]), method="Nelder-Mead",
                               options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})
    a, b = np.exp(result.x)
    if not result.success or not np.isfinite([a, b]).all():
        return a0, b0, False
    scale = min(1.0, (a0 + b0) / (a + b))   # never pooled harder than the prior's strength
    return float(a * scale), float(b * scale), True


def uplift_rates(cells: list[Cell], scenarios: list[str], channels: Channels, organic: dict[str, Estimate]
                 ) -> tuple[dict[tuple[str, str], Estimate], dict]:
    """Per scenario x channel, incremental conversion per contact: random-effects empirical Bayes (module text)."""
    prior = {c.id: c.uplift_prior for c in channels.channels}
    usable = [c for c in cells if c.treated > 0 and c.channel in prior and c.scenario in organic]
    strength = channels.policy.prior_strength
    found = {(c.scenario, c.channel): measured(c, organic[c.scenario], prior[c.channel], strength) for c in usable}
    spread = _spread(usable, found)
    t2 = max(spread if spread is not None else 0.0, MIN_SPREAD)
    level = {}
    for channel, mean0 in prior.items():
        own = [found[(c.scenario, c.channel)] for c in usable if c.channel == channel]
        precision0 = 1 / max(mean0, 0.005) ** 2       # the prior, worth about its own size
        w = np.array([1 / (v + t2) for _, v in own])
        y = np.array([d for d, _ in own])
        precision = precision0 + w.sum()
        level[channel] = ((precision0 * mean0 + (w * y).sum()) / precision, 1 / precision)
    out = {}
    for scenario in scenarios:
        for channel in prior:
            mean, var = level[channel]
            if (scenario, channel) in found:
                yi, vi = found[(scenario, channel)]
                weight = t2 / (t2 + vi)
                out[(scenario, channel)] = Estimate(mean + weight * (yi - mean),
                                                    (weight * vi + (1 - weight) ** 2 * var) ** 0.5, True)
            else:
                out[(scenario, channel)] = Estimate(mean, (t2 + var) ** 0.5, False)
    fit = {f"uplift_level.{c}": level[c][0] for c in prior}
    return out, {**fit, "uplift_spread_sd": t2 ** 0.5, "uplift_cells": float(len(usable))}


def _spread(usable: list[Cell], measured: dict[tuple[str, str], tuple[float, float]]) -> float | None:
    """DerSimonian and Laird's variance of the true uplifts around their channel's mean, over every channel's cells
    (None while no channel has two measured cells)."""
    by_channel: dict[str, list[tuple[float, float]]] = {}
    for c in usable:
        by_channel.setdefault(c.channel, []).append(measured[(c.scenario, c.channel)])
    q = df = sw = sw2 = 0.0
    for own in by_channel.values():
        y = np.array([d for d, _ in own])
        w = 1 / np.array([v for _, v in own])
        fixed = (w * y).sum() / w.sum()
        q += float((w * (y - fixed) ** 2).sum())
        df += len(own) - 1
        sw += float(w.sum())
        sw2 += float((w ** 2).sum() / w.sum())
    if df < 1:
        return None
    return max(0.0, (q - df) / (sw - sw2))


def measured(cell: Cell, organic: Estimate, prior: float, strength: float) -> tuple[float, float]:
    """Uplift per contact of a cell and its sampling variance: two unbiased measures, combined by their precision.

    - The whole arms: the treated arm's conversion minus its control members' (their rate pooled `strength`
      members deep toward the scenario's organic rate: a cell's control group is small, and its members, intended
      for the channel like the treated, may order more or less than the scenario's), divided by the share of the
      treated arm contacted. Always available, but the members the allocation left out add their noise and the
      division by a share of a third triples it.
    - The chosen (where recorded): the contacted's conversion minus that of the control members the allocation
      would have contacted. Both were chosen by the same rule from the same random split, so the difference is
      unbiased for the contacts the policy makes, with nobody in it who was not (or would not have been) contacted.
      Not pooled toward any other rate: every other control rate (the cell's, the scenario's) is that of members the
      allocation might not have chosen, which is the bias this comparison removes. Few chosen control members give
      it a large variance, and the whole arms then carry the combination.

    The two share members, so they are correlated and the combined variance is somewhat too small. The binomial
    variances are taken at the rate the model expects (organic + prior) or the measured one, whichever is larger,
    so that 0 of n still has one."""
    expected = min(max(organic.mean + prior, 1e-4), 0.99)

    def spread(rate: float, floor: float) -> float:
        return max(rate * (1 - rate), floor * (1 - floor))

    control = (cell.control_converted + strength * organic.mean) / (cell.control + strength)
    held_var = (spread(control, organic.mean) / (cell.control + strength)
                + organic.sd ** 2 * (strength / (cell.control + strength)) ** 2)
    share = max((cell.contacted / cell.treated) if cell.contacted is not None and cell.treated else 1.0, 0.05)
    rate = cell.treated_converted / cell.treated
    whole = ((rate - control) / share, (spread(rate, expected) / cell.treated + held_var) / share ** 2)
    chosen = cell.chosen
    if chosen is None or not chosen.treated or not chosen.control:
        return whole
    rate_t = chosen.treated_converted / chosen.treated
    rate_c = chosen.control_converted / chosen.control
    own = (rate_t - rate_c, spread(rate_t, expected) / chosen.treated + spread(rate_c, organic.mean) / chosen.control)
    w_own, w_whole = 1 / own[1], 1 / whole[1]
    return (w_own * own[0] + w_whole * whole[0]) / (w_own + w_whole), 1 / (w_own + w_whole)


def response_rates(cells: list[Cell], scenarios: list[str], channels: Channels,
                   organic: dict[str, Estimate]) -> dict[tuple[str, str], float]:
    """Per scenario x channel, the posterior mean conversion of the contacted: a Beta prior at organic + the
    channel's uplift prior (`prior_strength` contacts), updated by the treated counts."""
    n0 = channels.policy.prior_strength
    seen: dict[tuple[str, str], list[int]] = {}
    for cell in cells:
        counts = seen.setdefault((cell.scenario, cell.channel), [0, 0])
        if cell.chosen is not None and cell.chosen.treated > 0:   # the contacted
            counts[0] += cell.chosen.treated
            counts[1] += cell.chosen.treated_converted
        else:   # the treated arm, when who was contacted is not recorded
            counts[0] += cell.treated
            counts[1] += cell.treated_converted
    out = {}
    for scenario in scenarios:
        base = organic[scenario].mean if scenario in organic else channels.policy.organic_prior
        for channel in channels.channels:
            n, k = seen.get((scenario, channel.id), (0, 0))
            out[(scenario, channel.id)] = (min(base + channel.uplift_prior, 0.99) * n0 + k) / (n0 + n)
    return out
