"""The month steps run twice in one session on a copy of a demo's lake: what a step costs cold and warm, in wall
time, JVM CPU and classes Janino compiles (Spark's CodegenMetrics).

    FLOWOPS_PII_KEY=k flowops demo --out /tmp/demo
    FLOWOPS_PII_KEY=k PYTHONPATH=lib:. .venv/bin/python -m tests.benchmarks.rerun /tmp/demo/lakehouse \\
        [--month 2026-03] [--evaluate 2026-02] [--rounds 2] [spark.conf.key=value ...]

Each round runs `tags` and `target` (wave 1) of --month and `evaluate` of --evaluate; reruns change no table
content. Settings given as key=value override the session's (e.g. spark.sql.codegen.cache.maxEntries=100).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", type=Path, help="a demo's lakehouse/ (copied; the copy is run on)")
    parser.add_argument("--month", default="2026-03")
    parser.add_argument("--evaluate", default="2026-02")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("conf", nargs="*", help="spark.* settings as key=value")
    args = parser.parse_args()

    from flowops.config import load_settings
    from flowops.context import Context
    from flowops.definitions import Definitions
    from flowops.steps.evaluate import run_evaluate
    from flowops.steps.tags import run_tags
    from flowops.steps.target import run_target
    from tests.conftest import CONF

    copy = Path(tempfile.mkdtemp(prefix="flowops-rerun-")) / "lakehouse"
    shutil.copytree(args.lake, copy)
    settings = load_settings(CONF, lake_root=str(copy))
    conf = dict(kv.split("=", 1) for kv in args.conf)
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": conf})})
    ctx = Context(settings)
    jvm = ctx.spark.sparkContext._jvm
    compiles = jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    java = int(subprocess.check_output(["pgrep", "-P", str(os.getpid()), "java"]).split()[0])
    definitions = Definitions.load(CONF)
    steps = {"tags": lambda: run_tags(ctx, args.month, definitions),
             "target": lambda: run_target(ctx, args.month, 1, definitions),
             "evaluate": lambda: run_evaluate(ctx, args.evaluate, definitions)}
    print(f"{'round':>5} {'step':9} {'wall s':>7} {'JVM CPU s':>9} {'compiled':>8}")
    try:
        for round_ in range(1, args.rounds + 1):
            for name, step in steps.items():
                cpu, n, started = _cpu(java), compiles.getCount(), time.perf_counter()
                step()
                print(f"{round_:>5} {name:9} {time.perf_counter() - started:7.1f} {_cpu(java) - cpu:9.1f} "
                      f"{compiles.getCount() - n:8d}", flush=True)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    from tests.benchmarks.run import cpu_seconds

    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


if __name__ == "__main__":
    main()
