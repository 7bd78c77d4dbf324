"""Shared fixtures: one local SparkSession for the whole run, tables under pytest's tmp_path."""

from __future__ import annotations

import importlib.util
import os
import sys
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


DEMO_FIXTURES = {"demo_run", "demo_ctx"}


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's hook signature
    """A pytest-xdist worker's __main__ (execnet's `python -c` bootstrap) has neither __spec__ nor __file__, which
    PySpark's Connect package takes for a doctest run and answers with sys.exit(0) when Great Expectations or MLflow
    import it. A worker's __main__ is given the spec of an empty module (multiprocessing's spawned children import
    that one in its place)."""
    main = sys.modules["__main__"]
    if os.environ.get("PYTEST_XDIST_WORKER") and getattr(main, "__spec__", None) is None \
            and not hasattr(main, "__file__"):
        main.__spec__ = importlib.util.find_spec("tests._worker_main")


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist: without it installed, pytest ignores it
def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001, ANN201 - pytest-xdist's hook signature
    """Under pytest-xdist (`make test` runs two workers): each test module's tests run on one worker, so that its
    module-scoped fixtures are built once, and every module reading the shared demo lake runs on the same worker,
    so that the demo is built once. (xdist's own `--dist loadgroup` marks do not group under pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    on_demo = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("test_*.py")
               if any(name in path.read_text(encoding="utf-8") for name in DEMO_FIXTURES)}

    class ByLake(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "demo-lake" if module in on_demo else module

    return ByLake(config, log)
