"""What one quality gate costs: each gated table of a demo lake read and cached, then the gate timed twice per GX
engine (pandas for small frames, the default; Spark with `collect_below_rows: 0`).

    python -m tests.benchmarks.quality --lake demo/lakehouse --month 2026-03

The results go to the lake's ops/quality_results under partitions ending in `-bench`.
"""

from __future__ import annotations

import argparse
import os
import time

from flowops.context import Context
from flowops.runs import Run
from flowops.steps.quality import gate
from tests.conftest import make_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--month", required=True)
    args = parser.parse_args()
    os.environ.setdefault("FLOWOPS_PII_KEY", "benchmark")
    settings = make_settings(args.lake)
    ctx = Context(settings.model_copy(update={"spark": settings.spark.model_copy(
        update={"master": "local[*]", "shuffle_partitions": 8, "driver_memory": "4g"})}))
    lake = ctx.lake
    started = time.perf_counter()
    import great_expectations  # noqa: F401 - timed: the first gate of a process pays it

    print(f"import great_expectations: {time.perf_counter() - started:.1f}s")
    month = {"month": [args.month]}
    cases = [("silver/usage_daily", lake.read("silver/usage_daily")),
             *[(table, lake.read(table, partitions=month)) for table in
               ("silver/subscribers", "gold/subscriber_tags", "gold/flow_stages", "gold/scenario_targets")]]
    for table, df in cases:
        cached = df.cache()
        rows = cached.count()
        for engine, limit in (("pandas", settings.quality.collect_below_rows), ("spark", 0)):
            quality = ctx.settings.quality.model_copy(update={"collect_below_rows": limit})
            engine_settings = ctx.settings.model_copy(update={"quality": quality})
            seconds = []
            for _ in range(2):
                clock = time.perf_counter()
                gate(lake, engine_settings, Run("bench", {}), table, cached, f"{args.month}-bench")
                seconds.append(time.perf_counter() - clock)
            print(f"{table:<24} {rows:>9,} rows  {engine:<6} " + ", ".join(f"{s:.1f}s" for s in seconds), flush=True)
        cached.unpersist()


if __name__ == "__main__":
    main()
