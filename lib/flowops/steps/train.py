"""`flowops train churn --month M`: the churn model trained on the labelled months before M, measured against the
rule and the current champion on the latest of them, logged and registered in MLflow.

Reads: gold/subscriber_tags (the labelled tag months: up to M - horizon, at most `train_months` + 1 of them),
silver/subscribers (their snapshots and the `horizon` after each, for the label), the registry's champion.
Writes: the job's MLflow run (params, the model's, the rule's and the champion's metrics, the calibration tables,
the model), a new version of the registered model `flowops-churn`, the alias `champion` when the new version beats
the current one on the validation month, and the job's ops/runs row.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops import tracking
from flowops.config import Settings
from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import FlowopsError, NothingToDoYet
from flowops.lake import Lake
from flowops.lake.tables import SUBSCRIBER_TAGS
from flowops.landing import parse_month, shift_month
from flowops.models.churn import (
    CHAMPION,
    LABEL,
    REGISTERED_MODEL,
    RULE_TAG,
    SCORE_TAG,
    SOURCE_TAG,
    Champion,
    ChurnModelConf,
    beats,
    labelled_months,
    train_churn,
    with_churn_label,
)
from flowops.models.classifier import METRICS, SCORE, ScoreEvaluation, evaluate_scores
from flowops.models.registry import find_champion, load_champion, pip_requirements, registry_client
from flowops.runs import Run, recorded_run

log = logging.getLogger(__name__)
SUBSCRIBERS = "silver/subscribers"


@dataclass
class TrainResult:
    """What `run_train_churn` did: the months, the three measures on the validation month and the registry."""

    run: Run
    month: str
    validation_month: str
    fit_months: list[str]
    model: ScoreEvaluation
    rule: ScoreEvaluation
    champion: ScoreEvaluation | None = None     # the current champion on the same rows, when there is one
    champion_version: str | None = None
    version: str | None = None                  # the version registered; None when MLflow tracking is off
    is_champion: bool = False                   # the new version holds the alias now
    rows: dict[str, int] = field(default_factory=dict)


def read_labelled(lake: Lake, month: str, conf: ChurnModelConf) -> tuple[DataFrame, list[str]]:
    """The labelled tag rows of the months training at `month` uses (every tag column, `churned`) and the months."""
    tag_months = lake.partition_values(SUBSCRIBER_TAGS, "month") if lake.exists(SUBSCRIBER_TAGS) else []
    snapshots = lake.partition_values(SUBSCRIBERS, "month") if lake.exists(SUBSCRIBERS) else []
    horizon = conf.horizon_months
    months = labelled_months(tag_months, snapshots, month, horizon)[-(conf.train_months + 1):]
    if len(months) < 2:
        raise NothingToDoYet(
            f"train churn {month}: {len(months)} labelled tag month(s) ({', '.join(months) or 'none'}), 2 needed "
            f"(one to fit, the latest to validate): a tag month T is labelled once the CRM snapshots of T+1 .. "
            f"T+{horizon} have landed; gold/subscriber_tags has {', '.join(sorted(tag_months)) or 'nothing'}, "
            f"silver/subscribers {', '.join(sorted(snapshots)) or 'nothing'}")
    needed = sorted({shift_month(m, k) for m in months for k in range(horizon + 1)})
    tags_df = lake.read(SUBSCRIBER_TAGS, partitions={"month": months}).transform(with_rule_score)
    subscribers_df = lake.read(SUBSCRIBERS, partitions={"month": needed})
    return with_churn_label(tags_df, subscribers_df, horizon), months


def with_rule_score(tags_df: DataFrame) -> DataFrame:
    """`churn_rule_score` filled in for months tagged before it existed, when `churn_risk_score` was the rule's."""
    rule = F.col(RULE_TAG) if RULE_TAG in tags_df.columns else F.lit(None).cast("double")
    was_rule = (F.coalesce(F.col(SOURCE_TAG), F.lit("rule")) == "rule") if SOURCE_TAG in tags_df.columns \
        else F.lit(True)
    return tags_df.withColumn(RULE_TAG, F.coalesce(rule, F.when(was_rule, F.col(SCORE_TAG))))


def check_churners(counts: dict[str, tuple[int, int]], month: str) -> None:
    """Every labelled month needs churners and stayers, or nothing can be fitted or measured there."""
    lacking = {m: f"{n:,} rows, {k:,} churners" for m, (n, k) in counts.items() if k == 0 or k == n}
    if lacking:
        raise FlowopsError(f"train churn {month}: no churners (or nobody else) in labelled month(s) {lacking}: the "
                           "model cannot be fitted or measured there")


def run_train_churn(ctx: Context, month: str, definitions: Definitions | None = None) -> TrainResult:
    """`flowops train churn --month M`: train, measure, log, register, and promote when it beats the champion."""
    parse_month(month)
    definitions = definitions or Definitions.load(ctx.settings.conf_dir)
    conf = definitions.models.churn
    lake = ctx.lake
    params = {"month": month, "model": REGISTERED_MODEL, "horizon_months": conf.horizon_months,
              "train_months": conf.train_months, "learner": conf.learner, "compare_by": conf.compare_by,
              "seed": conf.seed, "numeric": ",".join(conf.numeric), "categorical": ",".join(conf.categorical)}
    with recorded_run(lake, "train-churn", params) as run:
        with run.step("read") as counts:
            labelled_df, months = read_labelled(lake, month, conf)
            labelled_df = labelled_df.cache()
            by_month = {r["month"]: (r["n"], r["k"]) for r in labelled_df.groupBy("month").agg(
                F.count(F.lit(1)).alias("n"), F.sum(LABEL).alias("k")).collect()}
            check_churners({m: by_month.get(m, (0, 0)) for m in months}, month)
            counts.update(rows=sum(n for n, _ in by_month.values()), churners=sum(k for _, k in by_month.values()))
        validation_month, fit_months = months[-1], months[:-1]
        for m, (n, k) in sorted(by_month.items()):
            run.count(f"rows.{m}", n)
            run.count(f"churners.{m}", k)
        run.params.update(validation_month=validation_month, fit_months=",".join(fit_months))
        run.rows_in = sum(n for n, _ in by_month.values())
        try:
            with run.step("fit"):
                trained = train_churn(labelled_df, conf, validation_month)
            with run.step("measure"):
                validation_df = labelled_df.where(F.col("month") == F.lit(validation_month))
                rule = evaluate_scores(validation_df, score=RULE_TAG, label=LABEL)
                champion = load_champion(ctx.settings)
                current = measure_champion(champion, validation_df)
        except ValueError as exc:   # train_classifier's input errors: a fold without churners, a column missing
            raise FlowopsError(f"train churn {month}: {exc}") from None
        finally:
            labelled_df.unpersist()
        model = ScoreEvaluation(trained.metrics, trained.calibration, trained.rows["validation"],
                                trained.rows["validation_positives"])
        wins = current is None or beats(trained.metrics, current.metrics, conf.compare_by)
        result = TrainResult(run=run, month=month, validation_month=validation_month, fit_months=fit_months,
                             model=model, rule=rule, champion=current,
                             champion_version=champion.version if champion else None, rows=trained.rows)
        for name, value in trained.rows.items():
            run.count(f"rows.{name}", value)
        for who, measured in (("model", model), ("rule", rule), ("champion", current)):
            if measured is not None:
                run.params.update({f"{who}.{k}": f"{measured.metrics[k]:.6g}" for k in METRICS})
        with run.step("register"):
            result.version, result.is_champion = log_model(ctx.settings, lake, run, trained.model, result, wins)
        run.params.update(registered_version=result.version or "none", champion=str(result.is_champion).lower())
        run.rows_out = 1 if result.version else 0
    return result


def measure_champion(champion: Champion | None, validation_df: DataFrame) -> ScoreEvaluation | None:
    """The current champion on the new validation rows; None without one."""
    if champion is None:
        return None
    return evaluate_scores(champion.model.transform(validation_df.drop(SCORE)), score=SCORE, label=LABEL)


def log_model(settings: Settings, lake: Lake, run: Run, model: PipelineModel, result: TrainResult,
              wins: bool) -> tuple[str | None, bool]:
    """Log the model, its calibration tables and measures to the job's MLflow run, register it, and move the alias
    when it wins. (None, False) when the job is not tracked (MLflow off): nothing is registered then."""
    run_id = tracking.active_run_id(run)
    if run_id is None:
        log.warning("train churn: MLflow tracking is off for this lake: the model is measured but not registered")
        return None, False
    import mlflow
    import mlflow.spark

    tracking.configure(settings)
    with mlflow.start_run(run_id=run_id):
        for who, measured in (("model", result.model), ("rule", result.rule), ("champion", result.champion)):
            if measured is not None:
                mlflow.log_metrics({f"{who}.{k}": v for k, v in measured.metrics.items() if v == v})
                mlflow.log_table(measured.calibration, f"calibration/{who}.json")
        mlflow.log_text(json.dumps({"validation_month": result.validation_month, "fit_months": result.fit_months,
                                    "rows": result.rows}, indent=1), "churn_training.json")
        info = mlflow.spark.log_model(model, "model", registered_model_name=REGISTERED_MODEL,
                                      pip_requirements=pip_requirements())
    version = str(info.registered_model_version)
    client = registry_client(settings)
    if wins:
        client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    held = find_champion(client)
    return version, held is not None and held.version == version


def calibration_text(table: pd.DataFrame) -> str:
    """The calibration table as printed by the CLI: one row per decile, highest scores first."""
    shown = table.assign(mean_score=table["mean_score"].round(4), observed_rate=table["observed_rate"].round(4),
                         gap=table["gap"].round(4))
    return shown.to_string(index=False)
