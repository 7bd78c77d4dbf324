"""`flowops target --month M [--wave W]`: scenario targets of a month, the channels' export files and the
contact history. Every read and write of the step is here; the decisions are `scenarios/`' pure transforms.

Month M is the data month: tags and stages of M choose who is offered what, and the contact windows fall in
the month after (the campaign month: after M's bill, as the seed's worked examples say).

Reads: gold/subscriber_tags, gold/flow_stages (M); silver/subscribers (every snapshot: opt-outs are never
forgotten, and a later one saying a subscriber left stops the contact); silver/feedback (unsubscribe replies);
ops/contact_history and silver/orders (earlier rounds and conversions: immunity, acceptance); for wave 2 and
later, gold/scenario_targets of the earlier waves and the campaign month's silver/orders (who did not convert);
restricted/subscriber_keys (msisdn, for the exports only).
Writes: gold/scenario_targets (M: every candidate and its decision), ops/contact_history (M: every exported
contact) and LAKE/exports/month=M/wave=W/channel=C/<scenario>.csv with a manifest.json per channel folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError, LakeError
from flowops.evaluation.funnel import ordered, placed_orders
from flowops.lake import Lake
from flowops.lake.tables import CONTACT_HISTORY, FLOW_STAGES, SCENARIO_TARGETS, SUBSCRIBER_TAGS
from flowops.landing import next_month, parse_month
from flowops.runs import Run, recorded_run
from flowops.scenarios.exports import EXPORT_COLUMNS, violations
from flowops.scenarios.messages import FAILED, SMS_SEGMENT, message_column, renderer, sms_segments
from flowops.scenarios.policy import Observed, acceptance_rates, candidates, check_targets, decide, lookup
from flowops.scenarios.templates import Channels

log = logging.getLogger(__name__)
EXPORTS = "exports"
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
    control: Counter = field(default_factory=Counter)      # scenario -> control members
    suppressed: Counter = field(default_factory=Counter)   # reason -> candidates
    exports: Path | None = None
    changed: bool = True


def run_target(ctx: Context, month: str, wave: int = 1, definitions: Definitions | None = None) -> Targets:
    """Decide every scenario's candidates of month M, write gold/scenario_targets, the exports and the contact
    history for wave W."""
    parse_month(month)
    conf = definitions or Definitions.load(ctx.settings.conf_dir)
    if wave < 1 or wave > max(len(s.waves) for s in conf.scenarios):
        raise FlowopsError(f"no scenario has a wave {wave} (conf/scenarios: at most "
                           f"{max(len(s.waves) for s in conf.scenarios)})")
    lake = ctx.lake
    for table in (SUBSCRIBER_TAGS, FLOW_STAGES.name):
        if month not in lake.partition_values(table, "month"):
            step = "tags" if table == SUBSCRIBER_TAGS else "segment"
            raise LakeError(f"{table} has nothing for {month}: run `flowops {step} --month {month}` first")
    later = ({r.wave for r in lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).select("wave")
              .distinct().collect()} if month in lake.partition_values(CONTACT_HISTORY.name, "month") else set())
    if any(w > wave for w in later):
        raise FlowopsError(f"wave {max(later)} of {month} has been targeted already: rerunning wave {wave} would "
                           f"change whom it went to after the fact (and drop wave {wave}'s measured outcomes)")
    if wave > 1:
        require_evaluated(lake, month, wave - 1)
    with recorded_run(lake, "target", {"month": month, "wave": wave, "scenarios": len(conf.scenarios)}) as run:
        result = Targets(month, wave, run)
        with run.step("decide") as counts:
            decided = _decide(lake, month, wave, conf)
            decided = _with_messages(decided, conf).localCheckpoint()
            for r in decided.groupBy("decision", "reason", "scenario", "channel").count().collect():
                if r.decision == "targeted":
                    result.targeted[(r.scenario, r.channel)] += r["count"]
                elif r.decision == "control":
                    result.control[r.scenario] += r["count"]
                else:
                    result.suppressed[r.reason] += r["count"]
            counts.update(candidates=sum(result.targeted.values()) + sum(result.control.values())
                          + sum(result.suppressed.values()), targeted=sum(result.targeted.values()),
                          control=sum(result.control.values()))
        with run.step("write targets"):
            version = _overwrite_wave(lake, SCENARIO_TARGETS.name, decided.select(*SCENARIO_TARGETS.schema.names),
                                      month, wave, run)
            run.wrote(SCENARIO_TARGETS.name, version)
        targeted = decided.where(F.col("decision") == "targeted")
        with run.step("exports") as counts:
            rows = export_rows(lake, targeted, month, conf)
            refuse_violations(lake, rows, month, wave, conf)
            result.exports, result.changed = write_exports(Path(lake.root) / EXPORTS, month, wave, rows.toPandas(),
                                                           conf.channels, run.run_id)
            counts.update(rows=sum(result.targeted.values()), changed=int(result.changed))
        with run.step("contact history"):
            history = targeted.withColumns({"run_id": F.lit(run.run_id), "outcome": F.lit(None).cast("string")})
            history = history.select(*CONTACT_HISTORY.schema.names)
            run.wrote(CONTACT_HISTORY.name, _overwrite_wave(lake, CONTACT_HISTORY.name, history, month, wave, run))
        over = decided.where((F.col("decision") == "targeted") & (F.col("sms_segments") > 1)).count()
        for (scenario, channel), n in result.targeted.items():
            run.count(f"targeted.{scenario}.{channel}", n)
        for reason, n in result.suppressed.items():
            run.count(f"suppressed.{reason}", n)
        run.count("control", sum(result.control.values()))
        run.count("sms_over_one_segment", over)
        if over:
            log.warning("target %s: %d SMS need more than one %d-character segment (see gold/scenario_targets."
                        "sms_segments)", month, over, SMS_SEGMENT)
        run.rows_out = sum(result.targeted.values())
    return result


def _decide(lake: Lake, month: str, wave: int, conf: Definitions) -> DataFrame:
    tags = lake.read(SUBSCRIBER_TAGS, partitions={"month": [month]})
    stages = lake.read(FLOW_STAGES.name, partitions={"month": [month]}).select("sub_id", "stage", "reason", "flow_type")
    needed = {c for s in conf.scenarios for c in s.reads} | set(TAGS_READ)
    tagged = tags.select(*[c for c in tags.columns if c in needed or c in ("month", "sub_id")]).join(stages, "sub_id")
    # Materialised once: every scenario selects from it, and the policy's steps then work on a small table.
    # A subscriber who left since (a later CRM snapshot says so: wave 2 runs in the campaign month) is churned too.
    left = read_churned(lake, month).withColumn("_left", F.lit(True))
    tagged = tagged.join(left, "sub_id", "left").withColumn(
        "churned_this_month", F.coalesce("churned_this_month", F.lit(False)) | F.coalesce("_left", F.lit(False)))
    tagged = tagged.drop("_left").localCheckpoint()
    try:
        cands = candidates(tagged, conf.scenarios, conf.catalogue, conf.channels, next_month(month), wave)
    except (AnalysisException, ParseException):
        check_targets(tagged, conf.scenarios, conf.catalogue, conf.channels)   # names the scenario's file
        raise
    earlier = None
    if wave > 1:
        cands = cands.join(read_non_converters(lake, month, wave - 1), ["sub_id", "scenario"], "left_semi")
        earlier = (lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]})
                   .where((F.col("wave") < wave) & F.col("decision").isin("targeted", "control"))
                   .select("sub_id", "mode", "channel", "contact_date", "decision"))
    cands = cands.localCheckpoint()
    rates = acceptance_rates(conf.scenarios, conf.channels, read_observed(lake, month))
    budgets = {s.id: s.model.budget_yuan for s in conf.scenarios if s.model.budget_yuan}
    return decide(cands, conf.channels, rates, read_opt_outs(lake), read_immunity(lake, month, wave), budgets,
                  earlier)


def read_churned(lake: Lake, month: str) -> DataFrame:
    """sub_id of everyone a CRM snapshot of month M or later says has left (churned, or a churn date)."""
    crm = lake.read("silver/subscribers")
    return (crm.where((F.col("month") >= month) & ((F.col("status") == "churned") | F.col("churn_date").isNotNull()))
            .select("sub_id").distinct())


def require_evaluated(lake: Lake, month: str, wave: int) -> None:
    """Refuse the next wave until every contact of `wave` has an outcome (`flowops evaluate` ran after them)."""
    history = (lake.read(CONTACT_HISTORY.name, partitions={"month": [month]})
               if month in lake.partition_values(CONTACT_HISTORY.name, "month") else None)
    counts = {} if history is None else {r.evaluated: r["count"] for r in history.where(F.col("wave") == wave)
                                          .groupBy(F.col("outcome").isNotNull().alias("evaluated")).count().collect()}
    if not counts:
        raise LakeError(f"wave {wave + 1} of {month} goes to wave {wave}'s non-converters, and wave {wave} exported "
                        f"nothing: run `flowops target --month {month} --wave {wave}` first")
    if counts.get(False):
        raise LakeError(f"wave {wave + 1} of {month} goes to wave {wave}'s non-converters: {counts[False]:,} of wave "
                        f"{wave}'s contacts have no outcome yet. Land the campaign month's receipts and orders and "
                        f"run `flowops evaluate --month {month}` first")


def read_non_converters(lake: Lake, month: str, wave: int) -> DataFrame:
    """sub_id, scenario: the members of both arms of a scenario's wave `wave` — contacted and control group —
    who did not order an offered product inside the window (each arm measured alike; the control members stay
    the control group)."""
    arm = lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]}).where(
        (F.col("wave") == wave) & F.col("decision").isin("targeted", "control"))
    orders = lake.read("silver/orders", partitions={"month": [next_month(month)]})
    return ordered(arm, placed_orders(orders)).where(~F.col("converted")).select("sub_id", "scenario").distinct()


def _with_messages(decided: DataFrame, conf: Definitions) -> DataFrame:
    """Messages of the targeted contacts; a row whose message fails to render is suppressed (no_message)."""
    render = renderer(conf.scenarios, conf.channels, conf.catalogue)
    fields = {s.id: (s.model.incentive.mb, s.model.incentive.minutes) for s in conf.scenarios}
    text = F.when(F.col("decision") == "targeted", message_column(render, fields))
    out = decided.withColumn("message", text)
    failed = F.coalesce(F.col("message").startswith(FAILED), F.lit(False))
    out = out.withColumns({"decision": F.when(failed, "suppressed").otherwise(F.col("decision")),
                           "reason": F.when(failed, "no_message").otherwise(F.col("reason")),
                           "message": F.when(failed, F.substring("message", 2, 500)).otherwise(F.col("message"))})
    return out.withColumn("sms_segments", sms_segments(F.col("message"), conf.channels))


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


def read_immunity(lake: Lake, month: str, wave: int = 1) -> DataFrame:
    """sub_id, product_id, rounds: contacts with an offer before wave `wave` of `month` (earlier months, and earlier
    waves of this one) that no order of that product (on or after the contact's window start) followed."""
    schema = "sub_id string, product_id string, rounds int"
    if not lake.exists(CONTACT_HISTORY.name):
        return lake.spark.createDataFrame([], schema)
    earlier = lake.read(CONTACT_HISTORY.name).where((F.col("month") < month)
                                                     | ((F.col("month") == month) & (F.col("wave") < wave)))
    if lake.exists("silver/orders"):
        orders = lake.read("silver/orders").where(F.col("action") != "cancel").select(
            "sub_id", "product_id", F.to_date("order_time").alias("ordered"))
        converted = earlier.alias("c").join(orders.alias("o"), (F.col("c.sub_id") == F.col("o.sub_id"))
                                            & (F.col("c.product_id") == F.col("o.product_id"))
                                            & (F.col("o.ordered") >= F.col("c.window_start")), "left_semi")
        earlier = earlier.join(converted.select("sub_id", "product_id", "month", "wave"),
                               ["sub_id", "product_id", "month", "wave"], "left_anti")
    return earlier.groupBy("sub_id", "product_id").agg(F.countDistinct("month", "wave").cast("int").alias("rounds"))


def read_observed(lake: Lake, month: str) -> list[Observed]:
    """Evaluated contacts and conversions per scenario x channel of months before `month` (ops/contact_history
    rows whose outcome the evaluation has filled in)."""
    if not lake.exists(CONTACT_HISTORY.name):
        return []
    done = lake.read(CONTACT_HISTORY.name).where((F.col("month") < month) & F.col("outcome").isNotNull())
    rows = done.groupBy("scenario", "channel").agg(F.count("*").alias("n"), F.sum(
        F.when(F.col("outcome") == "converted", 1).otherwise(0)).alias("k")).collect()
    return [Observed(r.scenario, r.channel, r.n, r.k) for r in rows]


def _overwrite_wave(lake: Lake, table: str, rows: DataFrame, month: str, wave: int, run: Run) -> int:
    """Replace this wave's rows of the month, keeping the month's other waves."""
    keep = None
    if lake.exists(table) and month in lake.partition_values(table, "month"):
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
    priority = F.row_number().over(Window.partitionBy("channel", "scenario")
                                   .orderBy(F.col("expected_value").desc(), "sub_id"))
    return (targeted.join(keys, "sub_id", "left").join(crm, "sub_id", "left")
            .select("month", "sub_id", "scenario", "mode", "channel", "product_id", "msisdn", "manager_id",
                    "message", trigger.alias("trigger_event"), priority.alias("priority")))


def refuse_violations(lake: Lake, rows: DataFrame, month: str, wave: int, conf: Definitions) -> None:
    """Re-check every export row against the lake's opt-outs, churn, immunity, control draw and contact cap."""
    churned = read_churned(lake, month)
    earlier = lake.spark.createDataFrame([], "sub_id string, mode string")
    if wave > 1 and lake.exists(CONTACT_HISTORY.name):
        earlier = lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).where(F.col("wave") < wave)
    problems = violations(rows, read_opt_outs(lake), churned, read_immunity(lake, month, wave), conf.channels,
                          {s.id: s.model.control_rate for s in conf.scenarios}, earlier.select("sub_id", "mode"))
    found = problems.groupBy("problem").count().collect()
    if found:
        shown = ", ".join(f"{r['count']} {r.problem}" for r in sorted(found, key=lambda r: r.problem))
        raise ExportRefused(f"export of {month} wave {wave} refused, nothing written: rows that break the contact "
                            f"rules: {shown}")


def write_exports(root: Path, month: str, wave: int, rows, channels: Channels, run_id: str) -> tuple[Path, bool]:  # noqa: ANN001
    """Write `root/month=M/wave=W/channel=C/<scenario>.csv` and a manifest.json per channel folder, files 0600 and
    folders 0700. The wave's folder is replaced as a whole; when every file would be byte-identical the existing
    folder (and its manifest) is kept. Returns the wave folder and whether it changed."""
    kinds = {c.id: c.kind for c in channels.channels}
    final = root / f"month={month}" / f"wave={wave}"
    staging = root / f"month={month}" / f".wave={wave}.{run_id}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    _private_dirs(root, staging)
    files: dict[str, bytes] = {}
    manifests: dict[str, list[dict]] = {}
    for (channel, scenario), group in sorted(rows.groupby(["channel", "scenario"]), key=lambda kv: kv[0]):
        kind = kinds[channel]
        ordered = group.sort_values(["priority", "sub_id"]) if kind == "call" else group.sort_values("sub_id")
        body = _csv(ordered, kind)
        name = f"channel={channel}/{scenario}.csv"
        files[name] = body
        manifests.setdefault(channel, []).append({"file": f"{scenario}.csv", "scenario": scenario,
                                                  "rows": len(ordered), "sha256": hashlib.sha256(body).hexdigest()})
    if final.exists() and _same_files(final, files):
        shutil.rmtree(staging)
        return final, False
    for name, body in files.items():
        _private_write(staging / name, body)
    for channel, entries in manifests.items():
        manifest = {"month": month, "wave": wave, "channel": channel, "run_id": run_id, "files": entries,
                    "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        _private_write(staging / f"channel={channel}" / "manifest.json",
                       json.dumps(manifest, ensure_ascii=False, indent=2).encode())
    if final.exists():
        old = final.with_name(f".wave={wave}.{run_id}.old")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final, True


def _csv(frame, kind: str) -> bytes:  # noqa: ANN001
    columns = {"sms": {"text": "message"}, "call": {"script": "message"}, "manager": {"talking_points": "message"},
               "display": {"content": "message"}}[kind]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS[kind])
    for row in frame.itertuples(index=False):
        values = row._asdict()
        writer.writerow(["" if values[columns.get(c, c)] is None else values[columns.get(c, c)]
                         for c in EXPORT_COLUMNS[kind]])
    return buffer.getvalue().encode("utf-8")


def _same_files(folder: Path, files: dict[str, bytes]) -> bool:
    existing = {p.relative_to(folder).as_posix() for p in folder.rglob("*.csv")}
    return existing == set(files) and all((folder / name).read_bytes() == body for name, body in files.items())


def _private_dirs(root: Path, folder: Path) -> None:
    for path in [*reversed(folder.relative_to(root.parent).parents), folder.relative_to(root.parent)]:
        target = root.parent / path
        if str(path) != "." and not target.exists():
            target.mkdir(mode=0o700)


def _private_write(path: Path, body: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)

