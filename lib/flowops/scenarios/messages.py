"""Messages: each scenario's per-channel template (Jinja2, sandboxed) rendered with the subscriber's figures
and the offer. Every marketing SMS ends with the unsubscribe line; an SMS longer than one segment is flagged by
its segment count."""

from __future__ import annotations

import json
import math
from functools import cache

import jinja2
import numpy as np
import pandas as pd

from flowops.products import Catalogue
from flowops.scenarios.templates import ENVIRONMENT, Channels, Scenario

SMS_SEGMENT = 70        # characters of one SMS segment (UCS-2: Chinese text)
SMS_PART = 67           # characters per part of a concatenated SMS (3 go to the part header)
FAILED = "\x00"         # a message that could not be rendered starts with this, then the error
# Every marketing SMS says how to stop them (the operator's unsubscribe keyword); it counts toward the segments.
SMS_OPT_OUT = "回复TD退订"


class Renderer:
    """Renders each option's message from its scenario's template for the channel's kind, over the subscriber's
    tag values (`vars`, JSON) and the offer. A row that fails to render gets FAILED, then the error (a null tag
    under a filter, say): the option is dropped, before the control draw, so both arms lose it alike."""

    def __init__(self, scenarios: list[Scenario], channels: Channels, catalogue: Catalogue) -> None:
        self.sources = {s.id: s.texts for s in scenarios}
        self.names = {s.id: s.model.name for s in scenarios}
        self.incentives = {s.id: s.model.incentive for s in scenarios}
        self.kinds = {c.id: c.kind for c in channels.channels}
        self.products = {p.id: {"id": p.id, "name": p.name, "fee_yuan": p.fee_yuan, "allowance_mb": p.allowance_mb,
                                "type": p.type, "price_yuan": p.value_yuan} for p in catalogue.products}

    def render(self, frame: pd.DataFrame) -> list[str]:
        """The message of each row of `frame` (scenario, channel, vars, product_id, offers, incentive,
        incentive_yuan, saving_yuan, extra_cost_yuan, window_start, window_end)."""
        out = []
        for row in frame.itertuples(index=False):
            incentive = self.incentives[row.scenario]
            context = json.loads(row.vars) if isinstance(row.vars, str) and row.vars else {}
            offers = row.offers if row.offers is not None else []
            context.update(
                product=self.products.get(row.product_id, {}),
                offers=[self.products[o] for o in offers if o in self.products],
                incentive={"kind": row.incentive, "yuan": _value(row.incentive_yuan, 0.0), "mb": incentive.mb,
                           "minutes": incentive.minutes, "text": incentive.text},
                saving_yuan=_value(row.saving_yuan, 0.0), extra_cost_yuan=_value(row.extra_cost_yuan, 0.0),
                window_start=str(row.window_start), window_end=str(row.window_end),
                scenario=self.names[row.scenario], channel=row.channel)
            kind = self.kinds.get(row.channel, "display")
            try:
                text = " ".join(_compiled(self.sources[row.scenario][kind]).render(context).split())
                out.append(with_opt_out(text) if kind == "sms" else text)
            except Exception as exc:  # noqa: BLE001 - a row's bad value must not stop the month's targets
                out.append(f"{FAILED}{row.scenario} {kind} message: {type(exc).__name__}: {exc}")
        return out


def rendered(messages: pd.Series) -> np.ndarray:
    """Which messages rendered (not FAILED)."""
    return np.array([isinstance(m, str) and not m.startswith(FAILED) for m in messages], dtype=bool)


def segments(messages: pd.Series, channels: pd.Series, channel_models: Channels) -> list[int | None]:
    """SMS segments each message needs on an SMS channel (None elsewhere): 1 up to the channel's `max_chars` (one
    segment, SMS_SEGMENT by default), else parts of SMS_PART characters."""
    limits = {c.id: c.max_chars or SMS_SEGMENT for c in channel_models.channels if c.kind == "sms"}
    return [None if channel not in limits or not isinstance(text, str) else
            1 if len(text) <= limits[channel] else math.ceil(len(text) / SMS_PART)
            for text, channel in zip(messages, channels, strict=True)]


def with_opt_out(text: str) -> str:
    """The SMS text ending with the unsubscribe line (once)."""
    if SMS_OPT_OUT in text:
        return text
    return f"{text}{'' if text[-1:] in '，。！？!?,.' else '，'}{SMS_OPT_OUT}"


@cache
def _compiled(text: str) -> jinja2.Template:
    """A template compiled once per Python worker (compiled templates do not pickle; their text does)."""
    return ENVIRONMENT.from_string(text)


def _value(value, default=None):  # noqa: ANN001, ANN202
    """A pandas cell as a plain value: NaN/None -> default, numpy numbers -> Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value.item() if hasattr(value, "item") else value
