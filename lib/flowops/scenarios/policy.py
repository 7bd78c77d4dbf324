"""The contact policy as one model: candidates -> eligibility -> the random draw -> valued options -> solve.

A *unit* is one subscriber x scenario x wave x mode (active or passive) that a scenario's target rule selects;
its *options* are the channels of its route. The contact cycle is the campaign month: every wave of every
scenario shares one subscriber's `contacts_per_cycle`.

1. Eligibility, decided for every unit before anything random, so both arms of the experiment are alike (first
   reason wins): churned; opt_out (any CRM snapshot so far, or an unsubscribe reply: never forgotten); no_fit
   (every product held); no_saving (costs more than it saves, unless the scenario may say so); immune (the
   offer's family went unconverted through `immunity_rounds` delivered cycles); opt_out_channel / unreachable
   (no channel of the route is left: opted out of it, it cannot reach them, or it is too dear for them);
   no_message (no channel left whose message renders); no_value (no channel left whose expected incremental
   value is positive — a care scenario's contacts may be negative, within its cost ceiling).
2. The draw, per subscriber and scenario with an eligible unit: the control group (a hash of sub_id, scenario
   and month below the control rate) is never contacted in any wave; the treated arm is everyone else. Wave 2
   and later go to the previous wave's non-converters of both arms; the treated ones draw a holdout of their
   own for the wave. A share of the treated arm (`exploration_share`) explores: it is offered one worthwhile
   channel drawn at random instead of its best (the held arms draw alike: their would-be contacts are judged on
   the drawn channel). Draws are stored with the decisions, never recomputed.
3. Options of the treated arm, valued by `scenarios/value.py`, go to `scenarios/allocate.py`, which maximises
   their total value under the contact caps, each scenario's attempts, the scarce channels' daily capacity and
   the scenarios' budgets over all their waves. Control members consume nothing.

Route of a unit (channels of its mode, in order): the preference tag; VIPs without one to the account manager;
the scenario's high-value tiers to its high-value channel; the wave's channel; its fallback; for active units,
the policy's default channel. From wave 2 on, a subscriber whose contact in the previous wave was not delivered
tries that wave's fallback first (the seed's "SMS fails -> mobile-app hall"); everyone else starts at the wave's
own route.

Only the target rules and the product fit run in Spark (`selections`: one projection over the month's tags);
the selected rows are few enough to decide on the driver, where the allocation needs them anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowops.errors import ConfigError
from flowops.products import Catalogue
from flowops.scenarios.fit import fit_sql, incentive_on_order, incentive_sql
from flowops.scenarios.templates import Channels, Scenario
from flowops.segments import sql_literal

PENDING = "pending"
# Reasons a unit is left out before the draw, in the order they are checked.
INELIGIBLE = ("churned", "opt_out", "no_fit", "no_saving", "immune", "opt_out_channel", "unreachable", "no_message",
              "no_value")
CONTROL, HOLDOUT, TREATED = "control", "holdout", "treated"


def compared_arm(wave: int) -> str:
    """The held arm a wave's treated arm is compared with: wave 1's control group, a later wave's holdout."""
    return CONTROL if wave == 1 else HOLDOUT


def in_compared_arm() -> Column:
    """`compared_arm` as a Spark condition on a row's `wave` and `arm`."""
    return F.col("arm") == F.when(F.col("wave") == 1, F.lit(CONTROL)).otherwise(F.lit(HOLDOUT))


SUBSCRIBER_COLUMNS = ("value_tier", "is_smartphone", "has_account_manager", "channel_preference")


# ------------------------------------------------------------------------------------------------ Spark: rules
def selections(tagged: DataFrame, scenarios: list[Scenario], catalogue: Catalogue, channels: Channels) -> DataFrame:
    """One row per subscriber and scenario whose stage and target rule select them: the offer (product_id, offers,
    saving_yuan), the incentive's value to them (a credit is capped by their bill), the tag values the messages
    read (as JSON) and the subscriber's routing tags.

    All scenarios in one projection (an array of one struct per scenario, null when the rule does not select):
    a union of a branch per scenario costs Spark several times more planning."""
    cap_share = channels.policy.credit_cap_share_of_bill
    structs = []
    for scenario in scenarios:
        fit = fit_sql(scenario.model.product, catalogue)
        incentive = incentive_sql(scenario.model.incentive, cap_share)
        rule = f"stage = {sql_literal(scenario.model.stage)} AND coalesce(({scenario.target}), false)"
        structs.append(
            f"CASE WHEN {rule} THEN named_struct('scenario', {sql_literal(scenario.id)}, "
            f"'product_id', {fit['product_id']}, 'offers', {fit['offers']}, "
            f"'saving_yuan', CAST({fit['saving_yuan']} AS DOUBLE), "
            f"'incentive_yuan', CAST({incentive['incentive_yuan']} AS DOUBLE), "
            f"'vars', {_as_json([c for c in scenario.reads if c in tagged.columns])}) END")
    return tagged.selectExpr(
        "month", "sub_id", "stage", *SUBSCRIBER_COLUMNS,
        "coalesce(churned_this_month, false) OR coalesce(status = 'churned', false) AS churned",
        f"inline(filter(array({', '.join(structs)}), x -> x IS NOT NULL))")


def check_targets(tagged: DataFrame, scenarios: list[Scenario], catalogue: Catalogue, channels: Channels) -> None:
    """Spark's analysis of every scenario's target rule and columns over a (possibly empty) tagged frame: an
    unknown function, a type clash or a rule that is not a boolean fails naming the scenario's file."""
    for scenario in scenarios:
        try:
            kind = tagged.selectExpr(f"({scenario.target}) AS c").schema["c"].dataType.simpleString()
            if kind != "boolean":
                raise ConfigError(f"{scenario.source}: target: the rule gives {kind}, not a boolean")
            selections(tagged, [scenario], catalogue, channels).schema  # noqa: B018 - analysis only
        except (ParseException, AnalysisException) as exc:
            raise ConfigError(f"{scenario.source}: {str(exc).strip().splitlines()[0]}") from None


def _as_json(columns: list[str]) -> str:
    """The named tag values as a JSON object, nulls kept (messages must see that a value is missing)."""
    if not columns:
        return "'{}'"
    pairs = ", ".join(f"{sql_literal(c)}, `{c}`" for c in columns)
    return f"to_json(named_struct({pairs}), map('ignoreNullFields', 'false'))"


def lookup(mapping: dict, key: Column) -> Column:
    """`mapping[key]` for a small Python dict of literals, as a Spark map lookup (null when absent or empty)."""
    if not mapping:
        return F.lit(None)
    pairs = [part for k, v in mapping.items() for part in (F.lit(k), F.lit(v))]
    return F.element_at(F.create_map(*pairs), key)


# ------------------------------------------------------------------------------------- driver: units and routes
def units(selected: pd.DataFrame, scenarios: list[Scenario], catalogue: Catalogue, channels: Channels,
          campaign_month: str, waves: Sequence[int]) -> pd.DataFrame:
    """One row per selected subscriber and scenario, wave (of `waves`) and mode: window, incentive, offer family
    and value, care ceiling, control rate and `route` (the channels to try, in order). A row whose optional
    `undelivered` column is true (its previous-wave contact was not delivered) starts with that wave's fallback."""
    by_id = {s.id: s for s in scenarios}
    products = {p.id: p for p in catalogue.products}
    frames = []
    for scenario_id, group in selected.groupby("scenario", sort=True):
        scenario = by_id[scenario_id]
        for wave in waves:
            if wave > len(scenario.waves):
                continue
            spec = scenario.waves[wave - 1]
            before = scenario.waves[wave - 2].fallback if wave > 1 else None
            start, end = spec.window(campaign_month)
            for mode, first in (("active", spec.active), ("passive", spec.passive)):
                if not first:
                    continue
                frame = group.assign(wave=wave, mode=mode, window_start=start, window_end=end)
                retry = (flag(frame["undelivered"]).tolist()
                         if before and "undelivered" in frame else False)
                frame["route"] = _routes(frame, scenario, mode, first, spec.fallback, channels, retry, before)
                frames.append(frame)
    columns = [*selected.columns, "wave", "mode", "window_start", "window_end", "route"]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for column in ("saving_yuan", "incentive_yuan"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    scenario_of = out["scenario"].map(by_id)
    credit = scenario_of.map(lambda s: s.model.incentive.kind == "credit")
    yuan = out["incentive_yuan"].fillna(0.0)
    out["incentive"] = np.where(credit, np.where(yuan > 0, "credit", "none"), scenario_of.map(
        lambda s: s.model.incentive.kind))
    out["incentive_cost"] = np.where(credit, yuan, scenario_of.map(_incentive_cost)).astype(float)
    out["incentive_on_order"] = scenario_of.map(lambda s: incentive_on_order(s.model.incentive)).astype(bool)
    out["allow_extra_cost"] = scenario_of.map(lambda s: s.model.product.allow_extra_cost).astype(bool)
    out["extra_cost_yuan"] = (-out["saving_yuan"].fillna(0.0)).clip(lower=0).round(2)
    out["family"] = out["product_id"].map({i: p.type for i, p in products.items()})
    out["product_value"] = out["product_id"].map({i: p.value_yuan for i, p in products.items()}).astype(float)
    out["margin_yuan"] = out["product_id"].map({i: catalogue.margin(p) for i, p in products.items()}).astype(float)
    out["control_rate"] = scenario_of.map(lambda s: s.model.control_rate).astype(float)
    out["care_max_cost"] = scenario_of.map(lambda s: s.model.care.max_cost_yuan if s.model.care else np.nan)
    return out


def _incentive_cost(scenario: Scenario) -> float:
    """What one contact's incentive costs the operator, when it is not a credit (whose cost is its capped value)."""
    incentive = scenario.model.incentive
    if incentive.kind == "none":
        return 0.0
    return float(incentive.cost_yuan if incentive.cost_yuan is not None else incentive.yuan)


def _routes(frame: pd.DataFrame, scenario: Scenario, mode: str, first: str, fallback: str | None,
            channels: Channels, retry, before: str | None) -> list[list[str]]:  # noqa: ANN001 - bool or list
    """Each row's route (see the module text), computed once per distinct (preference, value tier, retry)."""
    retries = retry if isinstance(retry, list) else [retry] * len(frame)
    cache: dict[tuple, list[str]] = {}
    out = []
    for pref, tier, again in zip(frame["channel_preference"], frame["value_tier"], retries, strict=True):
        key = (pref, tier, again)
        if key not in cache:
            cache[key] = route(scenario, mode, first, fallback, channels, pref, tier, before if again else None)
        out.append(cache[key])
    return out


def route(scenario: Scenario, mode: str, first: str, fallback: str | None, channels: Channels,
          preference: str | None, value_tier: str | None, undelivered_fallback: str | None = None) -> list[str]:
    """The channels a unit tries, in order (see the module text); channels of another mode are left out."""
    policy = channels.policy
    strategy = scenario.model.strategy
    of_mode = {c.id for c in channels.channels if c.mode == mode}
    steps: list[str | None] = []
    if undelivered_fallback:
        steps.append(undelivered_fallback)
    no_preference = not preference
    if strategy.follow_preference:
        steps.append(preference)
    if mode == "active" and strategy.vip_to_manager and no_preference and value_tier in policy.vip_tiers:
        steps.append(policy.vip_channel)
    if mode == "active" and strategy.high_value and no_preference and value_tier in strategy.high_value.tiers:
        steps.append(strategy.high_value.channel)
    steps += [first, fallback]
    if mode == "active":
        steps.append(policy.default_active)
    return list(dict.fromkeys(s for s in steps if s and s in of_mode))


def with_eligibility(frame: pd.DataFrame, channels: Channels) -> pd.DataFrame:
    """Each unit's `offered_route`, `route` (the channels left: not opted out, reachable, worth it) and `reason`:
    the first eligibility rule it fails, or PENDING (no_message and no_value come with the options).

    The frame carries opt_out_all, opt_out_channels (list) and rounds (delivered, unconverted earlier cycles of the
    offer's family) per row."""
    policy = channels.policy
    out = frame.copy()
    out["offered_route"] = out["route"]
    reachable_routes, usable_routes = [], []
    for row in out[["route", "opt_out_channels", "is_smartphone", "has_account_manager", "value_tier",
                    "product_value"]].itertuples(index=False):
        opted = set(row.opt_out_channels) if _is_list(row.opt_out_channels) else set()
        reach = [c for c in row.route if _reaches(channels[c], row)]
        reachable_routes.append(reach)
        usable_routes.append([c for c in reach if c not in opted])
    out["route"] = usable_routes
    reachable = np.array([bool(r) for r in reachable_routes])
    reason = np.select(
        [flag(out["churned"]), flag(out["opt_out_all"]),
         out["product_id"].isna(), (out["extra_cost_yuan"] > 0) & ~out["allow_extra_cost"],
         out["rounds"].fillna(0) >= policy.immunity_rounds, (out["route"].map(len) == 0) & reachable,
         out["route"].map(len) == 0],
        ["churned", "opt_out", "no_fit", "no_saving", "immune", "opt_out_channel", "unreachable"], PENDING)
    out["reason"] = reason
    return out


def flag(values: pd.Series) -> np.ndarray:
    """A column of booleans with nulls as a plain boolean array, nulls false."""
    return values.astype("boolean").fillna(False).to_numpy(bool)


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _reaches(channel, row) -> bool:  # noqa: ANN001 - a ChannelModel and a row tuple
    """The channel can reach the subscriber and is worth it for them (value-cost matching)."""
    if channel.reach == "smartphone" and not _true(row.is_smartphone):
        return False
    if channel.reach == "account_manager" and not _true(row.has_account_manager):
        return False
    if channel.value_tiers is not None:
        worth = row.value_tier in channel.value_tiers
        if channel.min_product_yuan is not None:
            worth = worth or (not pd.isna(row.product_value) and row.product_value >= channel.min_product_yuan)
        return bool(worth)
    return True


def _true(value: object) -> bool:
    return bool(value) if value is not None and not (isinstance(value, float) and np.isnan(value)) else False


# ------------------------------------------------------------------------------------------------------ the draw
def uniform(keys: Sequence[str]) -> np.ndarray:
    """A uniform number in [0, 1) per key, from a keyed hash: the same on every run and machine."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") / 2.0 ** 64
                     for k in keys])


def draw_arms(frame: pd.DataFrame, month: str, wave: int, exploration_share: float,
              earlier_arms: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """`arm` (control, holdout or treated) and `explore` for every unit of a subscriber and scenario with an
    eligible unit (reason PENDING); None for the others, who are not part of the experiment. Wave 1 draws the
    control group; a later wave keeps the earlier control group (`earlier_arms`) and draws its holdout among the
    earlier treated arm."""
    eligible = frame.loc[frame["reason"] == PENDING, ["sub_id", "scenario", "control_rate"]].drop_duplicates(
        ["sub_id", "scenario"])
    keys = (eligible["sub_id"] + "|" + eligible["scenario"] + "|" + month).tolist()
    if wave == 1:
        arm = np.where(uniform(keys) < eligible["control_rate"].to_numpy(), CONTROL, TREATED)
    else:
        before = [(earlier_arms or {}).get((s, c)) for s, c in zip(eligible["sub_id"], eligible["scenario"],
                                                                    strict=True)]
        held = uniform([f"{k}|wave{wave}" for k in keys]) < eligible["control_rate"].to_numpy()
        arm = np.where(np.array(before, dtype=object) == CONTROL, CONTROL, np.where(held, HOLDOUT, TREATED))
    # Every arm draws: a held member drawn to explore is judged as the explorer they would have been (on the drawn
    # channel), so the chosen and the would-be chosen stay alike, channel by channel.
    explore = uniform([f"{k}|explore{wave}" for k in keys]) < exploration_share
    pairs = eligible[["sub_id", "scenario"]].assign(arm=arm, explore=explore)
    out = frame.drop(columns=[c for c in ("arm", "explore") if c in frame.columns]).merge(
        pairs, on=["sub_id", "scenario"], how="left")
    out["explore"] = out["explore"].astype("boolean").fillna(False).astype(bool)
    out["arm"] = out["arm"].astype(object).where(out["arm"].notna(), None)
    return out
