"""One day's work in a worker process: records, damage, hour files, and the day's truth.

A day is independent of every other (its random stream is seeded from (seed, date)), so days run
in any order on any number of processes and the output is the same.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flowops.synth import behaviour as B
from flowops.synth.catalog import UNKNOWN_CATEGORY, load_apps
from flowops.synth.context import get_context
from flowops.synth.dirty import BAD_LINE_KINDS, DUPLICATE, KINDS, DirtyPlan, bad_lines, plan_dirty
from flowops.synth.render import DayRenderer
from flowops.synth.strings import concat_bytes
from flowops.synth.xdr import DayRecords, build_day

LINES_PER_FILE = 50_000   # probes rotate their output file after this many lines
BLOCK_LINES = 250_000
GZIP_LEVEL = 1            # speed over size: the files are transient landing data
N_CATS = UNKNOWN_CATEGORY + 1
CLEAN = -1


@dataclass(frozen=True)
class DayTask:
    """Arguments of one day's job (picklable)."""

    out: str
    work_dir: str
    seed: int
    day_ord: int
    run_index: int
    run_first_ord: int
    bad_rate: float
    month_firsts: tuple[int, ...]
    records_per_day: float | None = None


@dataclass
class DayResult:
    """What the main process needs back: file stats, dirty counts and usage aggregates."""

    day_ord: int
    files: list[dict] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    bytes: int = 0
    # Usage of counted clean records, keyed by (days before day_ord, population row).
    usage_lag: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    usage_sub: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    usage: np.ndarray = field(default_factory=lambda: np.zeros((0, 3 + N_CATS), np.int64))


@functools.cache
def _app_cdfs() -> tuple[np.ndarray, np.ndarray]:
    return B.app_cdfs(load_apps())


def run_day(task: DayTask) -> DayResult:
    """Generate, damage and write one day; return its stats and truth."""
    ctx = get_context(task.work_dir, task.seed, task.month_firsts)
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, 1, task.day_ord]))
    busy, idle = _app_cdfs()
    rec = build_day(ctx, task.day_ord, rng, busy, idle, task.records_per_day)
    plan = plan_dirty(rec, ctx, rng, task.bad_rate, task.day_ord, task.run_index,
                      task.run_first_ord)
    renderer = DayRenderer(ctx, task.day_ord)
    day = dt.date.fromordinal(task.day_ord)
    day_dir = Path(task.out) / "usage" / f"dt={day.isoformat()}"
    result = DayResult(day_ord=task.day_ord, dirty={k: 0 for k in KINDS})
    lost = np.zeros(len(rec), dtype=bool)
    bad_counter = len(rec) + np.arange(plan.bad_rows.size)
    for hours in _blocks(rec, plan):
        _write_block(task, hours, day, day_dir, rec, plan, renderer, bad_counter, lost, result)
    counted = ~lost
    for i, name in enumerate(BAD_LINE_KINDS):
        result.dirty[name] = int((plan.bad_kind == i).sum())
    result.dirty["duplicate"] = int(plan.dup_rows.size)
    result.dirty["late_arrival"] = int((rec.lag > 0).sum())
    result.dirty["msisdn_prefixed"] = int((rec.msisdn_form > 0).sum())
    _aggregate(rec, counted, ctx.T, result)
    return result


def _blocks(rec: DayRecords, plan: DirtyPlan) -> list[range]:
    """Runs of consecutive hours holding about BLOCK_LINES lines: few large array operations,
    while memory stays bounded by the block rather than the day."""
    per_hour = np.bincount(rec.hour, minlength=24)
    if plan.bad_rows.size:
        per_hour = per_hour + np.bincount(rec.hour[plan.bad_rows], minlength=24)
    out, first, acc = [], 0, 0
    for h in range(24):
        acc += int(per_hour[h])
        if acc >= BLOCK_LINES or h == 23:
            out.append(range(first, h + 1))
            first, acc = h + 1, 0
    return out


def _write_block(task: DayTask, hours: range, day: dt.date, day_dir: Path, rec: DayRecords,
                 plan: DirtyPlan, renderer: DayRenderer, bad_counter: np.ndarray,
                 lost: np.ndarray, result: DayResult) -> None:
    lo, hi = hours.start, hours.stop
    clean = np.flatnonzero((rec.hour >= lo) & (rec.hour < hi))
    dup = np.flatnonzero((plan.dup_hour >= lo) & (plan.dup_hour < hi))
    bad_hour = rec.hour[plan.bad_rows] if plan.bad_rows.size else np.zeros(0, np.int8)
    bad = np.flatnonzero((bad_hour >= lo) & (bad_hour < hi))
    parts: list[pa.BinaryArray] = []
    kinds, keys, rows, hrs = [], [], [], []
    if clean.size:
        parts.append(renderer.lines(rec, clean, clean))
        kinds.append(np.full(clean.size, CLEAN))
        keys.append(rec.key[clean])
        rows.append(clean)
        hrs.append(rec.hour[clean])
    if dup.size:
        src = plan.dup_rows[dup]
        parts.append(renderer.lines(rec, src, src))
        kinds.append(np.full(dup.size, DUPLICATE))
        keys.append(plan.dup_key[dup])
        rows.append(np.full(dup.size, -1))
        hrs.append(plan.dup_hour[dup])
    if bad.size:
        parts.append(bad_lines(renderer, rec, plan.bad_rows[bad], plan.bad_kind[bad],
                               plan.bad_variant[bad], bad_counter[bad]))
        kinds.append(plan.bad_kind[bad].astype(np.int64))
        keys.append(rec.key[plan.bad_rows[bad]] + 0.25)
        rows.append(np.full(bad.size, -1))
        hrs.append(bad_hour[bad])
    if parts:
        kind, key = np.concatenate(kinds), np.concatenate(keys)
        row, hour = np.concatenate(rows), np.concatenate(hrs).astype(np.int64)
        order = np.lexsort((np.arange(kind.size), key, hour))
        lines = pa.concat_arrays(parts).take(pa.array(order))
        kind, row, hour = kind[order], row[order], hour[order]
        edges = np.searchsorted(hour, np.arange(lo, hi + 1))
    for h in hours:
        stem = f"xdr_{day.strftime('%Y%m%d')}{h:02d}"
        hour_dir = day_dir / f"hour={h:02d}"
        n_files = 0
        if parts and edges[h - lo + 1] > edges[h - lo]:
            first, last = int(edges[h - lo]), int(edges[h - lo + 1])
            n_files = -(-(last - first) // LINES_PER_FILE)
            for f in range(n_files):
                a = first + f * LINES_PER_FILE
                b = min(a + LINES_PER_FILE, last)
                _write_file(task, hour_dir / f"{stem}_{f}.txt.gz", lines.slice(a, b - a),
                            kind[a:b], row[a:b], rec, h == plan.trunc_hour and f == 0, lost,
                            result)
        for k, (_, form) in enumerate(e for e in plan.empty_files if e[0] == h):
            path = hour_dir / f"{stem}_{n_files + k}.txt.gz"
            blob = b"" if form == 0 else gzip.compress(b"", compresslevel=GZIP_LEVEL, mtime=0)
            _put(path, blob)
            result.dirty["empty_file"] += 1
            result.files.append(dict(
                file=_rel(task, path), lines=0, clean=0, dirty=0, duplicate=0, bytes=len(blob),
                empty="zero_bytes" if form == 0 else "empty_gzip", kinds={"empty_file": 1}))
            result.bytes += len(blob)


def _write_file(task: DayTask, path: Path, lines: pa.BinaryArray, kind: np.ndarray,
                row: np.ndarray, rec: DayRecords, truncated: bool, lost: np.ndarray,
                result: DayResult) -> None:
    data = concat_bytes(lines)
    stats = _counts(kind, rec, row)
    blob = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if truncated:
        blob, readable = _truncate(blob, task, int(rec.hour[row[0]]) if row.size else 0)
        lost[row[row >= 0]] = True
        stats.update(truncated=True, lines_planned=int(kind.size), lines_readable=readable)
        result.dirty["truncated_gzip"] += 1
        stats["kinds"]["truncated_gzip"] = 1
    _put(path, blob)
    stats.update(file=_rel(task, path), bytes=len(blob))
    result.files.append(stats)
    result.lines += int(kind.size)
    result.bytes += len(blob)


def _counts(kind: np.ndarray, rec: DayRecords, row: np.ndarray) -> dict:
    kinds: dict[str, int] = {}
    for i, name in enumerate(BAD_LINE_KINDS):
        c = int((kind == i).sum())
        if c:
            kinds[name] = c
    c = int((kind == DUPLICATE).sum())
    if c:
        kinds["duplicate"] = c
    clean_rows = row[kind == CLEAN]
    for name, c in (("late_arrival", int((rec.lag[clean_rows] > 0).sum())),
                    ("msisdn_prefixed", int((rec.msisdn_form[clean_rows] > 0).sum()))):
        if c:
            kinds[name] = c
    return dict(lines=int(kind.size), clean=int(clean_rows.size),
                dirty=int(((kind >= 0) & (kind != DUPLICATE)).sum()),
                duplicate=int((kind == DUPLICATE).sum()), kinds=kinds)


def _truncate(blob: bytes, task: DayTask, hour: int) -> tuple[bytes, int]:
    """Cut a gzip file at 35-85% of its length; return it and how many lines stay readable."""
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, 5, task.day_ord, hour]))
    cut = max(20, int(len(blob) * (0.35 + 0.5 * rng.random())))
    cut = min(cut, len(blob) - 9)   # always lose at least the gzip trailer
    part = blob[:cut]
    try:
        text = zlib.decompressobj(wbits=31).decompress(part)
    except zlib.error:
        text = b""
    return part, text.count(b"\n")


def _put(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


def _rel(task: DayTask, path: Path) -> str:
    return path.relative_to(task.out).as_posix()


def _aggregate(rec: DayRecords, counted: np.ndarray, T: int, result: DayResult) -> None:
    """Sum counted records by (lag, subscriber): bytes, idle bytes, records, bytes per category."""
    idx = np.flatnonzero(counted)
    if idx.size == 0:
        return
    key = rec.lag[idx].astype(np.int64) * T + rec.sub[idx]
    present = np.flatnonzero(np.bincount(key, minlength=3 * T))   # lag is 0, 1 or 2
    slot = np.full(3 * T, -1, dtype=np.int64)
    slot[present] = np.arange(present.size)
    uniq, inv = present, slot[key]
    size = (rec.ul[idx] + rec.dl[idx]).astype(np.int64)
    k = uniq.size
    out = np.zeros((k, 3 + N_CATS), dtype=np.int64)
    out[:, 0] = np.bincount(inv, weights=size, minlength=k)
    out[:, 1] = np.bincount(inv, weights=np.where(rec.idle[idx], size, 0), minlength=k)
    out[:, 2] = np.bincount(inv, minlength=k)
    cat = np.bincount(inv * N_CATS + rec.cat[idx], weights=size, minlength=k * N_CATS)
    out[:, 3:] = cat.reshape(k, N_CATS)
    result.usage_lag = (uniq // T).astype(np.int8)
    result.usage_sub = (uniq % T).astype(np.int32)
    result.usage = out
