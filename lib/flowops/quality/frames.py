"""The frames a gate checks besides the tables themselves: indicator columns for share checks, each landed file's
reconciliation, and the export rows with the contact rules they break."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.quality.suites import SHARE_OF_VALUES, Check

RECONCILIATION_COLUMNS = ("source_file", "status", "lines_in", "accepted", "quarantined", "duplicates")
EXPORT_FLAGS = {"opted_out": ("opted_out", "opted_out_of_channel"), "control": ("control",),
                "immune": ("immune",), "churned": ("churned",)}


def with_indicators(df: DataFrame | pd.DataFrame, checks: Sequence[Check]) -> DataFrame | pd.DataFrame:
    """`df` with a 0/1 column per share check: 1 where its column's value is in the check's value set (null: 0)."""
    if isinstance(df, pd.DataFrame):
        return df.assign(**{c.indicator: df[c.kwargs["column"]].isin(list(c.kwargs["value_set"])).astype(float)
                            for c in checks if c.expectation == SHARE_OF_VALUES})
    shares = {c.indicator: F.when(F.col(c.kwargs["column"]).isin(list(c.kwargs["value_set"])), F.lit(1.0))
              .otherwise(F.lit(0.0)) for c in checks if c.expectation == SHARE_OF_VALUES}
    return df.withColumns(shares) if shares else df


def reconciliation_frame(files: Sequence[tuple]) -> pd.DataFrame:
    """One row per landed file (source_file, status, lines_in, accepted, quarantined, duplicates) with what the
    reconciliation identity leaves over (`unbalanced`, 0 when it holds) and the file's quarantine rate. A pandas
    frame: the run's file list is already on the driver, and a Spark job per metric would cost more than it checks."""
    df = pd.DataFrame(list(files), columns=list(RECONCILIATION_COLUMNS))
    df["unbalanced"] = df["lines_in"] - df["accepted"] - df["quarantined"] - df["duplicates"]
    df["quarantine_rate"] = (df["quarantined"] / df["lines_in"].where(df["lines_in"] > 0)).fillna(0.0)
    return df


def export_checks(rows: DataFrame | pd.DataFrame, problems: DataFrame | pd.DataFrame, month: str,
                  wave: int) -> DataFrame | pd.DataFrame:
    """Each export row (sub_id, scenario, channel, msisdn) with a flag per never-exported rule it breaks
    (opted out, control, immune, churned), from `problems` (sub_id, scenario, channel, problem). Spark frames give
    a Spark frame; pandas frames (the rows already on the driver, as the target step has them) a pandas one."""
    keys = ["sub_id", "scenario", "channel"]
    if isinstance(rows, pd.DataFrame):
        found = problems if isinstance(problems, pd.DataFrame) else problems.toPandas()
        flags = pd.DataFrame({flag: found["problem"].isin(list(kinds)) for flag, kinds in EXPORT_FLAGS.items()})
        flags = pd.concat([found[keys], flags], axis=1).groupby(keys, as_index=False).max()
        out = rows[[*keys, "msisdn"]].merge(flags, on=keys, how="left")
        return out.assign(month=month, wave=wave, **{f: out[f].eq(True) for f in EXPORT_FLAGS})[
            ["month", "wave", "sub_id", "msisdn", "scenario", "channel", *EXPORT_FLAGS]]
    flags = (problems.groupBy(*keys)
             .agg(*[F.max(F.col("problem").isin(list(kinds))).alias(flag) for flag, kinds in EXPORT_FLAGS.items()]))
    return (rows.select(*keys, "msisdn")
            .join(flags, keys, how="left")
            .select(F.lit(month).alias("month"), F.lit(wave).alias("wave"), "sub_id", "msisdn", "scenario", "channel",
                    *[F.coalesce(F.col(flag), F.lit(False)).alias(flag) for flag in EXPORT_FLAGS]))
