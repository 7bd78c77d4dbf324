"""flowops.tracking without a pipeline: the switch, a store that cannot open, what a run is logged with."""

from __future__ import annotations

from flowops import tracking
from tests.conftest import make_settings


def test_tracking_can_be_switched_off_and_never_fails_a_job(tmp_path, monkeypatch, caplog):
    settings = make_settings(tmp_path / "lake")
    monkeypatch.setenv(tracking.SWITCH, "off")
    assert not tracking.enabled(settings)
    monkeypatch.setenv(tracking.SWITCH, "on")
    assert tracking.enabled(settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"enabled": False})}))
    monkeypatch.delenv(tracking.SWITCH)
    # A store that cannot be opened: one warning, no run, the block runs all the same.
    bad = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"tracking_uri": "nosuchscheme://nowhere"})})
    ran = []
    with caplog.at_level("WARNING", logger="flowops.tracking"), \
            tracking.month_run(bad, _FakeLake(str(tmp_path / "lake")), "2026-01") as metrics:
        metrics["x"] = 1.0
        ran.append(True)
    assert ran
    assert [r.message for r in caplog.records if "tracking stops" in r.message]


class _FakeLake:
    engine_name = "delta-rs"

    def __init__(self, root: str) -> None:
        self.root = root



def test_conf_hash_changes_with_any_file(tmp_path):
    conf = tmp_path / "conf"
    (conf / "tags").mkdir(parents=True)
    (conf / "pipeline.yml").write_text("a: 1\n")
    (conf / "tags" / "x.yml").write_text("b: 2\n")
    first = tracking.conf_hash(conf)
    (conf / ".hidden").write_text("ignored")
    assert tracking.conf_hash(conf) == first
    (conf / "tags" / "x.yml").write_text("b: 3\n")
    assert tracking.conf_hash(conf) != first


def test_job_metrics_derive_rates_and_shares():
    ingest = tracking.job_metrics("ingest", {"accepted": 90, "quarantined": 8, "duplicates": 2,
                                             "unknown_app_bytes_ppm": 50_000, "step_ms.parse": 1500}, {})
    assert ingest["quarantine_rate"] == 0.08 and ingest["duplicate_rate"] == 0.02
    assert ingest["unknown_app_share.bytes"] == 0.05 and ingest["step_s.parse"] == 1.5
    segment = tracking.job_metrics("segment", {"stage.wake": 30, "stage.retain": 70}, {"month": "2026-03"})
    assert segment["stage_share.wake"] == 0.3 and "month" not in segment
    target = tracking.job_metrics("target", {"targeted.hvc.sms": 5, "targeted.low.sms": 2, "targeted.hvc.call": 1,
                                             "suppressed.cap": 4}, {"wave": "1"})
    assert target["targeted_by_channel.sms"] == 7 and target["targeted_total"] == 8 and target["wave"] == 1


def test_evaluation_metrics_take_the_whole_campaign_and_each_channel():
    rows = [
        {"scenario": "a", "channel": "all", "wave": 0, "pushed": 10, "converted": 2, "uplift": 0.05,
         "incentive_cost_yuan": 3.0, "channel_cost_yuan": 1.0},
        {"scenario": "a", "channel": "all", "wave": 1, "pushed": 6, "converted": 1, "uplift": 0.02},
        {"scenario": "a", "channel": "sms", "wave": 1, "pushed": 6, "converted": 1},
        {"scenario": "a", "channel": "sms", "wave": 2, "pushed": 4, "converted": 1},
    ]
    metrics = tracking.evaluation_metrics(rows)
    assert metrics["w0.a.uplift"] == 0.05 and metrics["w1.a.uplift"] == 0.02
    assert metrics["campaign.pushed"] == 10 and metrics["campaign.cost_yuan"] == 4.0
    assert metrics["channel.sms.pushed"] == 10 and metrics["channel.sms.converted"] == 2


def test_run_names():
    assert tracking.run_name("target", {"month": "2026-03", "wave": "2"}) == "target 2026-03 wave 2"
    assert tracking.run_name("ingest", {"date": "2026-01-05"}) == "ingest 2026-01-05"


def test_a_new_lake_store_is_a_copy_of_the_migrated_empty_one(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    tracking.seed_store(first)
    templates = list((tmp_path / "cache" / "flowops").glob("mlflow-*-empty.db"))
    assert len(templates) == 1 and first.read_bytes() == templates[0].read_bytes()
    tracking.seed_store(second)
    client = MlflowClient(tracking_uri=f"sqlite:///{second}")
    client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    assert client.get_experiment_by_name("x") is not None
    assert MlflowClient(tracking_uri=f"sqlite:///{first}").get_experiment_by_name("x") is None
    tracking.seed_store(second)   # an existing store is left alone
    assert MlflowClient(tracking_uri=f"sqlite:///{second}").get_experiment_by_name("x") is not None


def test_pointing_mlflow_at_one_lake_does_not_move_the_next_lakes_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first, second = make_settings(tmp_path / "a"), make_settings(tmp_path / "b")
    tracking.configure(first)   # what training a model does
    assert tracking.tracking(second).uri == f"sqlite:///{(tmp_path / 'b').resolve()}/_mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")   # a user's override still wins
    tracking.point_mlflow(tracking.tracking(first, environ={}).uri)
    assert tracking.tracking(second).uri == "http://mlflow.example:5000"


def test_runs_written_in_the_background_are_whole_after_flush(tmp_path, monkeypatch):
    """A job's and a month's runs are written by the writer thread in the order they were opened and ended: after
    `flush` the job's run is nested under the month's, has its params, metrics and ops/runs artifact, and both
    are finished; a job's run id, when asked for, is its run's."""
    import datetime as dt

    from mlflow import MlflowClient

    from flowops.runs import Run

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake = _FakeLake(str(tmp_path / "lake"))
    lake.path = lambda table: f"{lake.root}/{table}"
    settings = make_settings(tmp_path / "lake")
    tracking.register(lake.root, settings)
    with tracking.month_run(settings, lake, "2026-02", command="test"):
        run = Run(job="segment", params={"month": "2026-02"})
        run.counts.update({"stage.wake": 3, "stage.retain": 1})
        started = dt.datetime.now(dt.UTC)
        tracked = tracking.start_job(lake, run, started)
        asked = tracking.active_run_id(run)
        tracking.finish_job(tracked, lake, run, {"ended_at": dt.datetime.now(dt.UTC), "seconds": 1.5, "rows_in": 4,
                                                 "rows_out": 4, "status": "ok", "error": None})
    tracking.flush()
    client = MlflowClient(tracking_uri=tracking.tracking(settings).uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    runs = {r.data.tags["flowops.kind"]: r for r in client.search_runs([experiment.experiment_id])}
    month, job = runs["month"], runs["step"]
    assert asked == job.info.run_id
    assert job.data.tags["mlflow.parentRunId"] == month.info.run_id
    assert job.data.params["month"] == "2026-02" and job.data.params["ops_run_id"] == run.run_id
    assert job.data.metrics["seconds"] == 1.5 and job.data.metrics["stage_share.wake"] == 0.75
    assert month.info.status == job.info.status == "FINISHED"
    assert "ops_run.json" in {a.path for a in client.list_artifacts(job.info.run_id)}
