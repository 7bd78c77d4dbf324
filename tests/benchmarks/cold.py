"""Cold `ingest --month` runs, each in a JVM of its own, with the JVM's CPU by thread: how much of a run is the JIT
compilers warming up, and what JVM options change. Runs alternate between the variants given.

    FLOWOPS_PII_KEY=bench-key PYTHONPATH=lib:. .venv/bin/python -m tests.benchmarks.cold RAW MONTH \\
        [--runs 2] [--variant NAME=OPTIONS ...]

A variant's OPTIONS replace the embedded JVM's JIT options (`flowops.spark.JIT_OPTIONS`; "default" is the JVM's own
inlining, "flowops" what flowops sets); e.g. `--variant c1=-XX:TieredStopAtLevel=1`. Each run ingests RAW's MONTH
onto a fresh lake in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("month")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], help="NAME=JVM options (space-separated)")
    args = parser.parse_args()
    if any("=" not in v for v in args.variant):
        parser.error("a --variant is NAME=OPTIONS (OPTIONS may be empty, or 'flowops')")
    variants = dict(v.split("=", 1) for v in args.variant) or {"flowops": "flowops", "default": ""}
    for round_ in range(1, args.runs + 1):
        for name, options in variants.items():
            result = _run(args.raw.resolve(), args.month, options)
            threads = ", ".join(f"{k} {v:.1f}" for k, v in result["threads"].items())
            print(f"{round_} {name:10} {result['seconds']:6.1f} s  steps {result['steps']}\n   JVM CPU-s: {threads}",
                  flush=True)


def _run(raw: Path, month: str, options: str) -> dict:
    """One cold ingest in a child process; the seconds it took, its steps' seconds and its JVM's CPU by thread."""
    with tempfile.TemporaryDirectory(prefix="flowops-cold-") as scratch:
        out = Path(scratch) / "result.json"
        log = Path(scratch) / "stderr.txt"
        child = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.cold", "--child", str(raw), month,
                                  options, str(Path(scratch) / "lake"), str(out)],
                                 stderr=log.open("w"), start_new_session=True)
        seen: dict[str, tuple[str, float]] = {}
        while child.poll() is None:
            for jvm in _jvms(child.pid):
                seen.update(_threads(jvm))
            time.sleep(0.5)
        if child.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"the ingest failed ({child.returncode}):\n{tail}")
        result = json.loads(out.read_text())
    groups: collections.Counter = collections.Counter()
    for name, cpu in seen.values():
        groups[_group(name)] += cpu
    result["threads"] = dict(groups.most_common(6))
    return result


def _group(thread: str) -> str:
    for prefix, group in (("C2 Compiler", "C2"), ("C1 Compiler", "C1"), ("Executor task", "tasks"),
                          ("GC Thread", "GC"), ("Thread-", "py4j")):
        if thread.startswith(prefix):
            return group
    return re.sub(r"[0-9]+", "#", thread)


def _jvms(parent: int) -> list[int]:
    try:
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(parent), "java"], capture_output=True,
                                               text=True).stdout.split()]
    except OSError:
        return []


def _threads(pid: int) -> dict[str, tuple[str, float]]:
    """Each thread of a process: its name and CPU seconds so far."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        out[f"{pid}/{tid}"] = (stat[stat.index("(") + 1:stat.rindex(")")], cpu_seconds(stat))
    return out


def _child(raw: str, month: str, options: str, lake: str, out: str) -> None:
    from flowops import spark
    from flowops.config import load_settings
    from flowops.context import Context
    from flowops.steps.ingest import ingest

    if options != "flowops":
        spark.JIT_OPTIONS = tuple(options.split())
    ctx = Context(load_settings("conf", lake_root=lake))
    ctx.spark  # noqa: B018 - started before the clock, as in the ladder
    started = time.perf_counter()
    usage, _ = ingest(ctx, raw, month=month)
    seconds = time.perf_counter() - started
    steps = {k.removeprefix("step_ms."): round(v / 1000, 1) for k, v in usage.counts.items()
             if k.startswith("step_ms.")}
    Path(out).write_text(json.dumps({"seconds": seconds, "steps": steps}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:7])
    else:
        main()
