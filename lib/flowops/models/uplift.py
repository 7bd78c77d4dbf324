"""Uplift model (the seed's 差因子模型): who converts *because* of a contact, per subscriber x scenario x channel.

The estimator is a two-model (T-learner) approach: one classifier learns P(convert | contacted, x) on the contacted
members of past campaigns, a second learns P(convert | not contacted, x) on their control groups, and the uplift
score is the difference tau(x) = p_treated(x) - p_control(x). Ranking by tau rather than by p_treated is what raises
the match rate: a subscriber who orders anyway (high p_control) is a wasted contact, and one whom a contact puts off
(tau < 0) is a lost order.

Assumptions:
    - Either treatment is randomised within each scenario (the arms: control members were drawn after every
      eligibility rule, DESIGN.md "Both arms alike", so inside a scenario the arms differ only by the contact), or
      it is chosen from the features alone. flowops trains on the second (`flowops target`): the contacted against
      every member not contacted — the control group and the treated arm's members the allocation left out. The
      allocation is flowops' own and decides from recorded inputs only (the tags, the estimates, capacities,
      budgets, a fixed hash for ties), so given those inputs the contact is independent of how the subscriber
      would have answered (no hidden selection), and the randomised control group gives the no-contact model
      members wherever the allocation always contacts (overlap). What remains is the models' form: a left-out
      member whose organic ordering differs from a contacted one's in ways the features miss biases tau. That is
      why the model is only used where it beats the estimates on a later month's randomised comparison (`qini`
      with the arms as treatment). What it buys: the not-contacted are several times the control group, and the
      contacted's model is not diluted by members who never had a contact.
    - Control rates may differ between scenarios: each model estimates its own conditional probability with
      `scenario` among its features, so no pooling across scenarios is assumed.
    - For control members `channel` is the channel they would have been contacted on, so both models see the
      same features for the same kind of member.
    - The months trained on resemble the month scored (same offers, tags with the same meaning).

When it loses to simple per-scenario x channel estimates: tau is the difference of two models, so their errors add,
and a 10-20% control arm converting at a few percent holds few positives. With little data per cell (a few dozen
control conversions or fewer) the plain difference of rates per scenario x channel
(`flowops.evaluation.uplift.Uplift`) is as good or better: it has no model bias, and the model's finer resolution
is noise. `qini` on held-out rows settles it: score the held-out rows with both and keep the model only if it wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import Imputer, Interaction, OneHotEncoder, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

MISSING = "__missing__"   # the level a null category becomes: its own level, not the unseen-category bucket
SCORES = ("p_treated", "p_control", "uplift_score")
Learner = Literal["logistic", "gbt"]

_P = "_upl_"              # prefix of the working columns, dropped before `transform` returns
_LABEL = f"{_P}label"
_META = "features.json"


def _num(i: int) -> str:
    return f"{_P}n{i}"


def _cat(i: int) -> str:
    return f"{_P}c{i}"


def _as_01(name: str) -> Column:
    # Booleans, ints and doubles alike; anything but 0/1 is caught by the callers' checks.
    return F.col(name).cast("double")


def _require(df: DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the DataFrame has these columns {df.columns}, "
                         f"but these columns are required {missing}")


def _with_features(df: DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> DataFrame:
    """Adds the model's inputs: numerics as double (nulls left for the Imputer), categories as strings with null
    as the level MISSING (StringIndexer's `keep` bucket would lump nulls with categories never seen)."""
    nums = [F.col(c).cast("double").alias(_num(i)) for i, c in enumerate(numeric)]
    cats = [F.coalesce(F.col(c).cast("string"), F.lit(MISSING)).alias(_cat(i)) for i, c in enumerate(categorical)]
    return df.select("*", *nums, *cats)


def default_interactions(numeric: Sequence[str], categorical: Sequence[str]) -> list[tuple[str, str]]:
    """scenario x channel and scenario x each numeric feature, when `scenario` is a categorical feature.

    Each arm's model is additive in its features; these products let an offer have its own effect per channel
    and its own slope per tag (data users answer a data offer, not a voice one) at a cost of one coefficient per
    scenario level and feature. Other pairs stay additive: their effects on tau still differ by scenario through
    the two arms' different baselines, and more products would thin the control arm's few positives further.
    """
    if "scenario" not in categorical:
        return []
    pairs = [("scenario", "channel")] if "channel" in categorical else []
    return pairs + [("scenario", name) for name in numeric]


def _pipeline(arm: str, numeric: Sequence[str], categorical: Sequence[str], interactions: Sequence[tuple[str, str]],
              learner: Learner, reg_param: float, seed: int, skip: set[str] | frozenset[str] = frozenset()
              ) -> Pipeline:
    """One arm's pipeline; every column it adds carries the arm's prefix so both arms run on one DataFrame. The
    features in `skip` are indexed like the others (the columns stay aligned) but left out of the model."""
    p = f"{_P}{arm}_"
    imputed = [f"{p}n{i}" for i in range(len(numeric))]
    indexed = [f"{p}i{i}" for i in range(len(categorical))]
    encoded = [f"{p}o{i}" for i in range(len(categorical))]
    stages: list = []
    if numeric:
        stages.append(Imputer(strategy="median", inputCols=[_num(i) for i in range(len(numeric))],
                              outputCols=imputed))
    if categorical:
        stages += [StringIndexer(inputCols=[_cat(i) for i in range(len(categorical))], outputCols=indexed,
                                 handleInvalid="keep"),
                   OneHotEncoder(inputCols=indexed, outputCols=encoded)]
    vector_of = dict(zip(numeric, imputed, strict=True)) | dict(zip(categorical, encoded, strict=True))
    products = []
    if learner == "logistic":   # trees find interactions themselves
        for j, (a, b) in enumerate(interactions):
            products.append(f"{p}x{j}")
            stages.append(Interaction(inputCols=[vector_of[a], vector_of[b]], outputCol=products[-1]))
    used = [v for name, v in vector_of.items() if name not in skip]
    stages.append(VectorAssembler(inputCols=[v for v in imputed + encoded if v in used] + products,
                                  outputCol=f"{p}features"))
    inputs = dict(featuresCol=f"{p}features", labelCol=_LABEL, predictionCol=f"{p}prediction")
    if learner == "logistic":
        classifier = LogisticRegression(regParam=reg_param, elasticNetParam=0.0, maxIter=100, **inputs)
    else:   # GBTClassifier's constructor takes no probabilityCol / rawPredictionCol; its setters do
        classifier = GBTClassifier(maxDepth=3, maxIter=30, stepSize=0.1, seed=seed, **inputs)
    classifier.setProbabilityCol(f"{p}probability").setRawPredictionCol(f"{p}raw")
    return Pipeline(stages=[*stages, classifier])


def _probability(arm: str) -> Column:
    return vector_to_array(F.col(f"{_P}{arm}_probability")).getItem(1)


@dataclass(frozen=True)
class UpliftModel:
    """Two fitted pipelines, one per arm, and the feature columns they read.

    Attributes:
        treated: Pipeline fitted on contacted members: P(convert | contacted, x).
        control: Pipeline fitted on control members: P(convert | not contacted, x).
        numeric: Numeric feature columns, in the order the pipelines read them.
        categorical: Categorical feature columns, in the order the pipelines read them.
    """

    treated: PipelineModel
    control: PipelineModel
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    def transform(self, df: DataFrame) -> DataFrame:
        """Adds `p_treated`, `p_control` and `uplift_score` (= p_treated - p_control) to each row.

        Args:
            df: Rows with the feature columns; no treatment or label needed. Nulls and categories never seen in
                training are scored (median / the unseen-category level).

        Returns:
            `df`'s columns (less any old score columns) and the three scores.
        """
        _require(df, [*self.numeric, *self.categorical], "UpliftModel.transform")
        scored_df = self.control.transform(self.treated.transform(_with_features(df, self.numeric,
                                                                                   self.categorical)))
        p_treated, p_control = _probability("t"), _probability("c")
        kept = [F.col(c) for c in df.columns if c not in SCORES]
        return scored_df.select(*kept, p_treated.alias("p_treated"), p_control.alias("p_control"),
                                (p_treated - p_control).alias("uplift_score"))

    def save(self, path: str) -> None:
        """Writes `path/treated/`, `path/control/` (Spark ML's format) and `path/features.json/`, overwriting.

        The feature lists go through Spark's text writer (a folder with one JSON line), like Spark ML's own
        metadata, so a model saves wherever Spark can write: local disk, HDFS or an object store.
        """
        self.treated.write().overwrite().save(f"{path}/treated")
        self.control.write().overwrite().save(f"{path}/control")
        meta = json.dumps({"numeric": list(self.numeric), "categorical": list(self.categorical)})
        spark = SparkSession.active()
        spark.createDataFrame([(meta,)], "value string").coalesce(1).write.mode("overwrite").text(f"{path}/{_META}")

    @classmethod
    def load(cls, path: str) -> UpliftModel:
        """Reads a model that `save` wrote, with the active SparkSession."""
        lines = SparkSession.active().read.text(f"{path}/{_META}").collect()
        meta = json.loads(lines[0].value)
        return cls(treated=PipelineModel.load(f"{path}/treated"), control=PipelineModel.load(f"{path}/control"),
                   numeric=tuple(meta["numeric"]), categorical=tuple(meta["categorical"]))


def _check_arms(df: DataFrame, treatment: str, label: str) -> None:
    cells = (df.groupBy(_as_01(treatment).alias("t"), _as_01(label).alias("y")).count()
             .limit(20).collect())
    found = {(r.t, r.y): r["count"] for r in cells}
    needed = {(t, y) for t in (0.0, 1.0) for y in (0.0, 1.0)}
    if set(found) != needed:
        raise ValueError(f"train_uplift: needs 0/1 `{treatment}` and `{label}` with both outcomes in both arms; "
                         f"found ({treatment}, {label}): rows {found}")


def train_uplift(df: DataFrame, *, numeric: Sequence[str], categorical: Sequence[str], treatment: str = "treated",
                 label: str = "converted", interactions: Sequence[tuple[str, str]] | None = None,
                 learner: Learner = "logistic", reg_param: float = 1e-3, seed: int = 0,
                 control_without: Sequence[str] = ()) -> UpliftModel:
    """Fits the T-learner: one pipeline on the contacted rows, one on the control rows.

    Each pipeline: median `Imputer` for the numerics; categories with null as their own level, `StringIndexer`
    (`handleInvalid="keep"`: an unseen category scores as the reference level) and `OneHotEncoder`; the
    `interactions`; `VectorAssembler`; the classifier. The arms are fitted independently, so each learns its own
    baseline per scenario and channel, which is why a control rate that differs by scenario needs nothing more.

    No class weights: tau is a difference of two probabilities, so each must be calibrated, and a weighted fit
    shifts every probability (for the logistic model by log(weight ratio) on the logit; for trees by no simple
    rule). Unweighted maximum likelihood with an intercept reproduces the arm's mean conversion on its training
    rows; rare positives cost variance, not bias. The logistic learner is the default: fast, stable on small
    arms, calibrated; `reg_param` is a light L2 penalty on standardised coefficients that only keeps them finite
    where a level has no conversions (with positives at a few percent, 0.01 already shrinks effects by ~15%).
    `"gbt"` (30 trees of depth 3) finds interactions itself but needs far more rows per arm to beat it.

    Args:
        df: One row per experimental member: features, `treatment` (1 contacted, 0 control) and `label` (0/1).
        numeric: Numeric feature columns; nulls are imputed with the arm's median.
        categorical: Categorical feature columns, normally including `scenario` and `channel`.
        treatment: The 0/1 (or boolean) arm column.
        label: The 0/1 (or boolean) conversion column.
        interactions: Pairs of feature columns whose product enters the logistic model (ignored by `"gbt"`);
            None for `default_interactions` (scenario x channel, scenario x each numeric), () for none.
        learner: `"logistic"` or `"gbt"`.
        reg_param: L2 penalty of the logistic model. Spark averages the loss over the rows, so the penalty weighs
            more against a small arm: on a control arm of a thousand rows, 0.02 already holds every coefficient
            within a fraction of a logit.
        seed: Seed of the GBT learner (the logistic fit is deterministic).
        control_without: Features the control arm's model leaves out (and the interactions naming them): one that
            means nothing without the treatment, such as the channel a control member would have had, only
            spends the control arm's few conversions.

    Returns:
        The fitted model.

    Raises:
        ValueError: A column is missing, a feature is listed twice, an interaction names a non-feature, the
            learner is unknown, or an arm lacks rows of either outcome.
    """
    numeric, categorical = list(numeric), list(categorical)
    _require(df, [*numeric, *categorical, treatment, label], "train_uplift")
    features = numeric + categorical
    if len(set(features)) != len(features) or not features:
        raise ValueError(f"train_uplift: needs distinct feature columns; got numeric {numeric}, "
                         f"categorical {categorical}")
    if learner not in ("logistic", "gbt"):
        raise ValueError(f"train_uplift: learner must be 'logistic' or 'gbt', got {learner!r}")
    pairs = default_interactions(numeric, categorical) if interactions is None else list(interactions)
    strays = sorted({c for pair in pairs for c in pair} - set(features))
    if strays:
        raise ValueError(f"train_uplift: interactions name {strays}, which are not among the features {features}")
    _check_arms(df, treatment, label)

    prepared_df = _with_features(df.select(*features, _as_01(treatment).alias(treatment),
                                           _as_01(label).alias(_LABEL)), numeric, categorical)
    fitted = {}
    for arm, value in (("t", 1.0), ("c", 0.0)):
        arm_df = prepared_df.where(F.col(treatment) == value).cache()
        dropped = set(control_without) if arm == "c" else set()
        arm_pairs = [pair for pair in pairs if not dropped & set(pair)]
        try:
            fitted[arm] = _pipeline(arm, numeric, categorical, arm_pairs, learner, reg_param, seed,
                                    skip=dropped).fit(arm_df)
        finally:
            arm_df.unpersist()
    return UpliftModel(treated=fitted["t"], control=fitted["c"], numeric=tuple(numeric),
                       categorical=tuple(categorical))


@dataclass(frozen=True)
class Qini:
    """A score's Qini evaluation on held-out rows.

    Attributes:
        curve: (fraction of rows targeted, incremental conversions) from (0, 0) to (1, total), one point per
            quantile bin: the top fraction's treated conversions minus its control conversions scaled to its
            treated count, n_t * (rate_t - rate_c). Fractions are the rows actually above each cut, so ties in
            the score can merge bins.
        coefficient: scikit-uplift's `qini_auc_score` (negative_effect=True): the area between the curve and
            the random line, divided by the same area for the perfect ranking; 1 is perfect, 0 is random,
            negative is worse than random.
        uplift_at: k -> rate_t - rate_c among the top k of all rows (scikit-uplift's `uplift_at_k`, strategy
            "overall"); NaN when that top fraction has no treated or no control row.
    """

    curve: list[tuple[float, float]]
    coefficient: float
    uplift_at: dict[float, float]


@dataclass(frozen=True)
class _Top:
    """Cumulative counts over the rows above a cut."""

    n: int
    n_t: int
    y_t: int
    y_c: int

    @property
    def incremental(self) -> float:
        n_c = self.n - self.n_t
        return self.y_t - (self.y_c * self.n_t / n_c if n_c else 0.0)

    @property
    def uplift(self) -> float:
        n_c = self.n - self.n_t
        return self.y_t / self.n_t - self.y_c / n_c if self.n_t and n_c else math.nan


def _area(points: Sequence[tuple[float, float]]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False))


def qini(df: DataFrame, *, score: str, treatment: str = "treated", label: str = "converted", bins: int = 10,
         at: Sequence[float] = (0.1, 0.3, 0.5), relative_error: float = 1e-3) -> Qini:
    """Evaluates any score column on held-out experimental rows: Qini curve, Qini coefficient, uplift at k.

    Two Spark jobs, whatever the size: `approxQuantile` finds the score's cuts (the top 1/bins, 2/bins, ...
    and each k in `at`), then one aggregation counts rows, treated, and conversions per arm between cuts; only
    those few rows reach the driver. A row is in the top fraction f when its score is above the (1 - f)
    quantile, so with relative_error=0 and distinct scores the top f holds exactly floor(f * n) rows.

    The coefficient follows scikit-uplift's `qini_auc_score` (after Radcliffe 2007): (area under the curve -
    area under the random line) / (area under the perfect curve - area under the random line). The random line
    runs from (0, 0) to (1, total incremental conversions). The perfect curve ranks treated converters first
    and control converters last (negative effects included): (0, 0), (Y_t / n, Y_t), (1 - Y_c / n, Y_t),
    (1, total). The model's area is the trapezoid rule over the bins, so it approaches scikit-uplift's row-level
    number as `bins` grows (and equals it when each bin holds one row).

    Args:
        df: Held-out rows with `score`, `treatment` (0/1 or boolean) and `label` (0/1 or boolean).
        score: The column to rank by, higher first: an uplift score, or any baseline to compare with.
        treatment: The arm column.
        label: The conversion column.
        bins: Number of quantile bins of the curve.
        at: Fractions k for `uplift_at`, each in (0, 1).
        relative_error: `approxQuantile`'s relative error; 0 for exact cuts (a full sort).

    Returns:
        The curve, the coefficient (NaN if the perfect ranking is no better than random) and uplift at each k.

    Raises:
        ValueError: A column is missing, `bins` or `at` is out of range, or a row has a null score or a
            treatment or label other than 0/1.
    """
    _require(df, [score, treatment, label], "qini")
    if bins < 1 or not all(0 < k < 1 for k in at):
        raise ValueError(f"qini: needs bins >= 1 and every k in (0, 1); got bins={bins}, at={list(at)}")
    grid = [round(j / bins, 12) for j in range(1, bins)]
    cuts = sorted(set(grid) | {float(k) for k in at})
    # Spark's quantile p is the value of rank ceil(p * n); the nudge keeps 1 - f's rounding error from moving
    # an exact cut (relative_error=0) one row down, for any n below 1e12 rows.
    probabilities = [max(0.0, 1.0 - f - 1e-12) for f in cuts]
    thresholds = df.approxQuantile(score, probabilities, relative_error) if cuts else []
    if cuts and not thresholds:
        raise ValueError(f"qini: `{score}` has no non-null value")

    s, t, y = F.col(score), _as_01(treatment), _as_01(label)
    group = F.when(s.isNull(), F.lit(-1))
    for g, threshold in enumerate(thresholds):
        group = group.when(s > F.lit(threshold), F.lit(g))
    group = group.otherwise(F.lit(len(cuts)))
    is_valid = t.isin(0.0, 1.0) & y.isin(0.0, 1.0)
    rows = (df.groupBy(group.alias("g"))
            .agg(F.count(F.lit(1)).alias("n"), F.sum(F.when(is_valid, t)).alias("n_t"),
                 F.sum(F.when(is_valid, t * y)).alias("y_t"), F.sum(F.when(is_valid, (1 - t) * y)).alias("y_c"),
                 F.sum(F.when(~is_valid | t.isNull() | y.isNull(), 1).otherwise(0)).alias("bad"))
            .collect())
    by_group = {r.g: r for r in rows}
    null_scores = by_group[-1].n if -1 in by_group else 0
    bad = sum(r.bad for r in rows)
    if null_scores or bad:
        raise ValueError(f"qini: {null_scores} rows have a null `{score}` and {bad} rows have `{treatment}` or "
                         f"`{label}` other than 0/1; drop or fix them before evaluating")
    if not rows:
        raise ValueError("qini: the DataFrame has no rows")

    tops, total = [], _Top(0, 0, 0, 0)
    for g in range(len(cuts) + 1):
        r = by_group.get(g)
        if r is not None:
            total = _Top(total.n + r.n, total.n_t + int(r.n_t), total.y_t + int(r.y_t), total.y_c + int(r.y_c))
        tops.append(total)   # tops[g]: the rows above cut g (the last: all rows)
    top_at = dict(zip([*cuts, 1.0], tops, strict=True))

    curve = [(0.0, 0.0)]
    for f in [*grid, 1.0]:
        top = top_at[f]
        point = (top.n / total.n, top.incremental)
        if point[0] > curve[-1][0]:
            curve.append(point)
    random_area = total.incremental / 2
    perfect = [(0.0, 0.0), (total.y_t / total.n, float(total.y_t)), (1 - total.y_c / total.n, float(total.y_t)),
               (1.0, total.incremental)]
    perfect_gain = _area(perfect) - random_area
    coefficient = (_area(curve) - random_area) / perfect_gain if perfect_gain else math.nan
    return Qini(curve=curve, coefficient=coefficient, uplift_at={float(k): top_at[float(k)].uplift for k in at})
