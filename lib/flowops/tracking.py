"""Where runs and models are tracked: MLflow, embedded by default.

By default a SQLite store and an artifact folder live under the lake (`LAKE/_mlflow/mlflow.db`,
`LAKE/_mlflow/artifacts/`), so tracking needs no server and moves with the lake; `mlflow.tracking_uri` in
conf/pipeline.yml names a shared server instead, and the MLFLOW_TRACKING_URI variable overrides both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flowops.config import Settings

FOLDER = "_mlflow"


@dataclass(frozen=True)
class Tracking:
    """The tracking store's URI, the experiment's artifact location and its name."""

    uri: str
    artifacts: str | None   # None for a server, which keeps its own
    experiment: str


def tracking(settings: Settings, environ: dict[str, str] | None = None) -> Tracking:
    """Where this lake's runs and models are tracked."""
    env = os.environ if environ is None else environ
    if env.get("MLFLOW_TRACKING_URI"):
        return Tracking(env["MLFLOW_TRACKING_URI"], None, settings.mlflow.experiment)
    if settings.mlflow.tracking_uri:
        return Tracking(settings.mlflow.tracking_uri, None, settings.mlflow.experiment)
    folder = Path(settings.lake.root).resolve() / FOLDER
    return Tracking(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri(), settings.mlflow.experiment)


def configure(settings: Settings) -> Tracking:
    """Point MLflow at this lake's store and experiment (created on first use, with its artifact location); the
    folder under the lake is created owner-only. Returns where it points."""
    import mlflow

    where = tracking(settings)
    if where.artifacts:
        Path(where.uri.removeprefix("sqlite:///")).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mlflow.set_tracking_uri(where.uri)
    if mlflow.get_experiment_by_name(where.experiment) is None:
        mlflow.create_experiment(where.experiment, artifact_location=where.artifacts)
    mlflow.set_experiment(where.experiment)
    return where
