"""GX validation results as ops/quality_results rows, and the one line a critical failure prints.

Examples of failing rows are masked: personal fields (sub_id, phone numbers, device ids) keep a few leading
characters only, and long digit runs anywhere are masked as in the quarantine.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowops.ingest.pii import mask_digits_text
from flowops.quality.suites import Check

PERSONAL = frozenset({"sub_id", "msisdn", "imsi", "imei", "record_id", "account_manager_id", "manager_id"})
EXAMPLES = 3


@dataclass(frozen=True)
class Outcome:
    """One check's result in a run."""

    check: Check
    gx_type: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed_value: str | None
    examples: tuple[str, ...]
    bounds: Mapping[str, Any]
    error: str | None = None   # what GX caught while computing the check (a failed Spark job, a full disk)

    @property
    def failed_rows(self) -> int | None:
        """Rows that broke the check: GX's unexpected count, or for a row-count check the whole table."""
        if self.unexpected_count is not None:
            return self.unexpected_count
        return self.element_count


def mask(column: str, value: Any) -> str:
    """A value safe to print: personal fields cut to their first 4 characters, long digit runs masked."""
    if value is None:
        return "null"
    text = str(value)
    if column in PERSONAL:
        return f"{text[:4]}…" if len(text) > 4 else "…"
    return mask_digits_text(text)[:60]


def example_row(row: Mapping[str, Any], column: str | None = None) -> str:
    """`key=value, column=value` of one unexpected row (its index column first, then the checked one), masked."""
    ordered = sorted(row.items(), key=lambda item: item[0] == column)
    return ", ".join(f"{k}={mask(k, v)}" for k, v in ordered if not str(k).startswith("_share_"))


def outcomes(checks: Sequence[Check], results: Iterable[Any], bounds: Mapping[int, Mapping[str, Any]]) -> list[Outcome]:
    """Pair each GX ExpectationValidationResult with its check (by the index in the expectation's meta)."""
    by_index = {c.index: c for c in checks}
    out = []
    for result in results:
        config = result.expectation_config
        check = by_index[int(config.meta["flowops_check"])]
        detail = result.result or {}
        indexed = detail.get("partial_unexpected_index_list") or []
        if indexed:
            examples = tuple(example_row(r, check.column) for r in indexed[:EXAMPLES])
        else:
            column = check.column or ""
            examples = tuple(mask(column, v) for v in (detail.get("partial_unexpected_list") or [])[:EXAMPLES])
        observed = detail.get("observed_value")
        out.append(Outcome(check, config.type, bool(result.success), _int(detail.get("element_count")),
                           _int(detail.get("unexpected_count")), None if observed is None else str(observed),
                           examples, bounds.get(check.index, {}), raised(result.exception_info)))
    return sorted(out, key=lambda o: o.check.index)


def raised(exception_info: Any) -> str | None:
    """The first line of the exception GX caught while computing a check, or None. GX gives one record
    (`raised_exception`, `exception_message`), or one per metric that could not be computed."""
    if not isinstance(exception_info, Mapping) or not exception_info:
        return None
    records = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for record in records:
        fields = record if isinstance(record, Mapping) else {
            key: getattr(record, key, None) for key in ("raised_exception", "exception_message")}
        if fields.get("raised_exception"):
            message = str(fields.get("exception_message") or "").strip()
            return message.splitlines()[0][:300] if message else "an exception without a message"
    return None


def result_rows(outcomes_: Sequence[Outcome], *, run_id: str, job: str, table: str, partition: str,
                checked_at: dt.datetime) -> list[tuple]:
    """ops/quality_results rows, in the table's column order."""
    rows = []
    for o in outcomes_:
        arguments = {**o.check.kwargs, **{k: v for k, v in o.bounds.items() if v is not None}}
        rows.append((run_id, job, table, partition, o.check.expectation, o.gx_type, o.check.column,
                     json.dumps(arguments, sort_keys=True, default=str), o.check.severity, o.success,
                     o.element_count, o.unexpected_count,
                     o.observed_value if o.error is None else f"not evaluated: {o.error}", list(o.examples),
                     checked_at))
    return rows


def failure_line(table: str, partition: str, failed: Sequence[Outcome], where: str = "") -> str:
    """The one line a critical failure prints: the table, each failed expectation, rows failed, a few examples."""
    parts = []
    for o in failed:
        what = f"{o.check.expectation}({o.check.column})" if o.check.column else o.check.expectation
        if o.error is not None:
            count = f"could not be evaluated: {o.error}"
        elif o.unexpected_count is not None:
            count = f"{o.unexpected_count:,} of {o.element_count or 0:,} rows failed"
        else:
            count = f"observed {o.observed_value}, expected {_bounds_text(o.bounds or o.check.kwargs)}"
        shown = f", e.g. [{'; '.join(o.examples)}]" if o.examples else ""
        parts.append(f"{what}: {count}{shown}")
    return (f"quality gate: {table} {partition} stopped by {len(failed)} critical expectation"
            f"{'s' if len(failed) > 1 else ''}: {' | '.join(parts)}; nothing downstream was written{where}")


def _bounds_text(kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"{low}..{high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
