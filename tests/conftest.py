"""Shared fixtures: one local SparkSession for the whole run, tables under pytest's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowops.config import Settings, SparkSettings, load_settings
from flowops.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def make_settings(lake_root: str | Path = "lakehouse") -> Settings:
    """The repo's conf, sized for tests: local[2], 2 shuffle partitions, small driver, no UI."""
    settings = load_settings(CONF, lake_root=str(lake_root), environ={})
    spark = SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g", log_level="ERROR",
                          conf={"spark.sql.adaptive.coalescePartitions.enabled": "true"})
    return settings.model_copy(update={"spark": spark})


@pytest.fixture(scope="session")
def spark():
    from flowops.spark import build_session

    os.environ.setdefault("FLOWOPS_PII_KEY", "test-key")
    session = build_session(make_settings(), app_name="flowops-tests", ui=False)
    yield session
    session.stop()


@pytest.fixture
def lake(spark, tmp_path) -> Lake:
    return Lake(spark, str(tmp_path / "lake"), "delta-rs")
