"""The churn model: will a subscriber leave within the next `horizon_months` months, from the month's tags.

Label: a subscriber on the network at the end of tag month T (CRM status not churned, no churn date by then) is a
churner of T when a CRM snapshot of T+1 .. T+horizon says they left: status `churned` or a churn date in those
months. A tag month is labelled once the snapshot of T+horizon has landed, so training at month M uses tag months
up to M-horizon, validates on the latest of them and fits on the earlier ones (`train_classifier` with the month
as its split): the model is judged on a month it never saw, as it will be used.

Scoring (`score_tags`): the champion's calibrated probability replaces the rule's `churn_risk_score` for every
subscriber still on the network (one who left during the month keeps the rule's 1.0), the tags computed from it
(`churn_risk_level`, `lifecycle`, ...) are recomputed with their own definitions, and `churn_score_source` says
`model:<version>`; without a champion the tags stay the rule's (`churn_score_source` = `rule`), and
`churn_rule_score` always holds the rule's score, so every month can compare the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowops.config import StrictModel, describe_errors, load_yaml
from flowops.errors import ConfigError
from flowops.landing import shift_month
from flowops.models.classifier import SCORE, TrainedClassifier, train_classifier
from flowops.tags.definitions import TagLibrary

REGISTERED_MODEL = "flowops-churn"   # the MLflow registered model; its alias CHAMPION is what `flowops tags` scores
CHAMPION = "champion"
SCORE_TAG = "churn_risk_score"       # what the segment rules and scenarios read
RULE_TAG = "churn_rule_score"        # the rule's score, kept whoever scored
SOURCE_TAG = "churn_score_source"    # 'rule' or 'model:<version>'
LEFT_TAG = "churned_this_month"      # left during the tag month: keeps the rule's score (1.0)
LABEL = "churned"
VALIDATION = "is_validation"
Metric = Literal["roc_auc", "pr_auc", "top_decile_lift", "brier"]
NUMERIC_TAG_TYPES = frozenset({"int", "long", "double", "boolean"})
CATEGORICAL_TAG_TYPES = frozenset({"string", "int", "long", "boolean"})


class ChurnModelConf(StrictModel):
    """`churn:` in conf/models.yml."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    horizon_months: int = Field(2, ge=1, le=12)
    train_months: int = Field(6, ge=1, le=36)
    learner: Literal["logistic", "gbt"] = "logistic"
    compare_by: Metric = "roc_auc"
    seed: int = 0

    @model_validator(mode="after")
    def _features(self) -> ChurnModelConf:
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("give at least one feature in numeric or categorical")
        twice = sorted({f for f in features if features.count(f) > 1})
        if twice:
            raise ValueError(f"features listed twice: {twice}")
        return self

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical


class ModelsConf(StrictModel):
    """conf/models.yml."""

    churn: ChurnModelConf


def load_models(conf_dir: str | Path, library: TagLibrary) -> ModelsConf:
    """Read conf/models.yml and check every feature against the tag library.

    Refused, with the file and the key: a feature that is not a tag, or not of a type its list takes (numbers and
    booleans for `numeric`; strings, integers and booleans for `categorical`); the tags the model writes
    (`churn_risk_score` and every tag computed from it, `churn_score_source`), which would feed the model its own
    earlier output; and a library without the tags scoring needs.
    """
    path = Path(conf_dir) / "models.yml"
    data = load_yaml(path)
    try:
        conf = ModelsConf.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from None
    absent = [t for t in (SCORE_TAG, RULE_TAG, SOURCE_TAG, LEFT_TAG) if t not in library]
    if absent:
        raise ConfigError(f"{path}: churn: the tag library lacks {absent}, which churn scoring writes or reads "
                          "(conf/tags/churn.yml)")
    written = set(written_tags(library))
    for key in ("numeric", "categorical"):
        for i, name in enumerate(getattr(conf.churn, key)):
            if name not in library:
                raise ConfigError(f"{path}: churn.{key}.{i}: unknown tag {name!r} (see `flowops tags --catalog`)")
            if name in written:
                raise ConfigError(f"{path}: churn.{key}.{i}: {name!r} is written by the churn model's scoring "
                                  f"({SCORE_TAG} or a tag computed from it): the model would read its own output")
            kind = library[name].type
            if key == "numeric" and kind not in NUMERIC_TAG_TYPES:
                raise ConfigError(f"{path}: churn.numeric.{i}: tag {name!r} is of type {kind}, not a number or a "
                                  "boolean: list it under categorical")
            if key == "categorical" and kind not in CATEGORICAL_TAG_TYPES:
                raise ConfigError(f"{path}: churn.categorical.{i}: tag {name!r} is of type {kind}: a category must "
                                  f"be one of {sorted(CATEGORICAL_TAG_TYPES)}")
    return conf


def written_tags(library: TagLibrary) -> list[str]:
    """The tags scoring rewrites: the score, the source and every tag computed from them, in library order."""
    touched = {SCORE_TAG, SOURCE_TAG}
    for tag in library.tags:   # dependencies first, so one pass closes the set
        if touched.intersection(tag.deps):
            touched.add(tag.name)
    return [t.name for t in library.tags if t.name in touched]


def labelled_months(tag_months: Sequence[str], snapshot_months: Sequence[str], month: str, horizon: int) -> list[str]:
    """Tag months up to `month` - `horizon` whose next `horizon` CRM snapshots have all landed, oldest first."""
    snapshots = set(snapshot_months)
    last = shift_month(month, -horizon)
    return sorted(m for m in set(tag_months)
                  if m <= last and all(shift_month(m, k) in snapshots for k in range(1, horizon + 1)))


def with_churn_label(tags_df: DataFrame, subscribers_df: DataFrame, horizon: int) -> DataFrame:
    """The tag rows of subscribers on the network at the end of their month, with `churned` (0/1).

    Args:
        tags_df: gold/subscriber_tags rows (`month`, `sub_id`, tags) of labelled months.
        subscribers_df: silver/subscribers snapshots of those months and the `horizon` months after each.
        horizon: Months ahead the label looks.

    Returns:
        `tags_df`'s columns and `churned`: 1 when a snapshot of month+1 .. month+horizon has the subscriber's status
        `churned` or a churn date in those months, else 0. Subscribers who had left by the end of their tag month
        (status churned, or a churn date by then) are dropped: there is nothing left to predict.
    """
    month_end = F.last_day(F.to_date(F.concat(F.col("month"), F.lit("-01"))))
    on_network_df = (subscribers_df
                     .where((F.col("status") != "churned") & (F.col("churn_date").isNull() |
                                                              (F.col("churn_date") > month_end)))
                     .select("month", "sub_id").distinct())
    left_df = (subscribers_df.where((F.col("status") == "churned") | F.col("churn_date").isNotNull())
               .select("sub_id", F.coalesce(F.date_format("churn_date", "yyyy-MM"), F.col("month")).alias("left")))
    # Each departure labels the `horizon` tag months before it.
    labels_df = (left_df.select("sub_id", "left", F.explode(F.sequence(F.lit(1), F.lit(horizon))).alias("k"))
                 .select("sub_id", F.date_format(F.add_months(F.to_date(F.concat(F.col("left"), F.lit("-01"))),
                                                              -F.col("k")), "yyyy-MM").alias("month"))
                 .distinct().withColumn(LABEL, F.lit(1)))
    return (tags_df.join(on_network_df, ["month", "sub_id"], how="inner")
            .join(labels_df, ["month", "sub_id"], how="left")
            .withColumn(LABEL, F.coalesce(F.col(LABEL), F.lit(0))))


def train_churn(labelled_df: DataFrame, conf: ChurnModelConf, validation_month: str) -> TrainedClassifier:
    """`train_classifier` on labelled tag rows: fitted on the months before `validation_month`, measured on it."""
    rows_df = labelled_df.withColumn(VALIDATION, F.col("month") == F.lit(validation_month))
    return train_classifier(rows_df, label=LABEL, numeric=conf.numeric, categorical=conf.categorical,
                            split=VALIDATION, seed=conf.seed, learner=conf.learner)


def beats(new: dict[str, float], current: dict[str, float], metric: Metric) -> bool:
    """Whether `new` is strictly better than `current` on `metric` (lower is better for the Brier score)."""
    if metric == "brier":
        return new[metric] < current[metric]
    return new[metric] > current[metric]


@dataclass(frozen=True)
class Champion:
    """The registered model `flowops tags` scores with."""

    model: PipelineModel
    version: str

    @property
    def source(self) -> str:
        return f"model:{self.version}"


def score_tags(tagged_df: DataFrame, library: TagLibrary, champion: Champion | None) -> DataFrame:
    """Sets `churn_risk_score` from the champion (the rule's stays without one) and recomputes what depends on it.

    Args:
        tagged_df: Every tag (and the base columns they were computed from) of one month, as the tag engine left
            them, before the gold columns are selected.
        library: The tag library the tags came from.
        champion: The model to score with, or None to keep the rule's score.

    Returns:
        `tagged_df` with `churn_risk_score` the champion's calibrated probability for subscribers on the network
        (1.0, the rule's, for those who left during the month), every tag computed from it recomputed with its own
        definition (`churn_risk_level` takes the model's bands, as its expression reads `churn_score_source`), and
        `churn_score_source` `model:<version>`.
    """
    from flowops.tags.engine import with_tags

    if champion is None:
        return tagged_df
    if SCORE in tagged_df.columns:
        raise ValueError(f"score_tags: the tag frame already has a column `{SCORE}`, the model's output")
    scored_df = champion.model.transform(tagged_df)
    has_left = F.coalesce(F.col(LEFT_TAG), F.lit(False))
    replaced_df = scored_df.withColumns({
        SCORE_TAG: F.when(has_left, F.col(RULE_TAG)).otherwise(F.col(SCORE)).cast("double"),
        SOURCE_TAG: F.lit(champion.source),
    }).drop(SCORE)
    dependents = [library[name] for name in written_tags(library) if name not in (SCORE_TAG, SOURCE_TAG)]
    return with_tags(replaced_df, TagLibrary(dependents)) if dependents else replaced_df
