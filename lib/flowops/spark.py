"""SparkSession factory: the embedded local default, or the cluster that spark-submit or --master names."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from pyspark.sql import SparkSession

from flowops.config import Settings
from flowops.errors import FlowopsError

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_PROBE_CLASS = "org.apache.spark.sql.delta.DeltaLog"

# Always on, in every mode: the lake's storage contract (DESIGN.md "Delta engine").
STORAGE_CONF = {
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.files.maxRecordsPerFile": "5000000",
    # Landing files are listed explicitly; stat them on the driver rather than in a Spark job per read.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "10000",
    # Plan strings (UI, event log, explain, error text) never show a phone-number-like or IMEI-like literal.
    "spark.sql.redaction.string.regex": r"(?<![0-9])(\+?86)?1[3-9][0-9]{9}(?![0-9])|[0-9]{14,}",
}

# Always on, in every mode: how the plans run. HotSpot does not JIT-compile a method over 8,000 bytes of
# bytecode, so a whole-stage-codegen method above that (the xDR parse and validation make one) would run
# interpreted, about twice as slow; at this limit Spark splits such stages instead (Spark's own advice for
# HotSpot, see spark.sql.codegen.hugeMethodLimit).
EXECUTION_CONF = {
    "spark.sql.codegen.hugeMethodLimit": "8000",
    # A cached frame is read a few times within one job and then dropped: building it uncompressed is much
    # cheaper (the compression scheme is chosen by scanning every value) for ~20% more memory.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # A task writing rows of several partition values keeps one open file per value instead of sorting its rows
    # by partition first; beyond this many values it falls back to sorting.
    "spark.sql.maxConcurrentOutputFileWriters": "64",
    # Generated code is compiled by Janino once per distinct source and kept in a cache of this many classes
    # (default 100). tags, target and evaluate of one month compile about 700; run again in the same session they
    # compile about 40 instead of 700 with this cache (the month is a reference, not part of the source), which saves
    # Janino's compile and the JIT's warm-up of each new class (BENCHMARKS.md, "Compiled code cache").
    "spark.sql.codegen.cache.maxEntries": "2000",
}


def under_spark_submit() -> bool:
    """True when spark-submit (or a notebook's existing gateway) already launched the JVM."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def check_java() -> None:
    """Fail with one actionable line when no Java 17+ is available for an embedded Spark."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise FlowopsError(
            "Java 17 is required by Spark 4 and no 'java' was found: install openjdk-17-jre-headless "
            "or set JAVA_HOME to a JDK 17"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    first = out.splitlines()[0] if out else ""
    try:
        major = int(first.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        major = 0
    if major < 17:
        raise FlowopsError(f"Java 17 or newer is required by Spark 4; {java} is: {first or 'unknown'}")


def build_session(settings: Settings, *, app_name: str | None = None, ui: bool | None = None) -> SparkSession:
    """Create (or join) the SparkSession the jobs run on.

    Args:
        settings: validated settings; `spark.master` is used unless spark-submit supplied one.
        app_name: overrides `spark.app_name`, e.g. to name the job.
        ui: force the Spark UI on or off; by default it is on only for interactive local runs.
    """
    spark_settings = settings.spark
    builder = SparkSession.builder.appName(app_name or spark_settings.app_name)
    conf = {**STORAGE_CONF, **EXECUTION_CONF}
    conf["spark.sql.session.timeZone"] = settings.pipeline.timezone
    conf["spark.sql.shuffle.partitions"] = str(spark_settings.shuffle_partitions)
    if not under_spark_submit():
        check_java()
        interactive = sys.stderr.isatty()
        builder = builder.master(spark_settings.master)
        log4j = resources.files("flowops") / "resources" / "log4j2.properties"
        conf.update({
            "spark.driver.memory": spark_settings.driver_memory,
            # The embedded driver is the whole cluster and runs batch jobs: the throughput collector suits it
            # better than G1's pause targets (about 10% faster ingest here).
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j} -XX:+UseParallelGC",
            "spark.ui.enabled": str(interactive if ui is None else ui).lower(),
            "spark.ui.showConsoleProgress": str(interactive).lower(),
        })
        # Python workers must be this interpreter (the venv's), not whatever `python3` PATH finds first.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if spark_settings.master.startswith("local"):
            # Spark warns about the loopback hostname on every start; local mode needs no other address.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # A table of a few hundred MB would otherwise be read in about one split per core: a few tasks, and
            # one core idle while the other finishes the last. Four splits per core keep both busy.
            conf["spark.sql.files.minPartitionNum"] = str(4 * _local_cores(spark_settings.master))
    if settings.lake.engine == "spark-delta" or (
        settings.lake.engine == "auto" and _delta_jars_requested(spark_settings.conf)
    ):
        conf.setdefault("spark.sql.extensions", DELTA_EXTENSION)
        conf.setdefault("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    conf.update(spark_settings.conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_settings.log_level)
    log.info("spark %s on %s (%s cores)", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    return spark


def _local_cores(master: str) -> int:
    """The cores a `local`, `local[N]` or `local[*]` master runs on."""
    inside = master[len("local["):-1] if master.startswith("local[") else "1"
    return (os.cpu_count() or 1) if inside == "*" else max(int(inside.split(",")[0]), 1)


def delta_classes_available(spark: SparkSession) -> bool:
    """True when Delta Lake's Spark classes load in this session's JVM."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(DELTA_PROBE_CLASS)  # type: ignore[union-attr]
    except Exception:  # py4j raises its own error type for ClassNotFoundException
        return False
    return True


def _delta_jars_requested(extra_conf: dict[str, str]) -> bool:
    """Guess, before the JVM starts, whether the Delta jars will be on the classpath."""
    jars = " ".join(extra_conf.get(key, "") for key in ("spark.jars", "spark.jars.packages"))
    if "delta-spark" in jars or "delta-core" in jars:
        return True
    spark_home = os.environ.get("SPARK_HOME")
    return bool(spark_home and any(Path(spark_home, "jars").glob("delta-spark*.jar")))
