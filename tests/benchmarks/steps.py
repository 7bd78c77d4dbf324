"""`flowops demo` with Spark's event log on, and its Spark work per step: how many queries, jobs, stages and tasks
each kind of step ran, and how long its tasks ran against the CPU they used (BENCHMARKS.md, "Tenth sitting").

    PYTHONPATH=lib:. .venv/bin/python -m tests.benchmarks.steps [--subscribers 150] [--out DIR]

The steps' windows come from the demo lake's ops/runs (start and seconds of each run); a query, job or task is
counted in the run during which it started. What starts between runs (the generator, the channel simulator,
`Reference.load`) is counted as "(between runs)".
"""

from __future__ import annotations

import argparse
import bisect
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

BETWEEN = "(between runs)"


@dataclass
class StepWork:
    """The Spark work of one kind of step, summed over its runs."""

    runs: int = 0
    seconds: float = 0.0
    queries: int = 0
    jobs: int = 0
    stages: int = 0
    tasks: int = 0
    task_run_s: float = 0.0
    task_cpu_s: float = 0.0
    query_s: list[float] = field(default_factory=list)


def per_step(events: Iterable[dict], runs: Iterable[tuple[str, float, float]]) -> dict[str, StepWork]:
    """Spark's work by step, from the event log's events and ops/runs' (job, started at epoch ms, seconds)."""
    windows = sorted((start, start + seconds * 1000, job) for job, start, seconds in runs)
    starts = [w[0] for w in windows]
    work: dict[str, StepWork] = defaultdict(StepWork)
    for start, end, job in windows:
        work[job].runs += 1
        work[job].seconds += (end - start) / 1000

    def step_at(ms: float) -> str:
        i = bisect.bisect_right(starts, ms) - 1
        return windows[i][2] if i >= 0 and ms <= windows[i][1] else BETWEEN

    query_started: dict[int, float] = {}
    for event in events:
        kind = event["Event"]
        if kind.endswith("SQLExecutionStart"):
            query_started[event["executionId"]] = event["time"]
        elif kind.endswith("SQLExecutionEnd") and event["executionId"] in query_started:
            start = query_started[event["executionId"]]
            step = work[step_at(start)]
            step.queries += 1
            step.query_s.append((event["time"] - start) / 1000)
        elif kind == "SparkListenerJobStart":
            work[step_at(event["Submission Time"])].jobs += 1
        elif kind == "SparkListenerStageCompleted":
            work[step_at(event["Stage Info"]["Submission Time"])].stages += 1
        elif kind == "SparkListenerTaskEnd":
            metrics = event.get("Task Metrics") or {}
            step = work[step_at(event["Task Info"]["Launch Time"])]
            step.tasks += 1
            step.task_run_s += metrics.get("Executor Run Time", 0) / 1000
            step.task_cpu_s += metrics.get("Executor CPU Time", 0) / 1e9
    return dict(work)


def report(work: dict[str, StepWork], wall_s: float) -> str:
    """A markdown table of `per_step`'s result, steps by seconds, and the totals."""
    head = ("| step | runs | seconds | queries | median query s | jobs | stages | tasks | task run s | task CPU s |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, w in sorted(work.items(), key=lambda kv: (kv[0] == BETWEEN, -kv[1].seconds)):
        median = sorted(w.query_s)[len(w.query_s) // 2] if w.query_s else 0.0
        seconds = f"{w.seconds:.1f}" if w.runs else "-"
        rows.append(f"| {name} | {w.runs} | {seconds} | {w.queries} | {median:.2f} | {w.jobs} | {w.stages} | "
                    f"{w.tasks} | {w.task_run_s:.1f} | {w.task_cpu_s:.1f} |")
    total = StepWork(**{f.name: sum(getattr(w, f.name) for w in work.values())
                        for f in fields(StepWork) if f.name != "query_s"})
    rows.append(f"| all (demo {wall_s:.1f} s) | {total.runs} | {total.seconds:.1f} | {total.queries} | | {total.jobs} "
                f"| {total.stages} | {total.tasks} | {total.task_run_s:.1f} | {total.task_cpu_s:.1f} |")
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=150)
    parser.add_argument("--out", type=Path, default=None, help="an empty folder for the demo and its event log "
                        "(default: a temporary one)")
    args = parser.parse_args()
    if args.out and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty: the demo's landing files, lake and event log go there")
    with tempfile.TemporaryDirectory(prefix="flowops-steps-") as scratch:
        out = (args.out or Path(scratch)).resolve()
        print(report(*profile(out, args.subscribers)))


def profile(out: Path, subscribers: int) -> tuple[dict[str, StepWork], float]:
    """Run the demo under `out` with the event log on; its Spark work per step and its wall seconds."""
    from deltalake import DeltaTable

    from flowops.cli import build_parser
    from flowops.config import load_settings
    from flowops.context import Context
    from flowops.demo import run_demo
    from tests.benchmarks.run import spark_events
    from tests.conftest import CONF

    events = out / "events"
    events.mkdir(parents=True, exist_ok=True)
    settings = load_settings(CONF, lake_root=str(out / "lakehouse"), environ={})
    conf = {**settings.spark.conf, "spark.eventLog.enabled": "true", "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false", "spark.eventLog.dir": events.as_uri()}
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": conf})})
    os.environ.pop(settings.pii.key_env, None)   # as `make demo` runs: the labelled demo key
    ctx = Context(settings, app_name="flowops-demo", demo=True)
    started = time.perf_counter()
    demo = build_parser().parse_args(["demo", "--out", str(out), "--subscribers", str(subscribers)])  # its defaults
    run_demo(ctx, out=out, subscribers=subscribers, month=demo.month, seed=demo.seed, bad_rate=demo.bad_rate,
             records_per_day=demo.records_per_day)
    wall = time.perf_counter() - started
    ctx.spark.stop()   # flushes the event log
    runs = DeltaTable(str(out / "lakehouse" / "ops" / "runs")).to_pyarrow_table(
        columns=["job", "started_at", "seconds"]).to_pylist()
    windows = [(r["job"], r["started_at"].timestamp() * 1000, r["seconds"]) for r in runs]
    return per_step(spark_events(events), windows), wall


if __name__ == "__main__":
    main()
