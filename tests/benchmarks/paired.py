"""Two commands timed in turn, A B A B ..., and the ratio A/B taken pair by pair: the machine's speed drifts over the
minutes a demo runs, and a pair shares the drift where two separate series would not.

    .venv/bin/python -m tests.benchmarks.paired -n 2 --a "CMD_A" --b "CMD_B" [--log FILE]

Each command runs through `sh -c`, with its output appended to `--log` (default: discarded). Prints each run's wall
seconds (a monotonic clock around the child) and CPU seconds (user + system of the child and everything it waited
for, as the OS accounts them), each pair's wall ratio, and the medians. Measures and never judges.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time


def timed(command: str, log: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit code) of one run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "ab") as out:
        clock = time.monotonic()
        code = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              check=False).returncode
        wall = time.monotonic() - clock
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="pairs (default 2)")
    parser.add_argument("--a", required=True, help="the command measured")
    parser.add_argument("--b", required=True, help="the baseline")
    parser.add_argument("--log", default=os.devnull, help="where both commands' output goes (appended)")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"a": [], "b": []}
    cpus: dict[str, list[float]] = {"a": [], "b": []}
    ratios = []
    for pair in range(1, args.n + 1):
        for name in ("a", "b"):
            wall, cpu, code = timed(getattr(args, name), args.log)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"pair {pair} {name.upper()}: {wall:7.1f} s wall {cpu:7.1f} CPU-s exit {code}", flush=True)
        ratios.append(walls["a"][-1] / walls["b"][-1])
        print(f"pair {pair} A/B: {ratios[-1]:.3f}", flush=True)
    for name in ("a", "b"):
        print(f"{name.upper()}: wall median {statistics.median(walls[name]):.1f} s (min {min(walls[name]):.1f}, max "
              f"{max(walls[name]):.1f}); CPU median {statistics.median(cpus[name]):.1f} CPU-s")
    print(f"A/B wall: median {statistics.median(ratios):.3f} (pairs {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
