"""The lake's table contract: every table's name, explicit schema and partitioning.

Schemas are declared, never inferred: a `dt` string stays a string, and a writer whose DataFrame does not
match the declared schema fails before anything is written. Bump a table's `version` when its schema
changes; a lake written by a newer version is refused instead of being misread.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

from flowops.errors import LakeError


@dataclass(frozen=True)
class TableSpec:
    """One lake table: `LAKE/<layer>/<table>`."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        missing = [col for col in self.partition_by if col not in self.schema.fieldNames()]
        if missing:
            raise ValueError(f"table {self.name}: partition columns {missing} are not in its schema")
        if self.name.count("/") != 1:
            raise ValueError(f"table name must be '<layer>/<table>', got {self.name!r}")


def _fields(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype, True) for name, dtype in fields])


STRING, LONG, DOUBLE, TIMESTAMP = T.StringType(), T.LongType(), T.DoubleType(), T.TimestampType()

RUNS = TableSpec(
    name="ops/runs",
    schema=_fields(
        ("run_id", STRING),
        ("job", STRING),
        ("params", T.MapType(STRING, STRING)),
        ("started_at", TIMESTAMP),
        ("ended_at", TIMESTAMP),
        ("seconds", DOUBLE),
        ("status", STRING),
        ("error", STRING),
        ("rows_in", LONG),
        ("rows_out", LONG),
        ("counts", T.MapType(STRING, LONG)),
        ("table_versions", T.MapType(STRING, LONG)),
        ("files", T.ArrayType(T.StructType([
            T.StructField("source_file", STRING),
            T.StructField("status", STRING),
            T.StructField("lines_in", LONG),
            T.StructField("accepted", LONG),
            T.StructField("quarantined", LONG),
            T.StructField("duplicates", LONG),
        ]))),
        ("engine", STRING),
        ("flowops_version", STRING),
        ("spark_master", STRING),
    ),
    description="One row per job run: params, status, counts, table versions written, timings.",
)

REGISTRY: dict[str, TableSpec] = {}


def register(*specs: TableSpec) -> None:
    """Add table specs to the registry (each module owning tables registers its own)."""
    for spec in specs:
        REGISTRY[spec.name] = spec


def spec_for(name: str) -> TableSpec:
    """The declared spec of table `name`, with a clear error listing the known tables."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise LakeError(f"unknown table {name!r}; known tables: {known}") from None


register(RUNS)
