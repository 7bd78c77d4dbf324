"""Does targeting by uplift beat targeting by response, on a world where the two differ?

One generated world (a history month, four run months and the month after, whose orders measure the fourth
campaign), copied twice; each copy runs every month of the pipeline with the channel simulator answering each
campaign — once with `policy.objective: uplift`, once with `response` (the ranking quantity targeting used before:
the conversion of the contacted, organic buyers included; the same optimiser, estimates, rules and exploration).
Both runs send at most SMS_PER_DAY_PER_1000 SMS a day per 1,000 subscribers (a gateway quota): the same number of
contacts, so what differs is whom each policy gives them to. Both maximise the value of their contacts (margin x
conversions less costs) or, with `--maximise orders`, the conversions they add (`policy.maximise`).
The first two campaigns teach the estimates (and the uplift model, from the third); the last two are measured:

- the ranking quantity on its own: every eligible candidate of the measured months (scenario x channel of its
  route's first choice) ranked by the uplift the pipeline had learnt by then, and by the conversion of the
  contacted it had learnt (today's ranking), the best N of each taken at several depths (the same N for both),
  and the planted incremental conversions of each selection summed (`synth.response.true_uplift`: delivery x
  effect, from the generator's potential outcomes);
- the campaigns each policy ran: the planted incremental conversions and value of its contacts, in all and over
  its best N contacts by its own weight (N the smaller policy's number of contacts);
- beside each, ceilings: the same candidates ranked by exactly right cell estimates (the planted mean of each
  scenario x channel), by exactly right expected scores (`synth.truth.expected_effects`: each subscriber's effect
  averaged over the generator's draws, what the best model of a subscriber's attributes could know) and by the
  planted draws themselves (the kind, temper and preferred channel each subscriber drew: no estimator sees these);
- by the evaluation itself: the measured uplift with its 95% interval of the scenario x channel cells each ranking
  puts first, and each campaign's incremental orders (uplift per contact x contacted, per scenario, the whole
  campaign's row); the difference between the two policies with its interval, for every contact and for pushed
  and shown contacts apart, and the number of subscribers a run would need for it to show the planted
  difference.

    .venv/bin/python -m tests.validation.targeting --subscribers 4000 --seed 41 --out /tmp/targeting

The test suite does not run this comparison: below tens of thousands of subscribers an experiment of a few hundred
members per cell cannot tell effects of one to three points apart (BENCHMARKS.md, "Targeting"). It checks the parts
instead: that the evaluation recovers the planted effects (tests/integration/test_recovery.py), and each targeting
rule against a simulated cell where the right answer is known (tests/unit/test_scenarios.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flowops.scenarios.value import CARE_WEIGHT
from flowops.synth.response import Propensities

OBJECTIVES = ("uplift", "response")
DONE = "_validation_done"   # written in a lake once every month ran: --reuse keeps such a lake
START = "2026-01"


# The SMS gateway's daily quota in both runs, per 1,000 subscribers: about a third of the SMS each month's candidates
# could get, so both policies make the same number of contacts and choose whom to give them.
SMS_PER_DAY_PER_1000 = 15


def policy_conf(out: Path, objective: str, subscribers: int, sms_per_1000: float = SMS_PER_DAY_PER_1000,
                every_per_1000: float | None = None, maximise: str = "value") -> Path:
    """The repo's conf with `policy.objective` and `policy.maximise` set, the SMS gateway's daily quota and, with
    `every_per_1000`, a daily budget on every other channel that has none (the shown ones included): a campaign sized
    by its contact budget."""
    from tests.conftest import CONF

    conf = out / f"conf-{objective}"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(CONF, conf)
    path = conf / "channels.yml"
    text, n = re.subn(r"^(\s*objective:\s*)\w+", rf"\g<1>{objective}", path.read_text(encoding="utf-8"), flags=re.M)
    if n != 1:
        raise RuntimeError(f"{path}: no policy.objective line to set")
    text, n = re.subn(r"^(\s*maximise:\s*)\w+", rf"\g<1>{maximise}", text, flags=re.M)
    if n != 1:
        raise RuntimeError(f"{path}: no policy.maximise line to set")
    quota = round(sms_per_1000 * subscribers / 1000)
    text, n = re.subn(r"(\{id: sms, [^}]*?)(reach: any)", rf"\g<1>daily_capacity: {quota}, \g<2>", text)
    if n != 1:
        raise RuntimeError(f"{path}: no sms channel to give a daily quota")
    if every_per_1000 is not None:
        budget = max(1, round(every_per_1000 * subscribers / 1000))
        text, n = re.subn(r"(\{id: \w+, (?:(?!daily_capacity)[^}])*?)(reach: )",
                          rf"\g<1>daily_capacity: {budget}, \g<2>", text)
        if n == 0:
            raise RuntimeError(f"{path}: no channel without a daily capacity to give a budget")
    path.write_text(text, encoding="utf-8")
    return conf


def context(conf: Path, lake: Path, driver_memory: str = "4g"):  # noqa: ANN201
    from flowops.config import SparkSettings, load_settings
    from flowops.context import Context

    settings = load_settings(conf, lake_root=str(lake), environ={})
    spark = SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory=driver_memory, log_level="ERROR",
                          conf={"spark.sql.adaptive.coalescePartitions.enabled": "true"})
    return Context(settings.model_copy(update={"spark": spark}))


def run_policy(out: Path, raw: Path, objective: str, months: list[str], seed: int, subscribers: int,
               sms_per_1000: float = SMS_PER_DAY_PER_1000, every_per_1000: float | None = None,
               maximise: str = "value") -> Path:
    """Every month of the world through the pipeline with one objective; the lake's path."""
    from flowops.definitions import Definitions
    from flowops.demo import run_months
    from flowops.landing import month_days
    from flowops.steps.ingest import Reference, ingest_days, ingest_monthly

    mine = out / f"raw-{objective}"
    if mine.exists():
        shutil.rmtree(mine)
    shutil.copytree(raw, mine)
    lake = out / f"lake-{objective}"
    if lake.exists():
        shutil.rmtree(lake)
    ctx = context(policy_conf(out, objective, subscribers, sms_per_1000, every_per_1000, maximise), lake,
                  driver_memory="8g")
    definitions = Definitions.load(ctx.settings.conf_dir)
    reference = Reference.load(ctx, definitions)
    ingest_days(ctx, mine, [d for m in months[:-1] for d in month_days(m)], reference)
    ingest_monthly(ctx, mine, months[0], reference)
    run_months(ctx, mine, months, reference, definitions, seed, target_last=False)
    (lake / DONE).write_text("ok\n", encoding="utf-8")
    return lake


def contacts(ctx, measured: list[str], planted: Propensities, knowable: Propensities  # noqa: ANN001
             ) -> pd.DataFrame:
    """Every contact of the measured months with its policy weight, its planted incremental conversion and its
    expected one (`knowable`)."""
    from pyspark.sql import functions as F

    from flowops.definitions import Definitions
    from flowops.synth.response import offer_type, true_uplift

    lake = ctx.lake
    keys = lake.read("restricted/subscriber_keys").select("sub_id", "msisdn").dropDuplicates(["sub_id"])
    targets = (lake.read("gold/scenario_targets")
               .where(F.col("month").isin(measured) & (F.col("decision") == "targeted")).join(keys, "sub_id")
               .select("month", "wave", "sub_id", "msisdn", "scenario", "stage", "mode", "channel", "product_id",
                       "weight", "expected_value", "reason", "incentive_cost", "incentive_on_order").toPandas())
    conf = Definitions.load(ctx.settings.conf_dir)
    catalogue = conf.catalogue
    types = {p.id: p.type for p in catalogue.products}
    targets["offer_type"] = [offer_type(types.get(p, ""), s) for p, s in zip(targets["product_id"], targets["stage"],
                                                                             strict=True)]
    targets["true_uplift"] = true_uplift(targets, planted)
    targets["expected_uplift"] = expected_uplift(targets, knowable)
    # What the planted incremental orders are worth (the margin targeting values an order by), before any cost; and
    # the planted incremental value, what targeting maximises: that margin less the channel's cost and the incentive
    # paid (credit and coupons to everyone who orders, at the planted chance a contacted subscriber orders; gifts to
    # everyone contacted).
    margins = {p.id: catalogue.margin(p) for p in catalogue.products}
    targets["true_margin"] = targets["true_uplift"] * targets["product_id"].map(margins).fillna(0.0)
    ordering = planted.organic(targets["msisdn"], targets["offer_type"]) + targets["true_uplift"]
    incentive = targets["incentive_cost"].fillna(0.0).to_numpy(float)
    paid = np.where(targets["incentive_on_order"].fillna(False).to_numpy(bool), ordering * incentive, incentive)
    channel_cost = targets["channel"].map({c.id: c.cost_yuan for c in conf.channels.channels}).fillna(0.0)
    targets["true_value"] = targets["true_margin"] - channel_cost - paid
    targets["tie"] = drawn_ties(targets[["month", "wave", "sub_id", "scenario", "mode", "channel"]])
    return targets


def drawn_ties(keys: pd.DataFrame) -> np.ndarray:
    """A uniform number per row drawn once from its keys: rows of equal weight (one scenario x channel cell, where
    the cell estimates score) then keep one order whatever order Spark collected them in."""
    return pd.util.hash_pandas_object(keys, index=False).to_numpy() / np.float64(2 ** 64)


def made_for_value(frame: pd.DataFrame) -> pd.DataFrame:
    """The contacts made for their value: care contacts (made at a loss by rule, CARE_WEIGHT each) left out."""
    return frame[frame["weight"] > CARE_WEIGHT]


def by_own_weight(frame: pd.DataFrame, key: str = "weight") -> pd.DataFrame:
    """The contacts best first by `key`, equal ones in their drawn order."""
    return frame.sort_values([key, "tie"], ascending=False)


def ranking(ctx, measured: list[str], planted: Propensities, knowable: Propensities,  # noqa: ANN001
            depths=(0.1, 0.2, 0.3, 0.5)) -> pd.DataFrame:
    """Planted incremental conversions of the best N eligible candidates by learnt uplift and by learnt response."""
    from pyspark.sql import functions as F

    from flowops.definitions import Definitions
    from flowops.scenarios.estimates import estimate
    from flowops.steps.target import read_cells
    from flowops.synth.response import offer_type, true_uplift

    conf = Definitions.load(ctx.settings.conf_dir)
    types = {p.id: p.type for p in conf.catalogue.products}
    lake = ctx.lake
    keys = lake.read("restricted/subscriber_keys").select("sub_id", "msisdn").dropDuplicates(["sub_id"])
    frames = []
    for month in measured:
        learnt = estimate(read_cells(lake, month), [s.id for s in conf.scenarios], conf.channels)
        units = (lake.read("gold/scenario_targets", partitions={"month": [month]})
                 .where((F.col("wave") == 1) & F.col("arm").isNotNull() & F.col("channel").isNotNull())
                 .join(keys, "sub_id").select("msisdn", "scenario", "stage", "channel", "product_id",
                                              F.col("uplift").alias("uplift_used")).toPandas())
        units["uplift_learnt"] = [learnt.uplift[(s, c)].mean for s, c in zip(units["scenario"], units["channel"],
                                                                             strict=True)]
        units["response_learnt"] = [learnt.response[(s, c)] for s, c in zip(units["scenario"], units["channel"],
                                                                             strict=True)]
        frames.append(units.assign(month=month))
    units = pd.concat(frames, ignore_index=True)
    units["offer_type"] = [offer_type(types.get(p, ""), s) for p, s in zip(units["product_id"], units["stage"],
                                                                           strict=True)]
    units["true_uplift"] = true_uplift(units, planted)
    units["tie"] = drawn_ties(units[["month", "msisdn", "scenario", "channel"]])
    # The ceilings: per scenario x channel estimates that were exactly right (the planted mean of the cell); scores
    # exactly right in expectation (what the generator planted each subscriber from, short of its draws: the most any
    # model could learn); and per-subscriber scores exactly right (the planted uplift itself, the draws included).
    units["cell_planted"] = exact_cells(units)
    units["expected_uplift"] = expected_uplift(units, knowable)
    rows = []
    for depth in depths:
        n = int(len(units) * depth)
        by = {key: units.sort_values([key, "tie"], ascending=False).head(n)["true_uplift"].sum()
              for key in ("uplift_learnt", "uplift_used", "response_learnt", "cell_planted", "expected_uplift",
                          "true_uplift")}
        rows.append({"depth": depth, "candidates": n, "by_uplift": round(by["uplift_learnt"], 1),
                     "by_response": round(by["response_learnt"], 1),
                     "ratio": round(by["uplift_learnt"] / by["response_learnt"], 2),
                     "by_scores_used": round(by["uplift_used"], 1),
                     "ratio_used": round(by["uplift_used"] / by["response_learnt"], 2),
                     "ratio_exact_cells": round(by["cell_planted"] / by["response_learnt"], 2),
                     "ratio_exact_expected": round(by["expected_uplift"] / by["response_learnt"], 2),
                     "ratio_exact_subscribers": round(by["true_uplift"] / by["response_learnt"], 2)})
    return pd.DataFrame(rows)


def cells(ctx, measured: list[str]) -> pd.DataFrame:  # noqa: ANN001
    """The evaluation's measured uplift (wave 1, per scenario x channel, pooled over the measured months) with a
    95% interval, beside the conversion of the contacted."""
    from pyspark.sql import functions as F

    from flowops.evaluation.uplift import Uplift
    from flowops.steps.target import experiment_rows

    members = experiment_rows(ctx.lake.read("gold/campaign_members").where(
        F.col("month").isin(measured) & (F.col("wave") == 1)))
    counts = arm_counts(members, ["scenario", "channel"])
    rows = []
    for r in counts.itertuples(index=False):
        u = Uplift(int(r.nt), int(r.kt), int(r.nc), int(r.kc))
        interval = u.interval()
        if interval is None or r.nt < 100:
            continue
        rows.append({"scenario": r.scenario, "channel": r.channel, "contacted": int(r.nt), "control": int(r.nc),
                     "response": round(u.treated_rate, 4), "uplift": round(u.uplift, 4),
                     "low": round(interval[0], 4), "high": round(interval[1], 4)})
    return pd.DataFrame(rows).sort_values("response", ascending=False)


def evaluated(ctx, measured: list[str]) -> pd.DataFrame:  # noqa: ANN001
    """Per measured month, the evaluation's incremental orders with a 95% interval (normal, from each row's): summed
    over every scenario's waves (each wave's contacts against its comparison group, like with like where it can:
    `comparison`), and over the whole campaigns (wave 1's arms whole, converted in any wave)."""
    from pyspark.sql import functions as F

    rows = ctx.lake.read("gold/campaign_results").where(F.col("month").isin(measured) & (F.col("channel") == "all")
                                                         ).toPandas()
    rows = rows[rows["uplift"].notna()]
    whole = rows[rows["wave"] == 0]
    single = rows[(rows["wave"] == 1) & ~rows.set_index(["month", "scenario"]).index.isin(
        whole.set_index(["month", "scenario"]).index)]
    out = []
    for how, picked in (("per wave", rows[rows["wave"] > 0]), ("whole campaigns", pd.concat([whole, single]))):
        sd = (picked["uplift_high"] - picked["uplift_low"]) / 3.92 * picked["pushed"]
        out.append({"sum": how, "incremental": picked["incremental_orders"].sum(),
                    "sd": float(np.sqrt((sd ** 2).sum())), "pushed": int(picked["pushed"].sum()),
                    "comparisons": ", ".join(f"{k} {v}" for k, v in picked["comparison"].value_counts().items())})
    return pd.DataFrame(out).set_index("sum")


def arm_counts(members, keys: list[str]) -> pd.DataFrame:  # noqa: ANN001
    """Per `keys` of experiment rows (`steps.target.experiment_rows`): nt and kt, the treated arm and its converted;
    nc and kc, the held arm and its converted."""
    from pyspark.sql import functions as F

    treated, converted = F.col("treated"), F.col("converted")
    return members.groupBy(*keys).agg(
        F.sum(treated).alias("nt"), F.sum(treated * converted).alias("kt"),
        F.sum(1 - treated).alias("nc"), F.sum((1 - treated) * converted).alias("kc")).toPandas()


def evaluated_by_mode(ctx, measured: list[str]) -> pd.DataFrame:  # noqa: ANN001
    """The evaluation's like-with-like comparison split into pushed (SMS, calls, managers) and shown (at a login)
    contacts: per month, wave, scenario and intended channel (active first: the same rule in both arms), the chosen
    against the would-be chosen, incremental orders = the uplift x the chosen, summed per mode with a 95% interval
    (normal, from each stratum's). A stratum whose held arm marked no one has no comparison: its chosen are counted
    apart (`unmeasured`)."""
    from pyspark.sql import functions as F

    from flowops.definitions import Definitions
    from flowops.evaluation.uplift import Uplift
    from flowops.steps.target import experiment_rows

    modes = {c.id: c.mode for c in Definitions.load(ctx.settings.conf_dir).channels.channels}
    chosen = experiment_rows(ctx.lake.read("gold/campaign_members").where(F.col("month").isin(measured))).where(
        F.col("chosen") == 1)
    counts = arm_counts(chosen, ["month", "wave", "scenario", "channel"])
    counts["mode"] = counts["channel"].map(modes)
    rows = []
    for mode, strata in counts.groupby("mode"):
        incremental = variance = unmeasured = 0.0
        for r in strata.itertuples(index=False):
            u = Uplift(int(r.nt), int(r.kt), int(r.nc), int(r.kc))
            interval = u.interval() if r.nt and r.nc else None
            if interval is None:
                unmeasured += r.nt
                continue
            incremental += u.incremental
            variance += ((interval[1] - interval[0]) / 3.92 * r.nt) ** 2
        rows.append({"mode": mode, "chosen": int(strata["nt"].sum()), "held_chosen": int(strata["nc"].sum()),
                     "unmeasured": int(unmeasured), "incremental": incremental, "sd": float(np.sqrt(variance))})
    return pd.DataFrame(rows).set_index("mode")


def calibration(ctx, measured: list[str]) -> pd.DataFrame:  # noqa: ANN001
    """Per wave and scenario (the measured months pooled): the share of the treated arm the allocation chose and the
    share of the comparison group marked as one it would have chosen (would_contact), with the difference in standard
    errors: the same rule on one random split should give the same share, up to chance."""
    from pyspark.sql import functions as F

    rows = ctx.lake.read("gold/campaign_results").where(
        F.col("month").isin(measured) & (F.col("channel") == "all") & (F.col("wave") > 0)).toPandas()
    by = rows.groupby(["wave", "scenario"])[["assigned", "chosen", "control", "control_chosen"]].sum()
    by = by[(by["assigned"] > 0) & (by["control"] > 0)]
    treated, held = by["chosen"] / by["assigned"], by["control_chosen"] / by["control"]
    pooled = (by["chosen"] + by["control_chosen"]) / (by["assigned"] + by["control"])
    se = np.sqrt(pooled * (1 - pooled) * (1 / by["assigned"] + 1 / by["control"]))
    return by.assign(share_treated=treated.round(3), share_held=held.round(3),
                     z=((held - treated) / se.where(se > 0)).round(1)).reset_index()


def compare(out: Path, subscribers: int, seed: int, records_per_day: float = 3, reuse: bool = False,
            sms_per_1000: float = SMS_PER_DAY_PER_1000, every_per_1000: float | None = None,
            maximise: str = "value") -> dict:
    """Both policies on one world, each maximising `maximise` (value or orders); with `reuse`, the world and any
    lake that finished are kept from an earlier run with the same arguments."""
    from flowops.synth import generate

    os.environ.setdefault("FLOWOPS_PII_KEY", "validation-key")
    months = pd.period_range(START, periods=6, freq="M").strftime("%Y-%m").tolist()
    raw = out / "raw"
    if not (reuse and (raw / "_truth" / "manifest.json").is_file()):
        if raw.exists():
            shutil.rmtree(raw)
        generate(raw, subscribers=subscribers, start_month=months[0], months=len(months), seed=seed, bad_rate=0.0,
                 records_per_day=records_per_day)
    measured = months[3:5]   # the third and fourth campaigns; the first two taught the estimates
    # The world's planted outcomes (the same in both policies' copies), and their expectation over its draws.
    planted = Propensities.from_frame(pd.read_csv(raw / "_truth" / "propensities.csv", dtype=str))
    knowable = knowable_propensities(raw, planted)
    result = {"subscribers": subscribers}
    for objective in OBJECTIVES:
        started = time.perf_counter()
        lake = out / f"lake-{objective}"
        if not (reuse and (lake / DONE).is_file()):
            lake = run_policy(out, raw, objective, months, seed, subscribers, sms_per_1000, every_per_1000,
                              maximise)
        ctx = context(out / f"conf-{objective}", lake)
        result[objective] = {"contacts": contacts(ctx, measured, planted, knowable),
                             "evaluated": evaluated(ctx, measured), "by_mode": evaluated_by_mode(ctx, measured),
                             "seconds": time.perf_counter() - started}
        if objective == "uplift":   # the ranking comparison on the uplift policy's candidates and what it learnt
            result["ranking"] = ranking(ctx, measured, planted, knowable)
            result["cells"] = cells(ctx, measured)
        result[f"calibration-{objective}"] = calibration(ctx, measured)
    return result


def budgets(chosen: dict[str, pd.DataFrame], shares=(0.1, 0.2, 0.33, 0.5, 1.0)) -> pd.DataFrame:
    """Each policy under tighter channel budgets: per month and channel, a share of the contacts the uplift policy
    made there, each policy keeping its best by its own weight (both made for value). Beside them, the response
    policy's contacts (the larger pool) chosen by exactly right estimates: the planted mean of each scenario x
    channel cell; each contact's expected uplift (what the generator planted it from, short of its draws: what any
    model could know at best); and each contact's planted uplift (the draws included). An approximation of
    a campaign run under such budgets: a subscriber left out is not offered another scenario or channel instead."""
    sizes = chosen["uplift"].groupby(["month", "channel"]).size()
    pool = chosen["response"].copy()
    pool["cell_planted"] = exact_cells(pool)

    def best(frame: pd.DataFrame, key: str, share: float) -> float:
        kept = [by_own_weight(group, key).head(int(sizes.get(where, 0) * share))
                for where, group in frame.groupby(["month", "channel"])]
        return pd.concat(kept)["true_uplift"].sum()

    rows = []
    for share in shares:
        got = {"uplift": best(chosen["uplift"], "weight", share), "response": best(pool, "weight", share),
               "exact_cells": best(pool, "cell_planted", share), "exact_expected": best(pool, "expected_uplift", share),
               "exact_subscribers": best(pool, "true_uplift", share)}
        rows.append({"budget": share, "contacts": int(sum(int(n * share) for n in sizes)),
                     **{k: round(v, 1) for k, v in got.items()},
                     "ratio": round(got["uplift"] / got["response"], 2),
                     "ratio_exact_cells": round(got["exact_cells"] / got["response"], 2),
                     "ratio_exact_expected": round(got["exact_expected"] / got["response"], 2),
                     "ratio_exact_subscribers": round(got["exact_subscribers"] / got["response"], 2)})
    return pd.DataFrame(rows)


def exact_cells(frame: pd.DataFrame) -> pd.Series:
    """Per row, the planted mean uplift of its month x scenario x channel: what exactly right cell estimates read."""
    return frame.groupby(["month", "scenario", "channel"])["true_uplift"].transform("mean")


def knowable_propensities(raw: Path, planted: Propensities) -> Propensities:
    """The world's planted propensities (`planted`, of RAW) with each effect replaced by its expectation over the
    generator's draws (`synth.truth.expected_effects`): what exactly right scores of a subscriber could know at
    best."""
    from flowops.synth.generator import planner_of
    from flowops.synth.truth import expected_effects

    planner = planner_of(raw)
    order = pd.Series(planner.pop.msisdn.astype(str)).map(planted.index).to_numpy()
    effects = np.zeros_like(planted.effects)
    effects[order] = expected_effects(planner, planner.seed).transpose(0, 2, 1)   # to channels x offer types
    return dataclasses.replace(planted, effects=effects)


def expected_uplift(contacts: pd.DataFrame, knowable: Propensities) -> np.ndarray:
    """Per contact, delivery x the expected effect x the scenario's multiplier: `true_uplift` in expectation."""
    from flowops.synth.response import delivery, multiplier

    effect = knowable.effect(contacts["msisdn"], contacts["channel"], contacts["offer_type"])
    return delivery(contacts["channel"]) * multiplier(contacts["scenario"]) * effect


def at_equal_contacts(frames: dict[str, pd.DataFrame], column: str) -> tuple[int, dict[str, float]]:
    """The smaller policy's number of contacts m, and `column` summed over each policy's first m (frames sorted by
    the policy's own weight)."""
    m = min(len(frame) for frame in frames.values())
    return m, {k: frame[column].head(m).sum() for k, frame in frames.items()}


def summary(result: dict) -> str:
    ranked, measured_cells = result.pop("ranking"), result.pop("cells")
    calibrated = {k: result.pop(f"calibration-{k}") for k in OBJECTIVES}
    subscribers = result.pop("subscribers")
    lines = ["the ranking quantity: the best N eligible candidates of the measured months by learnt uplift (the cell "
             "estimates; and by the scores targeting used: the uplift model's where it won) and by learnt response "
             "(planted incremental conversions)", ranked.to_string(index=False), "",
             "the evaluation's own uplift of the cells (wave 1, measured months), by the conversion of the contacted",
             measured_cells.to_string(index=False), ""]
    for objective, table in calibrated.items():
        z = table["z"].abs()
        lines += [f"the would-be rule ({objective} policy): share of the treated arm chosen and of the comparison "
                  f"group marked would-be, per wave and scenario (|z| > 2: {int((z > 2).sum())} of "
                  f"{int(z.notna().sum())})", table.to_string(index=False), ""]
    lines += ["the campaigns each policy ran (both under the same SMS quota)"]
    by_weight = {k: by_own_weight(r["contacts"]) for k, r in result.items()}
    n, best = at_equal_contacts(by_weight, "true_uplift")
    lines.append(f"{'objective':<10}{'contacts':>9}{'planted incremental':>21}{'per contact':>13}"
                 f"{'best ' + str(n):>14}{'planted value':>15}{'evaluated per wave [95% CI]':>32}"
                 f"{'whole campaigns [95% CI]':>30}")
    for objective, r in result.items():
        c = by_weight[objective]
        shown = "".join(f"{e['incremental']:>14.1f} [{e['incremental'] - 1.96 * e['sd']:.1f}, "
                        f"{e['incremental'] + 1.96 * e['sd']:.1f}]" for _, e in r["evaluated"].iterrows())
        lines.append(f"{objective:<10}{len(c):>9,}{c['true_uplift'].sum():>21.1f}{c['true_uplift'].mean():>13.4f}"
                     f"{c['true_uplift'].head(n).sum():>14.1f}{c['true_value'].sum():>15,.0f}{shown}")
    lines.append("  evaluated per wave: each wave's contacts against its comparison group ("
                 + "; ".join(f"{k}: {r['evaluated'].loc['per wave', 'comparisons']}" for k, r in result.items())
                 + "); whole campaigns: wave 1's arms whole, converted in any wave")
    lines.append(f"at an equal number of contacts ({n:,}), uplift / response = "
                 f"{best['uplift'] / best['response']:.2f}x the planted incremental conversions")
    # Care contacts (a thank-you, an apology: made at a loss by rule, the same in both runs, CARE_WEIGHT each) are
    # not chosen by either ranking; compared without them, each policy's contacts chosen for their value.
    chosen = {k: by_own_weight(made_for_value(r["contacts"])) for k, r in result.items()}
    m, valued = at_equal_contacts(chosen, "true_uplift")
    _, worth = at_equal_contacts(chosen, "true_margin")
    lines.append(f"at an equal number of contacts made for their value ({m:,}; care contacts left out: "
                 + ", ".join(f"{k} {len(r['contacts']) - len(chosen[k]):,}" for k, r in result.items())
                 + f"), uplift / response = {valued['uplift'] / valued['response']:.2f}x "
                 f"({valued['uplift']:.1f} / {valued['response']:.1f}); their planted incremental margin "
                 f"{worth['uplift'] / worth['response']:.2f}x ({worth['uplift']:,.0f} / {worth['response']:,.0f} yuan)")
    # Pushed (SMS, calls, managers: one a month per subscriber) and shown (at a login) apart: each policy's best of
    # each kind by its own weight, as many as the smaller policy made.
    for mode in ("active", "passive"):
        made = {k: c[c["mode"] == mode] for k, c in chosen.items()}
        m, worth = at_equal_contacts(made, "true_uplift")
        _, value = at_equal_contacts(made, "true_value")
        lines.append(f"  {mode} contacts alone ({m:,}): uplift / response = {worth['uplift'] / worth['response']:.2f}x "
                     f"the planted incremental conversions ({worth['uplift']:.1f} / {worth['response']:.1f}); "
                     f"planted value {value['uplift']:,.0f} / {value['response']:,.0f} yuan")
    lines += ["", "can the evaluation tell the policies apart? Its incremental orders, uplift policy minus response "
              "policy, with a 95% interval (the two runs taken as independent), against the planted difference; "
              "and the subscribers a run would need for that interval to exclude zero four times in five at the "
              "planted difference (its width shrinks with the square root of the subscribers)"]
    for what, mode in (("every contact, per wave", None), ("pushed contacts", "active"),
                       ("shown contacts", "passive")):
        got = {k: r["evaluated"].loc["per wave"] if mode is None else r["by_mode"].reindex([mode]).iloc[0]
               for k, r in result.items()}
        if any(pd.isna(g["incremental"]) for g in got.values()):
            lines.append(f"  {what}: a policy made none with a comparison group")
            continue
        planted = {k: (c if mode is None else c[c["mode"] == mode])["true_uplift"].sum() for k, c in by_weight.items()}
        lines.append(difference(what, got, planted, subscribers))
    lines += ["", "under tighter channel budgets (a share of the uplift policy's contacts per month and channel; "
              "planted incremental conversions of each policy's best by its own weight, and of the response "
              "policy's contacts chosen by exactly right estimates: per cell, per subscriber in expectation, per "
              "subscriber drawn)", budgets(chosen).to_string(index=False), ""]
    value = {k: r["contacts"]["true_value"].sum() for k, r in result.items()}
    lines.append(f"the whole campaigns' planted incremental value (margin less channel costs and incentives paid), "
                 f"what each policy maximises by its own estimates: uplift / response = "
                 f"{value['uplift'] / value['response']:.2f}x ({value['uplift']:,.0f} / {value['response']:,.0f} yuan)")
    # Care contacts are made at a loss by rule wherever a slot is free, so a policy that finds fewer contacts worth
    # making makes more of them: compared without them too.
    value = {k: c["true_value"].sum() for k, c in chosen.items()}
    lines.append(f"  without the care contacts: {value['uplift'] / value['response']:.2f}x "
                 f"({value['uplift']:,.0f} / {value['response']:,.0f} yuan)")
    return "\n".join(lines)


def difference(what: str, got: dict, planted: dict[str, float], subscribers: int) -> str:
    """One line: the evaluated difference between the policies with its interval, the planted one, and the scale a
    run would need to show the planted difference (80% power at the 5% level: 2.80 standard errors)."""
    d = got["uplift"]["incremental"] - got["response"]["incremental"]
    sd = float(np.hypot(got["uplift"]["sd"], got["response"]["sd"]))
    truth = planted["uplift"] - planted["response"]
    needed = (f"{subscribers * (2.80 * sd / truth) ** 2:,.0f} subscribers" if truth > 0
              else "none would: the planted difference is not in the uplift policy's favour")
    return (f"  {what}: evaluated {got['uplift']['incremental']:.1f} / {got['response']['incremental']:.1f}, "
            f"difference {d:.1f} [{d - 1.96 * sd:.1f}, {d + 1.96 * sd:.1f}]; planted {planted['uplift']:.1f} / "
            f"{planted['response']:.1f}, difference {truth:.1f}; to show it: {needed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--records-per-day", type=float, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowops-targeting"))
    parser.add_argument("--reuse", action="store_true", help="keep the world and the lakes an earlier run finished")
    parser.add_argument("--sms-per-1000", type=float, default=SMS_PER_DAY_PER_1000,
                        help="the SMS gateway's daily quota per 1,000 subscribers, in both runs")
    parser.add_argument("--every-channel-per-1000", type=float, default=None,
                        help="a daily budget per 1,000 subscribers on every other channel without one, in both runs")
    parser.add_argument("--maximise", choices=("value", "orders"), default="value",
                        help="what both policies maximise over the contacts worth making (policy.maximise)")
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    result = compare(args.out, args.subscribers, args.seed, args.records_per_day, args.reuse, args.sms_per_1000,
                     args.every_channel_per_1000, args.maximise)
    for objective, r in result.items():
        if objective not in OBJECTIVES:
            continue
        r["contacts"].to_csv(args.out / f"contacts-{objective}.csv", index=False)
        by = r["contacts"].groupby(["month", "scenario", "channel"]).agg(
            contacts=("true_uplift", "size"), planted=("true_uplift", "sum")).round(2)
        print(f"\n{objective}: contacts and planted incremental conversions per month, scenario and channel "
              f"({r['seconds']:.0f}s)")
        print(by.to_string())
    print()
    print(summary(result))
    print(f"\ntook {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
