"""The cluster test's lake comparison (tests/cluster/compare.py): what it tolerates and what it catches."""

from __future__ import annotations

import json

import pyarrow as pa
from deltalake import write_deltalake

from tests.cluster.compare import compare_lakes

USAGE = pa.schema([("dt", pa.string()), ("sub_id", pa.string()), ("bytes", pa.int64()), ("seconds", pa.float64()),
                   ("counts", pa.map_(pa.string(), pa.int64())), ("run_id", pa.string())])
RUNS = pa.schema([("job", pa.string()), ("seconds", pa.float64()), ("spark_master", pa.string()),
                  ("params", pa.map_(pa.string(), pa.string())), ("counts", pa.map_(pa.string(), pa.int64())),
                  ("run_id", pa.string())])


def lake(root, usage_rows, runs_rows, manifest):  # noqa: ANN001, ANN201
    write_deltalake(str(root / "silver" / "usage_daily"), pa.Table.from_pylist(usage_rows, USAGE), partition_by=["dt"])
    write_deltalake(str(root / "ops" / "runs"), pa.Table.from_pylist(runs_rows, RUNS))
    wave = root / "exports" / "month=2026-02" / "wave=1"
    wave.mkdir(parents=True)
    (wave / "manifest.json").write_text(json.dumps(manifest))
    (wave / "sms.csv").write_text("msisdn\n13800000000\n")
    return root


def usage(run: str, order: int = 1, seconds: float = 0.1 + 0.2) -> list[dict]:
    rows = [{"dt": "2026-02-01", "sub_id": "a", "bytes": 10, "seconds": seconds, "counts": [("x", 1), ("y", 2)],
             "run_id": run},
            {"dt": "2026-02-02", "sub_id": "b", "bytes": None, "seconds": None, "counts": None, "run_id": run}]
    return rows[::order]


def runs(run: str, master: str, seconds: float, step_ms: int) -> list[dict]:
    return [{"job": "target", "seconds": seconds, "spark_master": master,
             "params": [("month", "2026-02"), ("solver_seconds", f"{seconds / 10:.3f}")],
             "counts": [("rows", 5), ("step_ms.read", step_ms)], "run_id": run}]


def test_lakes_equal_but_for_run_ids_timings_master_row_order_and_float_rounding(tmp_path):
    cluster = lake(tmp_path / "c", usage("r1", -1, 0.3), runs("r1", "spark://127.0.0.1:7077", 9.5, 120),
                   {"run_id": "r1", "written_at": "01:00", "rows": 1})
    embedded = lake(tmp_path / "e", usage("r2", 1, 0.1 + 0.2), runs("r2", "local[2]", 4.0, 80),
                    {"run_id": "r2", "written_at": "02:00", "rows": 1})
    result = compare_lakes(cluster, embedded)
    assert (result.problems, result.tables, result.files) == ([], {"ops/runs": 1, "silver/usage_daily": 2}, 2)


def test_a_changed_value_a_map_entry_or_a_manifest_field_is_reported(tmp_path):
    changed = usage("r1")
    changed[1]["bytes"] = 0          # null against 0
    changed[0]["counts"] = [("x", 1), ("y", 2), ("y_seconds", 3)]   # timing keys are left out of ops/runs only
    cluster = lake(tmp_path / "c", changed, [{**runs("r1", "m", 1.0, 1)[0], "counts": [("rows", 6)]}],
                   {"run_id": "r1", "rows": 2})
    embedded = lake(tmp_path / "e", usage("r2"), runs("r2", "m", 1.0, 1), {"run_id": "r2", "rows": 1})
    problems = compare_lakes(cluster, embedded).problems
    assert [p.split(":")[0] for p in problems] == ["ops/runs", "silver/usage_daily",
                                                   "exports/month=2026-02/wave=1/manifest.json differs"]
    assert "2 only in the cluster's, 2 only in the embedded run's" in problems[1]


def test_a_missing_table_is_reported(tmp_path):
    cluster = lake(tmp_path / "c", usage("r1"), runs("r1", "m", 1.0, 1), {})
    embedded = lake(tmp_path / "e", usage("r2"), runs("r2", "m", 1.0, 1), {})
    write_deltalake(str(embedded / "gold" / "flow_stages"), pa.table({"month": ["2026-02"]}))
    assert compare_lakes(cluster, embedded).problems == [f"gold/flow_stages: missing from {cluster}"]
