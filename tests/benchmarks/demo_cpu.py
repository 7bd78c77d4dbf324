"""Where `flowops demo`'s CPU goes: the Python process by thread, and the embedded Spark JVM by thread group.

    .venv/bin/python -m tests.benchmarks.demo_cpu demo --out /tmp/demo_cpu

Runs the `flowops` command given (any arguments) in this process and, when the demo's summary is built (the JVM
still up), prints the CPU seconds of each Python thread still alive, of the whole Python process (threads that
ended included) and of the JVM, split by thread group (`C2 CompilerThread0` and `C1 CompilerThread1` count as one
group, `CN CompilerThre`, as the kernel truncates the names). On two cores a CPU-second anywhere competes with the
jobs' own: this says which part of the demo spends it. Linux only (/proc). Measures and never judges.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(stat: str) -> tuple[str, float]:
    """(name, user + system seconds) of a /proc `stat` line."""
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK


def _jvms() -> list[Path]:
    """This process's child JVMs (the embedded Spark)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == os.getpid() and "java" in (proc / "cmdline").read_text():
                    found.append(proc)
            except (OSError, IndexError, ValueError):
                continue
    return found


def report(names: dict[int, str]) -> None:
    for jvm in _jvms():
        groups: dict[str, float] = {}
        for task in (jvm / "task").iterdir():
            try:
                name, cpu = _cpu((task / "stat").read_text())
            except (OSError, ValueError):
                continue
            group = re.sub(r"[0-9]+", "N", name)
            groups[group] = groups.get(group, 0.0) + cpu
        print(f"JVM (pid {jvm.name}): {sum(groups.values()):.1f} CPU-s", file=sys.stderr)
        for group, cpu in sorted(groups.items(), key=lambda item: -item[1])[:10]:
            print(f"  {group:<20} {cpu:6.1f}", file=sys.stderr)
    print("Python threads alive:", file=sys.stderr)
    for task in Path("/proc/self/task").iterdir():
        name, cpu = _cpu((task / "stat").read_text())
        if cpu >= 0.1:
            print(f"  {names.get(int(task.name), name):<20} {cpu:6.1f}", file=sys.stderr)
    times = os.times()
    print(f"Python process: {times.user + times.system:.1f} CPU-s (ended threads included); its ended children "
          f"(the generator's workers, Spark's Python workers): {times.children_user + times.children_system:.1f}",
          file=sys.stderr)


def main() -> int:
    from flowops import demo
    from flowops.cli import main as cli

    names = {threading.get_native_id(): "MainThread"}
    start = threading.Thread.start

    def named_start(self: threading.Thread, *args: object, **kwargs: object) -> None:
        start(self, *args, **kwargs)
        names[self.native_id] = self.name

    threading.Thread.start = named_start   # type: ignore[method-assign]
    run_demo = demo.run_demo

    def measured(*args: object, **kwargs: object) -> str:
        summary = run_demo(*args, **kwargs)
        report(names)
        return summary

    demo.run_demo = measured
    return cli(sys.argv[1:])


if __name__ == "__main__":   # the generator's worker processes import this module again: they must not run it
    sys.exit(main())
