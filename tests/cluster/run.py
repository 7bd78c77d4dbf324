"""`make cluster-test`: the jobs of jobs/ on a real Spark standalone cluster, checked against the embedded run.

    python -m tests.cluster.run [--workers 2] [--subscribers 300] [--records-per-day 2] [--out DIR] [--keep]
    python -m tests.cluster.run --workers 1,2 --record   # the 1-vs-2-worker timing into BENCHMARKS.md ("Cluster")
    python -m tests.cluster.run --rev HEAD               # the package, jobs/ and conf/ of a commit (git archive)

1. builds the project's wheel (`pip wheel . --no-deps`; of the work tree, or of `--rev`) and generates a small world
   of two months (`flowops generate`), so the month under test has a month of history before it;
2. runs the month embedded, with the `flowops` command on `local[2]` importing the same wheel's package (unpacked,
   first on PYTHONPATH), into one lake: `ingest` of the month before (history), then the month's
   `ingest -> tags -> segment -> target`;
3. per worker count: starts a master and the workers from the pip-installed pyspark (`bin/spark-class`, 127.0.0.1,
   free ports, each worker 1 core and 2g, its own work dir), waits until they have registered, submits a probe that
   shows where driver and executors import flowops from (it must be the wheel), then the same jobs with
   `spark-submit --master spark://... --py-files flowops.zip jobs/<job>.py ...` into a lake of its own, and stops
   the cluster. flowops.zip is the wheel under another name: PySpark puts a `--py-files` file on the executors'
   path only when it ends in .zip, .egg or .jar (a .whl reaches the driver's path but not the executors');
4. compares every table and export file of each cluster lake with the embedded lake (tests/cluster/compare.py
   names what is left out of the comparison and why);
5. stops every process it started, by the ids it started (also on failure, Ctrl-C or SIGTERM), and fails if any
   process of the run is left (tests/cluster/standalone.py).
Exit code 0 only when every lake equals the embedded one and no process is left. The engine is delta-rs (no Delta
jars here); the lake is on local disk, which driver and executors share. MLflow tracking is off in both runs
(FLOWOPS_TRACKING=off): it records the runs, it does not change a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from tests.cluster.compare import compare_lakes
from tests.cluster.standalone import Cluster, Processes, leftovers, spark_home

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- cluster-test: begin -->", "<!-- cluster-test: end -->"
HISTORY, MONTH = "2026-01", "2026-02"
JOBS = (  # (label, entry point in jobs/, flowops subcommand, month)
    ("ingest history", "ingest_usage.py", "ingest", HISTORY),
    ("ingest", "ingest_usage.py", "ingest", MONTH),
    ("tags", "tags.py", "tags", MONTH),
    ("segment", "segment.py", "segment", MONTH),
    ("target", "target.py", "target", MONTH),
)
TIMED = ("ingest", "tags", "segment", "target")   # the month end to end; the history ingest is set-up
JOB_TIMEOUT = 1200.0
TEST_KEY = "flowops-cluster-test-key (test only)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="2", help="worker counts, one cluster each, e.g. 2 or 1,2")
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--records-per-day", type=float, default=2)
    parser.add_argument("--out", help="working folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (lakes, logs) afterwards")
    parser.add_argument("--rev", help="test this git revision's package, jobs/ and conf/ (default: the work tree)")
    parser.add_argument("--record", action="store_true",
                        help="write the timing table into BENCHMARKS.md (between its cluster-test markers) on success")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="flowops-cluster-"))
    if root.exists() and any(root.iterdir()):
        parser.error(f"--out {root} is not empty: the lakes of an earlier run would be ingested into again")
    root.mkdir(parents=True, exist_ok=True)
    procs = Processes(uuid.uuid4().hex, _environment())
    began = time.monotonic()
    _on_signal(_interrupted)
    ok = False
    try:
        ok = _run(procs, root, counts, args)
    except (RuntimeError, KeyboardInterrupt, SystemExit) as exc:
        print(f"cluster-test: FAILED: {exc or type(exc).__name__}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - reported, and the processes are still stopped below
        traceback.print_exc()
    finally:
        _on_signal(signal.SIG_IGN)   # a second Ctrl-C must not cut the clean-up short
        remaining = procs.stop_all()
        _on_signal(signal.SIG_DFL)
        print(f"cluster-test: stopped the {len(procs.started)} processes it started"
              + (f" ({procs.killed_strays} of their children by the run's marker)" if procs.killed_strays else "")
              + f"; left behind: {', '.join(remaining) if remaining else 'none'}")
        ok = ok and not remaining and not leftovers(procs.token)
        if args.keep or not ok:
            print(f"cluster-test: working folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"cluster-test: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - began:.0f} s")
    return 0 if ok else 1


def _run(procs: Processes, root: Path, counts: list[int], args: argparse.Namespace) -> bool:
    raw, logs = root / "raw", root / "logs"
    source = _source(root / "src", args.rev)
    wheel = _build_wheel(procs, source, root / "dist", logs)
    unpacked = root / "wheel"   # the wheel's files, first on the embedded run's PYTHONPATH (driver and workers)
    shutil.unpack_archive(wheel, unpacked, "zip")
    shipped = shutil.copyfile(wheel, root / "dist" / "flowops.zip")   # what --py-files ships (see above)
    flowops = [sys.executable, "-m", "flowops.cli"]
    local = {"PYTHONPATH": str(unpacked)}
    seconds = procs.run([*flowops, "generate", "--out", str(raw), "--subscribers", str(args.subscribers),
                         "--start-month", HISTORY, "--months", "2", "--seed", "7", "--bad-rate", "0.01",
                         "--records-per-day", str(args.records_per_day), "--workers", "2"], logs / "generate.log",
                        JOB_TIMEOUT, local)
    print(f"cluster-test: wheel {wheel.name} of {args.rev or 'the work tree'}; generated {args.subscribers} "
          f"subscribers, {HISTORY} and {MONTH} ({seconds:.0f} s)")
    embedded, conf = root / "lake-embedded", str(source / "conf")
    timings = {"embedded local[2]": _jobs(procs, lambda job, entry, command, month: [
        *flowops, command, "--conf", conf, "--master", "local[2]", "--lake", str(embedded),
        "--raw", str(raw), "--month", month], logs / "embedded", local)}
    inside = {"embedded local[2]": _in_job_seconds(embedded)}
    ok = True
    for n in counts:
        cluster = Cluster(procs, root / f"cluster-{n}w", workers=n)
        lake = root / f"lake-{n}w"
        cluster.start()
        print(f"cluster-test: master {cluster.url} with {n} worker(s) of 1 core, 2g")
        try:
            _probe(procs, cluster, shipped, logs / f"probe-{n}w.log")
            submit = _submit(cluster, shipped)
            name = f"standalone, {n} worker{'s' if n > 1 else ''}"
            timings[name] = _jobs(
                procs, lambda job, entry, command, month, submit=submit, lake=lake: [
                    *submit, str(source / "jobs" / entry), "--conf", conf,
                    "--lake", str(lake), "--raw", str(raw), "--month", month], logs / f"cluster-{n}w")
            apps = (cluster.state() or {}).get("completedapps", [])
            print(f"cluster-test: the master lists {len(apps)} completed applications "
                  f"({sum(a.get('cores', 0) for a in apps[-1:])} cores in the last)")
        finally:
            cluster.stop()
        inside[name] = _in_job_seconds(lake)
        comparison = compare_lakes(lake, embedded)
        print(f"cluster-test: {n}-worker lake against the embedded lake:\n{comparison.summary()}")
        ok &= comparison.equal
    table = _timing_table(timings, inside)
    print("cluster-test: wall seconds per job, and inside them what ops/runs records:", *table, sep="\n")
    if ok and args.record:
        record(table, args)
        print(f"cluster-test: figures written to {REPORT}")
    return ok


def _environment() -> dict[str, str]:
    """What every process of the run gets: the venv's Python for driver and executors, the loopback address, a
    labelled test key for the pseudonyms, no tracking."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_"))}
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable, "FLOWOPS_PII_KEY": TEST_KEY, "FLOWOPS_TRACKING": "off",
            "PYTHONDONTWRITEBYTECODE": "1"}


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _source(folder: Path, rev: str | None) -> Path:
    """The work tree, or a copy of revision `rev`'s files (git archive) in `folder`."""
    if rev is None:
        return ROOT
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def _build_wheel(procs: Processes, source: Path, dist: Path, logs: Path) -> Path:
    """The project's wheel (pure Python), built from `source` into `dist`."""
    shutil.rmtree(dist, ignore_errors=True)
    procs.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--disable-pip-version-check", "-q",
               "-w", str(dist)], logs / "wheel.log", 600)
    wheels = list(dist.glob("flowops-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one flowops wheel in {dist}, found {wheels}")
    return wheels[0]


def _submit(cluster: Cluster, package: Path) -> list[str]:
    return [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.url, "--deploy-mode", "client",
            "--py-files", str(package), "--driver-memory", "2g", "--executor-memory", "1g",
            "--conf", "spark.executor.cores=1", "--conf", "spark.ui.enabled=false"]


def _probe(procs: Processes, cluster: Cluster, package: Path, log: Path) -> None:
    """Driver and executors import flowops from the shipped wheel, on the cluster's master; raises otherwise."""
    procs.run([*_submit(cluster, package), str(ROOT / "tests" / "cluster" / "probe.py")], log, 300)
    line = next((x for x in log.read_text().splitlines() if x.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"the probe printed no result (log: {log})")
    found = json.loads(line[len("PROBE "):])
    paths = [found["driver"]["file"], *found["executors"]]
    ok = (found["master"] == cluster.url and found["executors"]
          and all(f"/{package.name}/flowops/" in path for path in paths))
    print(f"cluster-test: probe: driver imports {found['driver']['file']}; executors "
          f"{'; '.join(found['executors'])} {'(the wheel)' if ok else '(NOT THE WHEEL)'}")
    if not ok:
        raise RuntimeError("driver or executors do not import flowops from the shipped wheel")


def _jobs(procs: Processes, argv, logs: Path, env: dict[str, str] | None = None) -> dict[str, float]:  # noqa: ANN001
    """Run JOBS in order with `argv(label, entry, command, month)`; returns seconds per label."""
    seconds = {}
    for label, entry, command, month in JOBS:
        seconds[label] = procs.run(argv(label, entry, command, month), logs / f"{label.replace(' ', '-')}.log",
                                   JOB_TIMEOUT, env)
        print(f"cluster-test:   {logs.name}: {label} {month} {seconds[label]:.1f} s", flush=True)
    return seconds


def _in_job_seconds(lake: Path) -> dict[str, float]:
    """Seconds each job of JOBS spent inside its runs (ops/runs `seconds`: from the step's start, the Spark session
    already up, to its commit), per label; the rest of a job's wall time is process, JVM and executor start-up."""
    from deltalake import DeltaTable

    runs = DeltaTable(str(lake / "ops" / "runs")).to_pyarrow_table(columns=["job", "params", "seconds"]).to_pylist()
    return {label: sum(r["seconds"] for r in runs if r["job"].split("-")[0] == command
                       and dict(r["params"]).get("month") == month)
            for label, _, command, month in JOBS}


def _timing_table(timings: dict[str, dict[str, float]], inside: dict[str, dict[str, float]]) -> list[str]:
    """Wall seconds per job (each a fresh spark-submit or flowops process) and the seconds ops/runs records inside
    them, as a markdown table."""
    header = ["| run | " + " | ".join(TIMED) + f" | **the month** | in the jobs' runs | history ingest ({HISTORY}, "
              "set-up) |", "|---|" + "---:|" * (len(TIMED) + 3)]
    rows = []
    for name, t in timings.items():
        steps = " | ".join(f"{t[j]:.1f}" for j in TIMED)
        rows.append(f"| {name} | {steps} | **{sum(t[j] for j in TIMED):.1f}** | "
                    f"{sum(inside[name][j] for j in TIMED):.1f} | {t['ingest history']:.1f} |")
    return header + rows


def record(table: list[str], args: argparse.Namespace, report: Path = REPORT) -> None:
    """Put the timing table, with the command and the machine, between the cluster-test markers of BENCHMARKS.md."""
    text = report.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{report} has no {BEGIN} ... {END} markers to write the figures between")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev or "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    made = (f"Measured by `make cluster-test ARGS=\"--workers {args.workers}{f' --rev {args.rev}' if args.rev else ''}"
            f" --record\"` ({f'{args.rev} = {rev}' if args.rev else f'the work tree at {rev}'}), "
            f"{args.subscribers} subscribers, {args.records_per_day:g} records per subscriber-day; "
            f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; every cluster lake equal to the embedded one.")
    head, rest = text.split(BEGIN, 1)
    report.write_text(head + BEGIN + "\n" + made + "\n\n" + "\n".join(table) + "\n" + END + rest.split(END, 1)[1])


def _interrupted(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT) end the run through its clean-up, like Ctrl-C."""
    raise SystemExit(f"interrupted by signal {signum}")


def _on_signal(handler) -> None:  # noqa: ANN001
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
