"""The tag library: definitions from `conf/tags/*.yml`, checked and ordered before any Spark job.

A file holds one group of tags:

    group: consumption
    tags:
      - name: dou_mb
        description: Mobile data used in the month.
        type: double
        unit: MB
        expr: data_mb_m0                      # Spark SQL over base columns and other tags
      - name: dou_band
        description: DOU as a band.
        type: string
        function: band                         # or a registered function (flowops.tags.functions)
        args: {column: dou_mb, edges: [1, 100], labels: [zero, low, high]}

Checks, each reported with the file and the tag: exactly one of expr/function; unknown function, missing or
unknown arguments and wrongly shaped values; names that are neither a tag nor a base column; column
arguments of the wrong type; a function result that clashes with the declared type; duplicate names;
cycles. Expressions are type-checked against Spark's analyser by `check_expressions` (no job runs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from flowops.config import StrictModel, config_files, describe_errors, load_yaml
from flowops.errors import ConfigError
from flowops.tags.base import BASE_TYPES, SPARK_TYPES
from flowops.tags.functions import COLUMN_KINDS, REGISTRY, Param

NAME = r"^[a-z][a-z0-9_]*$"
RESERVED = frozenset({"sub_id", "month"})  # the key columns of gold/subscriber_tags
TypeName = str


class TagModel(StrictModel):
    name: str = Field(pattern=NAME)
    description: str = Field(min_length=1)
    type: TypeName
    unit: str | None = None
    group: str | None = None
    expr: str | None = None
    function: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_definition(self) -> TagModel:
        if (self.expr is None) == (self.function is None):
            raise ValueError(f"tag {self.name}: give exactly one of 'expr' or 'function'")
        if self.expr is not None and self.args:
            raise ValueError(f"tag {self.name}: 'args' belong to a 'function' tag, not an 'expr' tag")
        if self.type not in SPARK_TYPES:
            raise ValueError(f"tag {self.name}: type must be one of {', '.join(SPARK_TYPES)}; got {self.type!r}")
        return self


class TagFile(StrictModel):
    group: str = Field(pattern=NAME)
    description: str | None = None
    tags: list[TagModel]


@dataclass(frozen=True)
class Tag:
    """One checked tag definition."""

    name: str
    group: str
    description: str
    type: str
    unit: str | None
    expr: str | None
    function: str | None
    args: Mapping[str, Any]
    deps: tuple[str, ...]
    file: str

    def as_yaml(self, name: str | None = None) -> dict[str, Any]:
        """The definition as a `conf/tags` entry (optionally under another name)."""
        how = {"expr": self.expr} if self.expr is not None else {"function": self.function, "args": dict(self.args)}
        unit = {"unit": self.unit} if self.unit else {}
        return {"name": name or self.name, "description": self.description, "type": self.type, **unit, **how}

    @property
    def definition(self) -> str:
        """The definition as one line, for the catalogue."""
        if self.expr is not None:
            return " ".join(self.expr.split())
        args = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.function}({args})"


@dataclass
class TagLibrary:
    """All tags, in an order where each tag comes after everything it depends on."""

    tags: list[Tag]
    groups: dict[str, str | None] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tag:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __post_init__(self) -> None:
        self._by_name = {t.name: t for t in self.tags}

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    def layers(self) -> list[list[Tag]]:
        """Tags grouped by depth: a layer only depends on base columns and earlier layers."""
        depth: dict[str, int] = {}
        for tag in self.tags:
            depth[tag.name] = 1 + max((depth.get(d, -1) for d in tag.deps), default=-1)
        out: list[list[Tag]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for tag in self.tags:
            out[depth[tag.name]].append(tag)
        return out

    def type_of(self, name: str) -> str:
        return self[name].type if name in self else BASE_TYPES[name]


def load_library(conf_dir: str | Path) -> TagLibrary:
    """Read every `conf/tags/*.yml`, check the definitions and order them by dependency."""
    folder = Path(conf_dir) / "tags"
    files = config_files(folder)
    if not files:
        raise ConfigError(f"no tag definitions (*.yml, *.yaml) in {folder}")
    models: list[tuple[TagModel, str, str]] = []
    groups: dict[str, str | None] = {}
    for path in files:
        data = load_yaml(path)
        try:
            parsed = TagFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_name_tags(describe_errors(exc), data)}") from None
        groups.setdefault(parsed.group, parsed.description)
        models.extend((m, m.group or parsed.group, str(path)) for m in parsed.tags)
    return build_library(models, groups)


def _name_tags(message: str, data: Any) -> str:
    """`tags.3.args: ...` -> `tag churn_score (tags.3).args: ...`, so the author finds the tag by name."""
    tags = data.get("tags") if isinstance(data, dict) else None

    def name(match: re.Match[str]) -> str:
        i = int(match.group(1))
        entry = tags[i] if isinstance(tags, list) and i < len(tags) else None
        tag = entry.get("name") if isinstance(entry, dict) else None
        return f"tag {tag} (tags.{i})" if tag else match.group(0)
    return re.sub(r"\btags\.(\d+)", name, message)


def build_library(models: Iterable[tuple[TagModel, str, str]], groups: dict[str, str | None]) -> TagLibrary:
    """Check (model, group, file) triples and return them ordered by dependency."""
    errors: list[str] = []
    where: dict[str, str] = {}
    models = list(models)
    for model, _, file in models:
        if model.name in BASE_TYPES or model.name in RESERVED:
            errors.append(f"{file}: tag {model.name}: the name is taken by a base or key column")
        elif model.name in where:
            errors.append(f"{file}: tag {model.name}: already defined in {where[model.name]}")
        elif model.name.upper() in SQL_WORDS:
            errors.append(f"{file}: tag {model.name}: the name is an SQL keyword")
        where.setdefault(model.name, file)
    types = {**BASE_TYPES, **{m.name: m.type for m, _, _ in models}}
    tags: dict[str, Tag] = {}
    for model, group, file in models:
        try:
            deps = _check(model, types)
        except ValueError as exc:
            errors.append(f"{file}: tag {model.name}: {exc}")
            continue
        tags.setdefault(model.name, Tag(model.name, group, model.description, model.type, model.unit, model.expr,
                                        model.function, dict(model.args), deps, file))
    if errors:
        raise ConfigError("tag definitions are invalid:\n  " + "\n  ".join(errors))
    return TagLibrary(_ordered(tags), groups)


def _check(model: TagModel, types: Mapping[str, str]) -> tuple[str, ...]:
    """Dependencies of one definition; ValueError says what is wrong."""
    if model.expr is not None:
        if reason := unsafe_sql(model.expr):
            raise ValueError(f"expr refused: {reason}")
        deps = sql_identifiers(model.expr)
        unknown = [d for d in deps if d not in types]
        if unknown:
            raise ValueError(f"unknown dependency {', '.join(map(repr, unknown))} in expr "
                             "(not a tag or a base column; see `flowops tags --catalog`)")
        return tuple(deps)
    fn = REGISTRY.get(model.function or "")
    if fn is None:
        raise ValueError(f"unknown function {model.function!r}; known: {', '.join(sorted(REGISTRY))}")
    missing = [n for n, p in fn.params.items() if p.required and n not in model.args]
    extra = [n for n in model.args if n not in fn.params]
    if missing or extra:
        parts = ([f"missing argument(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown argument(s) {', '.join(extra)}"] if extra else [])
        raise ValueError(f"function {fn.name}: {'; '.join(parts)} (takes {', '.join(fn.params)})")
    deps: list[str] = []
    for name, param in fn.params.items():
        if name in model.args:
            deps.extend(_check_arg(fn.name, name, param, model.args[name], types))
    _check_specific(fn.name, model.args)
    if fn.returns != model.type:
        raise ValueError(f"type clash: function {fn.name} returns {fn.returns}, the tag declares {model.type}")
    return tuple(dict.fromkeys(deps))


def _check_arg(fn: str, name: str, param: Param, value: Any, types: Mapping[str, str]) -> list[str]:
    shape_ok = {
        "column": isinstance(value, str),
        "columns": isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
        "weights": isinstance(value, dict) and bool(value) and all(_is_number(v) for v in value.values()),
        "number": _is_number(value),
        "numbers": isinstance(value, list) and bool(value) and all(_is_number(v) for v in value),
        "string": isinstance(value, str),
        "strings": isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
        "int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
    }[param.kind]
    if not shape_ok:
        raise ValueError(f"function {fn}: argument {name} must be {_KIND_TEXT[param.kind]}; got {value!r}")
    if param.kind not in COLUMN_KINDS:
        return []
    names = [value] if param.kind == "column" else list(value)
    for col in names:
        if col not in types:
            raise ValueError(f"function {fn}: argument {name}: unknown dependency {col!r} "
                             "(not a tag or a base column)")
        if param.types and types[col] not in param.types:
            raise ValueError(f"type clash: function {fn}: argument {name} takes {' or '.join(param.types)}, "
                             f"but {col} is {types[col]}")
    return names


def _check_specific(fn: str, args: Mapping[str, Any]) -> None:
    if fn == "band":
        edges, labels = args["edges"], args["labels"]
        if len(labels) != len(edges) + 1:
            raise ValueError(f"function band: {len(edges)} edges need {len(edges) + 1} labels, got {len(labels)}")
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"function band: edges must increase, got {edges}")
    if fn == "trend" and not args["rising"] > args["falling"]:
        raise ValueError(f"function trend: rising ({args['rising']}) must be above falling ({args['falling']})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_KIND_TEXT = {
    "column": "a tag or base column name", "columns": "a non-empty list of tag or base column names",
    "weights": "a mapping of tag names to numbers", "number": "a number", "numbers": "a list of numbers",
    "string": "a string", "strings": "a list of strings", "int": "a positive integer",
}


def _ordered(tags: Mapping[str, Tag]) -> list[Tag]:
    """Depth-first order (dependencies first), keeping file order otherwise; a cycle is an error."""
    done: dict[str, Tag] = {}
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done or name not in tags:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            raise ConfigError(f"{tags[name].file}: tag {name}: dependency cycle {' -> '.join(cycle)}")
        visiting.append(name)
        for dep in tags[name].deps:
            visit(dep)
        visiting.pop()
        done[name] = tags[name]

    for name in tags:
        visit(name)
    return list(done.values())


SQL_WORDS = frozenset("""
AND OR NOT CASE WHEN THEN ELSE END NULL TRUE FALSE IS IN LIKE RLIKE ILIKE REGEXP BETWEEN AS DISTINCT INTERVAL
EXISTS ANY SOME ALL DIV ESCAPE NULLS ASC DESC XOR
FROM FOR TO BOTH LEADING TRAILING UNKNOWN FILTER WHERE OVER PARTITION BY ORDER ROWS RANGE PRECEDING FOLLOWING
UNBOUNDED CURRENT ROW CURRENT_DATE CURRENT_TIMESTAMP CURRENT_USER SEPARATOR PLACING
STRING VARCHAR CHAR INT INTEGER BIGINT LONG SHORT BYTE SMALLINT TINYINT DOUBLE FLOAT REAL BOOLEAN DATE TIMESTAMP
DECIMAL ARRAY MAP STRUCT BINARY
YEAR YEARS MONTH MONTHS WEEK WEEKS DAY DAYS HOUR HOURS MINUTE MINUTES SECOND SECONDS
""".split())  # noqa: SIM905 - a word list reads better as text
_STRINGS = re.compile(r"(?:\b[rRxXbB])?('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_TOKENS = re.compile(r"`([^`]+)`|(?<![\w.])([A-Za-z_]\w*)(?!\w)")
_LAMBDA = re.compile(r"(?:\(\s*([\w\s,]+?)\s*\)|(\b[A-Za-z_]\w*))\s*->")


_UNSAFE_CALL = re.compile(r"\b(reflect|try_reflect|java_method)\s*\(", re.I)
_SUBQUERY = re.compile(r"\bselect\b", re.I)


def unsafe_sql(expr: str) -> str | None:
    """Why a column expression from configuration or the command line must not run, or None.

    Refused: calls of Java methods (`reflect`, `try_reflect`, `java_method`: arbitrary code on the cluster),
    and subqueries (`SELECT ...`: any table, or any file by path such as parquet.`/data/...`). Expressions
    over columns need neither.
    """
    text = _STRINGS.sub("''", _COMMENTS.sub(" ", expr))
    if found := _UNSAFE_CALL.search(text):
        return f"{found.group(1)}() calls Java methods, which flowops expressions may not"
    if _SUBQUERY.search(text):
        return "a subquery (SELECT) reads other tables or files, which flowops expressions may not"
    return None


def sql_identifiers(expr: str) -> list[str]:
    """Column names an SQL expression reads: identifiers that are not keywords, calls, fields or lambda args."""
    text = _STRINGS.sub("''", _COMMENTS.sub(" ", expr))
    local: set[str] = set()
    for group, single in _LAMBDA.findall(text):
        local.update(n.strip() for n in (group.split(",") if group else [single]))
    names: list[str] = []
    for match in _TOKENS.finditer(text):
        quoted, bare = match.groups()
        name = quoted or bare.lower()  # Spark resolves unquoted names case-insensitively
        if bare is not None:
            rest = text[match.end():].lstrip()
            if bare.upper() in SQL_WORDS or rest.startswith("(") or bare in local or bare[0].isdigit():
                continue
        if name not in names:
            names.append(name)
    return names
