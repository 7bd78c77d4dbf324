"""Six-stage flow segmentation: ordered rules over tags from `conf/segments.yml`, one stage per subscriber-month.

The first rule whose condition holds gives the stage and the reason (the rule's name); the tags the rule reads
are kept with their values as evidence. The flow customer type (the eight types of the training syllabus) is
assigned the same way from its own rule list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.config import StrictModel, describe_errors, load_yaml
from flowops.errors import ConfigError
from flowops.lake.tables import FLOW_STAGES  # noqa: F401 - the stage table's contract, re-exported
from flowops.tags.definitions import NAME, TagLibrary, sql_identifiers, unsafe_sql

STAGES: tuple[str, ...] = ("retain", "alert", "upgrade", "order", "lift", "wake")
FLOW_TYPES: tuple[str, ...] = ("plan_zero_usage", "plan_low_usage", "no_plan_low_usage", "steady", "falling",
                               "rising", "allowance_exhausted", "over_allowance")
Stage = Literal["retain", "alert", "upgrade", "order", "lift", "wake"]
FlowType = Literal["plan_zero_usage", "plan_low_usage", "no_plan_low_usage", "steady", "falling", "rising",
                   "allowance_exhausted", "over_allowance"]
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
Threshold = bool | int | float | str | list[int | float | str]



class RuleModel(StrictModel):
    name: str = Field(pattern=NAME)
    stage: Stage
    when: str = Field(min_length=1)
    evidence: list[str] = Field(default_factory=list)


class DefaultModel(StrictModel):
    name: str = Field(pattern=NAME)
    stage: Stage
    evidence: list[str] = Field(default_factory=list)


class FlowRuleModel(StrictModel):
    name: FlowType
    when: str = Field(min_length=1)


class FlowTypesModel(StrictModel):
    rules: list[FlowRuleModel]
    default: FlowType


class SegmentsModel(StrictModel):
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    stages: dict[Stage, str]
    rules: list[RuleModel] = Field(min_length=1)
    default: DefaultModel
    flow_types: FlowTypesModel

    @model_validator(mode="after")
    def _complete(self) -> SegmentsModel:
        missing = [s for s in STAGES if s not in self.stages]
        if missing:
            raise ValueError(f"stages: every stage needs a description; missing {', '.join(missing)}")
        names = [r.name for r in self.rules] + [self.default.name]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rules: names must be unique; repeated: {', '.join(twice)}")
        reachable = {r.stage for r in self.rules} | {self.default.stage}
        unreachable = [s for s in STAGES if s not in reachable]
        if unreachable:
            raise ValueError(f"rules: no rule gives stage(s) {', '.join(unreachable)}")
        return self


@dataclass(frozen=True)
class Rule:
    name: str
    stage: str
    when: str               # thresholds substituted
    reads: tuple[str, ...]  # tags the condition reads, plus declared evidence


@dataclass(frozen=True)
class Segments:
    rules: tuple[Rule, ...]
    default: Rule
    flow_rules: tuple[Rule, ...]
    flow_default: str
    stage_text: dict[str, str]
    source: str


def load_segments(conf_dir: str | Path, library: TagLibrary) -> Segments:
    """Read `conf/segments.yml` and check every condition against the tag library (before any Spark job)."""
    path = Path(conf_dir) / "segments.yml"
    if not path.is_file():
        raise ConfigError(f"segment rules {path} not found")
    try:
        model = SegmentsModel.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from None

    def rule(name: str, stage: str, when: str, evidence: list[str], what: str) -> Rule:
        where = f"{path}: {what} {name}"
        if reason := unsafe_sql(when):
            raise ConfigError(f"{where}: condition refused: {reason}")
        text = _substitute(when, model.thresholds, where)
        reads = [*sql_identifiers(text), *evidence] if text else list(evidence)
        unknown = [n for n in reads if n not in library]
        if unknown:
            raise ConfigError(f"{where}: unknown tag(s) {', '.join(unknown)} (see `flowops tags --catalog`)")
        return Rule(name, stage, text, tuple(dict.fromkeys(reads)))

    return Segments(
        rules=tuple(rule(r.name, r.stage, r.when, r.evidence, "rule") for r in model.rules),
        default=rule(model.default.name, model.default.stage, "", model.default.evidence, "default"),
        flow_rules=tuple(rule(r.name, r.name, r.when, [], "flow type") for r in model.flow_types.rules),
        flow_default=model.flow_types.default,
        stage_text=dict(model.stages),
        source=str(path),
    )


def _substitute(text: str, thresholds: dict[str, Threshold], where: str) -> str:
    """`${name}` replaced by its threshold written as an SQL literal by code (a list as literals separated by
    commas, for `IN (${name})`): a value is data, never SQL text."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in thresholds:
            known = ", ".join(sorted(thresholds)) or "none"
            raise ConfigError(f"{where}: unknown threshold ${{{name}}} (thresholds: {known})")
        found = thresholds[name]
        return ", ".join(sql_literal(v) for v in found) if isinstance(found, list) else sql_literal(found)
    return _PLACEHOLDER.sub(value, text)


def sql_literal(value: bool | int | float | str) -> str:
    """A typed value as Spark SQL literal text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _condition(rule: Rule, segments: Segments, df: DataFrame) -> Column:
    where = f"{segments.source}: rule {rule.name}"
    try:
        cond = F.expr(rule.when)
        dtype = df.select(cond.alias("c")).schema["c"].dataType
    except (ParseException, AnalysisException) as exc:
        raise ConfigError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
    if not isinstance(dtype, T.BooleanType):
        raise ConfigError(f"{where}: the condition gives {dtype.simpleString()}, not a boolean")
    return F.coalesce(cond, F.lit(False))


def _evidence(rule: Rule) -> Column:
    if not rule.reads:
        return F.create_map().cast("map<string,string>")
    pairs = [part for name in rule.reads for part in (F.lit(name), F.col(name).cast("string"))]
    return F.create_map(*pairs)


def _first_match(cases: list[tuple[Column, Column]], default: Column) -> Column:
    """The value of the first case whose condition holds, else `default` (CASE WHEN ... ELSE ... END)."""
    if not cases:
        return default
    out = F.when(*cases[0])
    for cond, value in cases[1:]:
        out = out.when(cond, value)
    return out.otherwise(default)


def assign_stages(tags_df: DataFrame, segments: Segments) -> DataFrame:
    """One row per subscriber of `tags_df`: stage, reason and evidence from the first matching rule, and flow type."""
    rules = [(rule, _condition(rule, segments, tags_df)) for rule in segments.rules]
    flows = [(F.lit(r.name), _condition(r, segments, tags_df)) for r in segments.flow_rules]
    default = segments.default
    return tags_df.select(
        "month", "sub_id",
        _first_match([(c, F.lit(r.stage)) for r, c in rules], F.lit(default.stage)).alias("stage"),
        _first_match([(c, F.lit(r.name)) for r, c in rules], F.lit(default.name)).alias("reason"),
        _first_match([(c, _evidence(r)) for r, c in rules], _evidence(default)).alias("evidence"),
        _first_match([(c, name) for name, c in flows], F.lit(segments.flow_default)).alias("flow_type"),
    )


def format_stages(sizes: dict[str, int]) -> str:
    """`retain 412 (41.2%), alert 96 (9.6%), ...` in stage order."""
    total = sum(sizes.values()) or 1
    return ", ".join(f"{stage} {n:,} ({100 * n / total:.1f}%)" for stage, n in sizes.items())
