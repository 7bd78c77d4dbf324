"""What each channel's export carries, how a cell is written safely, and the check every export row must pass
before a file is written.

The check is defence in depth: the policy already left these contacts out, but the writer re-derives each rule
from the lake's own tables (and the stored draw), so a bug upstream (or a hand-edited target table) cannot reach
a channel.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.scenarios.policy import lookup
from flowops.scenarios.templates import Channels

# Export columns per channel kind, in file order. contact_date: the day to contact (a scarce channel's booked
# day; a passive channel shows the offer from then); window_end: the last day the offer stands.
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "sms": ("msisdn", "text", "contact_date", "window_end"),
    "call": ("msisdn", "script", "priority", "contact_date", "window_end"),
    "manager": ("manager_id", "msisdn", "talking_points", "contact_date", "window_end"),
    "display": ("msisdn", "content", "trigger_event", "contact_date", "window_end"),
}
# A spreadsheet reads a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A CSV cell no spreadsheet runs: text starting like a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def violations(rows: DataFrame, opt_outs: DataFrame, churned: DataFrame, immune: DataFrame, channels: Channels,
               held_out: DataFrame, earlier_contacts: DataFrame, budgets: dict[str, float],
               attempts: dict[str, int], value_rule: bool = True) -> DataFrame:
    """Every (sub_id, scenario, channel, problem) among the rows about to be exported.

    Args:
        rows: sub_id, scenario, mode, channel, family, msisdn, expected_value, cost_yuan, care_max_cost — the
            export rows.
        opt_outs: sub_id, opt_out_all, opt_out_channels — everything recorded so far.
        churned: sub_id of subscribers who left.
        immune: sub_id, family, rounds — delivered, unconverted earlier cycles of each offer family.
        held_out: sub_id, scenario — the stored control group and this wave's holdouts.
        earlier_contacts: sub_id, mode, scenario — contacts already made this cycle by other waves.
        budgets: scenario -> yuan still to spend (the budget less earlier waves' spend).
        attempts: scenario -> contacts per subscriber and cycle (strategy.max_attempts).
        value_rule: no contact with a negative expected value (care scenarios within their ceiling excepted): the
            uplift objective's rule; the response baseline (`policy.objective: response`) values contacts otherwise.
    """
    policy = channels.policy
    limit = lookup(policy.contacts_per_cycle.model_dump(), F.col("mode"))
    counted = rows.select("sub_id", "mode").unionByName(earlier_contacts.select("sub_id", "mode"))
    per_mode = counted.groupBy("sub_id", "mode").agg(F.count("*").alias("_contacts"))
    tried = (rows.select("sub_id", "scenario").unionByName(earlier_contacts.select("sub_id", "scenario"))
             .groupBy("sub_id", "scenario").agg(F.count("*").alias("_attempts")))
    checked = (rows.join(opt_outs, "sub_id", "left")
               .join(churned.select("sub_id", F.lit(True).alias("_churned")).distinct(), "sub_id", "left")
               .join(held_out.select("sub_id", "scenario", F.lit(True).alias("_held")).distinct(),
                     ["sub_id", "scenario"], "left")
               .join(immune, ["sub_id", "family"], "left")
               .join(per_mode, ["sub_id", "mode"], "left")
               .join(tried, ["sub_id", "scenario"], "left"))
    problems = F.array_compact(F.array(
        F.when(F.coalesce(F.col("opt_out_all"), F.lit(False)), F.lit("opted_out")),
        F.when(F.coalesce(F.array_contains("opt_out_channels", F.col("channel")), F.lit(False)),
               F.lit("opted_out_of_channel")),
        F.when(F.coalesce(F.col("_held"), F.lit(False)), F.lit("control")),
        F.when(F.coalesce(F.col("_churned"), F.lit(False)), F.lit("churned")),
        F.when(F.col("_contacts") > limit, F.lit("over_cap")),
        F.when(F.col("_attempts") > lookup(attempts, F.col("scenario")), F.lit("over_attempts")),
        F.when(F.coalesce(F.col("rounds"), F.lit(0)) >= policy.immunity_rounds, F.lit("immune")),
        F.when(F.col("msisdn").isNull() | (F.col("msisdn") == ""), F.lit("no_phone_number")),
        F.when(F.lit(value_rule) & (F.col("expected_value") < 0)
               & ~F.coalesce(F.col("cost_yuan") <= F.col("care_max_cost"), F.lit(False)), F.lit("negative_value")),
    ))
    found = checked.select("sub_id", "scenario", "channel", F.explode(problems).alias("problem"))
    if budgets:
        spend = rows.groupBy("scenario").agg(F.sum("cost_yuan").alias("_spend"))
        over = (spend.where(F.col("_spend") > lookup(budgets, F.col("scenario")) + 1e-6)
                .select(F.lit(None).cast("string").alias("sub_id"), "scenario",
                        F.lit(None).cast("string").alias("channel"), F.lit("over_budget").alias("problem")))
        found = found.unionByName(over)
    return found
