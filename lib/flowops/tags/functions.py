"""Registered tag functions: what a `function:` tag may call, with its parameters and result type.

A function takes Columns for its column parameters (names of other tags or base columns in the YAML) and
plain values for the rest, and returns one Column. The declared parameter kinds let the library check a
definition before any Spark job: unknown or missing arguments, wrong value shapes, and column arguments of
the wrong type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

NUMERIC = ("int", "long", "double")

# Parameter kinds: a column names one tag/base column; columns a list of them; weights maps names to numbers.
COLUMN_KINDS = ("column", "columns", "weights")
VALUE_KINDS = ("number", "numbers", "string", "strings", "int")


@dataclass(frozen=True)
class Param:
    kind: str
    types: tuple[str, ...] = ()   # accepted types of the named columns; empty = any
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class TagFunction:
    name: str
    build: Callable[..., Column]
    params: dict[str, Param]
    returns: str
    description: str


REGISTRY: dict[str, TagFunction] = {}


def register(name: str, returns: str, description: str, **params: Param) -> Callable:
    """Decorator adding a Column builder to the registry under `name`."""
    def wrap(build: Callable[..., Column]) -> Callable[..., Column]:
        REGISTRY[name] = TagFunction(name, build, params, returns, description)
        return build
    return wrap


def _is_positive(value: Column) -> Column:
    return value.isNotNull() & (value > 0)


@register("band", "string", "the label of the interval the value falls in: labels[i] for edges[i-1] <= v < edges[i]",
          column=Param("column", NUMERIC), edges=Param("numbers"), labels=Param("strings"))
def band(column: Column, edges: list[float], labels: list[str]) -> Column:
    out = F.when(column.isNull(), F.lit(None).cast("string"))
    for edge, label in zip(edges, labels, strict=False):
        out = out.when(column < F.lit(edge), F.lit(label))
    return out.otherwise(F.lit(labels[-1]))


@register("ratio", "double", "numerator / denominator; null when the denominator is null or not positive",
          numerator=Param("column", NUMERIC), denominator=Param("column", NUMERIC))
def ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(_is_positive(denominator), numerator.cast("double") / denominator)


@register("change", "double", "relative change current / baseline - 1; null without a positive baseline",
          current=Param("column", NUMERIC), baseline=Param("column", NUMERIC))
def change(current: Column, baseline: Column) -> Column:
    return F.when(_is_positive(baseline), current.cast("double") / baseline - F.lit(1.0))


@register("mean", "double", "mean of the non-null columns; null when all are null",
          columns=Param("columns", NUMERIC))
def mean(columns: list[Column]) -> Column:
    total = reduce(lambda a, b: a + b, [F.coalesce(c.cast("double"), F.lit(0.0)) for c in columns])
    count = reduce(lambda a, b: a + b, [c.isNotNull().cast("int") for c in columns])
    return F.when(count > 0, total / count)


@register("maximum", "double", "largest of the non-null columns; null when all are null",
          columns=Param("columns", NUMERIC))
def maximum(columns: list[Column]) -> Column:
    return F.greatest(*[c.cast("double") for c in columns]) if len(columns) > 1 else columns[0].cast("double")


@register("map_value", "double", "the value under key in a map column, 0 when absent",
          column=Param("column", ("map<string,double>",)), key=Param("string"))
def map_value(column: Column, key: str) -> Column:
    return F.coalesce(F.element_at(column, F.lit(key)), F.lit(0.0))


@register("top_keys", "array<string>", "the n keys with the largest values (positive only), largest first",
          column=Param("column", ("map<string,double>",)), n=Param("int"))
def top_keys(column: Column, n: int) -> Column:
    entries = F.filter(F.map_entries(column), lambda e: e["value"] > 0)
    ranked = F.sort_array(F.transform(entries, lambda e: F.struct(e["value"].alias("v"), e["key"].alias("k"))),
                          asc=False)
    return F.transform(F.slice(ranked, 1, n), lambda e: e["k"])


@register("trend", "string", "rising when change >= rising, falling when change <= falling, else steady; "
                             "null without a change",
          change=Param("column", NUMERIC), rising=Param("number"), falling=Param("number"))
def trend(change: Column, rising: float, falling: float) -> Column:
    return (F.when(change.isNull(), F.lit(None).cast("string"))
            .when(change >= rising, F.lit("rising")).when(change <= falling, F.lit("falling"))
            .otherwise(F.lit("steady")))


@register("weighted_sum", "double", "sum of the weights of the boolean columns that are true (null = false)",
          weights=Param("weights", ("boolean",)))
def weighted_sum(weights: list[tuple[Column, float]]) -> Column:
    return reduce(lambda a, b: a + b,
                  [F.when(F.coalesce(flag, F.lit(False)), F.lit(float(w))).otherwise(F.lit(0.0))
                   for flag, w in weights])


@register("count_true", "int", "how many of the boolean columns are true (null = false)",
          columns=Param("columns", ("boolean",)))
def count_true(columns: list[Column]) -> Column:
    return reduce(lambda a, b: a + b, [F.coalesce(c, F.lit(False)).cast("int") for c in columns])
