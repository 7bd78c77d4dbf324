"""The data-quality gate every step calls on what it is about to write (or, for gold/subscriber_tags, on what it
is about to read, unless this process checked that very version as it wrote it): the table's suite from
conf/expectations, validated by Great Expectations in one call.

Reads: the previous partition's row count of the checked table (row-count checks). Writes: ops/quality_results
(one row per expectation, failed or not, before the gate decides), and the GX file context with its Data Docs
site under LAKE/_quality/ (suites, validation results, HTML). A critical failure raises QualityGateFailed with one
line naming the table, the expectations, the failed rows and a few masked examples; a `warn` failure is logged and
recorded, and the step goes on.

A frame of at most `quality.collect_below_rows` rows is collected once (Arrow) and validated by GX's pandas engine;
a larger one by GX's Spark engine (a Spark data source, a whole-DataFrame batch definition) on the cached frame.
GX computes each metric as its own Spark job, so a small frame costs seconds in Spark and a tenth of that in pandas
(BENCHMARKS.md, "Quality gates").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from flowops.config import Settings
from flowops.errors import QualityGateFailed
from flowops.lake import Lake
from flowops.lake.lock import TableLock
from flowops.lake.tables import QUALITY_RESULTS
from flowops.quality.frames import with_indicators
from flowops.quality.gx import gx
from flowops.quality.results import Outcome, failure_line, outcomes, result_rows
from flowops.quality.suites import (
    ROW_COUNT_VS_PREVIOUS,
    SHARE_OF_VALUES,
    Check,
    Suites,
    build,
    known_columns,
    load_suites,
    row_count_bounds,
)
from flowops.runs import Run
from flowops.tags.definitions import load_library

log = logging.getLogger(__name__)
FOLDER = "_quality"
SPARK, PANDAS = "flowops_spark", "flowops_pandas"
_SUITES: dict[str, Suites] = {}
_CONTEXTS: dict[str, Any] = {}
_PENDING: dict[str, list[Any]] = {}   # lake root -> validation results whose Data Docs pages are not built yet
_TALLY: dict[str, Counter] = {}       # lake root -> what this process's gates recorded there: checked, warn, critical
_PASSED: dict[tuple[str, str, str], int] = {}   # (lake root, table, partition) -> version written after its gate passed


@dataclass(frozen=True)
class GateResult:
    """What one gate checked: its outcomes, where the Data Docs are, and how long it took."""

    table: str
    partition: str
    outcomes: list[Outcome]
    docs: str | None
    seconds: float

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.check.severity == "warn"]


def suites_for(settings: Settings, suites: Suites | None = None) -> Suites:
    """The checked suites of conf/expectations (as loaded with the definitions, or loaded once per process)."""
    if suites is not None:
        return suites
    key = str(Path(settings.conf_dir).resolve())
    if key not in _SUITES:
        tags = load_library(settings.conf_dir).names   # gold/subscriber_tags' columns
        _SUITES[key] = load_suites(settings.conf_dir, known_columns(tags))
    return _SUITES[key]


def gate(lake: Lake, settings: Settings, run: Run, table: str, df: DataFrame | pd.DataFrame, partition: str, *,
         previous: Any = None, suites: Suites | None = None) -> GateResult | None:
    """Validate `df` (what `table` is about to hold for `partition`) against the table's suite; record every
    result in ops/quality_results; raise QualityGateFailed when a critical expectation failed.

    Args:
        previous: the previous partition, as `(table, {column: [value]})`, for row-count checks; None when there is
            none (the check then only asks for a row).
    """
    checks = suites_for(settings, suites).of(table)
    if not checks:
        return None
    started = time.perf_counter()
    previous_rows = _previous_rows(lake, previous) if any(c.expectation == ROW_COUNT_VS_PREVIOUS
                                                          for c in checks) else None
    bounds = {c.index: row_count_bounds(_ratios(c), previous_rows)
              for c in checks if c.expectation == ROW_COUNT_VS_PREVIOUS}
    # GX's file store under LAKE/_quality is not safe for two writers: one job at a time validates there.
    store_lock = TableLock(Path(lake.root) / FOLDER, lake.job, settings.lake.lock_timeout_s, settings.lake.lock_stale_s)
    store_lock.acquire()
    try:
        results = validate(lake.root, settings, table, with_indicators(df, checks), checks, previous_rows)
    finally:
        store_lock.release()
    found = outcomes(checks, results, bounds)
    checked_at = dt.datetime.now(dt.UTC)
    lake.write_rows(result_rows(found, run_id=run.run_id, job=run.job, table=table, partition=partition,
                                checked_at=checked_at), QUALITY_RESULTS, metadata={"flowops.runId": run.run_id})
    seconds = time.perf_counter() - started
    failed = [o for o in found if not o.success]
    run.count("quality.checked", len(found))
    run.count("quality.failed", len(failed))
    run.count(f"step_ms.quality.{table}", round(seconds * 1000))
    critical = [o for o in failed if o.check.severity == "critical"]
    _TALLY.setdefault(lake.root, Counter()).update(checked=len(found), warn=len(failed) - len(critical),
                                                   critical=len(critical))
    docs = build_docs(lake.root, settings) if critical else docs_index(lake.root, settings)
    result = GateResult(table, partition, found, docs, seconds)
    for o in result.warnings:
        log.warning("quality %s %s: warn: %s", table, partition, failure_line(table, partition, [o]).split(": ", 3)[-1]
                    .removesuffix("; nothing downstream was written"))
    log.info("quality %s %s: %d expectations, %d failed (%.1fs)", table, partition, len(found), len(failed), seconds)
    if critical:
        where = f" (results: ops/quality_results run {run.run_id}" + (f"; Data Docs: {docs})" if docs else ")")
        raise QualityGateFailed(failure_line(table, partition, critical, where))
    return result


def validate(root: str, settings: Settings, table: str, df: DataFrame | pd.DataFrame, checks: list[Check],
             previous_rows: int | None) -> list[Any]:
    """Run the table's expectations on `df` in one GX validation (stored in the GX context, its Data Docs page
    built by the next `build_docs`); returns GX's per-expectation results."""
    context = context_for(root)
    key = [c for c in ("sub_id", "source_file", "record_id") if c in df.columns][:1]
    # Only the columns the checks read (and the key the examples show): a wide table (the tags) costs no more.
    read = [c for c in df.columns if c in set(key).union(*(_columns(c) for c in checks))]
    if not read:
        read = list(df.columns[:1])
    frame, collected = df[read], None
    if not isinstance(df, pd.DataFrame):
        frame = frame if len(read) < len(df.columns) or not df.is_cached else df
        limit = settings.quality.collect_below_rows
        # One Spark job for a small frame: what it holds, up to one row more than the limit.
        collected = frame.limit(limit + 1).toPandas() if limit else None
        if collected is not None and len(collected) <= limit:
            frame = collected
    local = isinstance(frame, pd.DataFrame)
    if not local and not frame.is_cached:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        data = frame
        engine = PANDAS if local else SPARK
        name = table.replace("/", ".")
        source = context.data_sources.get(engine)
        asset = _asset(source, name)
        batch_definition = _batch_definition(asset)
        suite = context.suites.add_or_update(gx().ExpectationSuite(
            name=name, expectations=[build(c, previous_rows) for c in checks]))
        result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 3,
                         **({"unexpected_index_column_names": key} if key else {})}
        definition = context.validation_definitions.add_or_update(
            gx().ValidationDefinition(name=name, data=batch_definition, suite=suite))
        checkpoint = context.checkpoints.add_or_update(gx().Checkpoint(
            name=name, validation_definitions=[definition], actions=[], result_format=result_format))
        ran = checkpoint.run(batch_parameters={"dataframe": data})
    finally:
        if not local and frame is not df:
            frame.unpersist()
    _PENDING.setdefault(root, []).extend(ran.run_results)
    return [r for validation in ran.run_results.values() for r in validation.results]


def passed(lake: Lake, table: str, partition: str, version: int) -> None:
    """Note that `table`'s `partition` was written as `version` after its gate passed, in this process."""
    _PASSED[(lake.root, table, partition)] = version


def gate_read(lake: Lake, settings: Settings, run: Run, table: str, df: DataFrame, partition: str, *,
              previous: Any = None) -> GateResult | None:
    """The gate a step runs on a partition it is about to read (`gate`), unless this process's own gate passed it
    right before writing it and the table is still at the version then written (logged, and counted as
    `quality.rechecked_skipped`): a partition written by anyone else, or since, is checked."""
    version = _PASSED.get((lake.root, table, partition))
    if version is not None and version == lake.version(table):
        log.info("quality %s %s: checked when this process wrote it (version %d), not again", table, partition,
                 version)
        run.count("quality.rechecked_skipped", 1)
        return None
    return gate(lake, settings, run, table, df, partition, previous=previous)


def tally(root: str) -> Counter:
    """How many expectation results this process's gates recorded in the lake at `root` (`checked`), and how many
    of them were `warn` and `critical` failures."""
    return Counter(_TALLY.get(root, {}))


def build_docs(root: str, settings: Settings) -> str | None:
    """Render the Data Docs pages of the validations run since the last build (and the index); returns the index
    page, or None when Data Docs are off or nothing was validated. Rendering costs about a second a page (GX
    compiles its templates each time), so the commands build once at their end, and a gate on a critical failure."""
    pending = _PENDING.pop(root, [])
    if not settings.quality.data_docs or (not pending and root not in _CONTEXTS):
        return None
    if pending:
        context_for(root).build_data_docs(resource_identifiers=pending)
    return docs_index(root, settings)


def context_for(root: str) -> Any:
    """The GX file context under LAKE/_quality (created on first use), progress bars off, both data sources."""
    if root in _CONTEXTS:
        return _CONTEXTS[root]
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    context = gx().get_context(mode="file", project_root_dir=str(folder))
    if context.variables.progress_bars != {"globally": False, "metric_calculations": False}:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        context.variables.save()
    context.data_sources.add_or_update_spark(name=SPARK)
    context.data_sources.add_or_update_pandas(name=PANDAS)
    _CONTEXTS[root] = context
    return context


def docs_index(root: str, settings: Settings) -> str | None:
    """The Data Docs site's index page (its pages load Bootstrap, jQuery and Vega from CDNs), None when off."""
    if not settings.quality.data_docs:
        return None
    return str(Path(root) / FOLDER / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html")


def _asset(source: Any, name: str) -> Any:
    try:
        return source.get_asset(name)
    except LookupError:
        return source.add_dataframe_asset(name=name)


def _batch_definition(asset: Any) -> Any:
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        return asset.add_batch_definition_whole_dataframe("whole")


def _previous_rows(lake: Lake, previous: Any) -> int | None:
    if previous is None:
        return None
    table, partitions = previous
    if not lake.exists(table):
        return None
    column, values = next(iter(partitions.items()))
    if not set(values) <= lake.partition_values(table, column):
        return None
    return lake.count(table, partitions=partitions)


def _columns(check: Check) -> set[str]:
    """The frame's columns a check reads (a share check: its indicator column)."""
    if check.expectation == SHARE_OF_VALUES:
        return {check.indicator}
    named = [check.kwargs.get(a) for a in ("column", "column_A", "column_B")]
    return {c for c in [*named, *(check.kwargs.get("column_list") or [])] if c}


def _ratios(check: Check) -> Any:
    from flowops.quality.suites import DERIVED

    return DERIVED[ROW_COUNT_VS_PREVIOUS].model_validate(check.kwargs)
