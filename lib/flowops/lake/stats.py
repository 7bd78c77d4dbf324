"""Delta `add` action statistics read from a Parquet footer, without reading the data.

Readers use these for data skipping, so a wrong bound would silently drop rows. The rules here only
ever widen bounds: timestamps are stored at millisecond precision with the minimum floored and the
maximum ceiled, long strings get no bounds (Delta's own writer truncates them to a prefix), and types
without a well-defined JSON form (binary, decimal, nested) get only null counts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pyarrow.parquet as pq

MAX_STRING_BOUND = 32
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def file_stats(metadata: pq.FileMetaData, types: dict[str, str]) -> str:
    """Delta stats JSON (`numRecords`, `minValues`, `maxValues`, `nullCount`) for one data file.

    Args:
        metadata: the file's Parquet footer.
        types: Delta primitive type name per top-level column in the file (partition columns excluded).
    """
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    for name, delta_type in types.items():
        index = columns.get(name)
        if index is None:
            continue  # nested column: its leaves are stored under dotted paths; no stats
        low, high, null_count, complete = _column_bounds(metadata, index)
        if complete:
            nulls[name] = null_count
        if low is None or high is None:
            continue
        bounds = _json_bounds(delta_type, low, high)
        if bounds is not None:
            mins[name], maxs[name] = bounds
    stats = {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return json.dumps(stats, separators=(",", ":"), allow_nan=False)


def _column_bounds(metadata: pq.FileMetaData, index: int) -> tuple[Any, Any, int, bool]:
    """Min, max and null count of one column over all row groups (None bounds when unknown)."""
    low = high = None
    null_count = 0
    complete = True
    has_bounds = True
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None:
            return None, None, 0, False
        if stats.has_null_count:
            null_count += stats.null_count
        else:
            complete = False
        if stats.num_values == 0:
            continue  # an all-null row group says nothing about bounds
        if not stats.has_min_max:
            has_bounds = False
            continue
        low = stats.min if low is None else min(low, stats.min)
        high = stats.max if high is None else max(high, stats.max)
    if not has_bounds:
        low = high = None
    return low, high, null_count, complete


def _json_bounds(delta_type: str, low: Any, high: Any) -> tuple[Any, Any] | None:
    if delta_type in ("byte", "short", "integer", "long"):
        return int(low), int(high)
    if delta_type in ("float", "double"):
        if any(isinstance(v, float) and (math.isnan(v) or math.isinf(v)) for v in (low, high)):
            return None
        return float(low), float(high)
    if delta_type == "string":
        if len(low) > MAX_STRING_BOUND or len(high) > MAX_STRING_BOUND:
            return None
        return low, high
    if delta_type == "date":
        return low.isoformat(), high.isoformat()
    if delta_type == "timestamp":
        return _timestamp_ms(low, ceil=False), _timestamp_ms(high, ceil=True)
    return None


def _timestamp_ms(value: dt.datetime, *, ceil: bool) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    micros = (value - _EPOCH) // dt.timedelta(microseconds=1)
    millis = -(-micros // 1000) if ceil else micros // 1000
    stamp = _EPOCH + dt.timedelta(milliseconds=millis)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
