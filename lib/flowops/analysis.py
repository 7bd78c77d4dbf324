"""What analysts ask of a lake, as small pandas frames: the notebooks and the run report call these.

Open a lake, get any table, and the month's figures::

    from flowops import analysis
    lake = analysis.open_lake()          # $FLOWOPS_LAKE_ROOT, else demo/lakehouse; or open_lake("/data/lake")
    stages_df = analysis.table(lake, "gold/flow_stages", month="2026-03")             # Spark
    stages = analysis.table(lake, "gold/flow_stages", month="2026-03", pandas=True)   # pandas
    analysis.stage_transitions(lake, "2026-03")

Each figure is aggregated by Spark where it is read, so only small frames reach the driver. A figure whose table
has nothing for the month is an empty frame with its columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.lake import Lake, tables
from flowops.landing import month_days, previous_months

LAKE_ENV = "FLOWOPS_LAKE_ROOT"
DEFAULT_LAKE = "demo/lakehouse"
FLOW_STAGES, SCENARIO_TARGETS, SUBSCRIBER_TAGS = tables.FLOW_STAGES.name, tables.SCENARIO_TARGETS.name, \
    tables.SUBSCRIBER_TAGS
CAMPAIGN_RESULTS, USAGE, QUARANTINE = tables.CAMPAIGN_RESULTS.name, tables.USAGE_DAILY.name, tables.QUARANTINE.name
RUNS, QUALITY_RESULTS = tables.RUNS.name, tables.QUALITY_RESULTS.name
FUNNEL = ["pushed", "delivered", "reached", "converted"]


def open_lake(path: str | Path | None = None, conf: str | Path = "conf", *, app_name: str = "flowops-notebook",
              master: str | None = None) -> Lake:
    """The lake at `path` (else $FLOWOPS_LAKE_ROOT, else demo/lakehouse) with conf/ from `conf` (else the
    repository's), on a local Spark session started for it (or `master`)."""
    from flowops.config import load_settings
    from flowops.context import Context

    root = Path(path or os.environ.get(LAKE_ENV) or DEFAULT_LAKE)
    conf_dir = Path(conf)
    if not conf_dir.is_dir():   # a notebook runs from notebooks/: the repository's conf is beside it
        conf_dir = Path(__file__).resolve().parents[2] / "conf"
    if not (root / "ops" / "runs").exists():
        raise FileNotFoundError(f"no flowops lake at {root.resolve()} (run `make demo`, or set ${LAKE_ENV})")
    settings = load_settings(conf_dir, lake_root=str(root.resolve()), master=master)
    # A notebook reads: it is not a job to track (a step run from it is still recorded in ops/runs).
    settings = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"enabled": False})})
    return Context(settings, app_name=app_name).lake


def months(lake: Lake) -> list[str]:
    """The months the lake has stages for, oldest first."""
    return sorted(lake.partition_values(FLOW_STAGES, "month"))


def table(lake: Lake, name: str, *, pandas: bool = False, month: str | None = None,
          days: list[str] | None = None) -> DataFrame | pd.DataFrame:
    """Any table (`layer/name`) as a Spark DataFrame, or pandas with `pandas=True`; `month` reads only that month's
    partition (for tables partitioned by day, its days), `days` only those days."""
    partitions = None
    if month is not None:
        partitions = {"dt": month_days(month)} if "dt" in _partition_columns(lake, name) else {"month": [month]}
    if days is not None:
        partitions = {"dt": days}
    df = lake.read(name, partitions=partitions)
    return df.toPandas() if pandas else df


def _partition_columns(lake: Lake, name: str) -> list[str]:
    from deltalake import DeltaTable

    return list(DeltaTable(lake.path(name)).metadata().partition_columns)


def _small(lake: Lake, name: str) -> pd.DataFrame:
    """A small table read whole by delta-rs (no Spark job)."""
    from deltalake import DeltaTable

    return DeltaTable(lake.path(name)).to_pandas()


def _has(lake: Lake, name: str, column: str, values: list[str]) -> bool:
    return lake.exists(name) and bool(lake.partition_values(name, column) & set(values))


# ---- stages -----------------------------------------------------------------------------------------------------

def stage_transitions(lake: Lake, month: str) -> pd.DataFrame:
    """`from`, `to`, `subscribers`: each subscriber's stage the month before (`(new)` when not staged then) and
    in `month`."""
    previous = previous_months(month, 1)[0]
    if not _has(lake, FLOW_STAGES, "month", [month]):
        return pd.DataFrame(columns=["from", "to", "subscribers"])
    stages_df = lake.read(FLOW_STAGES, partitions={"month": [previous, month]}).select("month", "sub_id", "stage")
    now_df, before_df = stages_df.where(F.col("month") == month), stages_df.where(F.col("month") == previous)
    return (now_df.alias("n").join(before_df.alias("b"), "sub_id", "left")
            .groupBy(F.coalesce(F.col("b.stage"), F.lit("(new)")).alias("from"), F.col("n.stage").alias("to"))
            .agg(F.count(F.lit(1)).alias("subscribers")).orderBy("from", "to").toPandas())


def stage_sizes(transitions: pd.DataFrame) -> pd.DataFrame:
    """`stage`, `subscribers`, `share` in the month, from its transitions."""
    sizes = (transitions.groupby("to", as_index=False)["subscribers"].sum().rename(columns={"to": "stage"})
             .sort_values("subscribers", ascending=False, ignore_index=True))
    sizes["share"] = sizes["subscribers"] / sizes["subscribers"].sum()
    return sizes


def transition_matrix(transitions: pd.DataFrame) -> pd.DataFrame:
    """Stages the month before (rows) by stages this month (columns), subscribers in each cell."""
    return transitions.pivot_table(index="from", columns="to", values="subscribers", aggfunc="sum", fill_value=0)


def tag_by_stage(lake: Lake, month: str, tag: str | list[str]) -> pd.DataFrame:
    """Tags' distribution per stage. Numeric tags (one or a list, in one query): `stage`, `tag`, subscribers with a
    value, mean and quartiles. A string or boolean tag: subscribers per stage and value."""
    tags = [tag] if isinstance(tag, str) else list(tag)
    tags_df = lake.read(SUBSCRIBER_TAGS, partitions={"month": [month]}).select("sub_id", *tags)
    joined_df = lake.read(FLOW_STAGES, partitions={"month": [month]}).select("sub_id", "stage").join(tags_df, "sub_id")
    kinds = dict(joined_df.dtypes)
    numeric = [t for t in tags if kinds[t] in ("int", "bigint", "double", "float", "smallint", "tinyint")
               or kinds[t].startswith("decimal")]
    if not numeric:
        if len(tags) != 1:
            raise ValueError(f"tag_by_stage: give one non-numeric tag at a time, got {tags}")
        return (joined_df.groupBy("stage", F.col(tag).cast("string").alias(tags[0]))
                .agg(F.count(F.lit(1)).alias("subscribers")).orderBy("stage", F.desc("subscribers")).toPandas())
    if len(numeric) != len(tags):
        raise ValueError(f"tag_by_stage: {sorted(set(tags) - set(numeric))} are not numeric; ask for them one by one")
    parts = [F.struct(F.count(F.col(t)).alias("subscribers"), F.mean(t).alias("mean"),
                      F.percentile_approx(t, [0.25, 0.5, 0.75]).alias("q")).alias(t) for t in tags]
    row = joined_df.groupBy("stage").agg(*parts).orderBy("stage").collect()
    return pd.DataFrame([{"stage": r["stage"], "tag": t, "subscribers": r[t]["subscribers"], "mean": r[t]["mean"],
                          "p25": (r[t]["q"] or [None] * 3)[0], "median": (r[t]["q"] or [None] * 3)[1],
                          "p75": (r[t]["q"] or [None] * 3)[2]} for t in tags for r in row])


# ---- targets ----------------------------------------------------------------------------------------------------

def decisions(lake: Lake, month: str) -> pd.DataFrame:
    """`wave`, `scenario`, `decision`, `channel`, `reason`, `candidates`: every candidate of the month's scenarios,
    counted by what the policy decided and why."""
    if not _has(lake, SCENARIO_TARGETS, "month", [month]):
        return pd.DataFrame(columns=["wave", "scenario", "decision", "channel", "reason", "candidates"])
    return (lake.read(SCENARIO_TARGETS, partitions={"month": [month]})
            .groupBy("wave", "scenario", "decision", "channel", "reason").agg(F.count(F.lit(1)).alias("candidates"))
            .orderBy("wave", "scenario", "decision").toPandas())


def contacts_by_channel(decided: pd.DataFrame) -> pd.DataFrame:
    """`wave`, `channel`, `contacts` targeted."""
    targeted = decided[decided["decision"] == "targeted"]
    return (targeted.groupby(["wave", "channel"], as_index=False)["candidates"].sum()
            .rename(columns={"candidates": "contacts"}).sort_values(["wave", "contacts"], ascending=[True, False],
                                                                    ignore_index=True))


def candidates_by_scenario(decided: pd.DataFrame) -> pd.DataFrame:
    """`scenario`, `candidates`, `targeted`, `control`, `suppressed`."""
    wide = decided.pivot_table(index="scenario", columns="decision", values="candidates", aggfunc="sum",
                               fill_value=0)
    for column in ("targeted", "control", "suppressed"):
        if column not in wide.columns:
            wide[column] = 0
    wide["candidates"] = wide.sum(axis=1)
    return (wide[["candidates", "targeted", "control", "suppressed"]].reset_index()
            .sort_values("candidates", ascending=False, ignore_index=True))


def suppression_reasons(decided: pd.DataFrame) -> pd.DataFrame:
    """`decision`, `reason`, `candidates`: why candidates were not contacted (suppressed, or held out as control)."""
    return (decided[decided["decision"] != "targeted"].groupby(["decision", "reason"], as_index=False,
                                                               dropna=False)["candidates"].sum()
            .sort_values("candidates", ascending=False, ignore_index=True))


# ---- campaigns --------------------------------------------------------------------------------------------------

def campaign_results(lake: Lake, up_to: str | None = None) -> pd.DataFrame:
    """gold/campaign_results (every evaluated month, up to `up_to`), read whole: it is small."""
    if not lake.exists(CAMPAIGN_RESULTS):
        return pd.DataFrame(columns=["month", "scenario", "wave", "channel", *FUNNEL])
    results = _small(lake, CAMPAIGN_RESULTS)
    return results[results["month"] <= up_to] if up_to else results


def channel_funnel(results: pd.DataFrame, month: str) -> pd.DataFrame:
    """`wave`, `channel` and the funnel of month M's campaign, per wave and channel."""
    rows = results[(results["month"] == month) & (results["channel"] != "all") & (results["wave"] != 0)]
    return (rows.groupby(["wave", "channel"], as_index=False)[FUNNEL].sum()
            .sort_values(["wave", "pushed"], ascending=[True, False], ignore_index=True))


def uplift_by_scenario(results: pd.DataFrame) -> pd.DataFrame:
    """Each campaign's treated and control rates and uplift with its 95% interval, per month and scenario (the
    whole campaign: wave 0)."""
    whole = results[(results["channel"] == "all") & (results["wave"] == 0)]
    return whole[["month", "scenario", "treated_rate", "control_rate", "uplift", "uplift_low", "uplift_high",
                  "incremental_orders"]].sort_values(["month", "scenario"], ignore_index=True)


def cost_and_revenue(results: pd.DataFrame) -> pd.DataFrame:
    """Per campaign month: incremental orders and revenue against incentive and channel cost."""
    whole = results[(results["channel"] == "all") & (results["wave"] == 0)]
    money = (whole.groupby("month", as_index=False)
             .agg(incremental_orders=("incremental_orders", "sum"),
                  incremental_revenue_yuan=("incremental_revenue_yuan", "sum"),
                  incentive_cost_yuan=("incentive_cost_yuan", "sum"), channel_cost_yuan=("channel_cost_yuan", "sum")))
    money["cost_yuan"] = money["incentive_cost_yuan"] + money["channel_cost_yuan"]
    return money


def learned_by_channel(results: pd.DataFrame) -> pd.DataFrame:
    """What each month taught the next, per channel: contacts, conversions and the conversion rate of the reached
    (the acceptance the next month's estimates start from), summed over scenarios and waves."""
    rows = results[(results["channel"] != "all") & (results["wave"] != 0)]
    out = rows.groupby(["month", "channel"], as_index=False)[["pushed", "delivered", "converted"]].sum()
    out["conversion_of_delivered"] = out["converted"] / out["delivered"].where(out["delivered"] > 0)
    return out.sort_values(["month", "channel"], ignore_index=True)


# ---- usage ------------------------------------------------------------------------------------------------------

def top_apps(lake: Lake, month: str, limit: int = 15) -> pd.DataFrame:
    """`app_id`, `app_category`, `mb`, `share` of the month's traffic, largest first (`limit` rows)."""
    if not _has(lake, USAGE, "dt", month_days(month)):
        return pd.DataFrame(columns=["app_id", "app_category", "mb", "share"])
    apps = (lake.read(USAGE, partitions={"dt": month_days(month)}).groupBy("app_id", "app_category")
            .agg((F.sum("total_bytes") / 1e6).alias("mb")).toPandas()
            .sort_values("mb", ascending=False, ignore_index=True))
    apps["share"] = apps["mb"] / apps["mb"].sum()
    return apps.head(limit)


def usage_daily(lake: Lake, month: str | list[str]) -> pd.DataFrame:
    """Per day of `month` (or of every month in a list, in one query): MB in all, in idle hours, of unknown apps,
    and the unknown share of bytes."""
    days = [d for m in ([month] if isinstance(month, str) else month) for d in month_days(m)]
    landed = sorted(lake.partition_values(USAGE, "dt") & set(days))
    if not landed:
        return pd.DataFrame(columns=["dt", "mb", "idle_mb", "unknown_mb", "unknown_share"])
    daily = (lake.read(USAGE, partitions={"dt": landed}).groupBy("dt").agg(
        (F.sum("total_bytes") / 1e6).alias("mb"),
        (F.sum(F.when(F.col("is_idle"), F.col("total_bytes")).otherwise(0)) / 1e6).alias("idle_mb"),
        (F.sum(F.when(F.col("app_id") == "unknown", F.col("total_bytes")).otherwise(0)) / 1e6).alias("unknown_mb"))
        .orderBy("dt").toPandas())
    daily["unknown_share"] = daily["unknown_mb"] / daily["mb"]
    return daily


def categories(lake: Lake, month: str) -> pd.DataFrame:
    """`app_category`, `mb`, `idle_share` of the month."""
    if not _has(lake, USAGE, "dt", month_days(month)):
        return pd.DataFrame(columns=["app_category", "mb", "idle_share"])
    out = (lake.read(USAGE, partitions={"dt": month_days(month)}).groupBy("app_category")
           .agg((F.sum("total_bytes") / 1e6).alias("mb"),
                (F.sum(F.when(F.col("is_idle"), F.col("total_bytes")).otherwise(0)) / 1e6).alias("idle_mb"))
           .toPandas().sort_values("mb", ascending=False, ignore_index=True))
    out["idle_share"] = out["idle_mb"] / out["mb"]
    return out.drop(columns="idle_mb")


def handsets(lake: Lake, month: str) -> pd.DataFrame:
    """Subscribers per handset brand and network generation at the end of the month (from the month's tags)."""
    tags_df = lake.read(SUBSCRIBER_TAGS, partitions={"month": [month]})
    columns = [c for c in ("terminal_brand", "terminal_network_gen") if c in tags_df.columns]
    return (tags_df.groupBy(*columns).agg(F.count(F.lit(1)).alias("subscribers"))
            .orderBy(F.desc("subscribers")).toPandas())


def quarantine_daily(lake: Lake, month: str) -> pd.DataFrame:
    """`dt`, `reason`, `lines` quarantined."""
    if not _has(lake, QUARANTINE, "dt", month_days(month)):
        return pd.DataFrame(columns=["dt", "reason", "lines"])
    return (lake.read(QUARANTINE, partitions={"dt": month_days(month)})
            .groupBy("dt", "reason").agg(F.sum(F.coalesce(F.col("line_count"), F.lit(1))).alias("lines"))
            .orderBy("dt", "reason").toPandas())


# ---- operations -------------------------------------------------------------------------------------------------

def step_timings(lake: Lake, month: str) -> pd.DataFrame:
    """The jobs that ran for `month` (its month, one of its days, or a range including it), in order."""
    if not lake.exists(RUNS):
        return pd.DataFrame(columns=["job", "started_at", "seconds", "status", "rows_out"])
    runs = _small(lake, RUNS)
    params = runs["params"].map(lambda p: dict(p) if p is not None else {})
    of_month = params.map(lambda p: p.get("month") == month or str(p.get("date", "")).startswith(month)
                          or month in str(p.get("months", "")))
    steps = runs[of_month][["job", "started_at", "seconds", "status", "rows_out"]].sort_values("started_at")
    return steps.assign(started_at=steps["started_at"].astype(str).str.slice(0, 19)).reset_index(drop=True)


def quality_results(lake: Lake, month: str | None = None) -> pd.DataFrame:
    """ops/quality_results (of `month` when given): one row per expectation checked and run."""
    if not lake.exists(QUALITY_RESULTS):
        return pd.DataFrame(columns=["run_id", "success", "severity"])
    results = _small(lake, QUALITY_RESULTS)
    if month is not None and "month" in results.columns:
        results = results[results["month"] == month]
    return results.reset_index(drop=True)
