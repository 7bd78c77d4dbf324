"""`flowops simulate --raw RAW --month M [--wave W]`: stands in for the channels and the order system, for the
demo and tests only. No production command calls it.

It reads what `flowops target` exported for month M's wave W (LAKE/exports) and the month's control group
(gold/scenario_targets, with restricted/subscriber_keys for their numbers), answers from the generator's planted
potential outcomes (RAW/_truth/propensities.csv: per subscriber and offer an organic ordering chance and the effect
of a delivered contact per channel, see `synth.response`) and lands the answers like the real systems do:
receipts in RAW/feedback/month=M+1/<channel>.csv and orders appended to RAW/orders/month=M+1/orders.csv (order
ids `SIM<M>W<W>-`). Deterministic by seed; simulating a wave again replaces that wave's receipts and orders. The
planted effect per scenario goes to RAW/_truth/simulated/month=M/wave=W/planted_effects.csv, with a
simulation.json that labels the files as simulated.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError, LakeError
from flowops.ingest.monthly import FEEDBACK_LINES
from flowops.lake.tables import SCENARIO_TARGETS
from flowops.landing import monthly_file, next_month, parse_month, require_raw
from flowops.synth.monthly import ORDER_COLUMNS
from flowops.synth.response import Propensities, offer_type, respond

log = logging.getLogger(__name__)


@dataclass
class Simulation:
    month: str
    wave: int
    receipts: int
    orders: int
    unsubscribes: int
    planted: pd.DataFrame
    truth: Path


def run_simulate(ctx: Context, raw: str | Path, month: str, wave: int = 1, seed: int = 0,
                 definitions: Definitions | None = None) -> Simulation:
    """Simulate the channels' receipts and the orders of month M's wave W into RAW (see the module text)."""
    parse_month(month)
    conf = definitions or Definitions.load(ctx.settings.conf_dir)
    root = require_raw(raw).resolve()
    campaign = next_month(month)
    propensity_file = root / "_truth" / "propensities.csv"
    if not propensity_file.is_file():
        raise FlowopsError(f"{propensity_file} is missing: the simulator answers from the generator's planted "
                           "propensities, so RAW must be `flowops generate` output")
    orders_file = monthly_file(root, "orders", campaign)   # the campaign month must have landed (generated)
    contacted, held_out = _read_campaign(ctx, month, wave, conf)
    log.warning("simulate %s wave %d: SIMULATED receipts and orders (demo and tests only) into %s", month, wave, root)
    rng = np.random.default_rng([seed, *map(int, month.split("-")), wave])
    try:
        propensities = Propensities.from_frame(pd.read_csv(propensity_file, dtype=str))
    except ValueError as exc:
        raise FlowopsError(f"{propensity_file}: {exc}") from exc
    answers = respond(contacted, held_out, propensities, rng)

    prefix = f"SIM{month.replace('-', '')}W{wave}-"
    types = {p.id: p.type for p in conf.catalogue.products}
    fees = {p.id: p.fee_yuan for p in conf.catalogue.products}
    orders = answers.orders.sort_values(["day", "msisdn", "product_id"], kind="stable").reset_index(drop=True)
    seconds = rng.integers(8 * 3600, 22 * 3600, len(orders))
    rows = [(f"{prefix}{k:07d}", o.msisdn, (dt.datetime.combine(o.day, dt.time()) + dt.timedelta(seconds=int(s)))
             .strftime("%Y-%m-%d %H:%M:%S"), o.product_id, types.get(o.product_id, ""), o.channel, "", "order",
             f"{fees.get(o.product_id, 0):.2f}") for k, (o, s) in enumerate(zip(orders.itertuples(), seconds,
                                                                                strict=True), start=1)]
    _replace_lines(orders_file, lambda r: not r[0].startswith(prefix), rows, ORDER_COLUMNS)

    feedback = root / "feedback" / f"month={campaign}"
    # Every channel file of the month loses this wave's earlier answers (a re-target may have left a channel).
    channels = set(answers.receipts["channel"]) | ({p.stem for p in feedback.glob("*.csv")} if feedback.is_dir()
                                                   else set())
    for channel in sorted(channels):
        group = answers.receipts[answers.receipts["channel"] == channel]
        body = group.drop(columns="channel").sort_values(["contact_date", "msisdn", "scenario"], kind="stable")
        _replace_lines(feedback / f"{channel}.csv", lambda r: r[3] != str(wave),
                       list(body.itertuples(index=False, name=None)), FEEDBACK_LINES.header)

    truth = root / "_truth" / "simulated" / f"month={month}" / f"wave={wave}"
    truth.mkdir(parents=True, exist_ok=True)
    answers.planted.sort_values(["scenario", "wave"]).to_csv(truth / "planted_effects.csv", index=False,
                                                              float_format="%.6f")
    unsubscribes = int(answers.receipts["reply_text"].isin(["TD", "退订"]).sum())
    (truth / "simulation.json").write_text(json.dumps({
        "simulated": True, "by": "flowops simulate", "seed": seed, "month": month, "campaign_month": campaign,
        "wave": wave, "receipts": len(answers.receipts), "orders": len(rows), "order_id_prefix": prefix,
        "unsubscribes": unsubscribes,
        "files": [str((feedback / f"{c}.csv").relative_to(root)) for c in sorted(answers.receipts["channel"].unique())]
        + [str(orders_file.relative_to(root))],
    }, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return Simulation(month, wave, len(answers.receipts), len(rows), unsubscribes, answers.planted, truth)


def _read_campaign(ctx: Context, month: str, wave: int, conf: Definitions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the exported contacts, everyone else in the wave's experiment) of month M's wave W, with numbers, offers and
    windows. The others are the control group and holdouts (`group` held_out: what the contacted are compared with)
    and the treated arm's members the allocation left out (`group` uncontacted): every one of them may order on
    their own, as anybody not contacted does."""
    lake = ctx.lake
    folder = Path(lake.root) / "exports" / f"month={month}" / f"wave={wave}"
    if not folder.is_dir():
        raise FlowopsError(f"nothing exported for {month} wave {wave} ({folder}): run `flowops target --month "
                           f"{month} --wave {wave}` first")
    exported = []
    for path in sorted(folder.glob("channel=*/*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["msisdn"])
        exported.append(frame.assign(channel=path.parent.name.removeprefix("channel="), scenario=path.stem))
    exports = pd.concat(exported, ignore_index=True) if exported else pd.DataFrame(
        columns=["msisdn", "channel", "scenario"])
    if not lake.exists(SCENARIO_TARGETS.name) or month not in lake.partition_values(SCENARIO_TARGETS.name, "month"):
        raise LakeError(f"gold/scenario_targets has nothing for {month}")
    keys = lake.read("restricted/subscriber_keys").select("sub_id", "msisdn").dropDuplicates(["sub_id"])
    targets = (lake.read(SCENARIO_TARGETS.name, partitions={"month": [month]})
               .where((F.col("wave") == wave) & F.col("arm").isNotNull())
               .join(keys, "sub_id")
               .select("msisdn", "scenario", "wave", "channel", "decision", "product_id", "stage",
                       F.coalesce("contact_date", "window_start").alias("contact_date"), "window_end").toPandas())
    kinds = {c.id: c.kind for c in conf.channels.channels}
    types = {p.id: p.type for p in conf.catalogue.products}
    targets["offer_type"] = [offer_type(types.get(p, ""), s) for p, s in zip(targets["product_id"], targets["stage"],
                                                                             strict=True)]
    targeted = targets[targets["decision"] == "targeted"]
    contacted = exports.merge(targeted, on=["msisdn", "channel", "scenario"], how="inner")
    if len(contacted) != len(exports):
        raise FlowopsError(f"{len(exports) - len(contacted)} exported row(s) of {month} wave {wave} match no targeted "
                           "row of gold/scenario_targets: the exports and the lake disagree")
    contacted["kind"] = contacted["channel"].map(kinds)
    contacted_keys = set(zip(contacted["msisdn"], contacted["scenario"], strict=True))
    others = targets[targets["decision"] != "targeted"].copy()
    others = others[[(m, s) not in contacted_keys for m, s in zip(others["msisdn"], others["scenario"], strict=True)]]
    others["group"] = others["decision"].map({"control": "held_out"}).fillna("uncontacted")
    return contacted, others.reset_index(drop=True)


def _replace_lines(path: Path, keep, rows: list[tuple], header: tuple[str, ...]) -> None:  # noqa: ANN001
    """Rewrite a landing CSV: its rows that `keep` accepts, then `rows`."""
    kept: list[list[str]] = []
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            kept = [r for r in reader if keep(r)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)
