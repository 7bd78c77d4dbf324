"""MLflow tracking of the demo's jobs, read back through the MLflow client from the store under the demo's lake."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from flowops.landing import previous_months
from tests.integration.conftest import DEMO_MONTH

pytestmark = pytest.mark.slow

RUN_MONTHS = ["2026-01", "2026-02", DEMO_MONTH]


@pytest.fixture(scope="module")
def tracked(demo_run):
    """Every run of the demo's experiment, as (client, runs)."""
    from mlflow import MlflowClient

    assert demo_run.code == 0, demo_run.stdout
    db = demo_run.lake / "_mlflow" / "mlflow.db"
    assert db.is_file(), "the demo tracked nothing: no MLflow store under the lake"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("flowops")
    assert experiment is not None
    assert experiment.artifact_location == (demo_run.lake / "_mlflow" / "artifacts").resolve().as_uri()
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return client, runs


def test_each_month_is_a_parent_run_with_its_jobs_nested(tracked, demo_run):
    _, runs = tracked
    months = {r.data.tags["flowops.month"]: r for r in runs if r.data.tags.get("flowops.kind") == "month"}
    assert sorted(months) == RUN_MONTHS
    for month, parent in months.items():
        assert parent.info.status == "FINISHED"
        assert parent.data.params["month"] == month
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        jobs = {r.data.tags["flowops.job"] for r in children}
        assert {"ingest-monthly", "tags", "segment", "target"} <= jobs, (month, jobs)
        if month != RUN_MONTHS[0]:   # the months after the first evaluate the campaign before them
            assert "evaluate" in jobs, (month, jobs)
        assert all(r.data.params["month"] in (month, previous_months(month, 1)[0]) for r in children
                   if "month" in r.data.params)


def test_step_runs_carry_identity_and_metrics(tracked, demo_run):
    _, runs = tracked
    steps = [r for r in runs if r.data.tags.get("flowops.kind") == "step"]
    ops_runs = DeltaTable(str(demo_run.lake / "ops" / "runs")).to_pyarrow_table().to_pylist()
    by_id = {row["run_id"]: row for row in ops_runs}
    # Every job the demo recorded is a tracked run (other tests add jobs, some failing on purpose, to the lake later).
    of_demo = {row["run_id"] for row in ops_runs if row["ended_at"].timestamp() <= demo_run.ended}
    assert of_demo and of_demo <= {r.data.params["ops_run_id"] for r in steps}
    conf_hashes = set()
    for run in [r for r in steps if r.data.params["ops_run_id"] in of_demo]:
        params, metrics = run.data.params, run.data.metrics
        row = by_id[params["ops_run_id"]]                      # the same job as its ops/runs row
        assert params["job"] == row["job"] == run.data.tags["flowops.job"]
        assert params["engine"] == row["engine"] == "delta-rs"
        assert params["code_version"].startswith(row["flowops_version"])
        assert metrics["rows_out"] == row["rows_out"]
        assert metrics["seconds"] == pytest.approx(row["seconds"])
        assert run.data.tags["flowops.status"] == row["status"] == "ok"
        conf_hashes.add(params["conf_hash"])
    assert len(conf_hashes) == 1 and len(conf_hashes.pop()) == 64


def test_job_metrics_are_the_pipelines_figures(tracked, demo_run):
    client, runs = tracked
    latest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        latest[(run.data.tags.get("flowops.job"), run.data.params.get("month"))] = run
    ingest = next(r for r in runs if r.data.tags.get("flowops.job") == "ingest")
    assert 0 < ingest.data.metrics["quarantine_rate"] < 0.2
    assert 0 <= ingest.data.metrics["unknown_app_share.bytes"] < 1
    segment = latest[("segment", DEMO_MONTH)]
    shares = {k: v for k, v in segment.data.metrics.items() if k.startswith("stage_share.")}
    assert len(shares) >= 4 and sum(shares.values()) == pytest.approx(1.0)
    target = latest[("target", DEMO_MONTH)]
    by_channel = {k: v for k, v in target.data.metrics.items() if k.startswith("targeted_by_channel.")}
    assert sum(by_channel.values()) == target.data.metrics["targeted_total"] > 0
    evaluate = latest[("evaluate", "2026-02")]   # the last campaign evaluated: 2026-02's, answered in 2026-03
    metrics = evaluate.data.metrics
    assert metrics["campaign.pushed"] >= metrics["campaign.delivered"] >= metrics["campaign.converted"]
    assert any(k.startswith("w0.") and k.endswith(".uplift") for k in metrics)
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert "ops_run.json" in artifacts
    step_seconds = [k for k in latest[("tags", DEMO_MONTH)].data.metrics if k.startswith("step_s.")] \
        + [k for k in ingest.data.metrics if k.startswith("step_s.")]
    assert step_seconds

