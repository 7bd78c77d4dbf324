"""One demo run shared by the integration tests that need the whole pipeline on generated data."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowops.cli import main

DEMO_MONTH = "2026-03"
DEMO_SUBSCRIBERS = 150


@dataclass(frozen=True)
class DemoRun:
    out: Path
    code: int
    stdout: str

    @property
    def raw(self) -> Path:
        return self.out / "raw"

    @property
    def lake(self) -> Path:
        return self.out / "lakehouse"


@pytest.fixture(scope="session")
def demo_run(spark, tmp_path_factory) -> DemoRun:
    """`flowops demo` on 150 subscribers x 3 months (2026-01 .. 2026-03), without a PII key set."""
    out = tmp_path_factory.mktemp("demo")
    saved = os.environ.pop("FLOWOPS_PII_KEY", None)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["demo", "--out", str(out), "--subscribers", str(DEMO_SUBSCRIBERS), "--month", DEMO_MONTH])
    finally:
        if saved is not None:
            os.environ["FLOWOPS_PII_KEY"] = saved
    return DemoRun(out, code, buffer.getvalue())
