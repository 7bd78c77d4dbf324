"""`make bench`: the benchmark ladder. Every figure is measured in this run, on this machine, next to baselines
measured on the same files, and written to BENCHMARKS.md with the command that reproduces it.

    python -m tests.benchmarks.run [--sizes 700,2800,11000,42000] [--against REV] [--out DIR]

Per size (subscribers; one generated month at the default density, ~730 xDR lines per subscriber):
generate, the `gzip -dc` floor and the DuckDB baseline (tests/benchmarks/duckdb_ingest.py, with and without the
handsets) on the same files,
then `flowops ingest --month`, `tags` and `segment` in a child process whose JVM, driver and Python workers
are sampled for CPU and peak memory. Then: the fitted exponent of time against lines; the same month through
an older flowops (`--against`, default the last commit before the speed work); silver against raw at
realistic density (300 and 600 records per subscriber-day); a profile of one ingest (steps, Spark jobs, CPU by
process); app identification with 10 vs 10,000 rules; tag computation against the number of tags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "BENCHMARKS.md"
# `make bench` writes its report between these markers of BENCHMARKS.md; the rest of the file (analyses written from
# earlier runs, each with its command) is kept.
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"
MONTH = "2026-01"
BEFORE = "565b4cd"  # the last commit before the ingest was rebuilt for speed (issue 11)
COMMAND = "make bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="700,2800,11000,42000", help="subscribers per ladder step")
    parser.add_argument("--against", default=BEFORE, help="an older flowops revision to time on the same month")
    parser.add_argument("--against-size", type=int, default=4000, help="subscribers of the month timed against it")
    parser.add_argument("--density-lines", type=int, default=2_000_000, help="lines of each density month")
    parser.add_argument("--out", default=str(ROOT / ".bench"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the ladder steps OUT/partial.json already holds and run the rest")
    parser.add_argument("--only-rerun", action="store_true",
                        help="run each ladder step's second ingest where OUT/results.json has none")
    parser.add_argument("--only-against", action="store_true",
                        help="re-run only the comparison with --against, keeping the rest of OUT/results.json (without "
                             "one, print the comparison alone)")
    args = parser.parse_args()
    out = Path(args.out)
    os.environ.setdefault("FLOWOPS_PII_KEY", "bench-key")
    if args.only_against:
        shutil.rmtree(out / "against", ignore_errors=True)
        against = bench_against(out / "against", args.against, args.against_size)
        if not (out / "results.json").exists():
            # No earlier run to complete (a fresh machine): the comparison alone, printed and kept in OUT/against.md.
            text = "\n".join(against_lines(against))
            (out / "against.md").write_text(text)
            print(text)
            return 0
        results = json.loads((out / "results.json").read_text())
        results["against"] = against
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, out)
        return 0
    if args.only_rerun:
        results = json.loads((out / "results.json").read_text())
        for step in [step for step in results["ladder"] if "rerun" not in step]:
            step["rerun"] = bench_rerun(out / f"s{step['subscribers']}")
            print(json.dumps(step["rerun"]), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, out)
        return 0
    partial = out / "partial.json"
    done = json.loads(partial.read_text()) if args.resume and partial.exists() else []
    if not args.resume:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {"ladder": [], "args": vars(args)}
    for subscribers in sizes:
        kept = [step for step in done if step["subscribers"] == subscribers]
        if kept:
            results["ladder"].append(kept[0])
            continue
        shutil.rmtree(out / f"s{subscribers}", ignore_errors=True)
        results["ladder"].append(bench_size(out / f"s{subscribers}", subscribers))
        partial.write_text(json.dumps(results["ladder"]))
        print(json.dumps(results["ladder"][-1]), flush=True)
    results["against"] = bench_against(out / "against", args.against, args.against_size)
    results["density"] = [bench_density(out / f"d{n}", n, args.density_lines) for n in (300, 600)]
    mid = out / f"s{sizes[min(1, len(sizes) - 1)]}"
    results["identify"] = bench_identify(mid)
    results["tags"] = bench_tags(mid)
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(write_report(results, out))
    return 0


# --------------------------------------------------------------------------- children and sampling
def stat_fields(stat: str) -> list[str]:
    """The fields of a `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) text after the process's name, which
    may hold spaces: [0] the state, [1] the parent's pid, [11] and [12] user and system ticks, [21] resident pages."""
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(stat: str) -> float:
    """User + system CPU seconds in the text of a `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) file."""
    fields = stat_fields(stat)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Samples the process tree under `pid` every half second: CPU seconds and peak RSS by kind (the JVM, the
    Python driver, the largest Python worker)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.done = pid, False
        self.cpu: dict[int, tuple[str, float]] = {}
        self.peak = {"jvm": 0.0, "driver": 0.0, "worker": 0.0}

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.done:
            for pid in _tree(self.pid):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if cmd.strip():
                    kind = "jvm" if "java" in cmd.split(" ")[0] else "worker" if "pyspark.daemon" in cmd else "driver"
                elif pid in self.cpu:
                    kind = self.cpu[pid][0]  # exited, not yet reaped: no command line any more, the same process
                else:
                    continue
                self.cpu[pid] = (kind, cpu_seconds(stat))
                self.peak[kind] = max(self.peak[kind], int(stat_fields(stat)[21]) * page / 1e6)
            time.sleep(0.5)

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, seconds in self.cpu.values():
            out[kind] = out.get(kind, 0.0) + seconds
        return out


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(stat_fields(Path(f"/proc/{entry}/stat").read_text())[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _child(code: str, env: dict | None = None, cwd: Path = ROOT, retries: int = 0,
           before_retry: Callable[[], object] | None = None) -> dict:
    """Run `code` in a fresh interpreter (it prints one JSON line last); add wall time, CPU and peak memory. With
    `retries`, a child killed by a signal (DuckDB 1.5.5 has segfaulted here once in a while) is run again, and the
    result says how many runs it took."""
    for attempt in range(retries + 1):
        try:
            return {**_child_once(code, env, cwd), **({"attempts": attempt + 1} if attempt else {})}
        except ChildKilled as exc:
            if attempt == retries:
                raise
            print(f"benchmark child killed by signal {exc.signal}; running it again", file=sys.stderr, flush=True)
            if before_retry:
                before_retry()
    raise AssertionError("unreachable")  # pragma: no cover


class ChildKilled(RuntimeError):
    def __init__(self, signal: int, stderr: str) -> None:
        super().__init__(f"benchmark child killed by signal {signal}:\n{stderr[-4000:]}")
        self.signal = signal


def _child_once(code: str, env: dict | None, cwd: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT / "lib"), **(env or {})},
                            start_new_session=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.communicate()), daemon=True)
    reader.start()
    proc.wait()
    # What the child left behind in its process group goes too: when DuckDB crashed, its pool's workers lived on
    # holding the child's pipes, and the bench waited for their end forever.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    reader.join()
    stdout, stderr = output
    sampler.done = True
    if proc.returncode < 0:
        raise ChildKilled(-proc.returncode, stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_s=time.perf_counter() - started, cpu_s=sampler.cpu_by_kind(), peak_mb=sampler.peak)
    return result


def _flowops(code: str, lake: Path, event_log: Path | None = None) -> dict:
    conf = ""
    if event_log:
        event_log = event_log.resolve()   # Spark refuses a relative file: URL
        event_log.mkdir(parents=True, exist_ok=True)
        conf = (f"settings = settings.model_copy(update={{'spark': settings.spark.model_copy(update={{'conf': "
                f"{{'spark.eventLog.enabled': 'true', 'spark.eventLog.compress': 'false', "
                f"'spark.eventLog.dir': 'file://{event_log}'}}}})}})\n")
    return _child("import json, time\nfrom flowops.config import load_settings\nfrom flowops.context import Context\n"
                  f"settings = load_settings('conf', lake_root={str(lake)!r})\n{conf}"
                  "ctx = Context(settings)\nctx.spark\n" + code)


# --------------------------------------------------------------------------- one ladder step
def bench_size(out: Path, subscribers: int, records_per_day: float | None = None, steps: bool = True) -> dict:
    raw, lake = out / "raw", out / "lake"
    result = {"subscribers": subscribers, "records_per_day": records_per_day}
    result["generate"] = _child(
        "import json\nfrom flowops.synth import generate\nif __name__ == '__main__':\n"
        f"    r = generate({str(raw)!r}, subscribers={subscribers}, start_month={MONTH!r}, months=1, seed=7, "
        f"bad_rate=0.01, records_per_day={records_per_day!r})\n"
        "    print(json.dumps({'lines': r.xdr_lines, 'files': r.xdr_files, 'seconds': r.elapsed_s}))")
    result["floor"] = gzip_floor(raw)
    for name, handsets in (("duckdb", True), ("duckdb_no_handsets", False)):
        result[name] = _child(f"import json\nfrom pathlib import Path\nfrom tests.benchmarks.duckdb_ingest import run\n"
                              f"print(json.dumps(run(Path({str(raw)!r}), Path({str(out / 'duckdb')!r}), "
                              f"handsets={handsets})))",
                              retries=1, before_retry=lambda: shutil.rmtree(out / "duckdb", ignore_errors=True))
        shutil.rmtree(out / "duckdb", ignore_errors=True)
    result["ingest"] = _flowops(
        f"from flowops.steps.ingest import ingest\nt = time.perf_counter()\n"
        f"usage, monthly = ingest(ctx, {str(raw)!r}, month={MONTH!r})\nseconds = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': seconds, 'lines': usage.rows_in + monthly.rows_in, 'xdr_lines': usage.rows_in,"
        " 'accepted': usage.counts['accepted'], 'usage_seconds': sum(v for k, v in usage.counts.items() "
        "if k.startswith('step_ms.')) / 1000, 'steps': {k[8:]: v / 1000 for k, v in usage.counts.items() "
        "if k.startswith('step_ms.')}, 'cores': ctx.spark.sparkContext.defaultParallelism}))",
        lake, event_log=out / "events")
    result["sizes"] = {table: _table_bytes(lake / table)
                       for table in ("bronze/usage_events", "silver/usage_daily", "silver/device_daily")}
    if steps:
        result["tags"] = _flowops(
            "from flowops.steps.tags import run_tags\nfrom flowops.steps.segment import run_segment\n"
            f"t = time.perf_counter()\nrun = run_tags(ctx, {MONTH!r})\n"
            f"tags = time.perf_counter() - t\nt = time.perf_counter()\nsegment, _ = run_segment(ctx, {MONTH!r})\n"
            "print(json.dumps({'tags_seconds': tags, 'segment_seconds': time.perf_counter() - t, "
            "'subscribers': run.counts['subscribers'], 'tags': run.counts['tags']}))", lake)
        result["rerun"] = bench_rerun(out)
    result["jobs"] = spark_jobs(out / "events")
    return result


# The tables an ingest writes; a second ingest of the same month must leave each as it is, and commit nothing at all
# to those it only appends to.
INGEST_TABLES = ("bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
                 "silver/user_agents", "restricted/usage_cells", "restricted/subscriber_keys")
APPENDED_TABLES = ("bronze/usage_events", "silver/user_agents", "restricted/usage_cells", "restricted/subscriber_keys")


def bench_rerun(size_dir: Path) -> dict:
    """The step's month ingested again onto its own lake, as a rerun after a failure would: it must reconcile
    again (the ingest fails otherwise), count every record as accepted by the earlier run, commit nothing to the
    tables it appends to, and leave every table's content (all columns but run_id) as it was."""
    return _flowops(
        "from pyspark.sql import functions as F\nfrom flowops.steps.ingest import ingest\n"
        f"tables = {INGEST_TABLES!r}\n"
        "def content(name):\n"
        "    df = ctx.lake.read(name)\n"
        "    row = df.select(F.count('*'), F.sum(F.pmod(F.xxhash64(*[c for c in df.columns if c != 'run_id']), "
        "F.lit(1_000_000_007)))).first()\n"
        "    return [row[0], row[1]]\n"
        "before = {t: content(t) for t in tables}\n"
        f"versions = {{t: ctx.lake.version(t) for t in {APPENDED_TABLES!r}}}\n"
        f"t = time.perf_counter()\nusage, _ = ingest(ctx, {str(size_dir / 'raw')!r}, month={MONTH!r})\n"
        "seconds = time.perf_counter() - t\n"
        "after = {t: content(t) for t in tables}\n"
        "print(json.dumps({'seconds': seconds, 'same_content': before == after, "
        "'changed': [t for t in tables if before[t] != after[t]], "
        "'no_commit': versions == {t: ctx.lake.version(t) for t in versions}, "
        "'all_accepted_before': usage.counts['accepted.by_earlier_runs'] == usage.counts['accepted'] > 0, "
        "'files': len(usage.files), 'balanced': all(f.balanced for f in usage.files)}))", size_dir / "lake")


def gzip_floor(raw: Path) -> dict:
    """`gzip -dc` of the readable xDR files, two processes (one per core): reading can never be faster."""
    from flowops.ingest.lines import check_file

    files = [str(f) for f in sorted(raw.glob("usage/dt=*/hour=*/*.txt.gz")) if check_file(str(f), f.name).ok]
    halves = [files[0::2], files[1::2]]
    started = time.perf_counter()
    procs = [subprocess.Popen(f"cat {' '.join(map(repr, part))} | gzip -dc > /dev/null", shell=True)
             for part in halves if part]
    for proc in procs:
        proc.wait()
    return {"seconds": time.perf_counter() - started, "gz_bytes": sum(Path(f).stat().st_size for f in files)}


def _table_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet")) if path.exists() else 0


def spark_events(folder: Path) -> Iterator[dict]:
    """The events of the Spark event logs under `folder`: a rolling log's `events_*` files, in order, or a log of
    one file (not the rolling log's status file, nor the checksums beside it)."""
    logs = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(("appstatus_", "."))]
    for log in sorted(logs) if folder.exists() else []:
        for line in log.read_text().splitlines():
            yield json.loads(line)


def spark_jobs(events: Path, top: int = 8) -> list[dict]:
    """The slowest Spark jobs of the ingest, from its event log: where the time went, by call site."""
    jobs: dict[int, dict] = {}
    for event in spark_events(events):
        kind = event["Event"]
        if kind == "SparkListenerJobStart":
            props = event.get("Properties", {})
            jobs[event["Job ID"]] = {"start": event["Submission Time"], "site": props.get("callSite.short", ""),
                                     "tasks": sum(s["Number of Tasks"] for s in event["Stage Infos"])}
        elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
            jobs[event["Job ID"]]["seconds"] = (event["Completion Time"] - jobs[event["Job ID"]]["start"]) / 1000
    done = [j for j in jobs.values() if "seconds" in j]
    return sorted(({"site": j["site"], "tasks": j["tasks"], "seconds": j["seconds"]} for j in done),
                  key=lambda j: -j["seconds"])[:top] + [{"site": "(all jobs)", "tasks": len(done),
                                                        "seconds": sum(j["seconds"] for j in done)}]


# --------------------------------------------------------------------------- comparisons
def bench_against(out: Path, revision: str, subscribers: int) -> dict:
    """The same month through flowops at `revision` and now: same files, same run, same machine."""
    out = out.resolve()   # the older flowops runs in its own worktree, as cwd
    raw = out / "raw"
    now = bench_size(out / "now", subscribers, steps=False)
    shutil.move(str(out / "now" / "raw"), str(raw))
    tree = out / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        code = ("import json, logging, time\nfrom flowops.config import load_settings\nfrom flowops.context import Context\n"
                "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')\n"
                "logging.getLogger('py4j').setLevel(logging.WARNING)\n"
                "from flowops.ingest.usage import ingest\n"
                f"ctx = Context(load_settings('conf', lake_root={str(out / 'old_lake')!r}))\nctx.spark\n"
                f"t = time.perf_counter()\nruns = ingest(ctx, {str(raw)!r}, month={MONTH!r})\n"
                "print(json.dumps({'seconds': time.perf_counter() - t, 'lines': sum(r.rows_in for r in runs)}))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(tree / "lib")})
        if proc.returncode != 0:
            raise RuntimeError(f"flowops {revision} failed:\n{proc.stderr[-3000:]}")
        before = json.loads(proc.stdout.strip().splitlines()[-1])
        # That revision logged each step's seconds: "INFO ingest parse: lines=... (100.9s)".
        before["steps"] = {m.group(1): float(m.group(2)) for m in
                           re.finditer(r"INFO ingest ([\w ]+?): .*?\((\d+\.\d+)s\)$", proc.stderr, re.M)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False, capture_output=True)
    return {"revision": revision, "subscribers": subscribers, "before": before, "now": now}


def bench_density(out: Path, records_per_day: int, lines: int) -> dict:
    """Silver against raw gzip at a realistic density: a month of about `lines` lines."""
    subscribers = max(20, round(lines / (records_per_day * 30 * 0.85)))
    return bench_size(out, subscribers, records_per_day=records_per_day, steps=False)


def bench_identify(size_dir: Path) -> dict:
    """App identification alone on the size's bronze records, with 10 and with 10,000 host rules."""
    import yaml

    rules_dir = size_dir / "rules"
    rng = random.Random(10)
    real = ["weixin.qq.com", "douyin.com", "douyinvod.com", "taobao.com", "alicdn.com", "qq.com", "baidu.com",
            "bilivideo.com", "iqiyi.com", "10086.cn"]
    for count in (10, 10_000):
        folder = rules_dir / f"r{count}" / "apps"
        folder.mkdir(parents=True, exist_ok=True)
        hosts = real[:count] + [f"{''.join(rng.choices('abcdefghijklmnop', k=8))}.{rng.choice(['com', 'cn', 'net'])}"
                                for _ in range(max(0, count - len(real)))]
        apps = [{"id": f"app{i}", "name": f"App {i}", "rules": [{"host": [h], "confidence": 0.9}]}
                for i, h in enumerate(hosts)]
        (folder / "bench.yml").write_text(yaml.safe_dump({"category": "tools", "apps": apps}))
    return _flowops(
        "from flowops.ingest.apps import AppRules, identify_apps\n"
        "records = ctx.lake.read('bronze/usage_events').select('record_id', 'host', 'sni', 'uri', 'user_agent',"
        " 'server_port', 'protocol').cache()\nresult = {'records': records.count()}\n"
        "for count in (10, 10000, 10, 10000):\n"
        f"    rules = AppRules.load({str(rules_dir)!r} + f'/r{{count}}')\n"
        "    t = time.perf_counter()\n"
        "    identify_apps(records, rules).write.format('noop').mode('overwrite').save()\n"
        "    result[f'seconds_{count}'] = time.perf_counter() - t\n"
        "print(json.dumps(result))", size_dir / "lake")


def bench_tags(size_dir: Path) -> dict:
    """Tag computation alone against the number of tags (a small library, the shipped one, it doubled)."""
    import yaml

    from flowops.tags.definitions import load_library

    shipped = load_library(ROOT / "conf")
    small = {"dou_mb", "arpu_yuan", "allowance_mb", "allowance_used_pct", "idle_mb", "idle_share", "mou_local",
             "mou_longdistance", "mou_roaming", "mou", "vip_level"}
    confs = {}
    for label, tags in (("small", [t for t in shipped.tags if t.name in small]), ("shipped", shipped.tags),
                        ("doubled", shipped.tags)):
        conf = size_dir / "tagconf" / label
        shutil.copytree(ROOT / "conf", conf, dirs_exist_ok=True)
        for f in (conf / "tags").glob("*.yml"):
            f.unlink()
        defs = [t.as_yaml() for t in tags] + ([t.as_yaml(f"{t.name}_b") for t in tags] if label == "doubled" else [])
        (conf / "tags" / "all.yml").write_text(yaml.safe_dump({"group": "bench", "tags": defs}, allow_unicode=True))
        confs[len(defs)] = str(conf)
    return _flowops(
        "from flowops.steps.tags import compute_tags, read_sources\nfrom flowops.tags.base import Window\n"
        "from flowops.definitions import Definitions\n"
        "from flowops.tags.definitions import load_library\n"
        f"sources = read_sources(ctx.lake, Window({MONTH!r}), Definitions.load('conf'))\nresult = {{}}\n"
        f"confs = {json.dumps(confs)}\n"
        "for _ in range(2):\n"
        "    for n, conf in confs.items():\n"
        "        library = load_library(conf)\n"
        "        t = time.perf_counter()\n"
        f"        compute_tags(sources, library, {MONTH!r}).write.format('noop').mode('overwrite').save()\n"
        "        result[n] = time.perf_counter() - t\n"
        "print(json.dumps({'compute': result}))", size_dir / "lake")


# --------------------------------------------------------------------------- report
def exponent(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of log(seconds) against log(lines): 1.0 is linear."""
    xs, ys = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def write_report(r: dict, out: Path) -> str:
    """The report of results `r`: written to OUT/report.md and between BENCHMARKS.md's markers; returned."""
    text = report(r)
    (out / "report.md").write_text(text)
    current = REPORT.read_text() if REPORT.exists() else ""
    if BEGIN in current and END in current:
        REPORT.write_text(embed(text, current))
    else:
        print(f"{REPORT.name} has no {BEGIN} ... {END} markers: it is left as it is; the report is in "
              f"{out / 'report.md'}", file=sys.stderr)
    return text


def embed(text: str, document: str) -> str:
    """`document` with what is between its markers replaced by `text`, each of its headings one level down."""
    head, rest = document.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    lowered = "\n".join(f"#{line}" if line.startswith("#") else line for line in text.rstrip("\n").splitlines())
    return f"{head}{BEGIN}\n{lowered}\n{END}{tail}"


def against_lines(against: dict) -> list[str]:
    """The report's comparison of the same month through flowops at `against['revision']` and now."""
    before, now = against["before"], against["now"]["ingest"]
    cores = now["cores"]
    return [
        f"## Against flowops {against['revision']} (before the speed work), same month, same run",
        "",
        f"{against['subscribers']:,} subscribers, {now['xdr_lines']:,} xDR lines, the whole `flowops ingest --month` "
        "(usage days, then the CRM, billing and order files):",
        "",
        "| flowops | seconds | rows/s per core | ratio |",
        "|---|---|---|---|",
        f"| {against['revision']} | {before['seconds']:.1f} | {before['lines'] / before['seconds'] / cores:,.0f} | 1x |",
        f"| this commit | {now['seconds']:.1f} | {now['lines'] / now['seconds'] / cores:,.0f} | "
        f"{before['seconds'] / now['seconds']:.1f}x faster |",
        f"| DuckDB baseline (usage only, with the handsets) | {against['now']['duckdb']['seconds']:.1f} | | flowops "
        f"usage ingest is {now['usage_seconds'] / against['now']['duckdb']['seconds']:.2f}x its time |",
        f"| DuckDB baseline (usage only, no handsets) | {against['now']['duckdb_no_handsets']['seconds']:.1f} | | "
        f"{now['usage_seconds'] / against['now']['duckdb_no_handsets']['seconds']:.2f}x |",
        "",
        "Where the usage ingest's time went, before and now (each step's seconds as the run logged them):",
        "",
        "| before: step | seconds | now: step | seconds |",
        "|---|---|---|---|",
        *[f"| {b[0] if b else ''} | {f'{b[1]:.1f}' if b else ''} | {n[0] if n else ''} | {f'{n[1]:.1f}' if n else ''} |"
          for b, n in zip_longest(before.get("steps", {}).items(), now["steps"].items())],
        f"| **total** | **{sum(before.get('steps', {}).values()):.1f}** | **total** | "
        f"**{sum(now['steps'].values()):.1f}** |",
        "",
    ]


def report(r: dict) -> str:
    ladder = r["ladder"]
    cores = ladder[0]["ingest"]["cores"]
    rows = []
    for s in ladder:
        ing, duck, floor = s["ingest"], s["duckdb"], s["floor"]
        lines, gz_mb = ing["xdr_lines"], floor["gz_bytes"] / 1e6
        rows.append(
            f"| {s['subscribers']:,} | {lines / 1e6:.2f} M | {gz_mb:,.0f} | {floor['seconds']:.1f} s | "
            f"{duck['seconds']:.1f} s ({s.get('duckdb_no_handsets', {}).get('seconds', float('nan')):.1f} s) | "
            f"{ing['usage_seconds']:.1f} s | {lines / ing['usage_seconds'] / cores:,.0f} | "
            f"{gz_mb / ing['usage_seconds'] / cores:.2f} | {ing['usage_seconds'] / duck['seconds']:.2f}x | "
            f"{ing['usage_seconds'] / floor['seconds']:.1f}x | {ing['peak_mb']['jvm']:,.0f} / {ing['peak_mb']['driver']:,.0f}"
            f" / {ing['peak_mb']['worker']:,.0f} | {s['tags']['tags_seconds']:.1f} s | "
            f"{s['tags']['segment_seconds']:.1f} s | {s['tags']['subscribers'] / s['tags']['tags_seconds']:,.0f} |")
    fit = {name: exponent([(s["ingest"]["xdr_lines"], get(s)) for s in ladder]) for name, get in (
        ("flowops ingest", lambda s: s["ingest"]["usage_seconds"]), ("DuckDB baseline", lambda s: s["duckdb"]["seconds"]),
        ("gzip floor", lambda s: s["floor"]["seconds"]), ("tags", lambda s: s["tags"]["tags_seconds"]),
        ("segment", lambda s: s["tags"]["segment_seconds"]))} if len(ladder) > 1 else {}
    big = ladder[-1]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{COMMAND}` (`python -m tests.benchmarks.run --sizes {r['args']['sizes']}`) on "
        f"{platform.node() or 'this machine'}: {os.cpu_count()} cores, {_memory_gb():.0f} GiB, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; the whole bench took {r['seconds'] / 60:.0f} min. "
        "Every ratio compares runs made in this same benchmark run, on the same files. Spark runs embedded "
        f"(`local[*]`, {cores} cores); each flowops step runs in a fresh process, as the CLI does.",
        "",
        "## Ingest, tags and segment: the ladder",
        "",
        "One generated month per size (default density, bad rate 1%). *flowops ingest* is `flowops ingest --month`'s "
        "usage run (every landed day as one batch: read, check, parse, dedupe, identify, pseudonymise, bronze, "
        "quarantine, silver rollups, reconciliation). The *floor* is `gzip -dc` of the same files, 2 processes. "
        "The *DuckDB* baseline does comparable work on the same files with 2 threads (whole-file gzip check, "
        "split, validate with reasons, drop replays, keyed hash of the msisdn, host suffix -> app, the handset of each "
        "subscriber-day from the TAC table or its user agent read by the same device data, bronze and silver as "
        "zstd Parquet; in brackets, the same without the handsets; see `tests/benchmarks/duckdb_ingest.py` for what "
        "it leaves out). Peak memory is "
        "resident set size, sampled every 0.5 s: the JVM (driver and executors in one, embedded), the Python "
        "driver, and the largest Python worker.",
        "",
        "| subscribers | xDR lines | raw gzip MB | gzip floor | DuckDB | flowops ingest | rows/s per core | "
        "MB/s per core | vs DuckDB | vs floor | peak MB JVM / driver / worker | tags | segment | subscribers/s tagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Time against lines, least-squares exponent of log(seconds) on log(lines) over the ladder (1.0 = linear):",
        "",
        "| step | exponent |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in fit.items()],
        "",
        *rerun_lines(ladder),
        *against_lines(r["against"]),
        *profile_lines(big),
        *density_lines(r["density"]),
        *identify_lines(r["identify"]),
        *tag_lines(r["tags"]),
        *generator_lines(ladder, r["density"]),
    ]
    return "\n".join(lines) + "\n"


def rerun_lines(ladder: list[dict]) -> list[str]:
    """Each step's month ingested a second time onto its lake (`bench_rerun`)."""
    steps = [s for s in ladder if "rerun" in s]
    if not steps:
        return []
    yes = {True: "yes", False: "**no**"}
    return [
        "A second `flowops ingest --month` of each month onto its own lake, as a rerun after a failure: every file "
        "reconciled again (lines in = accepted + quarantined + duplicates; the ingest fails otherwise), every "
        "record counted as accepted by the first run, no commit to bronze, the cells, the subscriber keys or the "
        "user agents, "
        "and each table the ingest writes (bronze, quarantine, both silver tables, the agents, the cells and the "
        "keys) holding what it held (row count and a hash of every column but `run_id`):",
        "",
        "| subscribers | files reconciled | all accepted before | no new commit | tables unchanged | seconds |",
        "|---|---|---|---|---|---|",
        *[f"| {s['subscribers']:,} | {s['rerun']['files']:,}: {yes[s['rerun']['balanced']]} | "
          f"{yes[s['rerun']['all_accepted_before']]} | {yes[s['rerun']['no_commit']]} | "
          f"{yes[s['rerun']['same_content']]}{' (' + ', '.join(s['rerun']['changed']) + ')' if s['rerun']['changed'] else ''}"
          f" | {s['rerun']['seconds']:.1f} |" for s in steps],
        "",
    ]


def _memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def profile_lines(s: dict) -> list[str]:
    ing = s["ingest"]
    total = sum(ing["steps"].values())
    return [
        f"## Where an ingest's time goes ({s['subscribers']:,} subscribers, {ing['xdr_lines'] / 1e6:.1f} M lines)",
        "",
        "Per step (`ops/runs` keeps each step's milliseconds as `step_ms.<step>`):",
        "",
        "| step | seconds | share |",
        "|---|---|---|",
        *[f"| {name} | {sec:.1f} | {100 * sec / total:.0f}% |" for name, sec in ing["steps"].items()],
        "",
        "CPU seconds by process over the whole child (JVM = Spark's driver and executors; workers = the Python "
        "processes that read, parse, identify and pseudonymise): " + ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(ing["cpu_s"].items())) + f", in {ing['wall_s']:.0f} s of wall time.",
        "",
        "Slowest Spark jobs (from the run's event log; re-create with `spark.eventLog.enabled`):",
        "",
        "| job (call site) | tasks | seconds |",
        "|---|---|---|",
        *[f"| {j['site'][:70] or '(write / internal)'} | {j['tasks']} | {j['seconds']:.1f} |" for j in s["jobs"]],
        "",
    ]


def density_lines(density: list[dict]) -> list[str]:
    out = ["## Silver against raw at realistic density", "",
           "A DPI probe writes a record per flow: hundreds per subscriber-day. `flowops generate --records-per-day N` "
           "splits each session into flows (same app, its hosts and paths; the same planted bytes). Same columns "
           "and grain of silver at every density:", "",
           "| records per subscriber-day | subscribers | xDR lines | raw gzip | bronze | silver usage_daily | "
           "silver / raw | ingest |",
           "|---|---|---|---|---|---|---|---|"]
    for d in density:
        raw, silver = d["floor"]["gz_bytes"], d["sizes"]["silver/usage_daily"]
        out.append(f"| {d['records_per_day']} | {d['subscribers']:,} | {d['ingest']['xdr_lines']:,} | "
                   f"{raw / 1e6:,.1f} MB | {d['sizes']['bronze/usage_events'] / 1e6:,.1f} MB | {silver / 1e6:,.2f} MB | "
                   f"1 : {raw / max(silver, 1):,.0f} | {d['ingest']['usage_seconds']:.1f} s |")
    return [*out, ""]


def identify_lines(ident: dict) -> list[str]:
    return ["## App identification, 10 vs 10,000 rules", "",
            f"`identify_apps` alone on {ident['records']:,} bronze records (second of two runs each):", "",
            "| rules | time | ratio |", "|---|---|---|",
            f"| 10 | {ident['seconds_10']:.1f} s | 1x |",
            f"| 10,000 | {ident['seconds_10000']:.1f} s | {ident['seconds_10000'] / ident['seconds_10']:.2f}x |", ""]


def tag_lines(tags: dict) -> list[str]:
    compute = {int(n): s for n, s in tags["compute"].items()}
    base = compute[min(compute)]
    return ["## Tag computation against the number of tags", "",
            "Same sources, written to Spark's `noop` sink; second of two runs each:", "",
            "| tags | time | ratio |", "|---|---|---|",
            *[f"| {n} | {s:.1f} s | {s / base:.2f}x |" for n, s in sorted(compute.items())], "",
            "Every silver source is scanned once whatever the number of tags (tests/integration/test_segments.py "
            "counts the scans in the physical plan); tags are column expressions over per-subscriber base "
            "aggregates, so doubling the library adds little once every base aggregate is read.", ""]


def generator_lines(ladder: list[dict], density: list[dict]) -> list[str]:
    out = ["## Generator (`flowops generate`)", "", "| subscribers | records per subscriber-day | lines | seconds | "
           "lines/s | vs flowops ingest |", "|---|---|---|---|---|---|"]
    for s in [*ladder, *density]:
        gen = s["generate"]
        out.append(f"| {s['subscribers']:,} | {s['records_per_day'] or 'default (~25)'} | {gen['lines']:,} | "
                   f"{gen['seconds']:.1f} | {gen['lines'] / gen['seconds']:,.0f} | "
                   f"{s['ingest']['usage_seconds'] / gen['seconds']:.0f}x faster than ingesting it |")
    return [*out, ""]


if __name__ == "__main__":
    sys.exit(main())
