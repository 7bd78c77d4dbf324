"""train_classifier on a planted table (ranking, calibration against the planted probabilities, nulls, unseen
categories, a given split, input errors) and evaluate_scores against scikit-learn and hand-computed rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from flowops.models import evaluate_scores, train_classifier
from flowops.models.classifier import SCORE

# Planted: the log-odds of label 1 rise with `usage_drop` and with the `plan` level, `noise` carries nothing;
# about 6% positives, like churn.
PLAN_LOGIT = {"basic": 0.8, "mid": 0.0, "premium": -0.8}


def planted(spark, n: int, seed: int):
    """n rows with the planted probability `p` beside the drawn label; 10% of usage_drop and plan null."""
    rng = np.random.default_rng(seed)
    drop = rng.normal(0.0, 1.0, n)
    plan = rng.choice(list(PLAN_LOGIT), n)
    logit = -3.3 + 1.4 * drop + np.array([PLAN_LOGIT[p] for p in plan])
    p = 1 / (1 + np.exp(-logit))
    shown_drop = np.where(rng.random(n) < 0.1, np.nan, drop)
    shown_plan = np.where(rng.random(n) < 0.1, None, plan).astype(object)
    pdf = pd.DataFrame({"id": np.arange(n), "usage_drop": shown_drop, "noise": rng.normal(size=n),
                        "plan": shown_plan, "p": p, "label": (rng.random(n) < p).astype(int)})
    return spark.createDataFrame(pdf).withColumn("usage_drop", F.nanvl("usage_drop", F.lit(None)))


@pytest.fixture(scope="module")
def trained(spark):
    rows_df = planted(spark, 12_000, seed=5).cache()
    return rows_df, train_classifier(rows_df, label="label", numeric=["usage_drop", "noise"], categorical=["plan"],
                                     seed=3)


def test_the_model_ranks_well_above_chance_and_near_the_planted_probability(trained):
    rows_df, result = trained
    assert set(result.metrics) == {"roc_auc", "pr_auc", "top_decile_lift", "brier"}
    ceiling = evaluate_scores(rows_df, score="p", label="label")   # the planted probability itself
    assert result.metrics["roc_auc"] > 0.75
    assert result.metrics["roc_auc"] > ceiling.metrics["roc_auc"] - 0.04
    assert result.metrics["top_decile_lift"] > 3.0
    assert result.rows["validation"] == pytest.approx(3_000, rel=0.1)   # a seeded quarter held out
    assert result.rows["calibration"] == pytest.approx(0.25 * 9_000, rel=0.1)


def test_scores_are_calibrated_probabilities(trained):
    rows_df, result = trained
    scored = result.model.transform(rows_df).select("p", SCORE).toPandas()
    assert scored[SCORE].between(0, 1).all()
    assert (scored[SCORE] - scored["p"]).abs().mean() < 0.03                # close to the planted probability
    table = result.calibration
    weighted_gap = float((table["gap"].abs() * table["rows"]).sum() / table["rows"].sum())
    assert weighted_gap < 0.02
    assert table["gap"].abs().max() < 0.08
    assert table["observed_rate"].iloc[0] > 3 * table["observed_rate"].iloc[-5:].mean()


def test_the_model_keeps_the_columns_and_scores_nulls_and_unseen_categories(spark, trained):
    _, result = trained
    new_df = spark.createDataFrame([(1, 2.0, 0.0, "basic"), (2, None, None, None), (3, 0.0, 0.0, "gold-plated")],
                                   "id int, usage_drop double, noise double, plan string")
    scored = result.model.transform(new_df)
    assert scored.columns == ["id", "usage_drop", "noise", "plan", SCORE]
    scores = {r["id"]: r[SCORE] for r in scored.collect()}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores[1] > scores[3]   # a large usage drop on the riskiest plan scores above no drop


def test_a_split_column_marks_the_validation_rows(spark):
    rows_df = planted(spark, 6_000, seed=8).withColumn("is_late", F.col("id") >= 4_500)
    result = train_classifier(rows_df, label="label", numeric=["usage_drop"], categorical=["plan"], split="is_late",
                              learner="gbt")
    assert result.rows["validation"] == 1_500
    assert result.metrics["roc_auc"] > 0.7


@pytest.mark.parametrize(("change", "message"), [
    (dict(numeric=["usage_drop", "absent"]), "these columns are required ['absent']"),
    (dict(numeric=["plan"], categorical=[]), "numeric features must be numbers"),
    (dict(numeric=["usage_drop"], categorical=["usage_drop"]), "distinct feature columns"),
    (dict(label="three"), "must be 0/1"),
    (dict(label="never"), "need both labels"),
    (dict(learner="forest"), "learner must be"),
])
def test_input_errors_say_what_is_wrong(spark, change, message):
    rows_df = (planted(spark, 400, seed=1).withColumn("three", F.col("id") % 3)
               .withColumn("never", F.lit(0)))
    args = dict(label="label", numeric=["usage_drop"], categorical=["plan"]) | change
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train_classifier(rows_df, **args)


def test_evaluate_scores_matches_scikit_learn_with_ties(spark):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    n = 3_000
    score = np.round(rng.random(n), 1)   # 11 distinct values: many ties
    label = (rng.random(n) < 0.1 + 0.5 * score ** 2).astype(int)
    df = spark.createDataFrame(pd.DataFrame({"s": score, "y": label}))
    result = evaluate_scores(df, score="s", label="y")
    assert result.metrics["roc_auc"] == pytest.approx(metrics.roc_auc_score(label, score), abs=1e-12)
    assert result.metrics["pr_auc"] == pytest.approx(metrics.average_precision_score(label, score), abs=1e-12)
    assert result.metrics["brier"] == pytest.approx(metrics.brier_score_loss(label, score), abs=1e-12)
    assert (result.rows, result.positives) == (n, int(label.sum()))


def test_evaluate_scores_by_hand_with_a_tie_across_the_top_decile(spark):
    # 20 rows: the top 2 are a decile; scores 0.9 (one positive), then four tied at 0.5 (two positives), then 15 at
    # 0.1 (one positive). The tie straddles the decile's edge: the second slot takes a quarter of the tie.
    rows = [(0.9, 1)] + [(0.5, 1), (0.5, 1), (0.5, 0), (0.5, 0)] + [(0.1, 1)] + [(0.1, 0)] * 14
    df = spark.createDataFrame(rows, "s double, y int")
    result = evaluate_scores(df, score="s", label="y")
    positives, rate = 4, 4 / 20
    top_rate = (1 + 0.25 * 2) / 2
    assert result.metrics["top_decile_lift"] == pytest.approx(top_rate / rate)
    # ROC-AUC: pairs (positive, negative) = 4 x 16; the 0.9 positive beats all 16; each tied positive beats the 14
    # at 0.1 and ties the 2 at 0.5 (half each); the 0.1 positive ties 14 negatives.
    assert result.metrics["roc_auc"] == pytest.approx((16 + 2 * (14 + 1) + 7) / (4 * 16))
    # Average precision over distinct scores: recall steps 1/4 at precision 1, 2/4 at 3/5, 1/4 at 4/20.
    assert result.metrics["pr_auc"] == pytest.approx(0.25 * 1 + 0.5 * 3 / 5 + 0.25 * 4 / 20)
    assert result.positives == positives
    assert result.calibration["rows"].sum() == pytest.approx(20)
    assert result.calibration["decile"].tolist() == list(range(1, 11))


def test_evaluate_scores_refuses_null_scores_and_other_labels(spark):
    df = spark.createDataFrame([(0.5, 1), (None, 0), (0.2, 2)], "s double, y int")
    with pytest.raises(ValueError, match="2 rows have a null `s` or a `y` other than 0/1"):
        evaluate_scores(df, score="s", label="y")
