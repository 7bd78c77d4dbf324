"""The uplift model on a planted world where response and uplift rank differently; Qini on hand-computed rows and
against the row-level definition; nulls, unseen categories and a save/load round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from flowops.models.uplift import SCORES, UpliftModel, qini, train_uplift

# kind -> (control conversion, planted uplift): `a` converts most without a contact but gains nothing from one,
# `b` converts only when contacted, `c` is put off. Response ranks a > b > c; uplift ranks b > a > c.
KINDS = {"a": (0.10, 0.00), "b": (0.01, 0.08), "c": (0.05, -0.03)}
NUMERIC = ["usage"]
CATEGORICAL = ["scenario", "channel", "kind", "plan"]
FEATURES = "sub_id string, scenario string, channel string, kind string, plan string, usage double"


def planted(spark, n: int, seed: int):
    """n experimental members, half held out at random; 5% of `usage` and 10% of `plan` null."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(list(KINDS), n)
    control_rate, tau = (np.array([KINDS[k][i] for k in kind]) for i in (0, 1))
    treated = (rng.random(n) < 0.5).astype(int)
    usage = rng.gamma(2.0, 1.5, n)
    usage[rng.random(n) < 0.05] = np.nan
    pdf = pd.DataFrame({
        "sub_id": [f"s{seed}-{i}" for i in range(n)],
        "scenario": rng.choice(["data_pack", "voice_pack"], n),
        "channel": rng.choice(["sms", "app"], n),
        "kind": kind,
        "plan": rng.choice(np.array(["p1", "p2", None], dtype=object), n, p=[0.5, 0.4, 0.1]),
        "usage": usage,
        "treated": treated,
        "converted": (rng.random(n) < control_rate + treated * tau).astype(int),
    })
    # NaN -> null, so the model meets real nulls (the Imputer would also take NaN).
    return spark.createDataFrame(pdf).withColumn("usage", F.nanvl("usage", F.lit(None).cast("double")))


@pytest.fixture(scope="module")
def model(spark) -> UpliftModel:
    return train_uplift(planted(spark, 6000, seed=1), numeric=NUMERIC, categorical=CATEGORICAL)


@pytest.fixture(scope="module")
def held_out(spark, model):
    scored_df = model.transform(planted(spark, 6000, seed=2)).cache()
    yield scored_df
    scored_df.unpersist()


def test_uplift_score_ranks_the_planted_levels_and_estimates_their_uplift(held_out):
    means = {r.kind: r.uplift for r in held_out.groupBy("kind").agg(F.avg("uplift_score").alias("uplift")).collect()}
    assert sorted(means, key=means.get, reverse=True) == ["b", "a", "c"]
    for kind, (_, tau) in KINDS.items():
        assert means[kind] == pytest.approx(tau, abs=0.03), kind


def test_qini_of_the_uplift_score_beats_a_response_score_and_a_random_one(held_out):
    uplift = qini(held_out, score="uplift_score")
    response = qini(held_out, score="p_treated")
    random = qini(held_out.withColumn("random", F.rand(seed=7)), score="random")
    assert uplift.coefficient > 0.1
    assert uplift.coefficient > response.coefficient + 0.05
    assert uplift.coefficient > random.coefficient + 0.05
    # The top 10% by uplift are mostly `b` (tau 0.08); by response mostly `a` (tau 0).
    assert uplift.uplift_at[0.1] > response.uplift_at[0.1] + 0.03


def test_contacts_chosen_by_the_features_train_the_contacted_against_the_not_contacted(spark):
    # As `flowops target` trains it: a tenth held out at random, and of the treated arm the allocation contacts those
    # whose `usage` is above 2, who are mostly `a` (orders anyway). Contacted against not contacted (control group
    # and left-out alike), with `usage` among the features, each kind's uplift comes back; ranked by it, the
    # randomised arms of a fresh sample show b > a > c.
    rng = np.random.default_rng(3)
    n = 20_000
    usage = rng.gamma(2.0, 1.5, n)
    kind = np.where(rng.random(n) < np.clip(usage / 6, 0.1, 0.9), "a", rng.choice(["b", "c"], n))
    control_rate, tau = (np.array([KINDS[k][i] for k in kind]) for i in (0, 1))
    treated = rng.random(n) >= 0.1
    contacted = treated & (usage > 2)
    pdf = pd.DataFrame({"sub_id": [f"u{i}" for i in range(n)], "scenario": "data_pack", "channel": "sms",
                        "kind": kind, "plan": "p1", "usage": usage, "treated": treated.astype(int),
                        "contacted": contacted.astype(int),
                        "converted": (rng.random(n) < control_rate + contacted * tau).astype(int)})
    rows = spark.createDataFrame(pdf)
    model = train_uplift(rows, numeric=NUMERIC, categorical=CATEGORICAL, treatment="contacted")
    scored = model.transform(rows).groupBy("kind").agg(F.avg("uplift_score").alias("u")).collect()
    means = {r.kind: r.u for r in scored}
    for k, (_, planted_tau) in KINDS.items():
        assert means[k] == pytest.approx(planted_tau, abs=0.02), k
    # What the selection does to a comparison that ignores it: the contacted order far more than the rest.
    naive = pdf[pdf.contacted == 1].converted.mean() - pdf[pdf.contacted == 0].converted.mean()
    true = (pdf.contacted * np.array([KINDS[k][1] for k in kind])).sum() / pdf.contacted.sum()
    assert naive > true + 0.01


def test_qini_equals_the_hand_computation(spark):
    # score, treated, converted. Treated 6 (4 converted), control 4 (2 converted): total incremental 4 - 2 * 6/4 = 1.
    rows = [(10.0, 1, 1), (9.0, 0, 0), (8.0, 1, 1), (7.0, 1, 0), (6.0, 0, 1),
            (5.0, 1, 0), (4.0, 0, 0), (3.0, 1, 1), (2.0, 0, 1), (1.0, 1, 1)]
    df = spark.createDataFrame(rows, "score double, treated int, converted int")
    result = qini(df, score="score", bins=5, relative_error=0.0)
    # top 2: 1 - 0; top 4: 2 - 0; top 6: 2 - 1 * 4/2; top 8: 3 - 1 * 5/3; all: 4 - 2 * 6/4.
    assert [x for point in result.curve for x in point] == pytest.approx(
        [0.0, 0.0, 0.2, 1.0, 0.4, 2.0, 0.6, 0.0, 0.8, 4 / 3, 1.0, 1.0])
    # Model area 0.2 * (0.5 + 1.5 + 1 + 2/3 + 7/6) = 29/30; random 1/2; perfect (0,0) (0.4,4) (0.8,4) (1,1): 2.9.
    assert result.coefficient == pytest.approx((29 / 30 - 0.5) / (2.9 - 0.5))
    # Top 1 has no control row; top 3: 2/2 - 0/1; top 5: 2/3 - 1/2.
    assert math.isnan(result.uplift_at[0.1])
    assert result.uplift_at[0.3] == pytest.approx(1.0)
    assert result.uplift_at[0.5] == pytest.approx(1 / 6)


def row_level_qini(y: np.ndarray, score: np.ndarray, t: np.ndarray) -> float:
    """scikit-uplift's qini_auc_score, row by row: a curve point after each run of equal scores, sorted."""
    def area(ranking: np.ndarray) -> float:
        order = np.argsort(-ranking, kind="stable")
        n_t, y_t, y_c = np.cumsum(t[order]), np.cumsum((y * t)[order]), np.cumsum((y * (1 - t))[order])
        n_c = np.arange(1, len(y) + 1) - n_t
        curve = y_t - y_c * np.divide(n_t, n_c, out=np.zeros(len(y)), where=n_c > 0)
        is_run_end = np.r_[np.diff(ranking[order]) != 0, True]
        xs, ys = np.r_[0, np.flatnonzero(is_run_end) + 1], np.r_[0.0, curve[is_run_end]]
        return float(np.trapezoid(ys, xs))

    random = area(np.zeros(len(y)))
    return (area(score) - random) / (area(y * t - y * (1 - t)) - random)


def test_qini_with_one_row_per_bin_equals_the_row_level_definition(spark):
    rng = np.random.default_rng(5)
    y, t = (rng.random(150) < 0.3).astype(int), (rng.random(150) < 0.6).astype(int)
    score = rng.random(150) + 0.3 * y * t
    df = spark.createDataFrame(pd.DataFrame({"score": score, "treated": t, "converted": y}))
    assert qini(df, score="score", bins=150, relative_error=0.0).coefficient == pytest.approx(
        row_level_qini(y, score, t), rel=1e-9)


def test_qini_refuses_null_scores(spark):
    df = spark.createDataFrame([(0.5, 1, 1), (None, 0, 0), (0.1, 0, 1)], "score double, treated int, converted int")
    with pytest.raises(ValueError, match="1 rows have a null `score`"):
        qini(df, score="score", bins=2)


def test_nulls_and_unseen_categories_are_scored(spark, model):
    rows = [("n1", "data_pack", "sms", "b", "p1", None),         # null numeric
            ("n2", "voice_pack", "app", "a", None, 2.0),         # null category: its own level, seen in training
            ("n3", "data_pack", None, None, "p1", 2.0),          # null categories never seen in training
            ("n4", "new_offer", "ussd", "zzz", "p9", 3.0)]       # unseen in every category
    scored_df = model.transform(spark.createDataFrame(rows, FEATURES))
    assert scored_df.columns == ["sub_id", "scenario", "channel", "kind", "plan", "usage", *SCORES]
    out = scored_df.collect()
    assert [r.sub_id for r in out] == ["n1", "n2", "n3", "n4"]
    for r in out:
        assert 0.0 < r.p_treated < 1.0 and 0.0 < r.p_control < 1.0, r
        assert r.uplift_score == pytest.approx(r.p_treated - r.p_control), r


def test_save_and_load_give_the_same_scores(spark, model, tmp_path):
    candidates_df = planted(spark, 40, seed=3).drop("treated", "converted")
    model.save(str(tmp_path / "uplift"))
    loaded = UpliftModel.load(str(tmp_path / "uplift"))
    assert (loaded.numeric, loaded.categorical) == (tuple(NUMERIC), tuple(CATEGORICAL))
    assertDataFrameEqual(loaded.transform(candidates_df), model.transform(candidates_df), rtol=0, atol=0)


def test_training_names_missing_columns_and_a_one_sided_arm(spark):
    df = spark.createDataFrame([("a", 1.0, 1, 1), ("b", 2.0, 1, 0), ("c", 3.0, 0, 0), ("d", 4.0, 0, 0)],
                               "kind string, usage double, treated int, converted int")
    with pytest.raises(ValueError, match=r"these columns are required \['plan'\]"):
        train_uplift(df, numeric=["usage"], categorical=["kind", "plan"])
    with pytest.raises(ValueError, match=r"both outcomes in both arms"):
        train_uplift(df, numeric=["usage"], categorical=["kind"])
