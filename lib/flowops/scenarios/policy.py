"""The contact policy: from every scenario's candidates to one decision per subscriber, scenario and mode.

Order of the decision, first reason wins (`reason`):
1. churned — left the network; opt_out — opted out of all marketing (any CRM snapshot so far, or an
   unsubscribe since: an opt-out is never forgotten);
2. no_fit — nothing to offer (every product held); no_saving — the offer costs more than it saves and the
   scenario may not say so; immune — this many unconverted rounds of the same offer already;
3. opt_out_channel / unreachable — no channel of the route is left: each channel is dropped when the
   subscriber opted out of it, it cannot reach them (app hall and feature phones; account manager without
   one), or it is too dear for them (value-cost matching);
4. cap — at most `contacts_per_cycle` active and passive contacts per subscriber and month, across every
   scenario: the contacts of highest expected value are kept;
5. capacity — a scarce channel (daily capacity x days of the window) is full: the contact goes down its route
   to the next channel, and is dropped when none is left;
6. budget — the scenario's budget (channel cost + incentive, by expected value) is spent;
7. control — a deterministic hash of (sub_id, scenario, month) below the control rate: recorded, never
   contacted. Control is drawn after every other rule, so it is like the targeted group in all but contact.

Expected value of a contact = acceptance x product margin - channel cost - the incentive's expected cost
(acceptance x its cost for credit and coupons, paid on ordering; its whole cost for trial data and gifts,
given to everyone contacted). Budgets count the same expected spend.
Acceptance per scenario x channel is a Beta prior (the channel's prior rate, `prior_strength` pseudo-contacts)
updated by the conversions measured in earlier months (empirical Bayes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from flowops.errors import ConfigError
from flowops.products import Catalogue
from flowops.scenarios.fit import fit_sql, incentive_sql
from flowops.scenarios.templates import ChannelModel, Channels, Scenario
from flowops.segments import sql_literal

PENDING = "pending"


@dataclass(frozen=True)
class Observed:
    """Measured contacts and conversions of a scenario on a channel in earlier months."""

    scenario: str
    channel: str
    contacts: int
    conversions: int


def acceptance_rates(scenarios: Iterable[Scenario], channels: Channels,
                     observed: Iterable[Observed] = ()) -> dict[tuple[str, str], float]:
    """Posterior mean acceptance per (scenario, channel): (prior x n0 + conversions) / (n0 + contacts)."""
    n0 = channels.policy.prior_strength
    seen = {(o.scenario, o.channel): o for o in observed}
    rates = {}
    for scenario in scenarios:
        for channel in channels.channels:
            o = seen.get((scenario.id, channel.id))
            contacts, conversions = (o.contacts, o.conversions) if o else (0, 0)
            rates[(scenario.id, channel.id)] = (channel.acceptance_prior * n0 + conversions) / (n0 + contacts)
    return rates


def candidates(tagged: DataFrame, scenarios: list[Scenario], catalogue: Catalogue, channels: Channels,
               campaign_month: str, wave: int = 1) -> DataFrame:
    """One row per subscriber, scenario and mode that the scenario's stage and target rule select for `wave`:
    the offer, incentive, window, route and the tag values its messages read (as JSON).

    Each scenario's columns are one `selectExpr` of SQL text (Column objects would cost a JVM round trip per
    literal: thousands per scenario)."""
    parts = []
    cap_share = channels.policy.credit_cap_share_of_bill
    for scenario in scenarios:
        if wave > len(scenario.waves):
            continue
        spec = scenario.waves[wave - 1]
        before = scenario.waves[wave - 2].fallback if wave > 1 else None
        start, end = spec.window(campaign_month)
        fit = fit_sql(scenario.model.product, catalogue)
        incentive = incentive_sql(scenario.model.incentive, cap_share)
        modes = [f"named_struct('mode', {sql_literal(mode)}, 'route', "
                 f"{_route(scenario, mode, first, spec.fallback, channels, before)})"
                 for mode, first in (("active", spec.active), ("passive", spec.passive)) if first]
        selected = tagged.where(f"stage = {sql_literal(scenario.model.stage)} AND coalesce(({scenario.target}), false)")
        parts.append(selected.selectExpr(
            "month", "sub_id", "stage", f"{sql_literal(scenario.id)} AS scenario", f"{int(wave)} AS wave",
            *[f"{text} AS {name}" for name, text in {**fit, **incentive}.items()],
            f"{str(scenario.model.product.allow_extra_cost).lower()} AS allow_extra_cost",
            f"DATE'{start.isoformat()}' AS window_start", f"DATE'{end.isoformat()}' AS window_end",
            f"{_as_json([c for c in scenario.reads if c in tagged.columns])} AS vars",
            "value_tier", "is_smartphone", "has_account_manager", "channel_preference",
            "coalesce(churned_this_month, false) OR coalesce(status = 'churned', false) AS churned",
            f"{float(scenario.model.control_rate)!r}D AS control_rate", f"array({', '.join(modes)}) AS modes",
        ))
    if not parts:
        raise ValueError(f"no scenario has a wave {wave}")
    out = parts[0]
    for part in parts[1:]:
        out = out.union(part)   # same columns in the same order: no by-name analysis per branch
    fees = "map(" + ", ".join(f"{sql_literal(p.id)}, {float(p.fee_yuan)!r}D" for p in catalogue.products) + ")"
    return out.selectExpr(
        "*", "inline(modes)", "round(greatest(-coalesce(saving_yuan, 0D), 0D), 2) AS extra_cost_yuan",
        f"{fees}[product_id] AS product_fee", f"{fees}[product_id] * {catalogue.margin_share!r}D AS margin_yuan",
    ).drop("modes")


def check_targets(tagged: DataFrame, scenarios: list[Scenario], catalogue: Catalogue, channels: Channels) -> None:
    """Spark's analysis of every scenario's target rule and columns over a (possibly empty) tagged frame: an
    unknown function, a type clash or a rule that is not a boolean fails naming the scenario's file."""
    for scenario in scenarios:
        try:
            kind = tagged.selectExpr(f"({scenario.target}) AS c").schema["c"].dataType.simpleString()
            if kind != "boolean":
                raise ConfigError(f"{scenario.source}: target: the rule gives {kind}, not a boolean")
            candidates(tagged, [scenario], catalogue, channels, "2000-01").schema  # noqa: B018 - analysis only
        except (ParseException, AnalysisException) as exc:
            raise ConfigError(f"{scenario.source}: {str(exc).strip().splitlines()[0]}") from None


def _as_json(columns: list[str]) -> str:
    """The named tag values as a JSON object, nulls kept (messages must see that a value is missing)."""
    if not columns:
        return "'{}'"
    pairs = ", ".join(f"{sql_literal(c)}, `{c}`" for c in columns)
    return f"to_json(named_struct({pairs}), map('ignoreNullFields', 'false'))"


def _route(scenario: Scenario, mode: str, first: str, fallback: str | None, channels: Channels,
           earlier_fallback: str | None = None) -> str:
    """Channel ids to try, in order: preference, VIP's account manager, the scenario's high-value channel, the
    previous wave's fallback (wave 2 and later: its non-converters go there, SMS fails -> app hall), the wave's
    channel, its fallback, and (active) the policy's default. Channels of another mode are left out."""
    policy = channels.policy
    ids = ", ".join(sql_literal(c.id) for c in channels.channels if c.mode == mode)
    steps = []
    if scenario.model.strategy.follow_preference:
        steps.append(f"CASE WHEN channel_preference IN ({ids}) THEN channel_preference END")
    if mode == "active" and scenario.model.strategy.vip_to_manager:
        tiers = ", ".join(sql_literal(t) for t in policy.vip_tiers)
        steps.append(f"CASE WHEN coalesce(channel_preference, '') = '' AND value_tier IN ({tiers}) "
                     f"THEN {sql_literal(policy.vip_channel)} END")
    high = scenario.model.strategy.high_value
    if mode == "active" and high:
        tiers = ", ".join(sql_literal(t) for t in high.tiers)
        steps.append(f"CASE WHEN coalesce(channel_preference, '') = '' AND value_tier IN ({tiers}) "
                     f"THEN {sql_literal(high.channel)} END")
    if earlier_fallback and channels[earlier_fallback].mode == mode:
        steps.append(sql_literal(earlier_fallback))
    steps.append(sql_literal(first))
    if fallback and channels[fallback].mode == mode:
        steps.append(sql_literal(fallback))
    if mode == "active":
        steps.append(sql_literal(policy.default_active))
    return f"array_distinct(array_compact(array({', '.join(steps)})))"


def lookup(mapping: dict, key: Column) -> Column:
    """`mapping[key]` for a small Python dict of literals, as a Spark map lookup (null when absent or empty)."""
    if not mapping:
        return F.lit(None)
    pairs = [part for k, v in mapping.items() for part in (F.lit(k), F.lit(v))]
    return F.element_at(F.create_map(*pairs), key)


def _usable(channel: ChannelModel, opted_out: Column) -> tuple[Column, Column]:
    """(reachable and worth it, opted out) for one channel."""
    reach = {"any": F.lit(True), "smartphone": F.coalesce(F.col("is_smartphone"), F.lit(False)),
             "account_manager": F.coalesce(F.col("has_account_manager"), F.lit(False))}[channel.reach]
    if channel.value_tiers is not None:
        worth = F.col("value_tier").isin(channel.value_tiers)
        if channel.min_product_yuan is not None:
            worth = worth | (F.coalesce(F.col("product_fee"), F.lit(0.0)) >= channel.min_product_yuan)
        reach = reach & F.coalesce(worth, F.lit(False))
    return reach, F.array_contains(opted_out, F.lit(channel.id))


def decide(cands: DataFrame, channels: Channels, rates: dict[tuple[str, str], float], opt_outs: DataFrame,
           immune: DataFrame, budgets: dict[str, float], earlier: DataFrame | None = None) -> DataFrame:
    """Every candidate with its channel, acceptance, expected value, cost, control flag, decision and reason.

    Args:
        cands: from `candidates`.
        opt_outs: sub_id, opt_out_all (boolean), opt_out_channels (array of channel ids) — everything so far.
        immune: sub_id, product_id, rounds (unconverted earlier rounds of that offer).
        budgets: scenario id -> budget in yuan (scenarios without one are absent).
        earlier: sub_id, mode, channel, contact_date, decision — the cycle's earlier waves' contacts (targeted)
            and would-be contacts (control): both count toward the contact cap, so a wave treats the contacted and
            the control group alike; the contacts hold their scarce channels' slots.
    """
    policy = channels.policy
    df = (cands.join(opt_outs, "sub_id", "left").join(immune, ["sub_id", "product_id"], "left")
          .withColumn("opt_out_channels", F.coalesce(F.col("opt_out_channels"), F.array().cast("array<string>")))
          .withColumn("rounds", F.coalesce(F.col("rounds"), F.lit(0))))
    usable = {c.id: _usable(c, F.col("opt_out_channels")) for c in channels.channels}
    ok = F.create_map(*[part for cid, (reach, out) in usable.items() for part in (F.lit(cid), reach & ~out)])
    reachable = F.create_map(*[part for cid, (reach, _) in usable.items() for part in (F.lit(cid), reach)])
    any_reachable = F.exists("offered_route", lambda c: F.element_at(reachable, c))
    df = df.withColumn("offered_route", F.col("route")).withColumn("route", F.filter("route",
                                                                                     lambda c: F.element_at(ok, c)))
    reason = (F.when(F.coalesce(F.col("churned"), F.lit(False)), "churned")
              .when(F.coalesce(F.col("opt_out_all"), F.lit(False)), "opt_out")
              .when(F.col("product_id").isNull(), "no_fit")
              .when((F.col("extra_cost_yuan") > 0) & ~F.col("allow_extra_cost"), "no_saving")
              .when(F.col("rounds") >= policy.immunity_rounds, "immune")
              .when(F.size("route") == 0, F.when(any_reachable, "opt_out_channel").otherwise("unreachable"))
              .otherwise(PENDING))
    df = _price(df.withColumn("reason", reason).withColumn("pos", F.lit(0)), channels, rates).localCheckpoint()
    used = None
    booked: dict[tuple[str, dt.date], int] = {}
    if earlier is not None:
        used = earlier.groupBy("sub_id", "mode").agg(F.count("*").alias("_used"))
        for r in earlier.where(F.col("decision") == "targeted").groupBy("channel", "contact_date").count().collect():
            booked[(r.channel, r.contact_date)] = r["count"]
    df = _cap(df, policy.contacts_per_cycle.model_dump(), used).localCheckpoint()
    df = _capacity(df, channels, rates, booked)
    df = _budget(df, budgets)
    draw = F.pmod(F.xxhash64("sub_id", "scenario", "month"), F.lit(1_000_000)) / 1_000_000.0
    df = df.withColumn("control", (F.col("reason") == PENDING) & (draw < F.col("control_rate")))
    df = df.withColumn("reason", F.when(F.col("reason") != PENDING, F.col("reason"))
                       .when(F.col("control"), "control").otherwise("targeted"))
    df = df.withColumn("decision", F.when(F.col("reason").isin("targeted", "control"), F.col("reason"))
                       .otherwise("suppressed"))
    return df.withColumn("round", (F.col("rounds") + 1).cast("int"))


def _price(df: DataFrame, channels: Channels, rates: dict[tuple[str, str], float]) -> DataFrame:
    """channel = route[pos]; acceptance, cost and expected value of contacting through it."""
    rate = lookup({f"{s}|{c}": r for (s, c), r in rates.items()},
                   F.concat_ws("|", F.col("scenario"), F.col("channel")))
    cost = lookup({c.id: c.cost_yuan for c in channels.channels}, F.col("channel"))
    df = df.withColumn("channel", F.get(F.col("route"), F.col("pos")))
    df = df.withColumn("acceptance", rate).withColumn("channel_cost", cost)
    on_order = F.col("incentive_on_order")
    paid = F.when(on_order, F.col("acceptance") * F.col("incentive_cost")).otherwise(F.col("incentive_cost"))
    return df.withColumns({
        # Expected spend of the contact: the channel, plus the incentive (when ordered, for credit and coupons).
        "cost_yuan": F.round(F.col("channel_cost") + paid, 4),
        "expected_value": F.round(F.col("acceptance") * F.coalesce(F.col("margin_yuan"), F.lit(0.0))
                                  - F.col("channel_cost") - paid, 4),
    })


def _by_value(*partition: str) -> Window:
    return Window.partitionBy(*partition).orderBy(F.col("expected_value").desc(), F.col("scenario"),
                                                  F.col("sub_id"), F.col("mode"))


def _cap(df: DataFrame, per_mode: dict[str, int], used: DataFrame | None = None) -> DataFrame:
    """Keep the contacts of highest expected value per subscriber and mode, up to the cap less the contacts the
    cycle's earlier waves made (`used`: sub_id, mode, _used); the rest: cap."""
    limit = lookup(per_mode, F.col("mode"))
    pending = df.where(F.col("reason") == PENDING)
    if used is not None:
        pending = pending.join(used, ["sub_id", "mode"], "left")
        limit = limit - F.coalesce(F.col("_used"), F.lit(0))
    pending = pending.withColumn("_rank", F.row_number().over(_by_value("sub_id", "mode")))
    pending = pending.withColumn("reason", F.when(F.col("_rank") > limit, "cap").otherwise(PENDING))
    pending = pending.drop("_rank", "_used")
    return pending.unionByName(df.where(F.col("reason") != PENDING))


def _capacity(df: DataFrame, channels: Channels, rates: dict[tuple[str, str], float],
              booked: dict[tuple[str, dt.date], int]) -> DataFrame:
    """Scarce channels are booked day by day (`contact_date`): by expected value, each contact takes the first
    day of its own window with a slot left (daily capacity); other channels contact on the window's first day.
    A contact with no slot goes down its route (repriced) and is dropped when the route ends. Passes repeat
    until nothing overflows (routes only move forward, so this ends). `booked`: (channel, day) -> slots the
    cycle's earlier waves already took.

    The contacts waiting at scarce channels are collected to the driver: there are few (outbound and account
    manager candidates) and booking is sequential by nature."""
    daily = {c.id: c.daily_capacity for c in channels.channels if c.daily_capacity}
    key = ["sub_id", "scenario", "mode"]
    if not daily:
        return df.withColumn("contact_date", F.col("window_start"))
    booked = dict(booked)
    placed: dict[tuple[str, str, str, str], dt.date] = {}
    while True:
        waiting = (df.where((F.col("reason") == PENDING) & F.col("channel").isin(list(daily)))
                   .select(*key, "channel", "expected_value", "window_start", "window_end").collect())
        waiting.sort(key=lambda r: (-(r.expected_value or 0.0), r.scenario, r.sub_id, r.mode))
        over = []
        for r in waiting:
            if (r.sub_id, r.scenario, r.mode, r.channel) in placed:
                continue
            day = r.window_start
            while day <= r.window_end and booked.get((r.channel, day), 0) >= daily[r.channel]:
                day += dt.timedelta(days=1)
            if day <= r.window_end:
                booked[(r.channel, day)] = booked.get((r.channel, day), 0) + 1
                placed[(r.sub_id, r.scenario, r.mode, r.channel)] = day
            else:
                over.append((r.sub_id, r.scenario, r.mode))
        if not over:
            days = df.sparkSession.createDataFrame(
                [(*k, day) for k, day in placed.items()] or [("", "", "", "", dt.date(2000, 1, 1))],
                "sub_id string, scenario string, mode string, channel string, _day date")
            df = df.join(days, [*key, "channel"], "left")
            return df.withColumn("contact_date", F.coalesce("_day", "window_start")).drop("_day")
        moved = df.sparkSession.createDataFrame(over, "sub_id string, scenario string, mode string")
        df = df.join(moved.withColumn("_over", F.lit(True)), key, "left")
        shifted = F.coalesce(F.col("_over"), F.lit(False))
        df = df.withColumn("pos", F.when(shifted, F.col("pos") + 1).otherwise(F.col("pos")))
        df = df.withColumn("reason", F.when(shifted & (F.col("pos") >= F.size("route")), "capacity")
                           .otherwise(F.col("reason"))).drop("_over")
        df = _price(df, channels, rates).localCheckpoint()


def _budget(df: DataFrame, budgets: dict[str, float]) -> DataFrame:
    """Within each scenario with a budget, contacts by expected value until channel cost + incentive run out."""
    if not budgets:
        return df
    budget = lookup(budgets, F.col("scenario"))
    order = Window.partitionBy("scenario").orderBy(F.col("expected_value").desc(), "sub_id", "mode")
    spent = F.sum("cost_yuan").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    pending = df.where((F.col("reason") == PENDING) & budget.isNotNull())
    pending = pending.withColumn("reason", F.when(spent > budget, "budget").otherwise(PENDING))
    return pending.unionByName(df.where((F.col("reason") != PENDING) | budget.isNull()))
