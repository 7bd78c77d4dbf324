"""The embedded JVM: its class-data archive (used only when made for this Java and these Spark jars, and mapped when
used), its JIT options, and the session settings that spare py4j round trips."""

from __future__ import annotations

import json
import logging
import os

import pytest

from flowops import spark as session

JAVA = 'openjdk version "17.0.15" 2025-04-15\nOpenJDK 64-Bit Server VM (build 17.0.15+6, mixed mode, sharing)'


@pytest.fixture
def archive(tmp_path, monkeypatch):
    path = tmp_path / "spark-classes.jsa"
    monkeypatch.setattr(session, "CLASS_ARCHIVE", path)
    return path


def test_no_archive_is_used_and_said_so_when_none_was_made(archive, caplog):
    with caplog.at_level(logging.INFO, logger="flowops.spark"):
        assert session.class_archive(JAVA) is None
    assert "class-data archive: none" in caplog.text


def made(archive, **changed) -> None:
    """An archive and the record of what it was made for, with `changed` entries in the record."""
    archive.write_bytes(b"archive")
    identity = {**session._archive_identity(JAVA), "bytes": len(b"archive"), **changed}
    archive.with_suffix(".json").write_text(json.dumps(identity))


def test_the_archive_is_used_when_made_for_this_java_and_these_jars(archive, caplog):
    made(archive)
    with caplog.at_level(logging.INFO, logger="flowops.spark"):
        assert session.class_archive(JAVA) == f"-XX:SharedArchiveFile={archive}"
    assert str(archive) in caplog.text


@pytest.mark.parametrize("made_for", [{"java": JAVA.replace("17.0.15", "17.0.16")}, {"pyspark": "4.1.0"},
                                      {"jars": "/elsewhere/pyspark/jars"}, {"bytes": 1 << 20}])
def test_an_archive_made_for_another_java_or_spark_or_cut_is_not_used_and_a_warning_says_so(archive, caplog,
                                                                                            made_for):
    """A JVM given an archive cut short crashes: an archive of another size than written is not used either."""
    made(archive, **made_for)
    with caplog.at_level(logging.INFO, logger="flowops.spark"):
        assert session.class_archive(JAVA) is None
    assert any(r.levelno == logging.WARNING and "not used" in r.message for r in caplog.records)


def test_the_tests_jvm_maps_the_archive_make_setup_wrote(spark):
    """make setup runs `flowops jvm-archive`; a JVM that was given the archive but cannot map it (another Java
    build, another classpath) runs without it and only warns on its stderr."""
    if not session.CLASS_ARCHIVE.with_suffix(".json").exists():
        pytest.fail(f"no class-data archive at {session.CLASS_ARCHIVE}: make setup (or `flowops jvm-archive`) "
                    "writes it")
    options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    assert f"-XX:SharedArchiveFile={session.CLASS_ARCHIVE}" in options
    jvm = spark.sparkContext._jvm.ProcessHandle.current().pid()
    with open(f"/proc/{jvm}/maps") as maps:
        assert str(session.CLASS_ARCHIVE) in maps.read()
    assert os.path.getsize(session.CLASS_ARCHIVE) > 0


def test_java_options_picked_up_from_the_environment_are_not_taken_for_the_version(monkeypatch):
    """A JVM prints "Picked up JAVA_TOOL_OPTIONS: ..." before its version when that variable is set (common on managed
    machines): the check must still find Java 17, and what it returns (an archive's record) must not hold the line."""
    plain = session.check_java()
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Dflowops.test=1")
    picked = session.check_java()
    assert picked == plain and "Picked up" not in picked


def test_the_embedded_jvm_compiles_with_the_shallower_inlining(spark):
    """The JIT options are in effect in the JVM itself, not only in the settings (HotSpot's own view of its flags)."""
    jvm = spark.sparkContext._jvm
    hotspot = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    assert session.JIT_OPTIONS
    for option in session.JIT_OPTIONS:
        name, value = option.removeprefix("-XX:").split("=")
        assert hotspot.getVMOption(name).getValue() == value, option


def test_dataframe_calls_skip_the_call_site_capture_and_errors_still_name_the_column(spark):
    """PySpark's capture of each DataFrame call's Python call site (py4j round trips per call) is off in the
    session, and an analysis error still says what it could not resolve."""
    from pyspark.errors import AnalysisException
    from pyspark.errors.utils import is_debugging_enabled
    from pyspark.sql import functions as F

    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    assert not is_debugging_enabled()
    with pytest.raises(AnalysisException, match="no_such_column"):
        spark.range(1).select(F.col("no_such_column") + 1).collect()
