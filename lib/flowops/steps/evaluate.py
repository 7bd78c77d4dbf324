"""`flowops evaluate --month M`: what month M's campaign did. Every read and write of the step is here; the
funnel, attribution and uplift are `evaluation/`'s pure transforms.

M is the data month of the targets (as in `flowops target`): the contacts, their receipts and the orders fall in
the campaign month M+1, so the campaign month's orders (and receipts) must have landed first.

Reads: gold/scenario_targets (M: every candidate's decision and its arm of the experiment), ops/contact_history
(M: what was exported), silver/orders and silver/feedback (M+1).
Writes: gold/campaign_results (M, replaced), gold/campaign_members (M: every member of the experiments and
whether they converted, which next month's estimates and uplift model learn from) and ops/contact_history (M:
each contact's outcome filled in, which immunity reads).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import functions as F

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.evaluation.funnel import ALL, Costs, evaluate
from flowops.lake.tables import CAMPAIGN_MEMBERS, CAMPAIGN_RESULTS, CONTACT_HISTORY, FEEDBACK, SCENARIO_TARGETS
from flowops.landing import next_month, parse_month
from flowops.runs import Run, recorded_run

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What `evaluate` found: the funnel rows written to gold/campaign_results."""

    month: str
    campaign_month: str
    run: Run
    rows: list[dict] = field(default_factory=list)
    receipts: int = 0
    unmatched_receipts: int = 0


def run_evaluate(ctx: Context, month: str, definitions: Definitions | None = None) -> Evaluation:
    """Evaluate month M's campaign (every wave exported so far) into gold/campaign_results and fill in the
    outcomes of its contacts in ops/contact_history."""
    parse_month(month)
    conf = definitions or Definitions.load(ctx.settings.conf_dir)
    lake = ctx.lake
    campaign = next_month(month)
    if not lake.exists(CONTACT_HISTORY.name) or month not in lake.partition_values(CONTACT_HISTORY.name, "month"):
        raise LakeError(f"nothing was exported for {month}: run `flowops target --month {month}` first")
    if not lake.exists("silver/orders") or campaign not in lake.partition_values("silver/orders", "month"):
        raise LakeError(f"silver/orders has nothing for {campaign}, the month {month}'s contacts fall in: land its "
                        f"orders (`flowops ingest --month {campaign}`) before evaluating")
    with recorded_run(lake, "evaluate", {"month": month, "campaign_month": campaign}) as run:
        result = Evaluation(month, campaign, run)
        targets = lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]})
        contacts = lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).drop("outcome")
        orders = lake.read("silver/orders", partitions={"month": [campaign]})
        if lake.exists(FEEDBACK.name) and campaign in lake.partition_values(FEEDBACK.name, "month"):
            feedback = lake.read(FEEDBACK.name, partitions={"month": [campaign]})
        else:
            log.warning("evaluate %s: no channel receipts for %s (silver/feedback): delivered, reached and "
                        "satisfaction are unknown, every contact's outcome is converted or no_receipt", month,
                        campaign)
            feedback = lake.spark.createDataFrame([], FEEDBACK.schema)
        costs = Costs(conf.catalogue.margin_share, {s.id: s.model.evaluation.attribution_days for s in conf.scenarios
                                                    if s.model.evaluation.attribution_days})
        with run.step("funnel") as counts:
            done, rows, members = evaluate(targets, contacts, feedback, orders, costs)
            result.rows = rows
            exported = done.select("sub_id", "scenario", "wave", "channel").distinct()
            result.receipts = feedback.count()
            result.unmatched_receipts = feedback.join(exported, ["sub_id", "scenario", "wave", "channel"],
                                                      "left_anti").count()
            counts.update(rows=len(rows), receipts=result.receipts, unmatched=result.unmatched_receipts)
        if result.unmatched_receipts:
            log.warning("evaluate %s: %d receipt(s) of %s match no exported contact (sub_id, scenario, wave, "
                        "channel): not counted", month, result.unmatched_receipts, campaign)
        with run.step("write results"):
            frame = lake.spark.createDataFrame(
                [{**r, "month": month, "campaign_month": campaign, "run_id": run.run_id} for r in rows],
                CAMPAIGN_RESULTS.schema) if rows else lake.spark.createDataFrame([], CAMPAIGN_RESULTS.schema)
            run.wrote(CAMPAIGN_RESULTS.name, lake.write(frame, CAMPAIGN_RESULTS, mode="overwrite",
                                                        partitions={"month": [month]},
                                                        metadata={"flowops.runId": run.run_id}))
        with run.step("write members") as counts:
            members = members.select(F.lit(month).alias("month"), F.lit(campaign).alias("campaign_month"), "*",
                                     F.lit(run.run_id).alias("run_id")).select(*CAMPAIGN_MEMBERS.schema.names)
            run.wrote(CAMPAIGN_MEMBERS.name, lake.write(members, CAMPAIGN_MEMBERS, mode="overwrite",
                                                        partitions={"month": [month]},
                                                        metadata={"flowops.runId": run.run_id}))
        with run.step("contact outcomes"):
            keys = ["sub_id", "scenario", "wave", "mode"]
            history = lake.read(CONTACT_HISTORY.name, partitions={"month": [month]}).drop("outcome")
            history = history.join(done.select(*keys, "outcome"), keys, "left").select(*CONTACT_HISTORY.schema.names)
            run.wrote(CONTACT_HISTORY.name, lake.write(history.localCheckpoint(), CONTACT_HISTORY, mode="overwrite",
                                                       partitions={"month": [month]},
                                                       metadata={"flowops.runId": run.run_id}))
        for r in rows:
            if r["channel"] == ALL:
                run.count(f"converted.{r['scenario']}.w{r['wave']}", r["converted"])
        run.count("receipts", result.receipts)
        run.count("unmatched_receipts", result.unmatched_receipts)
        run.rows_out = len(rows)
    return result
