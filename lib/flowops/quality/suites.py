"""conf/expectations/*.yml: each table's expectations as data, checked before anything runs, built into GX suites.

A file holds `tables: {<layer>/<table>: [<check>, ...]}`; a check is

    - expectation: expect_column_values_to_be_unique    # any GX 1.x expectation, snake_case
      kwargs: {column: sub_id}                          # its arguments, as GX names them
      severity: critical                                # critical stops the run; warn is recorded, the run goes on

plus two kinds GX has no built-in for, which the gate turns into GX expectations with what it measures in Spark:

    - expectation: row_count_vs_previous                # -> expect_table_row_count_to_be_between, bounds from
      kwargs: {min_ratio: 0.5, max_ratio: 2.0}          #    the previous partition's row count times the ratios
    - expectation: share_of_values                      # -> expect_column_mean_to_be_between on an indicator
      kwargs: {column: app_id, value_set: [unknown], max_share: 0.3}   #  column (1 in the set, 0 otherwise)

`check_expectations` names the file and the key of each problem (unknown table, expectation or column; an argument
GX refuses when it builds the expectation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowops.config import StrictModel, config_files, describe_errors, load_yaml, validate
from flowops.errors import ConfigError
from flowops.lake.tables import REGISTRY, SUBSCRIBER_TAGS
from flowops.quality.gx import expectation_class, expectation_names

FOLDER = "expectations"
ROW_COUNT_VS_PREVIOUS = "row_count_vs_previous"
SHARE_OF_VALUES = "share_of_values"
Severity = Literal["critical", "warn"]

# Frames the gates check that are not lake tables: what a step measured about what it wrote, one row per unit.
RECONCILIATION = "bronze/reconciliation"
EXPORT_CONTACTS = "exports/contacts"
CHECKED_FRAMES: dict[str, tuple[str, ...]] = {
    # one row per landed file of an ingest run: lines in = accepted + quarantined + duplicates
    RECONCILIATION: ("source_file", "status", "lines_in", "accepted", "quarantined", "duplicates", "unbalanced",
                     "quarantine_rate"),
    # one row per export row about to be written, with the contact rules it breaks as flags
    EXPORT_CONTACTS: ("month", "wave", "sub_id", "msisdn", "scenario", "channel", "opted_out", "control", "immune",
                      "churned"),
}
COLUMN_ARGUMENTS = ("column", "column_A", "column_B")
COLUMN_LIST_ARGUMENTS = ("column_list",)


class ExpectationConf(StrictModel):
    expectation: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Severity


class ExpectationsFile(StrictModel):
    tables: dict[str, list[ExpectationConf]] = Field(default_factory=dict)


def _check_bounds(args: BaseModel, low: str, high: str) -> None:
    """At least one of two bounds, the lower not above the upper."""
    lo, hi = getattr(args, low), getattr(args, high)
    if lo is None and hi is None:
        raise ValueError(f"give {low}, {high} or both")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{low} {lo} is above {high} {hi}")


class _RowCountArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_ratio: float | None = Field(None, ge=0)
    max_ratio: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_bound(self) -> _RowCountArgs:
        _check_bounds(self, "min_ratio", "max_ratio")
        return self


class _ShareArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    value_set: list[Any] = Field(min_length=1)
    min_share: float | None = Field(None, ge=0, le=1)
    max_share: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_bound(self) -> _ShareArgs:
        _check_bounds(self, "min_share", "max_share")
        return self


DERIVED: dict[str, type[BaseModel]] = {ROW_COUNT_VS_PREVIOUS: _RowCountArgs, SHARE_OF_VALUES: _ShareArgs}


@dataclass(frozen=True)
class Check:
    """One expectation of a table, with where it was declared (`file: key`) for error messages."""

    table: str
    index: int
    expectation: str
    kwargs: Mapping[str, Any]
    severity: str
    source: str

    @property
    def key(self) -> str:
        return f"tables.{self.table}.{self.index}"

    @property
    def column(self) -> str | None:
        """The column the check is about (the first of a column list), if any."""
        for name in COLUMN_ARGUMENTS:
            if self.kwargs.get(name):
                return str(self.kwargs[name])
        listed = self.kwargs.get("column_list")
        return ",".join(str(c) for c in listed) if listed else None

    @property
    def indicator(self) -> str:
        """The indicator column a `share_of_values` check adds to the frame it checks."""
        return f"_share_{self.index}_{self.kwargs.get('column')}"


@dataclass(frozen=True)
class Suites:
    """Every table's checks, in file order."""

    checks: dict[str, list[Check]]

    def of(self, table: str) -> list[Check]:
        return self.checks.get(table, [])

    @property
    def count(self) -> int:
        return sum(len(c) for c in self.checks.values())


def load_suites(conf_dir: str | Path, columns: Mapping[str, Iterable[str]] | None = None) -> Suites:
    """Read conf/expectations/*.yml and check every expectation (see `check_expectations`); a missing folder is no
    suites. `columns` gives each table's columns (default: `known_columns()` without the tag columns)."""
    folder = Path(conf_dir) / FOLDER
    checks: dict[str, list[Check]] = {}
    for path in config_files(folder) if folder.is_dir() else []:
        source = f"{Path(conf_dir).name}/{FOLDER}/{path.name}"
        parsed = validate(ExpectationsFile, load_yaml(path), source)
        for table, entries in parsed.tables.items():
            if table in checks:
                raise ConfigError(f"{source}: tables.{table}: declared in another file too; keep a table's "
                                  "expectations in one file")
            checks[table] = [Check(table, i, e.expectation, dict(e.kwargs), e.severity, source)
                             for i, e in enumerate(entries)]
    suites = Suites(checks)
    check_expectations(suites, columns if columns is not None else known_columns())
    return suites


def known_columns(tag_names: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """Each checkable table's columns: the lake tables' declared schemas, the checked frames, and
    gold/subscriber_tags as month, sub_id and the tag library's tags."""
    tables = {name: tuple(spec.schema.fieldNames()) for name, spec in REGISTRY.items()}
    tables.update(CHECKED_FRAMES)
    tables[SUBSCRIBER_TAGS] = ("month", "sub_id", *tag_names)
    return tables


def check_expectations(suites: Suites, columns: Mapping[str, Iterable[str]]) -> None:
    """Raise one ConfigError listing every problem as `file: key: problem`."""
    problems = [problem for table_checks in suites.checks.values() for check in table_checks
                for problem in _problems(check, columns)]
    if problems:
        raise ConfigError("; ".join(problems))


def _problems(check: Check, columns: Mapping[str, Iterable[str]]) -> list[str]:
    where = f"{check.source}: {check.key}"
    if check.table not in columns:
        return [f"{check.source}: tables.{check.table}: unknown table; known: {', '.join(sorted(columns))}"]
    if check.expectation not in DERIVED and expectation_class(check.expectation) is None:
        return [f"{where}.expectation: unknown expectation {check.expectation!r} (GX 1.x names, e.g. "
                f"expect_column_values_to_not_be_null; or {ROW_COUNT_VS_PREVIOUS}, {SHARE_OF_VALUES})"]
    known = set(columns[check.table])
    problems = []
    for name in COLUMN_ARGUMENTS:
        if name in check.kwargs and check.kwargs[name] not in known:
            problems.append(f"{where}.kwargs.{name}: unknown column {check.kwargs[name]!r} of {check.table}")
    for name in COLUMN_LIST_ARGUMENTS:
        for i, column in enumerate(check.kwargs.get(name) or []):
            if column not in known:
                problems.append(f"{where}.kwargs.{name}.{i}: unknown column {column!r} of {check.table}")
    try:
        build(check, previous_rows=0)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def build(check: Check, previous_rows: int | None = None) -> Any:
    """The GX expectation of `check` (its `meta` carries the check's index). A row-count check without a previous
    partition (`previous_rows` None) only asks for at least one row."""
    kwargs = dict(check.kwargs)
    kind = check.expectation
    if kind in DERIVED:
        args = _derived_args(check)
        if kind == ROW_COUNT_VS_PREVIOUS:
            kind, kwargs = "expect_table_row_count_to_be_between", row_count_bounds(args, previous_rows)
        else:
            kind = "expect_column_mean_to_be_between"
            kwargs = {"column": check.indicator, "min_value": args.min_share, "max_value": args.max_share}
    cls = expectation_class(kind)
    try:
        return cls(**kwargs, meta={"flowops_check": check.index})
    except Exception as exc:  # noqa: BLE001 - GX raises pydantic (v1) errors, or its own for bad combinations
        raise ConfigError(f"{check.source}: {check.key}.kwargs{_describe_gx_error(exc)}") from None


def row_count_bounds(args: Any, previous_rows: int | None) -> dict[str, int | None]:
    """expect_table_row_count_to_be_between's bounds: the previous count times the ratios (rounded outwards)."""
    if previous_rows is None:
        return {"min_value": 1, "max_value": None}
    low = math.floor(previous_rows * args.min_ratio) if args.min_ratio is not None else None
    high = math.ceil(previous_rows * args.max_ratio) if args.max_ratio is not None else None
    return {"min_value": low, "max_value": high}


def _derived_args(check: Check) -> Any:
    from pydantic import ValidationError

    try:
        return DERIVED[check.expectation].model_validate(check.kwargs)
    except ValidationError as exc:
        raise ConfigError(f"{check.source}: {check.key}.kwargs.{describe_errors(exc)}") from None


def _describe_gx_error(exc: Exception) -> str:
    """`.<argument>: problem` for each argument GX refused (the first message of each), or `: message`."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        seen: dict[str, str] = {}
        for error in errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
            seen.setdefault(loc, error.get("msg", ""))
        parts = [f".{loc}: {msg}" if loc else f": {msg}" for loc, msg in seen.items()]
        return "; ".join(parts) if parts else f": {exc}"
    return f": {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"


def example_names(limit: int = 8) -> str:
    """A few of GX's expectation names, for help texts."""
    return ", ".join(expectation_names()[:limit])
