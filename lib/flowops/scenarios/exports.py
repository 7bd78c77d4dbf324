"""What each channel's export carries, how a cell is written safely, the check every export row must pass before
a file is written, and the wave folder's files and manifests (their bytes; `steps/target.py` writes them).

The check is defence in depth: the policy already left these contacts out, but the writer re-derives each rule
from the lake's own tables (and the stored draw), so a bug upstream (or a hand-edited target table) cannot reach
a channel.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.errors import FlowopsError
from flowops.scenarios.policy import lookup, route
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


@dataclass(frozen=True)
class WaveScenario:
    """A scenario's part in a wave, as the wave's manifest lists it: its contact window and every channel its units
    could take (the union of its routes), whether or not a contact went there."""

    window_start: dt.date
    window_end: dt.date
    channels: tuple[str, ...]


def wave_scenarios(conf: Definitions, campaign: str, wave: int) -> dict[str, WaveScenario]:
    """Each scenario with a wave W: the wave's window, and every channel a unit of it could take: its routes over
    every preference, value tier and retry of an undelivered contact (`scenarios/policy.py`'s `route`)."""
    channels = conf.channels
    out = {}
    for scenario in conf.scenarios:
        if wave > len(scenario.waves):
            continue
        spec = scenario.waves[wave - 1]
        before = scenario.waves[wave - 2].fallback if wave > 1 else None
        high = scenario.model.strategy.high_value
        tiers = [None, *channels.policy.vip_tiers, *(high.tiers if high else [])]
        used = {c for mode, first in (("active", spec.active), ("passive", spec.passive)) if first
                for preference in [None, *channels.ids] for tier in tiers for retry in {None, before}
                for c in route(scenario, mode, first, spec.fallback, channels, preference, tier, retry)}
        start, end = spec.window(campaign)
        out[scenario.id] = WaveScenario(start, end, tuple(c for c in channels.ids if c in used))
    return out


def wave_files(month: str, campaign: str, wave: int, rows, channels: Channels, run_id: str,  # noqa: ANN001
                scenarios: Mapping[str, WaveScenario]) -> tuple[dict[str, bytes], dict]:
    """The wave folder's files in writing order (the CSV files, each channel's manifest, the wave's manifest last),
    and the wave's manifest."""
    unknown = sorted(set(rows["scenario"]) - set(scenarios))
    if unknown:
        raise FlowopsError(f"export rows of scenario(s) {', '.join(unknown)}, which wave {wave} of {month} does not "
                           f"have (its scenarios: {', '.join(sorted(scenarios)) or 'none'})")
    by_id = {c.id: c for c in channels.channels}
    written_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    files: dict[str, bytes] = {}
    listed: dict[str, list[dict]] = {}
    for (channel, scenario), group in sorted(rows.groupby(["channel", "scenario"]), key=lambda kv: kv[0]):
        kind = by_id[channel].kind
        ordered_rows = group.sort_values(["priority", "sub_id"]) if kind == "call" else group.sort_values("sub_id")
        body = csv_bytes(ordered_rows, kind)
        files[f"channel={channel}/{scenario}.csv"] = body
        listed.setdefault(channel, []).append({"file": f"{scenario}.csv", "scenario": scenario,
                                               "rows": len(ordered_rows), "sha256": hashlib.sha256(body).hexdigest()})
    for channel, entries in listed.items():
        files[f"channel={channel}/manifest.json"] = manifest_bytes({
            "month": month, "campaign_month": campaign, "wave": wave, "channel": channel, "run_id": run_id,
            "files": entries, "written_at": written_at})
    possible = {c for s in scenarios.values() for c in s.channels} | set(listed)
    windows = [(s.window_start, s.window_end) for s in scenarios.values()]
    manifest = {
        "month": month, "campaign_month": campaign, "wave": wave, "run_id": run_id,
        "contact_window": _window(min(w[0] for w in windows), max(w[1] for w in windows)) if windows else None,
        "scenarios": {sid: {"contact_window": _window(s.window_start, s.window_end), "channels": list(s.channels)}
                      for sid, s in sorted(scenarios.items())},
        "channels": {channel: {
            "mode": by_id[channel].mode, "kind": by_id[channel].kind,
            "scenarios": sorted({sid for sid, s in scenarios.items() if channel in s.channels}
                                | {e["scenario"] for e in listed.get(channel, [])}),
            "rows": sum(e["rows"] for e in listed.get(channel, [])),
            "files": [{**e, "file": f"channel={channel}/{e['file']}"} for e in listed.get(channel, [])],
        } for channel in channels.ids if channel in possible},
        "rows": len(rows),
        "written_at": written_at,
    }
    files["manifest.json"] = manifest_bytes(manifest)
    return files, manifest


def _window(start: dt.date, end: dt.date) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def manifest_bytes(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2).encode()


def unstamped(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("run_id", "written_at")}


def csv_bytes(frame, kind: str) -> bytes:  # noqa: ANN001
    """One export file: the kind's columns, every cell written so that no spreadsheet reads it as a formula."""
    columns = {"sms": {"text": "message"}, "call": {"script": "message"}, "manager": {"talking_points": "message"},
               "display": {"content": "message"}}[kind]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS[kind])
    for row in frame.itertuples(index=False):
        values = row._asdict()
        writer.writerow([safe_cell(values[columns.get(c, c)]) for c in EXPORT_COLUMNS[kind]])
    return buffer.getvalue().encode("utf-8")
