"""The churn model in the MLflow model registry: which version is `champion`, loading it, logging a new one.

The registry is the tracking store of `flowops.tracking` (by default the SQLite store under the lake). Looking for
the champion is one registry query, and none when tracking is off or the lake's store does not exist yet, so
`flowops tags` pays next to nothing when no model was ever trained. Models are logged with explicit pip
requirements: left to infer them, MLflow reloads a Spark model in a second process with its own JVM (about 40 s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowops import tracking
from flowops.config import Settings
from flowops.models.churn import CHAMPION, REGISTERED_MODEL, Champion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionRef:
    """The registered version holding the champion alias, not loaded."""

    version: str
    run_id: str | None
    uri: str


def registry_client(settings: Settings) -> Any | None:
    """An `MlflowClient` on the lake's tracking store, or None when tracking is off or the embedded store was never
    created (no model can have been registered there)."""
    if not tracking.enabled(settings):
        return None
    where = tracking.tracking(settings)
    if where.uri.startswith("sqlite:///") and not Path(where.uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=where.uri, registry_uri=where.uri)


def find_champion(client: Any | None, name: str = REGISTERED_MODEL) -> ChampionRef | None:
    """The version of `name` holding the `champion` alias, or None (no such model, or no alias yet)."""
    if client is None:
        return None
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return ChampionRef(version=str(found.version), run_id=found.run_id, uri=f"models:/{name}@{CHAMPION}")


def load_champion(settings: Settings) -> Champion | None:
    """The champion's fitted pipeline (on the running SparkSession, no second JVM), or None without one."""
    client = registry_client(settings)
    ref = find_champion(client)
    if ref is None:
        return None
    import mlflow
    import mlflow.spark

    where = tracking.tracking(settings)
    tracking.point_mlflow(where.uri)
    model = mlflow.spark.load_model(f"models:/{REGISTERED_MODEL}/{ref.version}")
    return Champion(model=model, version=ref.version)


def pip_requirements() -> list[str]:
    """What a logged churn model needs to load: Spark ML and MLflow, as installed here."""
    import mlflow
    import pyspark

    return [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]
