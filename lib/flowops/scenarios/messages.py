"""Messages: each scenario's per-channel template (Jinja2, sandboxed) rendered with the subscriber's figures
and the offer. An SMS longer than one segment is flagged by its segment count."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import cache

import jinja2
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from flowops.products import Catalogue
from flowops.scenarios.policy import lookup
from flowops.scenarios.templates import ENVIRONMENT, Channels, Scenario

SMS_SEGMENT = 70        # characters of one SMS segment (UCS-2: Chinese text)
SMS_PART = 67           # characters per part of a concatenated SMS (3 go to the part header)
FAILED = "\x00"         # a message that could not be rendered starts with this, then the error


def sms_segments(message: Column, channels: Channels) -> Column:
    """SMS segments each message needs on an SMS channel (null elsewhere): 1 up to the channel's `max_chars`
    (one segment, SMS_SEGMENT by default), else parts of SMS_PART characters."""
    limit = lookup({c.id: c.max_chars or SMS_SEGMENT for c in channels.channels if c.kind == "sms"}, F.col("channel"))
    count = F.when(F.length(message) <= limit, 1).otherwise(F.ceil(F.length(message) / SMS_PART))
    return F.when(limit.isNotNull() & message.isNotNull(), count).cast("int")


def renderer(scenarios: list[Scenario], channels: Channels, catalogue: Catalogue):  # noqa: ANN201 - a UDF
    """A pandas UDF rendering each row's message from (scenario, channel, vars JSON and offer columns).

    Templates travel as text and are compiled once per Python worker (compiled templates do not pickle)."""
    sources = {s.id: s.texts for s in scenarios}
    names = {s.id: s.model.name for s in scenarios}
    kinds = {c.id: c.kind for c in channels.channels}
    products = {p.id: {"id": p.id, "name": p.name, "fee_yuan": p.fee_yuan, "allowance_mb": p.allowance_mb,
                       "type": p.type} for p in catalogue.products}
    texts = {s.id: s.model.incentive.text for s in scenarios}

    def render(frames: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        for frame in frames:
            out = []
            for row in frame.itertuples(index=False):
                context = json.loads(row.vars) if row.vars else {}
                context.update(
                    product=products.get(row.product_id, {}),
                    offers=[products[o] for o in (row.offers if row.offers is not None else []) if o in products],
                    incentive={"kind": row.incentive, "yuan": _value(row.incentive_yuan, 0.0),
                               "mb": _value(row.incentive_mb), "minutes": _value(row.incentive_minutes),
                               "text": texts[row.scenario]},
                    saving_yuan=_value(row.saving_yuan, 0.0), extra_cost_yuan=_value(row.extra_cost_yuan, 0.0),
                    window_start=str(row.window_start), window_end=str(row.window_end),
                    scenario=names[row.scenario], channel=row.channel)
                kind = kinds.get(row.channel, "display")
                try:
                    out.append(" ".join(_compiled(sources[row.scenario][kind]).render(context).split()))
                except Exception as exc:  # noqa: BLE001 - a row's bad value must not stop the month's targets
                    out.append(f"{FAILED}{row.scenario} {kind} message: {type(exc).__name__}: {exc}")
            yield pd.Series(out)

    return F.pandas_udf(render, "string")  # type: ignore[call-overload]


@cache
def _compiled(text: str) -> jinja2.Template:
    """A template compiled once per Python worker (compiled templates do not pickle; their text does)."""
    return ENVIRONMENT.from_string(text)


def _value(value, default=None):  # noqa: ANN001, ANN202
    """A pandas cell as a plain value: NaN/None -> default, numpy numbers -> Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value.item() if hasattr(value, "item") else value


def message_column(render, incentive_fields: dict[str, tuple[int | None, int | None]]) -> Column:  # noqa: ANN001
    """The message of each row (columns the renderer reads, packed as a struct)."""
    mb = _by_scenario({k: v[0] for k, v in incentive_fields.items()})
    minutes = _by_scenario({k: v[1] for k, v in incentive_fields.items()})
    return render(F.struct("scenario", "channel", "vars", "product_id", "offers", "incentive", "incentive_yuan",
                           mb.alias("incentive_mb"), minutes.alias("incentive_minutes"), "saving_yuan",
                           "extra_cost_yuan", "window_start", "window_end"))


def _by_scenario(values: dict[str, int | None]) -> Column:
    return lookup({k: v for k, v in values.items() if v is not None}, F.col("scenario")).cast("int")
