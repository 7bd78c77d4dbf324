"""What each channel's export carries, and the check every export row must pass before a file is written.

The check is defence in depth: the policy already suppressed these contacts, but the writer re-derives each
rule from the lake's own tables, so a bug upstream (or a hand-edited target table) cannot reach a channel.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.scenarios.policy import lookup
from flowops.scenarios.templates import Channels

# Export columns per channel kind, in file order (the first is the CSV header's first column).
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "sms": ("msisdn", "text"),
    "call": ("msisdn", "script", "priority"),
    "manager": ("manager_id", "msisdn", "talking_points"),
    "display": ("msisdn", "content", "trigger_event"),
}


def violations(rows: DataFrame, opt_outs: DataFrame, churned: DataFrame, immune: DataFrame, channels: Channels,
               control_rates: dict[str, float], earlier_contacts: DataFrame) -> DataFrame:
    """Every (sub_id, scenario, channel, problem) among the rows about to be exported.

    Args:
        rows: sub_id, month, scenario, mode, channel, product_id, msisdn — the export rows.
        opt_outs: sub_id, opt_out_all, opt_out_channels — everything recorded so far.
        churned: sub_id of subscribers who left.
        immune: sub_id, product_id, rounds — unconverted earlier rounds of each offer.
        control_rates: scenario id -> control rate (the control draw is recomputed here).
        earlier_contacts: sub_id, mode — contacts already made this cycle by other waves.
    """
    policy = channels.policy
    limit = lookup(policy.contacts_per_cycle.model_dump(), F.col("mode"))
    rate = lookup(control_rates, F.col("scenario"))
    draw = F.pmod(F.xxhash64("sub_id", "scenario", "month"), F.lit(1_000_000)) / 1_000_000.0
    counted = rows.select("sub_id", "mode").unionByName(earlier_contacts.select("sub_id", "mode"))
    per_mode = counted.groupBy("sub_id", "mode").agg(F.count("*").alias("_contacts"))
    checked = (rows.join(opt_outs, "sub_id", "left")
               .join(churned.select("sub_id", F.lit(True).alias("_churned")).distinct(), "sub_id", "left")
               .join(immune, ["sub_id", "product_id"], "left")
               .join(per_mode, ["sub_id", "mode"], "left"))
    problems = F.array_compact(F.array(
        F.when(F.coalesce(F.col("opt_out_all"), F.lit(False)), F.lit("opted_out")),
        F.when(F.coalesce(F.array_contains("opt_out_channels", F.col("channel")), F.lit(False)),
               F.lit("opted_out_of_channel")),
        F.when(F.coalesce(draw < rate, F.lit(False)), F.lit("control")),
        F.when(F.coalesce(F.col("_churned"), F.lit(False)), F.lit("churned")),
        F.when(F.col("_contacts") > limit, F.lit("over_cap")),
        F.when(F.coalesce(F.col("rounds"), F.lit(0)) >= policy.immunity_rounds, F.lit("immune")),
        F.when(F.col("msisdn").isNull() | (F.col("msisdn") == ""), F.lit("no_phone_number")),
    ))
    return (checked.select("sub_id", "scenario", "channel", F.explode(problems).alias("problem")))
