"""Two lakes compared table by table through an independent reader (delta-rs), order-insensitively, and their
channel export folders file by file.

What legitimately differs between two runs of the same month, and is therefore left out (each named here, nothing
else is):
- `run_id` in every table, the export manifests and ops/runs: each job run draws a fresh id;
- in ops/runs, `started_at`, `ended_at`, `seconds`, the `step_ms.*` counts and the params ending in `seconds`
  (target's `solver_seconds`): timings; `spark_master`: the master the run used (`spark://127.0.0.1:P` against
  `local[2]`);
- in ops/quality_results, `checked_at`: when a quality gate ran;
- `written_at` in the export manifests: the wall-clock time of the export.
Floating-point values are compared to 9 significant digits: a sum of doubles depends on the order its partial sums
are combined in, and that order follows how the rows are split into tasks, which differs between 2 one-core
executors and an embedded `local[2]`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

EVERY_TABLE = frozenset({"run_id"})
PER_TABLE = {"ops/runs": frozenset({"started_at", "ended_at", "seconds", "spark_master"}),
             "ops/quality_results": frozenset({"checked_at"})}
TIMINGS = {"ops/runs": (("step_ms.",), ("seconds",))}   # map keys that are timings: (prefixes, suffixes)
MANIFEST_STAMPS = frozenset({"run_id", "written_at"})
SIGNIFICANT = 9


@dataclass
class Comparison:
    tables: dict[str, int] = field(default_factory=dict)      # table -> rows, for the tables that are equal
    files: int = 0                                            # export files that are equal
    problems: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"  {name:<30}{rows:>9,} rows  equal" for name, rows in sorted(self.tables.items())]
        lines.append(f"  exports: {self.files} files equal")
        lines += [f"  DIFFERS: {p}" for p in self.problems]
        return "\n".join(lines)


def delta_tables(lake: Path) -> list[str]:
    """`layer/name` of every Delta table under a lake (a folder with a _delta_log), the lake's private folders
    (`_mlflow`, `_scratch`, `_quality`, `_logs`: a name starting with `_`) aside."""
    return sorted(log.parent.relative_to(lake).as_posix() for log in lake.glob("*/*/_delta_log")
                  if not log.parent.parent.name.startswith("_"))


def compare_lakes(got: Path, want: Path) -> Comparison:
    """Every table and export file of lake `got` against lake `want`."""
    result = Comparison()
    names = delta_tables(want)
    if (extra := sorted(set(delta_tables(got)) - set(names))) or not names:
        result.problems.append(f"tables only in {got}: {extra}" if extra else f"no tables in {want}")
    for name in names:
        if not (got / name / "_delta_log").is_dir():
            result.problems.append(f"{name}: missing from {got}")
            continue
        problem, rows = compare_table(DeltaTable(str(got / name)), DeltaTable(str(want / name)), name)
        if problem:
            result.problems.append(f"{name}: {problem}")
        else:
            result.tables[name] = rows
    result.files = _compare_exports(got / "exports", want / "exports", result.problems)
    return result


def compare_table(got: DeltaTable, want: DeltaTable, name: str) -> tuple[str | None, int]:
    """(what differs or None, rows): same columns, same multiset of rows once the excluded columns are dropped."""
    left, right = got.to_pyarrow_table(), want.to_pyarrow_table()
    if left.schema != right.schema:
        return f"schemas differ:\n{left.schema}\nagainst\n{right.schema}", 0
    dropped = EVERY_TABLE | PER_TABLE.get(name, frozenset())
    keep = [c for c in right.column_names if c not in dropped]
    timings = TIMINGS.get(name, ((), ()))
    rows_got, rows_want = canonical_rows(left.select(keep), timings), canonical_rows(right.select(keep), timings)
    if rows_got != rows_want:
        only_got, only_want = rows_got - rows_want, rows_want - rows_got
        sample = lambda rows: "\n      ".join(r[:400] for r in list(rows.elements())[:3])  # noqa: E731
        return (f"{left.num_rows:,} rows against {right.num_rows:,}; {sum(only_got.values())} only in the cluster's, "
                f"{sum(only_want.values())} only in the embedded run's, e.g.\n      cluster:  {sample(only_got)}"
                f"\n      embedded: {sample(only_want)}"), 0
    return None, right.num_rows


def canonical_rows(table: pa.Table, timings: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())) -> Counter:
    """Each row as canonical JSON (maps as sorted pairs, floats to SIGNIFICANT digits), without the map entries whose
    keys start or end as `timings` say."""
    columns = [(f.name, f.type, table.column(f.name).to_pylist()) for f in table.schema]
    return Counter(json.dumps({name: _canonical(values[i], kind, timings) for name, kind, values in columns},
                              sort_keys=True, default=str) for i in range(table.num_rows))


def _canonical(value: object, kind: pa.DataType, timings: tuple[tuple[str, ...], tuple[str, ...]]) -> object:
    if value is None:
        return None
    if pa.types.is_map(kind):
        prefixes, suffixes = timings
        pairs = [(k, _canonical(v, kind.item_type, timings)) for k, v in value
                 if not (str(k).startswith(prefixes) or str(k).endswith(suffixes))]
        return sorted(pairs, key=lambda kv: str(kv[0]))
    if pa.types.is_struct(kind):
        return {f.name: _canonical(value[f.name], f.type, timings) for f in kind}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [_canonical(v, kind.value_type, timings) for v in value]
    if pa.types.is_floating(kind):
        return float(f"{value:.{SIGNIFICANT}g}")
    return value


def _compare_exports(got: Path, want: Path, problems: list[str]) -> int:
    """Every file of the export folders: CSVs byte for byte, manifests without their run id and time stamp."""
    want_files = sorted(p.relative_to(want).as_posix() for p in want.rglob("*") if p.is_file())
    got_files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) if got.is_dir() else []
    if got_files != want_files:
        problems.append(f"export files differ: only in the cluster's {sorted(set(got_files) - set(want_files))}, "
                        f"only in the embedded run's {sorted(set(want_files) - set(got_files))}")
        return 0
    equal = 0
    for rel in want_files:
        a, b = (got / rel).read_bytes(), (want / rel).read_bytes()
        if rel.endswith("manifest.json"):
            a, b = _unstamped(json.loads(a)), _unstamped(json.loads(b))
        if a == b:
            equal += 1
        else:
            problems.append(f"exports/{rel} differs")
    return equal


def _unstamped(value: object) -> object:
    if isinstance(value, dict):
        return {k: _unstamped(v) for k, v in value.items() if k not in MANIFEST_STAMPS}
    if isinstance(value, list):
        return [_unstamped(v) for v in value]
    return value
