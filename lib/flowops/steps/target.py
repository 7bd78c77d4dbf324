"""`flowops target --month M [--wave W]`: scenario targets of a month, the channels' export files and the
contact history. Every read and write of the step is here; the decisions are `scenarios/`' pure transforms.

Month M is the data month: tags and stages of M choose who is offered what, and the contact windows fall in
the month after (the campaign month: after M's bill, as the seed's worked examples say).

Reads, once, at the top (`read_inputs`): gold/subscriber_tags and gold/flow_stages (M); silver/subscribers
(every snapshot: opt-outs are never forgotten, and a later one saying a subscriber left stops the contact);
silver/feedback (unsubscribe replies); ops/contact_history (immunity; for wave 2 and later, what the earlier
waves contacted, booked and spent); gold/campaign_members and gold/subscriber_tags of earlier months (the
estimates and the uplift model); for wave 2 and later, gold/scenario_targets (the stored draw) and the campaign
month's silver/orders (who did not convert); restricted/subscriber_keys and the month's CRM snapshot (numbers
and account managers, for the exports only).
Writes, in this order, only when the export check passed: LAKE/exports/month=M/wave=W/channel=C/<scenario>.csv
with a manifest.json per channel folder and, last, the wave's manifest.json (under the exports' lock, fsynced,
swapped in whole; what a dead run left is removed first: lake/dropfolder.py); gold/scenario_targets (M: every
candidate and its decision); ops/contact_history (M: every exported contact, with the exports' run id). A refused
or failed export therefore leaves no trace of having been sent, and a rerun writes the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops import tracking
from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError, LakeError
from flowops.evaluation.funnel import ordered, placed_orders
from flowops.lake import Lake, dropfolder
from flowops.lake.dropfolder import Leftovers
from flowops.lake.tables import (
    CAMPAIGN_MEMBERS,
    CONTACT_HISTORY,
    FLOW_STAGES,
    SCENARIO_TARGETS,
    SUBSCRIBER_TAGS,
)
from flowops.landing import next_month, parse_month
from flowops.quality.frames import export_checks
from flowops.quality.suites import EXPORT_CONTACTS
from flowops.runs import Run, recorded_run
from flowops.scenarios.estimates import Cell, Chosen, Estimates, estimate
from flowops.scenarios.exports import (
    WaveScenario,
    unstamped,
    violations,
    wave_files,
    wave_scenarios,
)
from flowops.scenarios.messages import SMS_SEGMENT
from flowops.scenarios.plan import Earlier, Plan, Scorer, plan_wave
from flowops.scenarios.policy import CONTROL, HOLDOUT, TREATED, check_targets, in_compared_arm, lookup
from flowops.scenarios.templates import Channels
from flowops.steps.quality import gate

log = logging.getLogger(__name__)
EXPORTS = "exports"
MODELS = "models"
# Tags the product fit and the contact policy read (the scenarios' rules and messages add theirs).
TAGS_READ = ("dou_mb", "base_allowance_mb_held", "allowance_mb", "idle_mb", "payperuse_yuan", "plan_fee",
             "terminal_network_gen", "base_plan", "data_plan", "idle_pack", "arpu_yuan", "value_tier", "is_smartphone",
             "has_account_manager", "channel_preference", "churned_this_month", "status")


class ExportRefused(FlowopsError):
    """An export row broke a contact rule: nothing was written."""


@dataclass
class Targets:
    """What `target` did: counts per scenario and channel, and where the exports are."""

    month: str
    wave: int
    run: Run
    targeted: Counter = field(default_factory=Counter)     # (scenario, channel) -> contacts exported
    control: Counter = field(default_factory=Counter)      # scenario -> control members (and holdouts)
    suppressed: Counter = field(default_factory=Counter)   # reason -> candidates
    exports: Path | None = None
    changed: bool = True
    plan: Plan | None = None


@dataclass
class Inputs:
    """Everything the policy reads, read once."""

    tagged: DataFrame
    opt_outs: DataFrame
    immunity: DataFrame
    churned: DataFrame
    estimates: Estimates
    scorer: Scorer
    earlier: Earlier | None
    held_out: DataFrame        # sub_id, scenario: the stored control group of the month (earlier waves)


def run_target(ctx: Context, month: str, wave: int = 1, definitions: Definitions | None = None) -> Targets:
    """Decide every scenario's candidates of month M for wave W; write the exports, gold/scenario_targets and the
    contact history."""
    parse_month(month)
    conf = definitions or Definitions.load(ctx.settings.conf_dir)
    if wave < 1 or wave > max(len(s.waves) for s in conf.scenarios):
        raise FlowopsError(f"no scenario has a wave {wave} (conf/scenarios: at most "
                           f"{max(len(s.waves) for s in conf.scenarios)})")
    lake = ctx.lake
    campaign = next_month(month)
    for table in (SUBSCRIBER_TAGS, FLOW_STAGES.name):
        if month not in lake.partition_values(table, "month"):
            step = "tags" if table == SUBSCRIBER_TAGS else "segment"
            raise LakeError(f"{table} has nothing for {month}: run `flowops {step} --month {month}` first")
    later = ({r.wave for r in lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).select("wave")
              .distinct().collect()} if _has_month(lake, CONTACT_HISTORY.name, month) else set())
    if any(w > wave for w in later):
        raise FlowopsError(f"wave {max(later)} of {month} has been targeted already: rerunning wave {wave} would "
                           f"change whom it went to after the fact (and drop wave {wave}'s measured outcomes)")
    if wave > 1:
        require_evaluated(lake, month, wave - 1)
    with recorded_run(lake, "target", {"month": month, "wave": wave, "scenarios": len(conf.scenarios)}) as run:
        result = Targets(month, wave, run)
        with run.step("read"):
            inputs = read_inputs(lake, conf, month, campaign, wave, run)
        with run.step("decide") as counts:
            try:
                plan = plan_wave(inputs.tagged, conf, month, campaign, wave, opt_outs=inputs.opt_outs,
                                 immunity=inputs.immunity, estimates=inputs.estimates, scorer=inputs.scorer,
                                 earlier=inputs.earlier)
            except (AnalysisException, ParseException):
                check_targets(inputs.tagged, conf.scenarios, conf.catalogue, conf.channels)   # names the file
                raise
            result.plan = plan
            units = plan.units
            for r in units.groupby(["decision", "reason", "scenario", "channel"], dropna=False).size().reset_index(
                    name="n").itertuples(index=False):
                if r.decision == "targeted":
                    result.targeted[(r.scenario, r.channel)] += r.n
                elif r.decision == "control":
                    result.control[r.scenario] += r.n
                else:
                    result.suppressed[r.reason] += r.n
            counts.update(candidates=len(units), targeted=sum(result.targeted.values()),
                          control=sum(result.control.values()), options=plan.optimal.options,
                          contested=plan.optimal.contested)
        decided = _targets_frame(lake, units)
        gate(lake, ctx.settings, run, SCENARIO_TARGETS.name, decided, f"{month}/wave={wave}")
        targeted = decided.where(F.col("decision") == "targeted").localCheckpoint()
        with run.step("exports") as counts:
            rows = export_rows(lake, targeted, month, conf).localCheckpoint()   # checked twice, then written
            local = rows.toPandas()   # what the gate checks and the files hold
            held = decided.where(F.col("arm").isin(CONTROL, HOLDOUT)).select("sub_id", "scenario")
            refuse_violations(lake, rows, month, wave, conf, inputs.earlier, held.unionByName(inputs.held_out), inputs,
                              gate_rows=lambda checked: gate(lake, ctx.settings, run, EXPORT_CONTACTS, checked,
                                                             f"{month}/wave={wave}"), local_rows=local)
            written = write_exports(Path(lake.root) / EXPORTS, month, campaign, wave, local, conf.channels,
                                    run.run_id, wave_scenarios(conf, campaign, wave), job=lake.job,
                                    lock_timeout_s=ctx.settings.lake.lock_timeout_s,
                                    lock_stale_s=ctx.settings.lake.lock_stale_s)
            result.exports, result.changed = written.folder, written.changed
            run.count("export_leftovers_removed", len(written.leftovers.removed))
            counts.update(rows=sum(result.targeted.values()), changed=int(result.changed),
                          leftovers_removed=len(written.leftovers.removed), restored=len(written.leftovers.restored))
        with run.step("write targets"):
            run.wrote(SCENARIO_TARGETS.name, _overwrite_wave(lake, SCENARIO_TARGETS.name, decided, month, wave, run))
        with run.step("contact history"):
            history = _history(lake, units, written.run_id, conf.channels)   # the exports' run id
            run.wrote(CONTACT_HISTORY.name, _overwrite_wave(lake, CONTACT_HISTORY.name, history, month, wave, run))
        _record(run, result, plan, units)
    return result


def _record(run: Run, result: Targets, plan: Plan, units: pd.DataFrame) -> None:
    """Counts and figures of the run in ops/runs: per scenario x channel, per reason, and the optimisation."""
    for (scenario, channel), n in result.targeted.items():
        run.count(f"targeted.{scenario}.{channel}", n)
    for reason, n in result.suppressed.items():
        run.count(f"suppressed.{reason}", n)
    run.count("control", sum(result.control.values()))
    run.count("held_would_contact", int((units["decision"].eq("control") & units["would_contact"].eq(True)).sum()))
    over = int(((units["decision"] == "targeted") & (pd.to_numeric(units["sms_segments"]).fillna(0) > 1)).sum())
    run.count("sms_over_one_segment", over)
    run.count("explore", int((units["reason"] == "explore").sum()))
    run.count("planned_later_waves", plan.planned_later)
    run.params.update({
        "value_optimal": f"{plan.optimal.value:.2f}", "value_greedy": f"{plan.greedy.value:.2f}",
        "optimality_gap": f"{plan.optimal.gap:.6f}", "solver_status": plan.optimal.status,
        "solver_seconds": f"{plan.optimal.seconds:.3f}", "contested_options": str(plan.optimal.contested),
    })
    run.rows_out = sum(result.targeted.values())
    if over:
        log.warning("target %s: %d SMS need more than one %d-character segment (see gold/scenario_targets."
                    "sms_segments)", result.month, over, SMS_SEGMENT)
    log.info("target %s wave %d: expected incremental value %.1f yuan (greedy %.1f, %+.1f%%), %s in %.2fs, %d of %d "
             "options contested, gap %.2g", result.month, result.wave, plan.optimal.value, plan.greedy.value,
             100 * (plan.optimal.value / plan.greedy.value - 1) if plan.greedy.value else 0.0, plan.optimal.status,
             plan.optimal.seconds, plan.optimal.contested, plan.optimal.options, plan.optimal.gap)


# ------------------------------------------------------------------------------------------------------ reading
def read_inputs(lake: Lake, conf: Definitions, month: str, campaign: str, wave: int, run: Run) -> Inputs:
    """Every input of the policy, read once (see the module text)."""
    settings = conf.channels.policy.uplift_model
    tags = lake.read(SUBSCRIBER_TAGS, partitions={"month": [month]})
    stages = lake.read(FLOW_STAGES.name, partitions={"month": [month]}).select("sub_id", "stage", "reason", "flow_type")
    needed = ({c for s in conf.scenarios for c in s.reads} | set(TAGS_READ) | set(settings.numeric)
              | set(settings.categorical))
    tagged = tags.select(*[c for c in tags.columns if c in needed or c in ("month", "sub_id")]).join(stages, "sub_id")
    # A subscriber who left since (a later CRM snapshot says so: wave 2 runs in the campaign month) is churned too.
    churned = read_churned(lake, month).localCheckpoint()
    tagged = tagged.join(churned.withColumn("_left", F.lit(True)), "sub_id", "left").withColumn(
        "churned_this_month", F.coalesce("churned_this_month", F.lit(False)) | F.coalesce("_left", F.lit(False)))
    tagged = tagged.drop("_left").localCheckpoint()
    cells = read_cells(lake, month)
    estimates = estimate(cells, [s.id for s in conf.scenarios], conf.channels)
    run.params.update({f"estimates.{k}": f"{v:.6g}" for k, v in estimates.fit.items()})
    earlier = read_earlier(lake, month, campaign, wave) if wave > 1 else None
    held_out = (lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]})
                .where(F.col("arm").isin(CONTROL, HOLDOUT) & (F.col("wave") < wave)).select("sub_id", "scenario")
                if wave > 1 else lake.spark.createDataFrame([], "sub_id string, scenario string"))
    return Inputs(tagged=tagged, opt_outs=read_opt_outs(lake).localCheckpoint(),
                  immunity=read_immunity(lake, month, conf).localCheckpoint(), churned=churned,
                  estimates=estimates, scorer=choose_scorer(lake, conf, month, wave, run), earlier=earlier,
                  held_out=held_out.localCheckpoint())


def _has_month(lake: Lake, table: str, month: str) -> bool:
    return lake.exists(table) and month in lake.partition_values(table, "month")


def read_churned(lake: Lake, month: str) -> DataFrame:
    """sub_id of everyone a CRM snapshot of month M or later says has left (churned, or a churn date)."""
    crm = lake.read("silver/subscribers")
    return (crm.where((F.col("month") >= month) & ((F.col("status") == "churned") | F.col("churn_date").isNotNull()))
            .select("sub_id").distinct())


def require_evaluated(lake: Lake, month: str, wave: int) -> None:
    """Refuse the next wave until every contact of `wave` has an outcome (`flowops evaluate` ran after them)."""
    history = lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}) if _has_month(
        lake, CONTACT_HISTORY.name, month) else None
    counts = {} if history is None else {r.evaluated: r["count"] for r in history.where(F.col("wave") == wave)
                                          .groupBy(F.col("outcome").isNotNull().alias("evaluated")).count().collect()}
    if not counts:
        raise LakeError(f"wave {wave + 1} of {month} goes to wave {wave}'s non-converters, and wave {wave} exported "
                        f"nothing: run `flowops target --month {month} --wave {wave}` first")
    if counts.get(False):
        raise LakeError(f"wave {wave + 1} of {month} goes to wave {wave}'s non-converters: {counts[False]:,} of wave "
                        f"{wave}'s contacts have no outcome yet. Land the campaign month's receipts and orders and "
                        f"run `flowops evaluate --month {month}` first")


def read_opt_outs(lake: Lake) -> DataFrame:
    """sub_id, opt_out_all, opt_out_channels: every opt-out in any CRM snapshot the lake holds, later ones
    included (an opt-out recorded after the data month still stops the contact; none is ever forgotten), and
    every unsubscribe reply a channel has sent back (silver/feedback: that channel, from then on)."""
    crm = lake.read("silver/subscribers").select("sub_id", "opt_out_all", "opt_out_channels")
    if lake.exists("silver/feedback"):
        replies = lake.read("silver/feedback").where(F.col("reply") == "unsubscribe").select(
            "sub_id", F.lit(False).alias("opt_out_all"), F.array("channel").alias("opt_out_channels"))
        crm = crm.unionByName(replies)
    return crm.groupBy("sub_id").agg(
        F.bool_or(F.coalesce(F.col("opt_out_all"), F.lit(False))).alias("opt_out_all"),
        F.array_distinct(F.flatten(F.collect_list(F.coalesce(F.col("opt_out_channels"),
                                                             F.array().cast("array<string>"))))).alias("opt_out_channels"))


def read_immunity(lake: Lake, month: str, conf: Definitions) -> DataFrame:
    """sub_id, family, rounds: the cycles (campaign months) before month M in which the subscriber got a delivered
    contact offering that family of products (data plans, boosters, ...) and did not convert, counted since
    their last converted cycle of it. Undelivered contacts and contacts without a receipt do not count (nobody
    can be immune to an offer they never saw); the several waves and scenarios of one month are one cycle."""
    schema = "sub_id string, family string, rounds int"
    if not lake.exists(CONTACT_HISTORY.name):
        return lake.spark.createDataFrame([], schema)
    history = lake.read(CONTACT_HISTORY.name).where((F.col("month") < month) & F.col("outcome").isNotNull())
    cycles = history.groupBy("sub_id", "family", "month").agg(
        F.max((F.col("outcome") == "converted").cast("int")).alias("converted"),
        F.max(F.col("outcome").isin("converted", "not_converted").cast("int")).alias("delivered"))
    last = F.max(F.when(F.col("converted") == 1, F.col("month"))).over(Window.partitionBy("sub_id", "family"))
    return (cycles.withColumn("_last", last)
            .where((F.col("delivered") == 1) & (F.col("converted") == 0)
                   & (F.col("_last").isNull() | (F.col("month") > F.col("_last"))))
            .groupBy("sub_id", "family").agg(F.count("*").cast("int").alias("rounds")))


def experiment_rows(members: DataFrame) -> DataFrame:
    """The members whose comparison is randomised, with `treated` (1 in the treated arm, 0 held out) and
    `contacted`: wave 1's treated arm against its control group; a later wave's treated arm against that wave's
    holdout (drawn among the same earlier non-converters). The treated arm is compared whole, contacted or not (the
    allocation chose whom to contact by value, not at random), within the channel each member was intended for
    before the allocation (the same rule in both arms). `chosen`: the allocation contacted the member, or in the held
    arm would have (campaign_members.would_contact): chosen members of the two arms are compared like with like."""
    is_treated = F.col("arm") == TREATED
    is_held = in_compared_arm()
    return members.where(is_treated | is_held).withColumns({
        "treated": is_treated.cast("int"), "converted": F.col("converted").cast("int"),
        "contacted": (is_treated & F.col("contacted")).cast("int"),
        "chosen": F.coalesce("would_contact", F.lit(False)).cast("int")})


def read_cells(lake: Lake, month: str) -> list[Cell]:
    """Per scenario x intended channel, the randomised comparisons of the months before M (gold/campaign_members)."""
    if not lake.exists(CAMPAIGN_MEMBERS.name):
        return []
    rows = experiment_rows(lake.read(CAMPAIGN_MEMBERS.name).where(F.col("month") < month)).groupBy(
        "scenario", "channel").agg(
        F.sum("treated").alias("nt"), F.sum(F.col("treated") * F.col("converted")).alias("kt"),
        F.sum(1 - F.col("treated")).alias("nc"), F.sum((1 - F.col("treated")) * F.col("converted")).alias("kc"),
        F.sum("contacted").alias("ct"), F.sum(F.col("treated") * F.col("chosen")).alias("st"),
        F.sum(F.col("treated") * F.col("chosen") * F.col("converted")).alias("skt"),
        F.sum((1 - F.col("treated")) * F.col("chosen")).alias("sc"),
        F.sum((1 - F.col("treated")) * F.col("chosen") * F.col("converted")).alias("skc"),
    ).where(F.col("channel").isNotNull()).collect()
    return [Cell(r.scenario, r.channel, int(r.nt), int(r.kt), int(r.nc), int(r.kc), int(r.ct),
                 Chosen(int(r.st), int(r.skt), int(r.sc), int(r.skc))) for r in rows]


def choose_scorer(lake: Lake, conf: Definitions, month: str, wave: int, run: Run) -> Scorer:
    """The uplift model where it ranks a held-out month better than the estimates do, else the estimates.

    Wave 1 trains the two-model learner on every evaluated month but the latest, and compares the Qini
    coefficient of its scores with that of the per scenario x channel estimates (fitted on the same earlier
    months) on the latest one. Where the model wins it is fitted again on every evaluated month and saved under
    LAKE/models/uplift/month=M for the month's later waves, which use what wave 1 chose."""
    settings = conf.channels.policy.uplift_model
    folder = Path(lake.root) / MODELS / "uplift" / f"month={month}"
    features = [*settings.numeric, *settings.categorical]
    if wave > 1:
        chosen = folder.is_dir()
        run.params["scorer"] = "model" if chosen else "estimates"
        if chosen:
            from flowops.models.uplift import UpliftModel

            return Scorer("model", UpliftModel.load(str(folder)), features)
        return Scorer("estimates")
    if folder.is_dir():
        shutil.rmtree(folder)   # a rerun of wave 1 decides again
    reason = "off" if settings.use == "off" else ""
    months: list[str] = []
    if not reason and lake.exists(CAMPAIGN_MEMBERS.name):
        members = experiment_rows(lake.read(CAMPAIGN_MEMBERS.name).where(F.col("month") < month))
        months = sorted(r.month for r in members.select("month").distinct().collect())
    if not reason and len(months) < 2:
        reason = f"{len(months)} evaluated month(s), the model needs 2 (train, then a held-out month)"
    if not reason:
        train_months, held_month = months[:-1], months[-1]
        tags = lake.read(SUBSCRIBER_TAGS).select("month", "sub_id", *[c for c in features if c != "stage"])
        stages = lake.read(FLOW_STAGES.name).select("month", "sub_id", "stage")
        # Joined once: the judged fit reads the training months, the Qini the held-out one, a winning refit all.
        rows = members.join(tags, ["month", "sub_id"], "left").join(stages, ["month", "sub_id"], "left"
                                                                     ).localCheckpoint()
        train = rows.where(F.col("month").isin(train_months))
        size = train.count()
        if size < settings.min_members:
            reason = f"{size:,} members in the training months, fewer than uplift_model.min_members"
    if reason:
        run.params.update({"scorer": "estimates", "scorer_reason": reason})
        return Scorer("estimates")
    from flowops.models.uplift import qini, train_uplift

    # The contacted against every member not contacted (the control group and the treated arm's members the
    # allocation left out; models/uplift.py, "Assumptions"): main effects of the tags and one effect per scenario x
    # intended channel in each. Judged below on the held-out month's randomised comparison, arm against arm.
    fit = partial(train_uplift, numeric=settings.numeric, categorical=[*settings.categorical, "scenario", "channel"],
                  treatment="contacted", interactions=[("scenario", "channel")], reg_param=settings.reg_param)
    model = fit(train)
    held = rows.where(F.col("month") == held_month)
    prior = estimate(read_cells(lake, held_month), [s.id for s in conf.scenarios], conf.channels)
    held = model.transform(held).withColumn("estimate_score", lookup(
        {f"{s}|{c}": e.mean for (s, c), e in prior.uplift.items()}, F.concat_ws("|", "scenario", "channel")))
    held = held.localCheckpoint()
    q_model = qini(held, score="uplift_score").coefficient
    q_estimates = qini(held, score="estimate_score").coefficient
    wins = bool(q_model > q_estimates)
    run.params.update({"scorer": "model" if wins else "estimates", "qini_model": f"{q_model:.4f}",
                       "qini_estimates": f"{q_estimates:.4f}", "uplift_model_trained_on": ",".join(train_months),
                       "uplift_model_held_out": held_month})
    log.info("target %s: uplift model Qini %.4f vs estimates %.4f on held-out %s: %s", month, q_model, q_estimates,
             held_month, "the model scores" if wins else "the estimates score")
    if not wins:
        return Scorer("estimates")
    # The Qini judged the procedure; the month is scored by the same procedure fitted on every evaluated month, the
    # held-out one included (the latest campaign, the most like this month's, and a third to half more rows).
    model = fit(rows)
    run.params["uplift_model_scoring_fit_on"] = ",".join(months)
    model.save(str(folder))
    tracking.log_folder(run, folder, "uplift_model")   # the model the month's waves score with, in its MLflow run
    return Scorer("model", model, features)


def read_earlier(lake: Lake, month: str, campaign: str, wave: int) -> Earlier:
    """What the month's earlier waves did: the previous wave's non-converters of both arms (the control group
    stays the control group), whose contact was not delivered, and the contacts, booked days and spend so far."""
    targets = lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]})
    previous = targets.where((F.col("wave") == wave - 1) & F.col("arm").isNotNull())
    arms = previous.groupBy("sub_id", "scenario").agg(
        F.first("arm").alias("arm"), F.first("offers").alias("offers"), F.min("window_start").alias("window_start"),
        F.max("window_end").alias("window_end"), F.min("contact_date").alias("contact_date"))
    orders = lake.read("silver/orders", partitions={"month": [campaign]})
    stayed = ordered(arms.withColumn("wave", F.lit(wave - 1)), placed_orders(orders)).where(~F.col("converted"))
    members = arms.join(stayed.select("sub_id", "scenario"), ["sub_id", "scenario"], "left_semi").select(
        "sub_id", "scenario", F.when(F.col("arm") == HOLDOUT, TREATED).otherwise(F.col("arm")).alias("arm"))
    history = (lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).where(F.col("wave") < wave)
               .localCheckpoint())
    undelivered = history.where((F.col("wave") == wave - 1) & (F.col("outcome") == "undelivered")).select(
        "sub_id", "scenario").distinct()
    made = history.select("sub_id", "mode", "scenario", "channel", "contact_date", "channel_cost_yuan",
                          "incentive_cost_yuan", "incentive_on_order", "outcome").collect()
    spent: Counter = Counter()
    for r in made:
        paid = r.incentive_cost_yuan if (not r.incentive_on_order or r.outcome == "converted") else 0.0
        spent[r.scenario] += (r.channel_cost_yuan or 0.0) + (paid or 0.0)
    return Earlier(members=members.localCheckpoint(), undelivered=undelivered.localCheckpoint(),
                   used_caps=dict(Counter((r.sub_id, r.mode) for r in made)),
                   used_attempts=dict(Counter((r.sub_id, r.scenario) for r in made)),
                   booked=dict(Counter((r.channel, r.contact_date) for r in made)), spent=dict(spent))


# ------------------------------------------------------------------------------------------------------ writing
def _targets_frame(lake: Lake, units: pd.DataFrame) -> DataFrame:
    """The wave's decisions as gold/scenario_targets rows."""
    return lake.spark.createDataFrame(_rows(units, SCENARIO_TARGETS.schema), SCENARIO_TARGETS.schema).localCheckpoint()


def _rows(frame: pd.DataFrame, schema: T.StructType) -> list[tuple]:
    """The frame's rows as plain Python values of the schema's types (pandas holds ints as floats beside nulls,
    dates as timestamps, arrays as numpy arrays)."""
    def plain(kind: T.DataType):  # noqa: ANN202 - a converter
        if isinstance(kind, T.IntegerType | T.LongType):
            return int
        if isinstance(kind, T.DoubleType):
            return float
        if isinstance(kind, T.BooleanType):
            return bool
        if isinstance(kind, T.DateType):
            return lambda v: v.date() if isinstance(v, pd.Timestamp | dt.datetime) else v
        if isinstance(kind, T.ArrayType):
            return list
        return str

    converters = [plain(f.dataType) for f in schema.fields]
    columns = [frame[f.name].tolist() for f in schema.fields]
    return [tuple(None if _missing(v) else convert(v) for v, convert in zip(values, converters, strict=True))
            for values in zip(*columns, strict=True)]


def _missing(value: object) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _history(lake: Lake, units: pd.DataFrame, run_id: str, channels: Channels) -> DataFrame:
    """ops/contact_history rows of the exported contacts: which cycle of the offer family each is, what it was
    expected to be worth, and what it costs (the channel; the incentive, paid on ordering or to everyone)."""
    sent = units[units["decision"] == "targeted"].copy()
    costs = {c.id: c.cost_yuan for c in channels.channels}
    sent["round"] = sent["rounds"].fillna(0).astype(int) + 1
    sent["channel_cost_yuan"] = sent["channel"].map(costs).astype(float)
    sent["incentive_cost_yuan"] = sent["incentive_cost"].where(sent["incentive"] != "none", 0.0).astype(float)
    sent["run_id"] = run_id
    sent["outcome"] = None
    return lake.spark.createDataFrame(_rows(sent, CONTACT_HISTORY.schema), CONTACT_HISTORY.schema)


def _overwrite_wave(lake: Lake, table: str, rows: DataFrame, month: str, wave: int, run: Run) -> int:
    """Replace this wave's rows of the month, keeping the month's other waves."""
    keep = None
    if _has_month(lake, table, month):
        keep = lake.read(table, partitions={"month": [month]}).where(F.col("wave") != wave).localCheckpoint()
    out = rows if keep is None else keep.unionByName(rows)
    return lake.write(out, table, mode="overwrite", partitions={"month": [month]},
                      metadata={"flowops.runId": run.run_id})


def export_rows(lake: Lake, targeted: DataFrame, month: str, conf: Definitions) -> DataFrame:
    """The export rows: targeted contacts with msisdn (restricted/subscriber_keys), account manager, priority."""
    keys = lake.read("restricted/subscriber_keys").select("sub_id", "msisdn").dropDuplicates(["sub_id"])
    crm = (lake.read("silver/subscribers", partitions={"month": [month]}).groupBy("sub_id")   # one row each, even
           .agg(F.max("account_manager_id").alias("manager_id")))                             # if a line repeats
    trigger = lookup({c.id: c.trigger for c in conf.channels.channels if c.trigger}, F.col("channel")).cast("string")
    care = lookup({s.id: s.model.care.max_cost_yuan for s in conf.scenarios if s.model.care}, F.col("scenario"))
    priority = F.row_number().over(Window.partitionBy("channel", "scenario")
                                   .orderBy(F.col("expected_value").desc(), "sub_id"))
    return (targeted.join(keys, "sub_id", "left").join(crm, "sub_id", "left")
            .select("month", "sub_id", "scenario", "mode", "channel", "product_id", "family", "msisdn", "manager_id",
                    "message", trigger.alias("trigger_event"), priority.alias("priority"), "contact_date",
                    "window_end", "expected_value", "cost_yuan", care.cast("double").alias("care_max_cost")))


def refuse_violations(lake: Lake, rows: DataFrame, month: str, wave: int, conf: Definitions,
                      earlier_waves: Earlier | None, held_out: DataFrame, inputs: Inputs | None = None,
                      gate_rows: Callable[[DataFrame | pd.DataFrame], object] | None = None,
                      local_rows: pd.DataFrame | None = None) -> None:
    """Re-check every export row against the lake's opt-outs, churn, immunity, the stored draw (`held_out`: the
    control group and holdouts, sub_id and scenario), the contact cap, each scenario's attempts and its budget
    over the waves, and the rule that no contact is worth less than nothing (care scenarios within their cost
    ceiling excepted). The rules are derived from the lake's tables (as read for the step, `inputs`, or read
    again), not from the policy's decisions. `gate_rows` (the exports' quality gate) checks the rows with the
    never-exported rules they break first (`quality.frames.export_checks`, on the driver: `local_rows` are the same
    rows already collected, else they are collected here; the rules are checked in Spark, and only the rules broken
    come to the driver)."""
    earlier = lake.spark.createDataFrame([], "sub_id string, mode string, scenario string")
    spent = earlier_waves.spent if earlier_waves else {}
    if wave > 1 and lake.exists(CONTACT_HISTORY.name):
        earlier = lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).where(F.col("wave") < wave)
    budgets = {s.id: s.model.budget_yuan - spent.get(s.id, 0.0) for s in conf.scenarios if s.model.budget_yuan}
    attempts = {s.id: s.model.strategy.max_attempts for s in conf.scenarios}
    opt_outs, churned, immunity = ((inputs.opt_outs, inputs.churned, inputs.immunity) if inputs else
                                   (read_opt_outs(lake), read_churned(lake, month), read_immunity(lake, month, conf)))
    problems = violations(rows, opt_outs, churned, immunity,
                          conf.channels, held_out, earlier.select("sub_id", "mode", "scenario"), budgets, attempts,
                          value_rule=conf.channels.policy.objective == "uplift").toPandas()
    if gate_rows is not None:
        gate_rows(export_checks(rows.toPandas() if local_rows is None else local_rows, problems, month, wave))
    found = problems.groupby("problem").size()
    if len(found):
        shown = ", ".join(f"{n} {problem}" for problem, n in sorted(found.items()))
        raise ExportRefused(f"export of {month} wave {wave} refused, nothing written: rows that break the contact "
                            f"rules: {shown}")


@dataclass(frozen=True)
class WaveExport:
    """What `write_exports` did."""

    folder: Path
    changed: bool
    run_id: str             # the wave's manifests' run id: the first run's when byte-identical files were kept
    leftovers: Leftovers    # what dead runs had left under the exports, removed (or put back) first


def write_exports(root: Path, month: str, campaign: str, wave: int, rows, channels: Channels,  # noqa: ANN001
                  run_id: str, scenarios: Mapping[str, WaveScenario], *, job: str = "target",
                  lock_timeout_s: float = 600.0, lock_stale_s: float = 30.0) -> WaveExport:
    """Write `root/month=M/wave=W/`: `channel=C/<scenario>.csv` with a manifest.json per channel folder, then, last,
    the wave's `manifest.json` (every channel of the wave's `scenarios`, 0 rows included, with its files, rows and
    sha256; the run id, the campaign month, the contact windows). Files 0600 and folders 0700, fsynced, the wave's
    folder swapped in whole (`lake/dropfolder.py`). Holding the exports' lock, it first removes what dead runs
    left anywhere under `root`. When the files would be byte-identical (the manifests but for run id and time),
    the folder is kept with its run id, which the result carries for the contact history."""
    files, manifest = wave_files(month, campaign, wave, rows, channels, run_id, scenarios)
    final = root / f"month={month}" / f"wave={wave}"
    with dropfolder.exclusive(root, job, lock_timeout_s, lock_stale_s) as lock:
        leftovers = dropfolder.clean_leftovers(root)
        kept = _kept_run_id(final, files, manifest)
        if kept:
            return WaveExport(final, False, kept, leftovers)
        lock.check()
        dropfolder.publish(final.parent, final.name, files, run_id)
    return WaveExport(final, True, run_id, leftovers)


def _kept_run_id(folder: Path, files: dict[str, bytes], manifest: dict) -> str | None:
    """The run id of the wave folder there, when its files are the ones about to be written (its manifest the same
    but for the run id and the time); else None."""
    path = folder / "manifest.json"
    if not path.is_file() or not _same_files(folder, files):
        return None
    try:
        there = json.loads(path.read_bytes())
    except ValueError:
        return None
    if not isinstance(there, dict) or unstamped(there) != unstamped(manifest):
        return None
    return there.get("run_id") or None


def _same_files(folder: Path, files: dict[str, bytes]) -> bool:
    """The folder's CSV files are exactly these, byte for byte."""
    csvs = {name: body for name, body in files.items() if name.endswith(".csv")}
    existing = {p.relative_to(folder).as_posix() for p in folder.rglob("*.csv")}
    return existing == set(csvs) and all((folder / name).read_bytes() == body for name, body in csvs.items())
