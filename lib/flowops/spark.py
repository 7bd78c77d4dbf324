"""SparkSession factory: the embedded local default, or the cluster that spark-submit or --master names."""

from __future__ import annotations

import json
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
    # PySpark records the Python call site of every DataFrame and Column function for error messages: four or five
    # py4j round trips per call, about half of all the calls a step makes (tags: 32,000 of them a run, 14,500
    # without). Analysis errors still name the expression and column; conf can turn it back on.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}


# The JVM's class-data archive (HotSpot's AppCDS, dynamic archiving): the classes an embedded Spark loads, parsed and
# verified once by `flowops jvm-archive` (make setup runs it) and mapped by every later JVM instead of loaded from the
# jars again. It belongs to the virtualenv's Spark jars and to one Java build, so it is kept in the virtualenv with
# the versions it was made with, and used only where they match (BENCHMARKS.md, "Class-data archive").
CLASS_ARCHIVE = Path(sys.prefix) / "share" / "flowops" / "spark-classes.jsa"


def under_spark_submit() -> bool:
    """True when spark-submit (or a notebook's existing gateway) already launched the JVM."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


# The embedded JVM is a short-lived process on a few cores, and its C2 compiler was its busiest thread: about 20 of
# the 4k-subscriber month's 100 CPU-s went to compiling Spark's code with C2's default inlining (JDK 17: methods
# up to 325 bytecodes, 15 levels deep). Shallower inlining halves that; the month's ingest takes about 7% less
# time, and the 8 M-line month, the demo and the unit tests as long as before (BENCHMARKS.md, "Seventh sitting").
JIT_OPTIONS = ("-XX:FreqInlineSize=50", "-XX:MaxInlineLevel=6", "-XX:InlineSmallCode=1000")


def check_java() -> str:
    """Fail with one actionable line when no Java 17+ is available for an embedded Spark; returns what
    `java -version` says."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise FlowopsError(
            "Java 17 is required by Spark 4 and no 'java' was found: install openjdk-17-jre-headless "
            "or set JAVA_HOME to a JDK 17"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    # A JVM first reports the options it picked up from the environment (JAVA_TOOL_OPTIONS, _JAVA_OPTIONS,
    # JDK_JAVA_OPTIONS): not part of the version, and not of what a class-data archive was made for.
    lines = [line for line in out.splitlines() if not line.startswith(("Picked up ", "NOTE: Picked up "))]
    first = next((line for line in lines if ' version "' in line), lines[0] if lines else "")
    try:
        major = int(first.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        major = 0
    if major < 17:
        raise FlowopsError(f"Java 17 or newer is required by Spark 4; {java} is: {first or 'unknown'}")
    return "\n".join(lines).strip()


def build_session(settings: Settings, *, app_name: str | None = None, ui: bool | None = None,
                  archive_to: Path | None = None) -> SparkSession:
    """Create (or join) the SparkSession the jobs run on.

    Args:
        settings: validated settings; `spark.master` is used unless spark-submit supplied one.
        app_name: overrides `spark.app_name`, e.g. to name the job.
        ui: force the Spark UI on or off; by default it is on only for interactive local runs.
        archive_to: an embedded JVM writes the classes it loaded there when it exits (`write_class_archive`),
            and maps no archive itself.
    """
    spark_settings = settings.spark
    builder = SparkSession.builder.appName(app_name or spark_settings.app_name)
    conf = {**STORAGE_CONF, **EXECUTION_CONF}
    conf["spark.sql.session.timeZone"] = settings.pipeline.timezone
    conf["spark.sql.shuffle.partitions"] = str(spark_settings.shuffle_partitions)
    if not under_spark_submit():
        java = check_java()
        interactive = sys.stderr.isatty()
        # Writing an archive, the JVM warns of each class it cannot keep (generated, signed or unverifiable ones).
        archive = f"-XX:ArchiveClassesAtExit={archive_to} -Xlog:cds*=error" if archive_to else class_archive(java)
        builder = builder.master(spark_settings.master)
        log4j = resources.files("flowops") / "resources" / "log4j2.properties"
        conf.update({
            "spark.driver.memory": spark_settings.driver_memory,
            # The embedded driver is the whole cluster and runs batch jobs: the throughput collector suits it
            # better than G1's pause targets (about 10% faster ingest here).
            "spark.driver.extraJavaOptions": " ".join(filter(None, (
                f"-Dlog4j2.configurationFile=file:{log4j}", "-XX:+UseParallelGC", *JIT_OPTIONS, archive))),
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
             spark.sparkContext.defaultParallelism, extra={"progress": True})
    return spark


def class_archive(java: str) -> str | None:
    """The JVM option that maps CLASS_ARCHIVE, when it was made by this Java (`java`: what `java -version` says) for
    these Spark jars; logs whether it is used."""
    try:
        made_for = json.loads(CLASS_ARCHIVE.with_suffix(".json").read_text())
    except FileNotFoundError:
        log.info("JVM class-data archive: none (`flowops jvm-archive` writes one: each Spark start takes ~2 s less)")
        return None
    except (OSError, ValueError) as exc:
        log.warning("JVM class-data archive not used: %s unreadable (%s); `flowops jvm-archive` writes it again",
                    CLASS_ARCHIVE.with_suffix(".json"), exc)
        return None
    # A JVM given an archive cut short crashes (SIGBUS), so the archive must still be the size it was written.
    size = CLASS_ARCHIVE.stat().st_size if CLASS_ARCHIVE.exists() else None
    if made_for != {**_archive_identity(java), "bytes": size}:
        log.warning("JVM class-data archive %s not used: made for another Java or Spark, or changed since; "
                    "`flowops jvm-archive` writes it again", CLASS_ARCHIVE)
        return None
    log.info("JVM class-data archive: %s", CLASS_ARCHIVE)
    return f"-XX:SharedArchiveFile={CLASS_ARCHIVE}"


def _archive_identity(java: str) -> dict[str, str]:
    import pyspark

    return {"java": java, "pyspark": pyspark.__version__, "jars": str(Path(pyspark.__file__).parent / "jars")}


def write_class_archive(settings: Settings) -> Path:
    """Run a small workload in an embedded Spark of `settings` whose JVM, when it exits, writes the classes it loaded
    as CLASS_ARCHIVE; returns the archive. Fails under spark-submit or on a cluster master: the archive is for the
    JVM this package starts itself."""
    import socket

    from pyspark import SparkContext

    from flowops.lake.staged import process_gone

    if under_spark_submit() or not settings.spark.master.startswith("local"):
        raise FlowopsError("the class-data archive is for the embedded Spark (a local master, no spark-submit)")
    if SparkContext._active_spark_context is not None:
        raise FlowopsError("a Spark session already runs in this process: its JVM cannot write the archive")
    java = check_java()
    CLASS_ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    for left in CLASS_ARCHIVE.parent.glob(f".{CLASS_ARCHIVE.name}.*.tmp"):   # of runs killed before the rename
        if process_gone({"host": socket.gethostname(), "pid": left.name.split(".")[-2]}):
            left.unlink(missing_ok=True)
    partial = CLASS_ARCHIVE.with_name(f".{CLASS_ARCHIVE.name}.{os.getpid()}.tmp")
    spark = build_session(settings, app_name="flowops-jvm-archive", ui=False, archive_to=partial)
    jvm, done = SparkContext._gateway.proc, False  # type: ignore[union-attr]
    try:
        _archive_workload(spark)
        done = True
    finally:
        spark.stop()
        SparkContext._gateway.shutdown()  # type: ignore[union-attr]
        SparkContext._gateway = SparkContext._jvm = None
        jvm.stdin.close()   # the gateway JVM exits when its stdin closes, and writes the archive as it exits
        jvm.wait(timeout=300)
        if not done:
            partial.unlink(missing_ok=True)
    if jvm.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise FlowopsError(f"the JVM wrote no class-data archive (exit code {jvm.returncode}); is it HotSpot 17+?")
    CLASS_ARCHIVE.with_suffix(".json").unlink(missing_ok=True)   # no JVM maps the archive while it is replaced
    os.replace(partial, CLASS_ARCHIVE)
    identity = {**_archive_identity(java), "bytes": CLASS_ARCHIVE.stat().st_size}
    CLASS_ARCHIVE.with_suffix(".json").write_text(json.dumps(identity, indent=1))
    return CLASS_ARCHIVE


def _archive_workload(spark: SparkSession) -> None:
    """What the jobs do, in small: cache, aggregate, rank, join, Arrow and pandas Python functions, Parquet."""
    import tempfile

    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def same(batches):
        yield from batches

    rows = spark.range(20_000).selectExpr("id", "cast(id % 7 as string) as k", "id * 2 as v", "id % 3 = 0 as b")
    rows.cache().count()
    rows.groupBy("k").agg(F.sum("v"), F.max_by("k", "v"), F.count_distinct("v"), F.collect_set("b")).collect()
    rows.withColumn("r", F.row_number().over(Window.partitionBy("k").orderBy("v"))).where("r < 3").collect()
    rows.join(F.broadcast(rows.select("k").distinct()), "k", "left_anti").count()
    rows.alias("a").join(rows.alias("b"), "id").count()
    rows.mapInArrow(same, rows.schema).mapInPandas(same, rows.schema).count()
    rows.groupBy("k").applyInPandas(lambda frame: frame.head(1), rows.schema).count()
    spark.sparkContext.parallelize(range(10), 2).mapPartitions(lambda part: [sum(part)]).collect()
    with tempfile.TemporaryDirectory() as folder:
        rows.repartition(3, "k").write.partitionBy("k").parquet(f"{folder}/p")
        spark.read.parquet(f"{folder}/p").where("k = '1'").unionByName(rows.limit(3)).toArrow()
        spark.createDataFrame(pd.DataFrame({"x": [1], "y": ["a"]})).toPandas()


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
