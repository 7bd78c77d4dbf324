"""The churn model's pieces: labels from CRM snapshots, which months are labelled, conf/models.yml checked against
the tag library, and scoring that replaces the rule's score and recomputes the tags read from it."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.testing import assertDataFrameEqual

from flowops.errors import ConfigError
from flowops.models.churn import Champion, beats, labelled_months, load_models, score_tags, with_churn_label
from flowops.tags.definitions import load_library
from tests.conftest import CONF

SNAPSHOT = "month string, sub_id string, status string, churn_date date"


def test_labels_come_from_the_snapshots_of_the_next_months(spark):
    tags_df = spark.createDataFrame(
        [(m, s, 1.0) for m in ("2026-01", "2026-02") for s in ("a", "b", "c", "d", "e")],
        "month string, sub_id string, x double")
    d = dt.date
    subscribers_df = spark.createDataFrame([
        ("2026-01", "a", "active", None), ("2026-02", "a", "churned", d(2026, 2, 10)),   # leaves in Feb
        ("2026-01", "b", "active", None), ("2026-02", "b", "active", None), ("2026-03", "b", "active", None),
        ("2026-04", "b", "churned", d(2026, 4, 3)),                                       # leaves in April
        ("2026-01", "c", "churned", d(2026, 1, 20)),                                      # left in the tag month
        ("2026-01", "d", "active", None), ("2026-02", "d", "active", None),               # stays
        ("2026-01", "e", "active", d(2026, 3, 1)), ("2026-02", "e", "active", d(2026, 3, 1)),   # a date ahead
    ], SNAPSHOT)
    labelled = with_churn_label(tags_df, subscribers_df, horizon=2)
    expected = spark.createDataFrame([
        ("2026-01", "a", 1.0, 1), ("2026-01", "b", 1.0, 0), ("2026-01", "d", 1.0, 0), ("2026-01", "e", 1.0, 1),
        ("2026-02", "b", 1.0, 1), ("2026-02", "d", 1.0, 0), ("2026-02", "e", 1.0, 1),
    ], "month string, sub_id string, x double, churned int")
    assertDataFrameEqual(labelled.select("month", "sub_id", "x", "churned"), expected)


def test_a_one_month_horizon_looks_one_snapshot_ahead(spark):
    tags_df = spark.createDataFrame([("2026-01", "b")], "month string, sub_id string")
    subscribers_df = spark.createDataFrame(
        [("2026-01", "b", "active", None), ("2026-03", "b", "churned", dt.date(2026, 3, 3))], SNAPSHOT)
    assert with_churn_label(tags_df, subscribers_df, horizon=1).collect()[0]["churned"] == 0
    assert with_churn_label(tags_df, subscribers_df, horizon=2).collect()[0]["churned"] == 1


def test_labelled_months_need_every_snapshot_of_the_horizon():
    months = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    assert labelled_months(months, months, "2026-05", 2) == ["2026-01", "2026-02", "2026-03"]
    assert labelled_months(months, months, "2026-04", 1) == ["2026-01", "2026-02", "2026-03"]
    gap = [m for m in months if m != "2026-03"]
    assert labelled_months(months, gap, "2026-05", 2) == ["2026-03"]
    assert labelled_months(months[1:], months, "2026-03", 2) == []


def test_beats_is_strict_and_lower_brier_is_better():
    assert beats({"roc_auc": 0.8}, {"roc_auc": 0.7}, "roc_auc")
    assert not beats({"roc_auc": 0.7}, {"roc_auc": 0.7}, "roc_auc")
    assert beats({"brier": 0.02}, {"brier": 0.03}, "brier")
    assert not beats({"brier": 0.04}, {"brier": 0.03}, "brier")


@pytest.fixture
def conf_copy(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    return conf


@pytest.mark.parametrize(("text", "message"), [
    ("churn:\n  numeric: [no_such_tag]\n", r"models.yml: churn.numeric.0: unknown tag 'no_such_tag'"),
    ("churn:\n  numeric: [mou]\n  categorical: [churn_risk_level]\n",
     r"churn.categorical.0: 'churn_risk_level' is written by the churn model's scoring"),
    ("churn:\n  numeric: [mou, city]\n", r"churn.numeric.1: tag 'city' is of type string"),
    ("churn:\n  numeric: [mou, mou]\n", r"features listed twice: \['mou'\]"),
    ("churn:\n  numeric: [mou]\n  horizon: 2\n", r"models.yml: .*churn.horizon"),
    ("churn:\n  numeric: [mou]\n  learner: forest\n", r"churn.learner"),
    ("churn: {}\n", r"at least one feature"),
])
def test_models_conf_mistakes_name_the_file_and_key(conf_copy, text, message):
    (conf_copy / "models.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_models(conf_copy, load_library(conf_copy))


def test_the_repo_conf_loads(conf_copy):
    conf = load_models(conf_copy, load_library(conf_copy))
    assert conf.churn.horizon_months == 2
    assert "churn_risk_score" not in conf.churn.features


def test_score_tags_replaces_the_score_and_recomputes_the_level_with_the_model_bands(spark):
    library = load_library(CONF)
    tagged_df = spark.createDataFrame([
        # sub, left this month, rule score, tenure, the "model" feature
        ("s1", False, 0.9, 30, 0.1),    # the rule says high, the model medium (its own bands)
        ("s2", False, 0.0, 30, 0.7),    # the rule says low, the model high
        ("s3", True, 1.0, 30, 0.1),     # left this month: keeps the rule's 1.0
        ("s4", None, 0.2, None, 0.04),
    ], "sub_id string, churned_this_month boolean, churn_rule_score double, tenure_months int, risk double")
    tagged_df = tagged_df.selectExpr(
        "*", "churn_rule_score AS churn_risk_score", "'rule' AS churn_score_source",
        "CAST(NULL AS STRING) AS churn_risk_level", "CAST(NULL AS STRING) AS dou_trend",
        "CAST(NULL AS STRING) AS arpu_trend", "CAST(NULL AS STRING) AS lifecycle")
    model = PipelineModel(stages=[SQLTransformer(statement="SELECT *, risk AS score FROM __THIS__")])
    scored = score_tags(tagged_df, library, Champion(model=model, version="7"))
    expected = spark.createDataFrame([
        ("s1", 0.1, "model:7", "medium", "mature"), ("s2", 0.7, "model:7", "high", "leaving"),
        ("s3", 1.0, "model:7", "high", "leaving"), ("s4", 0.04, "model:7", "low", "mature"),
    ], "sub_id string, churn_risk_score double, churn_score_source string, churn_risk_level string, "
       "lifecycle string")
    assertDataFrameEqual(
        scored.select("sub_id", "churn_risk_score", "churn_score_source", "churn_risk_level", "lifecycle"), expected)
    assert "score" not in scored.columns
    assert score_tags(tagged_df, library, None) is tagged_df


def test_training_on_a_lake_without_labelled_months_is_one_line_and_a_skip(spark, tmp_path, capsys):
    """Nothing to train on yet is not a failure: one line saying what training waits for, and exit code 99, which
    the Airflow DAG's training task takes as skipped."""
    from flowops.cli import main

    code = main(["train", "churn", "--month", "2026-03", "--lake", str(tmp_path / "lake"), "--master", "local[2]",
                 "--conf", str(CONF)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 99
    said = [line for line in err if line.startswith("flowops train: ")]
    assert len(said) == 1
    assert said[0].startswith("flowops train: nothing to do yet: train churn 2026-03: 0 labelled tag month(s) (none), "
                              "2 needed")
