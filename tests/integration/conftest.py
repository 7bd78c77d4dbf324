"""One demo run shared by the integration tests that need the whole pipeline on generated data."""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
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
    ended: float   # epoch seconds when the demo returned: later tests add jobs to the same lake

    @property
    def raw(self) -> Path:
        return self.out / "raw"

    @property
    def lake(self) -> Path:
        return self.out / "lakehouse"


@pytest.fixture(scope="session")
def demo_run(spark, tmp_path_factory) -> DemoRun:
    """`flowops demo` on 150 subscribers: 2025-12 lands as history, 2026-01 .. 2026-03 run with the simulator answering
    each campaign in between; without a PII key set."""
    out = tmp_path_factory.mktemp("demo")
    saved = os.environ.pop("FLOWOPS_PII_KEY", None)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["demo", "--out", str(out), "--subscribers", str(DEMO_SUBSCRIBERS), "--month", DEMO_MONTH,
                         "--records-per-day", "25"])
    finally:
        if saved is not None:
            os.environ["FLOWOPS_PII_KEY"] = saved
    return DemoRun(out, code, buffer.getvalue(), time.time())


@pytest.fixture(scope="session")
def demo_ctx(demo_run):
    """A context on the demo's lake, for the tests that read what the demo wrote."""
    from flowops.context import Context
    from tests.conftest import make_settings

    assert demo_run.code == 0, demo_run.stdout
    return Context(make_settings(demo_run.lake))


def personal_leaks(lake_root: Path, numbers: set[str]) -> list[tuple[str, str]]:
    """(table, number) for every personal number found in a table outside restricted/, every column read by an
    independent reader (delta-rs) down to the values inside maps, arrays and structs."""
    from deltalake import DeltaTable

    leaks = []
    for log in sorted(lake_root.rglob("_delta_log")):
        table = log.parent.relative_to(lake_root).as_posix()
        if table.startswith("restricted/") or "/_staging/" in table:
            continue
        data = DeltaTable(str(log.parent)).to_pyarrow_dataset().to_table()
        runs = {run for column in data.columns for text in _texts(column.combine_chunks())
                for run in re.findall(r"\d{11,}", text)}
        leaks += [(table, n) for n in numbers if any(n in run for run in runs)]
    return leaks


def _texts(array) -> list[str]:
    """The distinct texts holding 11 or more digits in a column, looking inside nested values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_struct(kind):
        return [t for i in range(kind.num_fields) for t in _texts(array.field(i))]
    if pa.types.is_map(kind):
        return _texts(array.keys) + _texts(array.items)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _texts(array.flatten())
    text = array.cast(pa.large_string())
    return pc.unique(text.filter(pc.match_substring_regex(text, r"\d{11}"))).to_pylist()
