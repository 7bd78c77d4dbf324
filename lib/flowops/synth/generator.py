"""``generate()``: the synthetic landing data with planted truth, written under one directory.

Order of work: validate, claim the output directory, draw the population, plan every month
(writing CRM, bills, orders and month plans for the workers), then generate the days in parallel
and fold their results, in day order, into the usage truth, dirty counts and manifest.
"""

from __future__ import annotations

import calendar
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowops.synth import behaviour as B
from flowops.synth.billing import compute_bill
from flowops.synth.catalog import load_apps, load_products
from flowops.synth.context import save_arrays
from flowops.synth.day import N_CATS, DayResult, DayTask, run_day
from flowops.synth.dirty import KINDS
from flowops.synth.monthly import write_billing, write_crm, write_orders
from flowops.synth.planning import Planner
from flowops.synth.population import Population, build_population
from flowops.synth.truth import (
    archetype_rows,
    usage_rows,
    write_csv,
    write_handsets,
    write_json,
    write_propensities,
)

GENERATOR = "flowops.synth"
VERSION = "1.0.0"
MAX_BAD_RATE = 0.5
MAX_RECORDS_PER_DAY = 5000
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class GenerateResult:
    """What a run wrote."""

    out: Path
    subscribers: int            # distinct subscribers over the run (first month + later joiners)
    xdr_lines: int              # lines written to xDR files (clean, bad and duplicates)
    xdr_files: int
    files: int                  # every file written under out
    bytes: int                  # their total size
    dirty: dict[str, int]       # planted count per dirty kind
    elapsed_s: float

    def summary(self) -> str:
        """A few printable lines: what was written, where, how fast."""
        rate = self.xdr_lines / self.elapsed_s if self.elapsed_s else 0.0
        dirty = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.dirty.items()) if n)
        return "\n".join([
            f"generated {self.xdr_lines:,} xDR lines in {self.xdr_files:,} files for {self.subscribers:,} "
            f"subscribers in {self.elapsed_s:.1f}s ({rate:,.0f} lines/s), {self.bytes / 1e6:,.1f} MB under {self.out}",
            f"dirty and variant lines planted: {dirty or 'none'}",
            f"planted truth: {self.out / '_truth'}",
        ])


def parse_month(value: str) -> tuple[int, int]:
    """``YYYY-MM`` to (year, month), with a clear error."""
    m = _MONTH.match(value) if isinstance(value, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1900:
        raise ValueError(f"start_month must be YYYY-MM, got {value!r}")
    return int(m.group(1)), int(m.group(2))


def _validate(subscribers: int, start_month: str, months: int, seed: int, bad_rate: float,
              workers: int | None, records_per_day: float | None = None) -> tuple[int, int]:
    ym = parse_month(start_month)
    for name, v in (("subscribers", subscribers), ("months", months)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(bad_rate, (int, float)) or not 0.0 <= bad_rate <= MAX_BAD_RATE:
        raise ValueError(f"bad_rate must be between 0 and {MAX_BAD_RATE}, got {bad_rate!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
    if records_per_day is not None and (isinstance(records_per_day, bool)
                                        or not isinstance(records_per_day, (int, float))
                                        or not 2 <= records_per_day <= MAX_RECORDS_PER_DAY):
        raise ValueError(f"records_per_day must be between 2 and {MAX_RECORDS_PER_DAY}, "
                         f"got {records_per_day!r}")
    return ym


def _claim(out: Path) -> None:
    """Refuse a non-empty directory unless it is an earlier generator output; then empty it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        manifest = out / "_truth" / "manifest.json"
        if not _is_generator_manifest(manifest):
            raise ValueError(f"out {str(out)!r} is not empty and holds no generator output "
                             f"(no {manifest.relative_to(out)}); refusing to overwrite it")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _is_generator_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _population(subscribers: int, months: int, seed: int, bounds: list[tuple[int, int]]) -> Population:
    return build_population(np.random.default_rng(np.random.SeedSequence([seed, 0])), subscribers, months,
                            bounds[0][0], bounds, B.app_weights(load_apps())[:6])


def planner_of(raw: str | Path) -> Planner:
    """The planner `generate` started from for the world in RAW (its manifest's parameters): the subscribers and
    the attributes the planted outcomes were drawn from (validation only; the months are not planned again)."""
    params = json.loads((Path(raw) / "_truth" / "manifest.json").read_text(encoding="utf-8"))["parameters"]
    year, month = parse_month(params["start_month"])
    names, bounds = month_bounds(year, month, params["months"])
    pop = _population(params["subscribers"], params["months"], params["seed"], bounds)
    return Planner(pop, params["seed"], bounds, names)


def month_bounds(year: int, month: int, months: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Names and (first, last) date ordinals of the run's months."""
    names, bounds = [], []
    for k in range(months):
        y, m = year + (month - 1 + k) // 12, (month - 1 + k) % 12 + 1
        first = dt.date(y, m, 1).toordinal()
        names.append(f"{y:04d}-{m:02d}")
        bounds.append((first, first + calendar.monthrange(y, m)[1] - 1))
    return names, bounds


def generate(out: str | Path, subscribers: int, start_month: str, months: int, seed: int,
             bad_rate: float = 0.0, workers: int | None = None,
             records_per_day: float | None = None) -> GenerateResult:
    """Write landing data (usage, crm, billing, orders) and planted truth under ``out``.

    Args:
        out: output directory; must be empty, missing, or an earlier output of this generator.
        subscribers: subscribers in the first month (later months add new activations).
        start_month: first month, ``YYYY-MM``.
        months: number of months.
        seed: random seed; the same arguments give byte-identical files.
        bad_rate: fraction of xDR lines that are bad (0 to 0.5); see ``dirty.py``.
        workers: processes for the days (default: CPU count).
        records_per_day: the mean number of xDR records per active subscriber-day (default: about 25, from a
            model of session counts by volume; real smartphones produce hundreds). The planted usage (bytes
            per subscriber-day) is the same whatever the density; only how finely it is split changes.

    Raises:
        ValueError: on a bad argument or an output directory it must not overwrite.
    """
    t0 = time.perf_counter()
    year, month = _validate(subscribers, start_month, months, seed, bad_rate, workers, records_per_day)
    out = Path(out)
    _claim(out)
    truth = out / "_truth"
    params = dict(subscribers=subscribers, start_month=start_month, months=months, seed=seed,
                  bad_rate=bad_rate, records_per_day=records_per_day)
    write_json(truth / "manifest.json", dict(generator=GENERATOR, version=VERSION,
                                             status="incomplete", parameters=params))
    names, bounds = month_bounds(year, month, months)
    products = load_products()
    pop = _population(subscribers, months, seed, bounds)
    csv_lines: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="flowops-synth-") as work:
        work_dir = Path(work)
        save_arrays(work_dir / "population.npz", msisdn=pop.msisdn, imsi=pop.imsi,
                    imei1=pop.imei1, imei2=pop.imei2, svn=pop.svn, dev=pop.dev, dev2=pop.dev2,
                    change_ord=pop.change_ord, identity=pop.identity, site_home=pop.site_home,
                    site_work=pop.site_work, fav_app=pop.fav_app, activation=pop.activation)
        planner = Planner(pop, seed, bounds, names)
        month_subs = []
        for m in range(months):
            plan = planner.plan(m)
            bill = compute_bill(plan, products, pop)
            planner.record_bill(plan, bill.total)
            csv_lines[f"crm/month={plan.month}/subscribers.csv"] = write_crm(out, plan, planner,
                                                                             products)
            csv_lines[f"billing/month={plan.month}/billing.csv"] = write_billing(out, plan, bill,
                                                                                 planner)
            csv_lines[f"orders/month={plan.month}/orders.csv"] = write_orders(out, plan, planner,
                                                                              products)
            write_csv(archetype_rows(plan, pop), truth / "archetypes.csv", append=m > 0)
            save_arrays(work_dir / f"month_{m:03d}.npz", subs=plan.subs, target_mb=plan.target_mb,
                        idle_share=plan.idle_share, shares=plan.shares, arch=plan.arch,
                        end_ord=plan.end_ord, bounds=np.array(bounds[m]))
            month_subs.append(plan.subs)
            del plan, bill
        write_handsets(truth / "handsets.csv", pop)
        write_propensities(truth, planner, seed)
        del planner

        tasks = [DayTask(out=str(out), work_dir=str(work_dir), seed=seed, day_ord=d,
                         run_index=d - bounds[0][0], run_first_ord=bounds[0][0],
                         bad_rate=float(bad_rate), month_firsts=tuple(b[0] for b in bounds),
                         records_per_day=records_per_day)
                 for d in range(bounds[0][0], bounds[-1][1] + 1)]
        folder = _Folder(out, names, bounds, month_subs, pop)
        for result in _run(tasks, workers or os.cpu_count() or 1):
            folder.add(result)
        folder.finish()

    dirty = {k: folder.dirty[k] for k in KINDS}
    files = sorted(folder.files, key=lambda f: f["file"])
    totals = dict(
        subscribers=pop.n, xdr_lines=folder.lines, xdr_files=len(files),
        xdr_bytes=folder.bytes,
        clean_lines=sum(f["clean"] for f in files), dirty_lines=sum(f["dirty"] for f in files),
        duplicate_lines=sum(f["duplicate"] for f in files))
    write_json(truth / "dirty.json", dict(
        bad_rate=bad_rate, kinds=dirty,
        files={f["file"]: f["kinds"] for f in files if f["kinds"]},
        truncated_files=[dict(file=f["file"], lines_planned=f["lines_planned"],
                              lines_readable=f["lines_readable"]) for f in files
                         if f.get("truncated")],
        empty_files=[dict(file=f["file"], form=f["empty"]) for f in files if f.get("empty")]))
    manifest = dict(
        generator=GENERATOR, version=VERSION, status="complete", parameters=params,
        totals=totals, csv_lines=csv_lines,
        xdr_files={f["file"]: {k: f[k] for k in ("lines", "clean", "dirty", "duplicate", "bytes")}
                   for f in files})
    write_json(truth / "manifest.json", manifest)
    n_files, n_bytes = 0, 0
    for p in out.rglob("*"):
        if p.is_file():
            n_files += 1
            n_bytes += p.stat().st_size
    return GenerateResult(out=out, subscribers=pop.n, xdr_lines=folder.lines,
                          xdr_files=len(files), files=n_files, bytes=n_bytes, dirty=dirty,
                          elapsed_s=round(time.perf_counter() - t0, 3))


def _run(tasks: list[DayTask], workers: int):
    """Day results in day order; inline for one worker, else a spawned process pool."""
    if workers == 1 or len(tasks) == 1:
        for t in tasks:
            yield run_day(t)
        return
    # spawn, not fork: the parent has pyarrow threads, which fork does not copy safely.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        yield from pool.map(run_day, tasks, chunksize=1)


class _Folder:
    """Folds day results into monthly usage truth, written as soon as a month can get no more."""

    def __init__(self, out: Path, names: list[str], bounds: list[tuple[int, int]],
                 month_subs: list[np.ndarray], pop) -> None:
        self.path = out / "_truth" / "usage_monthly.csv"
        self.names, self.bounds, self.subs, self.pop = names, bounds, month_subs, pop
        self.firsts = np.array([b[0] for b in bounds])
        self.acc: dict[int, np.ndarray] = {}
        self.active: dict[int, np.ndarray] = {}
        self.next_to_write = 0
        self.dirty = {k: 0 for k in KINDS}
        self.files: list[dict] = []
        self.lines = 0
        self.bytes = 0

    def _month(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        if m not in self.acc:
            days = self.bounds[m][1] - self.bounds[m][0] + 1
            self.acc[m] = np.zeros((self.subs[m].size, 3 + N_CATS), dtype=np.int64)
            self.active[m] = np.zeros((self.subs[m].size, days), dtype=bool)
        return self.acc[m], self.active[m]

    def add(self, r: DayResult) -> None:
        for k, v in r.dirty.items():
            self.dirty[k] += v
        self.files.extend(r.files)
        self.lines += r.lines
        self.bytes += r.bytes
        dates = r.day_ord - r.usage_lag.astype(np.int64)
        for d in np.unique(dates):
            sel = dates == d
            m = int(np.searchsorted(self.firsts, d, side="right")) - 1
            acc, active = self._month(m)
            pos = np.searchsorted(self.subs[m], r.usage_sub[sel])
            if np.any(self.subs[m][np.minimum(pos, self.subs[m].size - 1)] != r.usage_sub[sel]):
                raise RuntimeError(f"usage for a subscriber outside month {self.names[m]}")
            acc[pos] += r.usage[sel]          # (lag, subscriber) keys are unique per day
            active[pos, int(d) - self.bounds[m][0]] = True
        while (self.next_to_write < len(self.bounds)
               and self.bounds[self.next_to_write][1] + 2 <= r.day_ord):
            self._write(self.next_to_write)

    def finish(self) -> None:
        while self.next_to_write < len(self.bounds):
            self._write(self.next_to_write)

    def _write(self, m: int) -> None:
        acc, active = self._month(m)
        write_csv(usage_rows(self.names[m], self.subs[m], self.pop, acc, active), self.path,
                  append=m > 0)
        del self.acc[m], self.active[m]
        self.next_to_write += 1
