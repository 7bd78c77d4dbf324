"""A calibrated binary classifier on Spark ML for any table (`train_classifier`), and the measures it is judged by
(`evaluate_scores`: ROC-AUC, PR-AUC, top-decile lift, Brier score and a calibration table by decile).

The fitted model is one Spark ML `PipelineModel` of built-in stages, so `model.save` / `PipelineModel.load` and
`mlflow.spark` handle it like any other: a `SQLTransformer` prepares the inputs (numerics as double with a
missing-value indicator each, categories as strings with null as a level of its own), a median `Imputer`,
`StringIndexer(handleInvalid="keep")` + `OneHotEncoder`, a `VectorAssembler`, the class-weighted classifier, an
`IsotonicRegression` that maps the classifier's probability of label 1 to the calibrated `score`, and a last
`SQLTransformer` dropping the working columns.

Why class weights, then isotonic calibration: with positives at a few percent, an unweighted fit spends its effort
on the negatives (for trees, few splits ever isolate the positives; for the logistic model, the optimum sits close
to the intercept-only one on the rows that matter least). Weighting each class to half the total makes the learner
rank the rare class well, but shifts every probability upward (for the logistic model by the log of the weight
ratio on the logit; for trees by no simple rule). The isotonic regression, fitted on a calibration fold the
classifier never saw, maps those probabilities back to observed rates: it assumes only that a higher raw probability
means no lower risk, so it also repairs a learner whose distortion is not a logistic one (Platt scaling assumes it
is). Its cost is ties: it is constant between its steps, so rows of slightly different raw probability can share a
score, which can lower the ROC-AUC a little below the raw classifier's. Built-in stages cannot take an element of a
probability vector in SQL, while `IsotonicRegression` reads it directly (`featureIndex=1`): the other reason it is
the calibrator here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import Imputer, OneHotEncoder, SQLTransformer, StringIndexer, VectorAssembler
from pyspark.ml.regression import IsotonicRegression
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

MISSING = "__missing__"   # the level a null category becomes: its own level, not the unseen-category bucket
SCORE = "score"
METRICS = ("roc_auc", "pr_auc", "top_decile_lift", "brier")
Learner = Literal["logistic", "gbt"]

_P = "_clf_"              # prefix of the working columns; the model drops its own before returning
_LABEL, _WEIGHT, _FOLD = f"{_P}label", f"{_P}weight", f"{_P}fold"
_FEATURES, _RAW, _PROB, _PRED = f"{_P}features", f"{_P}raw", f"{_P}probability", f"{_P}prediction"
_NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType,
                  T.BooleanType)
_DIGITS = 6               # scores are grouped at this many decimals to measure them (bounds what reaches the driver)


@dataclass(frozen=True)
class ScoreEvaluation:
    """How well a score ranks and how well it is calibrated, on labelled rows.

    Attributes:
        metrics: `roc_auc`, `pr_auc` (average precision), `top_decile_lift` (the positive rate among the top 10% by
            score over the overall rate) and `brier` (mean squared difference between score and label).
        calibration: One row per decile of the score, highest first: `decile`, `rows`, `positives`, `mean_score`,
            `observed_rate` and `gap` (= mean_score - observed_rate).
        rows: Rows measured.
        positives: Rows with label 1.
    """

    metrics: dict[str, float]
    calibration: pd.DataFrame
    rows: int
    positives: int


@dataclass(frozen=True)
class TrainedClassifier:
    """What `train_classifier` returns.

    Attributes:
        model: The fitted pipeline: `model.transform(df)` returns `df`'s columns and `score`, the calibrated
            probability of label 1 (df needs the feature columns only).
        metrics: `roc_auc`, `pr_auc`, `top_decile_lift`, `brier` of `score` on the held-out rows.
        calibration: The held-out rows' calibration table by decile (`ScoreEvaluation.calibration`).
        label: The label column trained on.
        numeric: Numeric feature columns.
        categorical: Categorical feature columns.
        rows: Rows and positives per fold: `fit`, `calibration`, `validation` and `*_positives`.
    """

    model: PipelineModel
    metrics: dict[str, float]
    calibration: pd.DataFrame
    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _as_double(name: str) -> Column:
    return F.col(name).cast("double")


def _check_inputs(df: DataFrame, label: str, numeric: list[str], categorical: list[str], split: str | None) -> None:
    features = numeric + categorical
    missing = [c for c in [*features, label, *([split] if split else [])] if c not in df.columns]
    if missing:
        raise ValueError(f"train_classifier: the DataFrame has these columns {df.columns}, "
                         f"but these columns are required {missing}")
    if not features or len(set(features)) != len(features) or label in features or split in features:
        raise ValueError(f"train_classifier: needs distinct feature columns other than the label and the split; got "
                         f"numeric {numeric}, categorical {categorical}, label {label!r}, split {split!r}")
    taken = [c for c in df.columns if c == SCORE or c.startswith(_P)]
    if taken:
        raise ValueError(f"train_classifier: the DataFrame has columns {taken}; `{SCORE}` and names starting with "
                         f"`{_P}` are the model's own")
    types = {f.name: f.dataType for f in df.schema.fields}
    not_numeric = [f"{c} ({types[c].simpleString()})" for c in numeric if not isinstance(types[c], _NUMERIC_TYPES)]
    if not_numeric:
        raise ValueError(f"train_classifier: numeric features must be numbers or booleans; got {not_numeric} "
                         "(list them as categorical)")


def _fold(features: list[str], label: str, split: str | None, seed: int, calibration_share: float) -> Column:
    """`validation` (the split column, else a seeded quarter), `calibration` (a share of the rest), `fit`.

    The random folds hash each row's values with the seed rather than drawing `rand()`, so they do not depend on how
    the DataFrame is partitioned: the same rows give the same folds on any cluster.
    """
    def draw(salt: int) -> Column:
        return F.pmod(F.xxhash64(*[F.col(c) for c in [*features, label]], F.lit(seed), F.lit(salt)), 10_000)

    is_validation = F.coalesce(F.col(split).cast("boolean"), F.lit(False)) if split else draw(1) < 2_500
    is_calibration = draw(2) < round(calibration_share * 10_000)
    return (F.when(is_validation, F.lit("validation")).when(is_calibration, F.lit("calibration"))
            .otherwise(F.lit("fit")))


def _counts(data_df: DataFrame, numeric: list[str]) -> tuple[dict[tuple[str, float | None], int], list[str]]:
    """Rows per (fold, label) and the numerics with no value in the fit fold, in one job."""
    rows = (data_df.groupBy(_FOLD, _LABEL)
            .agg(F.count(F.lit(1)).alias("n"), *[F.count(F.col(c)).alias(f"v{i}") for i, c in enumerate(numeric)])
            .collect())
    found = {(r[_FOLD], r[_LABEL]): r["n"] for r in rows}
    fit = [r for r in rows if r[_FOLD] == "fit"]
    empty = [c for i, c in enumerate(numeric) if sum(r[f"v{i}"] for r in fit) == 0]
    return found, empty


def _stages(numeric: list[str], categorical: list[str], learner: Learner, reg_param: float, seed: int) -> list:
    """The pipeline up to the classifier; every column it adds starts with the working prefix."""
    cast = [f"CAST({_quote(c)} AS DOUBLE) AS {_P}n{i}" for i, c in enumerate(numeric)]
    absent = [f"CAST({_quote(c)} IS NULL AS DOUBLE) AS {_P}m{i}" for i, c in enumerate(numeric)]
    levels = [f"COALESCE(CAST({_quote(c)} AS STRING), '{MISSING}') AS {_P}c{i}" for i, c in enumerate(categorical)]
    stages: list = [SQLTransformer(statement=f"SELECT *, {', '.join(cast + absent + levels)} FROM __THIS__")]
    imputed = [f"{_P}i{i}" for i in range(len(numeric))]
    encoded = [f"{_P}o{i}" for i in range(len(categorical))]
    if numeric:
        stages.append(Imputer(strategy="median", inputCols=[f"{_P}n{i}" for i in range(len(numeric))],
                              outputCols=imputed))
    if categorical:
        indexed = [f"{_P}x{i}" for i in range(len(categorical))]
        stages += [StringIndexer(inputCols=[f"{_P}c{i}" for i in range(len(categorical))], outputCols=indexed,
                                 handleInvalid="keep"),
                   OneHotEncoder(inputCols=indexed, outputCols=encoded)]
    indicators = [f"{_P}m{i}" for i in range(len(numeric))]
    stages.append(VectorAssembler(inputCols=imputed + indicators + encoded, outputCol=_FEATURES))
    inputs = dict(featuresCol=_FEATURES, labelCol=_LABEL, weightCol=_WEIGHT, predictionCol=_PRED)
    if learner == "logistic":
        classifier = LogisticRegression(regParam=reg_param, elasticNetParam=0.0, maxIter=200, **inputs)
    else:
        classifier = GBTClassifier(maxDepth=4, maxIter=40, stepSize=0.1, seed=seed, **inputs)
    classifier.setProbabilityCol(_PROB).setRawPredictionCol(_RAW)
    return [*stages, classifier]


def _working_columns(numeric: list[str], categorical: list[str]) -> list[str]:
    per_numeric = [f"{_P}{kind}{i}" for kind in "nmi" for i in range(len(numeric))]
    per_category = [f"{_P}{kind}{i}" for kind in "cxo" for i in range(len(categorical))]
    return [*per_numeric, *per_category, _FEATURES, _RAW, _PROB, _PRED]


def train_classifier(df: DataFrame, *, label: str, numeric: Sequence[str], categorical: Sequence[str],
                     split: str | None = None, seed: int = 0, learner: Learner = "logistic", reg_param: float = 1e-3,
                     calibration_share: float = 0.25) -> TrainedClassifier:
    """Fits a calibrated classifier of a 0/1 label on any DataFrame and measures it on held-out rows.

    Rows are split three ways: validation (the `split` column, else a seeded quarter), and of the rest a
    calibration fold (`calibration_share`) and the fit fold. The classifier is fitted on the fit fold with each
    class weighted to half the total, the isotonic calibration on the calibration fold, and the metrics measured on
    the validation rows only. Nulls are handled inside: a numeric's nulls take the fit fold's median and an
    indicator column of their own; a null category is a level of its own; a category never seen in fitting scores
    as the reference level. See the module's docstring for why weights and isotonic calibration.

    Example, on another table: will a contacted member of a campaign order, from the experiments' members and
    their tags, validated on the latest month::

        from pyspark.sql import functions as F
        from flowops.models import train_classifier

        members_df = lake.read("gold/campaign_members").where("arm = 'treated' AND contacted")
        tags_df = lake.read("gold/subscriber_tags")
        rows_df = (members_df.join(tags_df, ["month", "sub_id"], how="inner")
                   .withColumn("is_latest", F.col("month") == "2026-02"))
        trained = train_classifier(rows_df, label="converted", numeric=["arpu_yuan", "dou_mb", "tenure_months"],
                                   categorical=["scenario", "channel", "value_tier"], split="is_latest")
        trained.metrics["roc_auc"], trained.calibration            # held-out month
        trained.model.transform(rows_df).select("sub_id", "scenario", "score")
        trained.model.save("/tmp/order_model")                       # or mlflow.spark.log_model(trained.model, ...)

    Args:
        df: Rows with `label` (0/1, or boolean) and the feature columns; other columns are ignored.
        label: The label column; a row whose label is null or not 0/1 is an error.
        numeric: Numeric (or boolean) feature columns.
        categorical: Categorical feature columns (any type; compared as strings).
        split: A boolean (or 0/1) column marking the validation rows; None to hold out a seeded quarter.
        seed: Seed of the random folds (and of the GBT learner).
        learner: `"logistic"` (default: a light L2 logistic regression, fast and stable) or `"gbt"` (40 trees of
            depth 4: interactions and thresholds found by itself, for more rows).
        reg_param: L2 penalty of the logistic model (Spark averages the loss over the rows).
        calibration_share: Share of the non-validation rows kept out of fitting to fit the calibration.

    Returns:
        The fitted pipeline, its held-out metrics and calibration table, and the rows per fold.

    Raises:
        ValueError: A column is missing or of the wrong type, a feature is listed twice, a label is not 0/1, a
            numeric feature has no value in the fit fold, or a fold lacks rows of either label.
    """
    numeric, categorical = list(numeric), list(categorical)
    _check_inputs(df, label, numeric, categorical, split)
    if learner not in ("logistic", "gbt"):
        raise ValueError(f"train_classifier: learner must be 'logistic' or 'gbt', got {learner!r}")
    if not 0 < calibration_share < 1:
        raise ValueError(f"train_classifier: calibration_share must be in (0, 1), got {calibration_share}")
    features = numeric + categorical
    data_df = (df.select(*features, _as_double(label).alias(_LABEL),
                         _fold(features, label, split, seed, calibration_share).alias(_FOLD))
               .cache())
    try:
        found, empty = _counts(data_df, numeric)
        _check_folds(found, label)
        if empty:
            raise ValueError(f"train_classifier: numeric features {empty} have no value in the fit fold")
        rows = {fold: sum(n for (f, _), n in found.items() if f == fold) for fold in ("fit", "calibration",
                                                                                    "validation")}
        rows |= {f"{fold}_positives": found.get((fold, 1.0), 0) for fold in ("fit", "calibration", "validation")}
        weight = {1.0: rows["fit"] / (2 * rows["fit_positives"]),
                  0.0: rows["fit"] / (2 * (rows["fit"] - rows["fit_positives"]))}
        fit_df = (data_df.where(F.col(_FOLD) == "fit")
                  .withColumn(_WEIGHT, F.when(F.col(_LABEL) == 1.0, F.lit(weight[1.0])).otherwise(F.lit(weight[0.0]))))
        classifier = Pipeline(stages=_stages(numeric, categorical, learner, reg_param, seed)).fit(fit_df)
        calibrator = IsotonicRegression(featuresCol=_PROB, featureIndex=1, labelCol=_LABEL, predictionCol=SCORE,
                                        isotonic=True).fit(classifier.transform(data_df.where(F.col(_FOLD) ==
                                                                                              "calibration")))
        drop = ", ".join(_quote(c) for c in _working_columns(numeric, categorical))
        model = PipelineModel(stages=[*classifier.stages, calibrator,
                                      SQLTransformer(statement=f"SELECT * EXCEPT ({drop}) FROM __THIS__")])
        held = evaluate_scores(model.transform(data_df.where(F.col(_FOLD) == "validation")), score=SCORE,
                               label=_LABEL)
    finally:
        data_df.unpersist()
    return TrainedClassifier(model=model, metrics=held.metrics, calibration=held.calibration, label=label,
                             numeric=tuple(numeric), categorical=tuple(categorical), rows=rows)


def _check_folds(found: dict[tuple[str, float | None], int], label: str) -> None:
    bad = {key: n for key, n in found.items() if key[1] not in (0.0, 1.0)}
    if bad:
        raise ValueError(f"train_classifier: `{label}` must be 0/1 on every row; found other values (fold, value): "
                         f"rows {bad}")
    short = [fold for fold in ("fit", "calibration", "validation")
             if not found.get((fold, 0.0)) or not found.get((fold, 1.0))]
    if short:
        raise ValueError(f"train_classifier: the {', '.join(short)} rows need both labels; rows per (fold, label): "
                         f"{dict(sorted(found.items()))}")


def evaluate_scores(df: DataFrame, *, score: str, label: str) -> ScoreEvaluation:
    """ROC-AUC, PR-AUC, top-decile lift, Brier score and the calibration table of any score column.

    One Spark job groups the rows by score (rounded to 6 decimals, so at most a million groups reach the driver);
    the rest is exact arithmetic over the groups, higher scores first. Ties are treated as ties, never broken by row
    order: ROC-AUC counts a tied positive-negative pair as half (the trapezoid rule), PR-AUC is the average precision
    over distinct scores, and a group straddling a decile's edge is shared between the deciles pro rata (so a rule
    score with few values gets the lift random tie-breaking would give on average).

    Args:
        df: Labelled rows.
        score: The column to evaluate, higher meaning more likely label 1 (a probability for the Brier score and
            the calibration table to mean anything).
        label: The 0/1 (or boolean) label column.

    Returns:
        The metrics (NaN where a label is absent) and the calibration table.

    Raises:
        ValueError: A column is missing, or a row has a null score or a label other than 0/1.
    """
    missing = [c for c in (score, label) if c not in df.columns]
    if missing:
        raise ValueError(f"evaluate_scores: the DataFrame has these columns {df.columns}, but these columns are "
                         f"required {missing}")
    s, y = _as_double(score), _as_double(label)
    is_bad = s.isNull() | y.isNull() | ~y.isin(0.0, 1.0)
    groups = (df.groupBy(F.round(s, _DIGITS).alias("s"))
              .agg(F.count(F.lit(1)).alias("n"), F.sum(F.when(~is_bad, y)).alias("pos"),
                   F.sum(F.when(~is_bad, s)).alias("total"), F.sum(F.when(~is_bad, (s - y) * (s - y))).alias("sq"),
                   F.sum(F.when(is_bad, 1).otherwise(0)).alias("bad"))
              .toPandas())
    bad = int(groups["bad"].sum()) if len(groups) else 0
    if bad:
        raise ValueError(f"evaluate_scores: {bad} rows have a null `{score}` or a `{label}` other than 0/1")
    if groups.empty:
        raise ValueError("evaluate_scores: the DataFrame has no rows")
    groups = groups.sort_values("s", ascending=False, ignore_index=True)
    n, pos = groups["n"].to_numpy(float), groups["pos"].to_numpy(float)
    rows, positives = n.sum(), pos.sum()
    negatives = rows - positives
    tpr = np.concatenate([[0.0], np.cumsum(pos)]) / positives if positives else None
    fpr = np.concatenate([[0.0], np.cumsum(n - pos)]) / negatives if negatives else None
    roc_auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if tpr is not None and fpr is not None \
        else float("nan")
    pr_auc = float(np.sum(pos / positives * np.cumsum(pos) / np.cumsum(n))) if positives else float("nan")
    table = _calibration(groups)
    lift = float(table["observed_rate"].iloc[0] / (positives / rows)) if positives else float("nan")
    metrics = {"roc_auc": roc_auc, "pr_auc": pr_auc, "top_decile_lift": lift,
               "brier": float(groups["sq"].sum() / rows)}
    return ScoreEvaluation(metrics=metrics, calibration=table, rows=int(rows), positives=int(positives))


def _calibration(groups: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Rows, positives, mean score and observed rate per decile of rank (highest scores first), a tied group shared
    pro rata between the deciles it straddles."""
    n = groups["n"].to_numpy(float)
    ends = np.cumsum(n)
    starts = ends - n
    edges = np.linspace(0.0, ends[-1], bins + 1)
    overlap = np.clip(np.minimum(ends[:, None], edges[None, 1:]) - np.maximum(starts[:, None], edges[None, :-1]),
                      0.0, None)
    share = overlap / n[:, None]
    size = overlap.sum(axis=0)
    positives = share.T @ groups["pos"].to_numpy(float)
    total = share.T @ groups["total"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score, observed = total / size, positives / size
    return pd.DataFrame({"decile": np.arange(1, bins + 1), "rows": size.round(1), "positives": positives.round(1),
                         "mean_score": mean_score, "observed_rate": observed, "gap": mean_score - observed})
