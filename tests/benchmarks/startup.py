"""One embedded Spark start and its first queries, with or without the JVM class-data archive (BENCHMARKS.md,
"Class-data archive"). Run each way in fresh processes, alternating:

    PYTHONPATH=lib:. .venv/bin/python -m tests.benchmarks.startup          # with the archive make setup wrote
    PYTHONPATH=lib:. .venv/bin/python -m tests.benchmarks.startup off      # without
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from flowops import spark as session
    from tests.benchmarks.run import cpu_seconds
    from tests.conftest import make_settings

    if sys.argv[1:] == ["off"]:
        session.CLASS_ARCHIVE = Path("/nonexistent/spark-classes.jsa")
    started = time.perf_counter()
    spark = session.build_session(make_settings(), app_name="flowops-startup", ui=False)
    up = time.perf_counter()
    spark.range(1000).selectExpr("id % 7 as k", "id").groupBy("k").count().collect()
    with tempfile.TemporaryDirectory() as folder:
        spark.createDataFrame([(1, "a")], "x int, y string").write.parquet(f"{folder}/t")
        spark.read.parquet(f"{folder}/t").count()
    done = time.perf_counter()
    jvm = spark.sparkContext._jvm.ProcessHandle.current().pid()
    print(json.dumps({"archive": sys.argv[1:] != ["off"], "start_s": round(up - started, 2),
                      "first_queries_s": round(done - up, 2),
                      "jvm_cpu_s": cpu_seconds(Path(f"/proc/{jvm}/stat").read_text())}))


if __name__ == "__main__":
    main()
