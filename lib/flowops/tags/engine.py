"""Tag columns over the base aggregates: one `withColumns` per dependency layer, types checked by Spark's analyser."""

from __future__ import annotations

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.errors import ConfigError
from flowops.tags.base import BASE_COLUMNS, spark_type
from flowops.tags.definitions import Tag, TagLibrary
from flowops.tags.functions import COLUMN_KINDS, REGISTRY

NUMERIC_RANK = {T.ByteType: 0, T.ShortType: 0, T.IntegerType: 1, T.LongType: 2, T.DecimalType: 3,
                T.FloatType: 3, T.DoubleType: 3}


def tag_column(tag: Tag) -> Column:
    """The Column computing `tag` from columns named after its dependencies."""
    if tag.expr is not None:
        try:
            return F.expr(tag.expr)
        except ParseException as exc:
            raise ConfigError(f"{tag.file}: tag {tag.name}: expr does not parse: {_first_line(exc)}") from None
    fn = REGISTRY[tag.function or ""]
    kwargs = {}
    for name, value in tag.args.items():
        kind = fn.params[name].kind
        if kind == "column":
            kwargs[name] = F.col(value)
        elif kind == "columns":
            kwargs[name] = [F.col(v) for v in value]
        elif kind == "weights":
            kwargs[name] = [(F.col(k), w) for k, w in value.items()]
        else:
            kwargs[name] = value
    for name, param in fn.params.items():
        if name not in kwargs and param.kind not in COLUMN_KINDS:
            kwargs[name] = param.default
    return fn.build(**kwargs)


def with_tags(base_df: DataFrame, library: TagLibrary) -> DataFrame:
    """Add every tag of `library` as a column of `base_df`, layer by layer, cast to its declared type."""
    df = base_df
    for layer in library.layers():
        columns = {tag.name: tag_column(tag) for tag in layer}
        try:
            added = df.withColumns(columns)
        except AnalysisException:
            _raise_for_culprit(df, layer)
            raise
        df = added.withColumns({tag.name: _conform(added.schema[tag.name].dataType, tag) for tag in layer})
    return df


def select_tags(df: DataFrame, library: TagLibrary, month: str) -> DataFrame:
    """The gold row: month, sub_id and one column per tag, in library order."""
    return df.select(F.lit(month).alias("month"), "sub_id", *library.names)


def check_expressions(spark: SparkSession, library: TagLibrary) -> DataFrame:
    """Analyse every tag over an empty frame of base columns: parse errors and type clashes, no Spark job.

    Returns the (empty) tag frame, for checking what reads tags, such as the segment rules.
    """
    schema = T.StructType([T.StructField("sub_id", T.StringType())] +
                          [T.StructField(c.name, spark_type(c.type)) for c in BASE_COLUMNS])
    return select_tags(with_tags(spark.createDataFrame([], schema), library), library, "check")


def _conform(actual: T.DataType, tag: Tag) -> Column:
    declared = spark_type(tag.type)
    col = F.col(tag.name)
    if actual == declared:
        return col
    if actual.simpleString() == declared.simpleString() or isinstance(actual, T.NullType):
        return col.cast(declared)
    a, d = NUMERIC_RANK.get(type(actual)), NUMERIC_RANK.get(type(declared))
    if a is not None and d is not None and a <= d:
        return col.cast(declared)
    raise ConfigError(f"{tag.file}: tag {tag.name}: type clash: the expression gives {actual.simpleString()}, "
                      f"the tag declares {tag.type}")


def _raise_for_culprit(df: DataFrame, layer: list[Tag]) -> None:
    for tag in layer:
        try:
            df.withColumn(tag.name, tag_column(tag)).schema  # noqa: B018 - analysis only
        except AnalysisException as exc:
            what = "expr does not parse: " if isinstance(exc, ParseException) else ""
            raise ConfigError(f"{tag.file}: tag {tag.name}: {what}{_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "getMessage", lambda: str(exc))() or str(exc)
    return text.strip().splitlines()[0]
