"""`flowops demo` end to end on a tiny dataset: it runs every step that exists and says where things are."""

from __future__ import annotations

import pytest

from flowops.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_the_pipeline_and_prints_the_summary(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLOWOPS_PII_KEY", raising=False)

    code = main(["demo", "--out", str(tmp_path / "demo"), "--subscribers", "40", "--month", "2026-03"])

    out = capsys.readouterr().out
    assert code == 0
    assert "flowops demo" in out
    assert "2026-01 .. 2026-03" in out
    for table in ("bronze/usage_events", "bronze/quarantine", "silver/usage_daily", "silver/device_daily",
                  "silver/subscribers", "silver/billing_monthly", "silver/orders", "restricted/subscriber_keys"):
        assert table in out
    assert "labelled DEMO key" in out
    ingest_line = next(line for line in out.splitlines() if line.strip().startswith("ingest 2026-03"))
    assert " accepted + " in ingest_line and "unknown app share" in ingest_line
