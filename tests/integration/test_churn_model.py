"""`flowops train churn` and the champion in `flowops tags`, on a copy of the demo lake.

The demo (150 subscribers, tag months 2026-01 .. 2026-03) has too few labelled months for the default two-month
horizon, which the first test shows as one clear error. The others use a copy of the conf with a one-month horizon
(2026-01 fitted, 2026-02 validated) and a copy of the lake whose CRM snapshots of 2026-02 and 2026-03 mark a third of
the previous month's lighter data users as gone (the demo has only a handful of churners in 150 subscribers):
enough churners in each fold to train, register, promote and score, and a pattern the model can find.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import pytest
from pyspark.sql import functions as F

from flowops.cli import main
from flowops.context import Context
from flowops.errors import FlowopsError
from flowops.lake.tables import spec_for
from flowops.steps.train import run_train_churn
from tests.conftest import CONF, make_settings

pytestmark = pytest.mark.slow   # reads the demo lake the integration tests share

MONTH = "2026-03"
# A one-month horizon and a few features: the demo's months hold about 150 subscribers each.
MODELS = """\
churn:
  horizon_months: 1
  numeric: [dou_mb, mou, tenure_months, churn_risk_points]
  categorical: [value_tier]
"""


def plant_churners(ctx: Context) -> int:
    """Mark a third of each tag month's below-median data users (by a hash of sub_id) as gone in the next snapshot;
    returns how many were marked."""
    lake = ctx.lake
    tags_df = lake.read("gold/subscriber_tags", partitions={"month": ["2026-01", "2026-02"]})
    median = {r["month"]: r["m"] for r in tags_df.groupBy("month").agg(
        F.percentile_approx("dou_mb", 0.5).alias("m")).collect()}
    is_light = F.coalesce(F.col("dou_mb") < F.when(F.col("month") == "2026-01", median["2026-01"])
                          .otherwise(median["2026-02"]), F.lit(False))
    leaving_df = (tags_df.where(is_light & (F.pmod(F.xxhash64("sub_id", "month"), F.lit(3)) == 0)
                                & ~F.coalesce(F.col("churned_this_month"), F.lit(False)))
                  .select(F.date_format(F.add_months(F.to_date(F.concat("month", F.lit("-01"))), 1), "yyyy-MM")
                          .alias("month"), "sub_id", F.lit(True).alias("is_leaving")))
    snapshots = ["2026-02", "2026-03"]
    subscribers_df = lake.read("silver/subscribers", partitions={"month": snapshots})
    spec = spec_for("silver/subscribers")
    planted_df = (subscribers_df.join(leaving_df, ["month", "sub_id"], how="left")
                  .withColumns({"status": F.when(F.col("is_leaving"), F.lit("churned")).otherwise(F.col("status")),
                                "churn_date": F.when(F.col("is_leaving"),
                                                     F.to_date(F.concat("month", F.lit("-10"))))
                                .otherwise(F.col("churn_date"))})
                  .select(*spec.schema.names)).localCheckpoint()
    lake.write(planted_df, spec, mode="overwrite", partitions={"month": snapshots})
    return leaving_df.count()


@pytest.fixture(scope="module")
def churn_world(demo_ctx, tmp_path_factory):
    """A copy of the demo lake (without its MLflow store) with churners planted, and a conf with a one-month
    horizon and five features; (conf folder, context, churners planted)."""
    out = tmp_path_factory.mktemp("churn")
    lake = out / "lake"
    shutil.copytree(demo_ctx.settings.lake.root, lake, ignore=shutil.ignore_patterns("_mlflow", "exports"))
    conf = out / "conf"
    shutil.copytree(CONF, conf)
    (conf / "models.yml").write_text(MODELS, encoding="utf-8")
    settings = make_settings(lake).model_copy(update={"conf_dir": str(conf)})
    ctx = Context(settings)
    return conf, ctx, plant_churners(ctx)


def test_too_few_labelled_months_is_one_clear_error(churn_world):
    _, ctx, _ = churn_world
    default = Context(make_settings(ctx.settings.lake.root))   # the repo's conf: a two-month horizon
    with pytest.raises(FlowopsError, match=r"1 labelled tag month\(s\) \(2026-01\), 2 needed"):
        run_train_churn(default, MONTH)


def test_train_registers_a_champion_and_tags_score_with_it(churn_world):
    import mlflow

    conf, ctx, planted = churn_world
    assert planted >= 20
    lake = str(ctx.settings.lake.root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "churn", "--month", MONTH, "--conf", str(conf), "--lake", lake, "--master", "local[2]"])
    printed = out.getvalue()
    assert code == 0, printed
    assert "fitted on 2026-01, validated on 2026-02" in printed
    assert "registered flowops-churn v1: champion now" in printed
    model_auc, rule_auc = (float(re.search(rf"{name}.*?\s(0\.\d+)\s", printed).group(1))
                           for name in ("model \\(new\\)", "rule \\(churn_rule_score\\)"))
    assert model_auc > 0.65 and model_auc > rule_auc, printed   # the planted pattern is the data volume

    runs = ctx.lake.read("ops/runs").where((F.col("job") == "train-churn") & (F.col("status") == "ok")).collect()
    assert [(r["status"], r["params"]["registered_version"], r["params"]["champion"]) for r in runs] == [
        ("ok", "1", "true")]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ctx.settings.lake.root}/_mlflow/mlflow.db")
    champion = client.get_model_version_by_alias("flowops-churn", "champion")
    assert str(champion.version) == "1"
    tracked = client.get_run(champion.run_id)
    assert tracked.data.params["ops_run_id"] == runs[0]["run_id"]   # the model sits in the job's own run
    assert {"model.roc_auc", "rule.roc_auc", "model.brier"} <= set(tracked.data.metrics)
    assert {a.path for a in client.list_artifacts(champion.run_id, "calibration")} == {
        "calibration/model.json", "calibration/rule.json"}

    # Trained again on the same rows, the model is no better: registered, the alias stays on v1.
    again = run_train_churn(ctx, MONTH)
    assert (again.version, again.is_champion, again.champion_version) == ("2", False, "1")
    assert again.champion.metrics["roc_auc"] == pytest.approx(again.model.metrics["roc_auc"])

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["tags", "--month", MONTH, "--conf", str(conf), "--lake", lake, "--master", "local[2]"]) == 0
    tags = ctx.lake.read("gold/subscriber_tags", partitions={"month": [MONTH]}).toPandas()
    assert set(tags["churn_score_source"]) == {"model:1"}
    staying = tags[~tags["churned_this_month"].fillna(False)]
    assert (staying["churn_risk_score"] != staying["churn_rule_score"]).any()
    assert (tags[tags["churned_this_month"].fillna(False)]["churn_risk_score"] == 1.0).all()
    # the model's bands (conf/tags/churn.yml), not the rule's
    level = staying["churn_risk_score"].map(lambda s: "low" if s < 0.06 else "medium" if s < 0.15 else "high")
    assert (level == staying["churn_risk_level"]).all()
    tags_run = ctx.lake.read("ops/runs").where(F.col("job") == "tags").orderBy(F.col("started_at").desc()).first()
    assert tags_run["params"]["churn_score_source"] == "model:1"
