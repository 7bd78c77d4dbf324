"""Delta Lake's own Spark data source, for clusters that have its jars (`lake.engine: spark-delta`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flowops.lake.deltars import check_written_schema
from flowops.lake.lock import TableLock
from flowops.lake.staged import Staged
from flowops.lake.tables import TableSpec

Partitions = Mapping[str, Sequence[str]]


class SparkDeltaEngine:
    """Delta Lake's own Spark data source, for clusters that have its jars."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def _table(self, path: str) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def version(self, path: str) -> int:
        return int(self._table(path).history(1).collect()[0]["version"])

    def history(self, path: str, limit: int | None) -> list[dict[str, Any]]:
        rows = (self._table(path).history(limit) if limit else self._table(path).history()).collect()
        out = []
        for row in rows:
            entry = row.asDict(recursive=True)
            user = entry.get("userMetadata")
            if user:
                entry.update(json.loads(user))
            out.append(entry)
        return out

    def check_schema_version(self, path: str, spec: TableSpec) -> None:
        if self.exists(path):
            check_written_schema(spec, self.history(path, 1))

    def read(self, path: str, version: int | None, partitions: Partitions | None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(path)
        for col, values in (partitions or {}).items():
            df = df.where(F.col(col).isin(list(values)))
        return df

    def write(self, df: DataFrame | None, path: str, spec: TableSpec, mode: str,
              partitions: Partitions | None, metadata: Mapping[str, str], lock: TableLock,
              staged: Staged | None = None) -> int:
        if staged is not None and staged.files:
            files = staged.read(self.spark, spec.schema).select(*spec.schema.fieldNames())
            df = files if df is None else df.unionByName(files)
        if df is None:
            df = self.spark.createDataFrame([], spec.schema)
        # mergeSchema: `conform` has already checked the frame against the declared schema, so this only lets a
        # declared schema grow (e.g. a new tag column), as the delta-rs path does.
        writer = (df.write.format("delta").mode(mode).partitionBy(*spec.partition_by).options(**spec.writer_options())
                  .option("userMetadata", json.dumps(dict(metadata))).option("mergeSchema", "true"))
        if partitions:
            condition = " AND ".join(
                f"{col} IN ({', '.join(repr(v) for v in values)})" for col, values in partitions.items())
            writer = writer.option("replaceWhere", condition)
        lock.check()
        writer.save(path)
        return self.version(path)
