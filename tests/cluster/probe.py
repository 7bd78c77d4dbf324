"""spark-submit script of the cluster test: prints, as one JSON line, where the driver and each executor's Python
import flowops from (the shipped wheel, not the work tree) and which interpreter runs them."""

import json
import sys

from pyspark.sql import SparkSession


def where(_rows):  # noqa: ANN001, ANN201 - runs on an executor
    import socket
    import sys

    import flowops

    yield {"file": flowops.__file__, "python": sys.executable, "host": socket.gethostname()}


if __name__ == "__main__":
    import flowops

    spark = SparkSession.builder.appName("flowops-cluster-probe").getOrCreate()
    executors = spark.sparkContext.parallelize(range(8), 8).mapPartitions(where).collect()
    print("PROBE " + json.dumps({"driver": {"file": flowops.__file__, "python": sys.executable},
                                 "executors": sorted({e["file"] + " " + e["python"] for e in executors}),
                                 "master": spark.sparkContext.master}))
    spark.stop()
