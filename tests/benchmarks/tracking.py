"""What MLflow tracking adds to a job: the store's first open, and each job's run opened and closed.

    .venv/bin/python -m tests.benchmarks.tracking [--jobs 40] [--counts 60]

Tracks `--jobs` jobs, each with `--counts` counts (a target job records about 60), nested under month runs of
ten jobs each, into a fresh SQLite store under a temporary lake, with the same calls `runs.recorded_run` makes
(`tracking.start_job`, `tracking.finish_job`); no Spark. Prints the first open (the schema's migrations), what a
job and a month run wait for on the calling thread (the runs are written by tracking's writer thread), what the
writer then needed to write them all, and the whole for a demo's 20 tracked jobs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

from flowops import tracking
from flowops.runs import Run
from tests.conftest import make_settings


class _Lake:
    engine_name = "delta-rs"

    def __init__(self, root: Path) -> None:
        self.root = str(root)

    def path(self, table: str) -> str:
        return f"{self.root}/{table}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--counts", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lake = _Lake(Path(folder) / "lake")
        settings = make_settings(lake.root)
        tracking.register(lake.root, settings)
        clock = time.perf_counter()
        tracking._store(settings)   # noqa: SLF001 - the first open, timed on its own
        first_open = time.perf_counter() - clock
        per_job, per_month = [], []
        for m in range(0, args.jobs, 10):
            month_clock = time.perf_counter()
            with tracking.month_run(settings, lake, f"2026-{m // 10 + 1:02d}"):
                for _ in range(min(10, args.jobs - m)):
                    run = Run(job="target", params={"month": "2026-03", "wave": "1"})
                    run.counts.update({f"targeted.s{k}.sms": k for k in range(args.counts)})
                    job_clock = time.perf_counter()
                    started = dt.datetime.now(dt.UTC)
                    tracked = tracking.start_job(lake, run, started)
                    record = {"ended_at": dt.datetime.now(dt.UTC), "seconds": 1.0, "rows_in": 1, "rows_out": 1,
                              "status": "ok", "error": None, "run_id": run.run_id}
                    tracking.finish_job(tracked, lake, run, record)
                    per_job.append(time.perf_counter() - job_clock)
            per_month.append(time.perf_counter() - month_clock - sum(per_job[-10:]))
        submitted = time.perf_counter()
        tracking.flush()
        written = time.perf_counter() - submitted + sum(per_job) + sum(per_month)
    print(f"first open of the store (schema migrations): {first_open:.2f} s")
    print(f"per tracked job ({args.counts} counts), on the job's thread: median "
          f"{statistics.median(per_job) * 1000:.1f} ms, max {max(per_job) * 1000:.1f} ms over {len(per_job)} jobs")
    print(f"per month run (open and close), on its thread: median {statistics.median(per_month) * 1000:.1f} ms")
    print(f"the writer thread, every run written: {written:.2f} s ({written / len(per_job) * 1000:.0f} ms a job)")
    demo = first_open + 20 * statistics.median(per_job) + 3 * statistics.median(per_month)
    print(f"a demo's tracking on its thread (first open + 20 jobs + 3 months): {demo:.1f} s")


if __name__ == "__main__":
    main()
