"""Run records: every job writes one `ops/runs` row, whether it succeeds or fails."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

import flowops
from flowops import logs, tracking
from flowops.ingest.pii import mask_digits_text
from flowops.lake import Lake
from flowops.lake.tables import RUNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileReconciliation:
    """One landed file's accounting: lines in = accepted + quarantined + duplicates."""

    source_file: str
    status: str
    lines_in: int
    accepted: int
    quarantined: int
    duplicates: int

    @property
    def balanced(self) -> bool:
        return self.lines_in == self.accepted + self.quarantined + self.duplicates


@dataclass
class Run:
    """What a job reports about itself while it runs; written to ops/runs when it ends."""

    job: str
    params: dict[str, str]
    run_id: str = field(default_factory=lambda: new_run_id())
    rows_in: int = 0
    rows_out: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    files: list[FileReconciliation] = field(default_factory=list)

    def count(self, name: str, value: int) -> None:
        """Record a named count (e.g. `quarantined`); repeated names add up."""
        self.counts[name] = self.counts.get(name, 0) + int(value)

    def wrote(self, table: str, version: int) -> None:
        """Record the table version this run committed."""
        self.table_versions[table] = version

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, int]]:
        """Time a step and log one line with its counts: `with run.step("parse") as counts: ...`. The step's
        milliseconds are kept as the count `step_ms.<name>`."""
        started = time.perf_counter()
        counts: dict[str, int] = {}
        yield counts
        seconds = time.perf_counter() - started
        self.count(f"step_ms.{name}", round(seconds * 1000))
        shown = " ".join(f"{key}={value:,}" for key, value in counts.items())
        log.info("%s %s: %s(%.1fs)", self.job, name, f"{shown} " if shown else "", seconds)


def new_run_id() -> str:
    """Sortable, unique: `20260105T031500-1a2b3c4d`."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@contextmanager
def recorded_run(lake: Lake, job: str, params: Mapping[str, object]) -> Iterator[Run]:
    """Run a job body and append its ops/runs row at the end, with status `ok` or `failed`; the run is tracked in
    MLflow too (`flowops.tracking`: nested under the month's run when there is one), which never fails the job.

    The failure is re-raised after it is recorded; a failure to record never hides the job's own error.
    """
    run = Run(job=job, params={key: str(value) for key, value in params.items() if value is not None})
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    tracked = tracking.start_job(lake, run, started)
    log.info("%s started (run %s)", job, run.run_id)
    status, error = "ok", None
    try:
        yield run
    except BaseException as exc:
        status, error = "failed", describe_error(exc)
        raise
    finally:
        seconds = time.perf_counter() - clock
        record = run_record(lake, run, started, seconds, status, error)
        unrecorded = None
        try:
            lake.write_rows([tuple(record.values())], RUNS, metadata={"flowops.runId": run.run_id})
        except Exception as exc:  # noqa: BLE001 - the job's own outcome matters more than its record
            if status == "ok":
                unrecorded = exc
                record = {**record, "status": "failed", "error": describe_error(exc)}
            else:
                log.error("could not record the failed run %s in ops/runs: %s", run.run_id, exc)
        tracking.finish_job(tracked, lake, run, {**record, "files": [asdict(f) for f in run.files]})
        log.info("%-28s %s in %5.1fs (run %s)", tracking.run_name(job, run.params),
                 "done" if record["status"] == "ok" else "FAILED", seconds, run.run_id, extra={logs.PROGRESS: True})
        if unrecorded is not None:
            raise unrecorded


def describe_error(exc: BaseException) -> str:
    """What ops/runs keeps of a failure: its type and the first line of its message, long digit runs masked
    (a message may quote a record; the details are in the job's log, not the table)."""
    first = (str(exc).strip().splitlines() or [""])[0][:500]
    return f"{type(exc).__name__}: {mask_digits_text(first)}"


def run_record(lake: Lake, run: Run, started: dt.datetime, seconds: float, status: str,
               error: str | None) -> dict[str, Any]:
    """A run's ops/runs row, column by column in the table's order."""
    values = (run.run_id, run.job, run.params, started, started + dt.timedelta(seconds=seconds), seconds, status,
              error, run.rows_in, run.rows_out, run.counts, run.table_versions,
              [astuple(f) for f in run.files], lake.engine_name,
              flowops.__version__, lake.spark.sparkContext.master)
    return dict(zip(RUNS.schema.names, values, strict=True))

