"""What every job needs, built once at the edge: settings, a SparkSession and the lake."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from flowops.config import Settings, load_settings
from flowops.lake import Lake


@dataclass
class Context:
    """Settings plus the lazily started Spark session and lake."""

    settings: Settings
    app_name: str = "flowops"
    demo: bool = False  # only `flowops demo` (and tests) may pseudonymise with the public demo key

    @classmethod
    def from_args(cls, args: Any, app_name: str = "flowops", demo: bool = False) -> Context:
        """Build from parsed CLI/job arguments carrying conf, lake, master and engine."""
        settings = load_settings(args.conf, lake_root=getattr(args, "lake", None),
                                 master=getattr(args, "master", None), engine=getattr(args, "engine", None))
        return cls(settings=settings, app_name=app_name, demo=demo)

    @cached_property
    def spark(self) -> SparkSession:
        from flowops.spark import build_session

        return build_session(self.settings, app_name=self.app_name)

    @cached_property
    def lake(self) -> Lake:
        from flowops import logs, tracking

        lake = self.settings.lake
        opened = Lake(self.spark, lake.root, lake.engine, lock_timeout_s=lake.lock_timeout_s,
                      lock_stale_s=lake.lock_stale_s, job=self.app_name)
        # The jobs writing to it are tracked under these settings; Great Expectations (the quality gates') is
        # imported in the background meanwhile, when conf/ has suites.
        has_suites = any((Path(self.settings.conf_dir) / "expectations").glob("*.yml"))
        tracking.register(opened.root, self.settings, then=_import_gx if has_suites else None)
        logs.attach_file(opened.root, self.app_name)     # under the CLI, the whole log goes beside the lake
        return opened


def _import_gx() -> None:
    from flowops.quality.gx import gx

    gx()
