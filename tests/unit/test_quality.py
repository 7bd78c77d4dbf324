"""Quality gates: conf/expectations checks (each error kind names the file and the key), and the gate on broken
batches (duplicated keys, a column of nulls, a month with half its rows) and on a warn failure."""

from __future__ import annotations

import datetime as dt
import shutil
import textwrap

import pytest
from pyspark.sql import functions as F

from flowops.errors import ConfigError, QualityGateFailed
from flowops.lake.tables import QUALITY_RESULTS, SUBSCRIBERS
from flowops.quality.frames import export_checks, reconciliation_frame
from flowops.quality.results import mask
from flowops.quality.suites import EXPORT_CONTACTS, RECONCILIATION, known_columns, load_suites
from flowops.runs import Run
from flowops.steps.quality import gate, gate_read, passed
from flowops.tags.definitions import load_library
from tests.conftest import CONF, make_settings

COLUMNS = {"silver/subscribers": ("month", "sub_id", "status", "vip_level")}


def write_conf(tmp_path, text: str):
    folder = tmp_path / "conf" / "expectations"
    folder.mkdir(parents=True)
    (folder / "silver.yml").write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path / "conf"


def test_the_repos_expectations_load_against_the_tables_and_the_tag_library():
    suites = load_suites(CONF, known_columns(load_library(CONF).names))
    assert {"bronze/reconciliation", "silver/usage_daily", "silver/subscribers", "gold/subscriber_tags",
            "gold/flow_stages", "gold/scenario_targets", "exports/contacts"} <= set(suites.checks)
    assert {c.severity for checks in suites.checks.values() for c in checks} == {"critical", "warn"}


@pytest.mark.parametrize(("entry", "message"), [
    ("- {expectation: expect_column_values_to_be_uniq, kwargs: {column: sub_id}, severity: critical}",
     "conf/expectations/silver.yml: tables.silver/subscribers.0.expectation: unknown expectation "
     "'expect_column_values_to_be_uniq'"),
    ("- {expectation: expect_column_values_to_not_be_null, kwargs: {column: msisdn}, severity: critical}",
     "conf/expectations/silver.yml: tables.silver/subscribers.0.kwargs.column: unknown column 'msisdn' of "
     "silver/subscribers"),
    ("- {expectation: expect_column_values_to_be_between, kwargs: {column: vip_level, max_value: 5, mostly: 2}, "
     "severity: warn}",
     "conf/expectations/silver.yml: tables.silver/subscribers.0.kwargs.mostly: ensure this value is less than or "
     "equal to 1.0"),
    ("- {expectation: row_count_vs_previous, kwargs: {min_ratio: 2, max_ratio: 1}, severity: critical}",
     "conf/expectations/silver.yml: tables.silver/subscribers.0.kwargs."),
    ("- {expectation: share_of_values, kwargs: {column: status, value_set: [x], max_share: 1.5}, severity: warn}",
     "conf/expectations/silver.yml: tables.silver/subscribers.0.kwargs.max_share: "),
])
def test_a_wrong_expectation_names_the_file_and_the_key(tmp_path, entry, message):
    conf = write_conf(tmp_path, f"tables:\n  silver/subscribers:\n    {entry}\n")
    with pytest.raises(ConfigError) as error:
        load_suites(conf, COLUMNS)
    assert str(error.value).startswith(message), str(error.value)


def test_an_unknown_table_and_a_bad_severity_are_refused(tmp_path):
    conf = write_conf(tmp_path, """\
        tables:
          silver/nothing:
            - {expectation: expect_column_values_to_be_unique, kwargs: {column: sub_id}, severity: critical}
        """)
    with pytest.raises(ConfigError, match=r"silver.yml: tables.silver/nothing: unknown table"):
        load_suites(conf, COLUMNS)
    (conf / "expectations" / "silver.yml").write_text(
        "tables:\n  silver/subscribers:\n    - {expectation: expect_column_values_to_be_unique, "
        "kwargs: {column: sub_id}, severity: fatal}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"silver.yml: tables.silver/subscribers.0.severity: expected 'critical' "
                                          r"or 'warn'"):
        load_suites(conf, COLUMNS)


def test_quality_check_prints_one_line_per_table_and_fails_in_one_line_naming_file_and_key(tmp_path, capsys):
    from flowops.cli import main

    assert main(["quality", "--check"]) == 0
    assert "ok  silver/subscribers" in capsys.readouterr().out
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("expectations"))
    (conf / "expectations").mkdir()
    (conf / "expectations" / "gold.yml").write_text(
        "tables:\n  gold/subscriber_tags:\n    - {expectation: expect_column_values_to_not_be_null, "
        "kwargs: {column: no_such_tag}, severity: warn}\n", encoding="utf-8")
    assert main(["quality", "--check", "--conf", str(conf)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "flowops quality: error: conf/expectations/gold.yml: tables.gold/subscriber_tags.0.kwargs.column: unknown "
        "column 'no_such_tag' of gold/subscriber_tags")


def test_personal_fields_are_masked_in_examples():
    assert [mask("sub_id", "a1b2c3d4e5"), mask("msisdn", "13812345678"), mask("status", None),
            mask("detail", "call 13812345678 now")] == ["a1b2…", "1381…", "null", "call 138******78 now"]


# ---------------------------------------------------------------------------------------------------- the gate
def subscribers(spark, month: str, n: int, *, duplicate: int = 0, null_status: bool = False, vip: int = 1):
    rows = [(month, f"sub{i:06d}", None if null_status else "active", vip) for i in range(n)]
    rows += rows[:duplicate]
    df = spark.createDataFrame(rows, "month string, sub_id string, status string, vip_level int")
    return df.select(*[F.col(f.name).cast(f.dataType) if f.name in df.columns else F.lit(None).cast(f.dataType)
                       .alias(f.name) for f in SUBSCRIBERS.schema.fields])


@pytest.fixture
def settings(tmp_path):
    """The repo's conf: small frames go to GX's pandas engine."""
    return make_settings(tmp_path / "lake")


def spark_engine(settings):
    """The same settings with every frame validated by GX's Spark engine."""
    return settings.model_copy(update={"quality": settings.quality.model_copy(update={"collect_below_rows": 0})})


def results(lake, run):
    return {(r.expectation, r.column): r for r in lake.read(QUALITY_RESULTS.name)
            .where(F.col("run_id") == run.run_id).collect()}


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_duplicated_keys_stop_the_batch_with_one_line_naming_table_expectation_and_rows(spark, lake, settings, engine):
    run = Run("ingest-monthly", {"month": "2026-02"})
    with pytest.raises(QualityGateFailed) as stopped:
        gate(lake, settings if engine == "pandas" else spark_engine(settings), run, SUBSCRIBERS.name,
             subscribers(spark, "2026-02", 40, duplicate=3), "2026-02")
    line = str(stopped.value)
    assert "\n" not in line
    assert line.startswith("quality gate: silver/subscribers 2026-02 stopped by 1 critical expectation: "
                           "expect_column_values_to_be_unique(sub_id): 6 of 43 rows failed, e.g. [")
    assert "sub0…" in line and "sub00000" not in line   # examples masked
    assert f"ops/quality_results run {run.run_id}" in line
    recorded = results(lake, run)
    assert recorded[("expect_column_values_to_be_unique", "sub_id")].success is False
    assert recorded[("expect_column_values_to_be_unique", "sub_id")].unexpected_count == 6
    assert recorded[("expect_column_values_to_not_be_null", "sub_id")].success is True


def test_a_column_of_nulls_stops_the_batch(spark, lake, settings):
    run = Run("ingest-monthly", {"month": "2026-02"})
    with pytest.raises(QualityGateFailed, match=r"expect_column_values_to_not_be_null\(status\): 20 of 20 rows "
                                                r"failed, e\.g\. \[sub_id=sub0…, status=null"):
        gate(lake, settings, run, SUBSCRIBERS.name, subscribers(spark, "2026-02", 20, null_status=True), "2026-02")
    recorded = results(lake, run)
    assert recorded[("expect_column_values_to_not_be_null", "status")].severity == "critical"
    assert recorded[("expect_column_values_to_be_in_set", "status")].success is True   # nulls are not in a set


def test_a_month_with_half_the_rows_of_the_month_before_is_stopped(spark, lake, settings):
    lake.write(subscribers(spark, "2026-01", 40), SUBSCRIBERS, mode="overwrite", partitions={"month": ["2026-01"]})
    run = Run("ingest-monthly", {"month": "2026-02"})
    with pytest.raises(QualityGateFailed, match=r"silver/subscribers 2026-02 stopped by 1 critical expectation: "
                                                r"row_count_vs_previous: observed 20, expected 32\.\.50"):
        gate(lake, settings, run, SUBSCRIBERS.name, subscribers(spark, "2026-02", 20), "2026-02",
             previous=(SUBSCRIBERS.name, {"month": ["2026-01"]}))
    row = results(lake, run)[("row_count_vs_previous", None)]
    assert (row.gx_type, row.observed_value, row.success) == ("expect_table_row_count_to_be_between", "20", False)
    # 36 of 40 is within the bounds: the gate passes.
    assert gate(lake, settings, Run("ingest-monthly", {}), SUBSCRIBERS.name, subscribers(spark, "2026-02", 36),
                "2026-02", previous=(SUBSCRIBERS.name, {"month": ["2026-01"]})) is not None


def test_a_warn_failure_is_recorded_and_the_batch_goes_on(spark, lake, settings):
    run = Run("ingest-monthly", {"month": "2026-02"})
    checked = gate(lake, settings, run, SUBSCRIBERS.name, subscribers(spark, "2026-02", 10, vip=9), "2026-02")
    assert [(o.check.expectation, o.check.column, o.unexpected_count) for o in checked.warnings] == [
        ("expect_column_values_to_be_between", "vip_level", 10)]
    row = results(lake, run)[("expect_column_values_to_be_between", "vip_level")]
    assert (row.severity, row.success, row.element_count, row.job, row.partition) == (
        "warn", False, 10, "ingest-monthly", "2026-02")
    assert isinstance(row.checked_at, dt.datetime)
    assert run.counts["quality.failed"] == 1


def test_a_read_gate_skips_only_the_version_this_process_checked_as_it_wrote_it(spark, lake, settings):
    """A step reading a partition checks it, unless this process's gate passed that very version as it wrote it: a
    later write by anyone (here a broken batch written past the gate) is checked again."""
    good = subscribers(spark, "2026-02", 20)
    version = lake.write(good, SUBSCRIBERS, mode="overwrite", partitions={"month": ["2026-02"]})
    passed(lake, SUBSCRIBERS.name, "2026-02", version)
    run = Run("segment", {"month": "2026-02"})
    broken = subscribers(spark, "2026-02", 20, duplicate=3)
    assert gate_read(lake, settings, run, SUBSCRIBERS.name, broken, "2026-02") is None   # not read again
    assert run.counts["quality.rechecked_skipped"] == 1 and not lake.exists(QUALITY_RESULTS.name)
    lake.write(broken, SUBSCRIBERS, mode="overwrite", partitions={"month": ["2026-02"]})
    with pytest.raises(QualityGateFailed, match=r"expect_column_values_to_be_unique\(sub_id\): 6 of 23 rows"):
        gate_read(lake, settings, run, SUBSCRIBERS.name, broken, "2026-02")


def test_an_opted_out_or_control_subscriber_in_the_exports_is_stopped(spark, lake, settings):
    rows = spark.createDataFrame([("s1-aaaa", "sc", "sms", "13800000001"), ("s2-bbbb", "sc", "sms", "13800000002"),
                                  ("s3-cccc", "sc", "app", "13800000003")],
                                 "sub_id string, scenario string, channel string, msisdn string")
    problems = spark.createDataFrame([("s2-bbbb", "sc", "sms", "opted_out_of_channel"),
                                      ("s3-cccc", "sc", "app", "control"), ("s3-cccc", "sc", "app", "over_cap")],
                                     "sub_id string, scenario string, channel string, problem string")
    checked = export_checks(rows, problems, "2026-02", 1)
    expected = [("s1-aaaa", False, False, False, False), ("s2-bbbb", True, False, False, False),
                ("s3-cccc", False, True, False, False)]
    assert sorted((r.sub_id, r.opted_out, r.control, r.immune, r.churned) for r in checked.collect()) == expected
    # The same rows on the driver (as the target step has them) give the same flags, and with no problem at all none.
    local = export_checks(rows.toPandas(), problems.toPandas(), "2026-02", 1)
    assert list(local.columns) == checked.columns
    assert sorted(local[["sub_id", "opted_out", "control", "immune", "churned"]].itertuples(index=False, name=None)) \
        == expected
    clean = export_checks(rows.toPandas(), problems.limit(0).toPandas(), "2026-02", 1)
    assert len(clean) == 3 and not clean[["opted_out", "control", "immune", "churned"]].to_numpy().any()
    for frame in (checked, local):
        with pytest.raises(QualityGateFailed, match=r"^quality gate: exports/contacts 2026-02/wave=1 stopped by 2 "
                                                    r"critical expectations: expect_column_values_to_be_in_set\("
                                                    r"opted_out\): 1 of 3 rows failed, e\.g\. \[sub_id=s2-b…, "
                                                    r"opted_out=True\] \| expect_column_values_to_be_in_set\("
                                                    r"control\): 1 of 3 rows failed"):
            gate(lake, settings, Run("target", {}), EXPORT_CONTACTS, frame, "2026-02/wave=1")


def test_a_file_that_does_not_reconcile_is_stopped_and_a_high_quarantine_rate_is_a_warning(lake, settings):
    files = [("usage/a.txt.gz", "ok", 100, 90, 10, 0), ("usage/b.txt.gz", "ok", 100, 99, 0, 0)]
    with pytest.raises(QualityGateFailed, match=r"expect_column_values_to_be_between\(unbalanced\): 1 of 2 rows "
                                                r"failed, e\.g\. \[source_file=usage/b\.txt\.gz, unbalanced=1\]"):
        gate(lake, settings, Run("ingest", {}), RECONCILIATION, reconciliation_frame(files), "2026-02-01")
    checked = gate(lake, settings, Run("ingest", {}), RECONCILIATION, reconciliation_frame(files[:1]), "2026-02-01")
    assert [(o.check.column, o.unexpected_count) for o in checked.warnings] == [("quarantine_rate", 1)]


def test_a_check_gx_could_not_compute_stops_the_batch_naming_the_error(spark, lake, settings):
    # A Spark job that fails while GX computes a metric (here on purpose; in a 100,000-subscriber run, a full disk
    # under the shuffle of a uniqueness check) is caught by GX as the check's exception, not as a count.
    run = Run("ingest-monthly", {"month": "2026-02"})
    frame = subscribers(spark, "2026-02", 30).withColumn(
        "status", F.when(F.col("sub_id") == "sub000007", F.raise_error(F.lit("No space left on device (simulated)")))
        .otherwise(F.col("status")))
    with pytest.raises(QualityGateFailed) as stopped:
        gate(lake, spark_engine(settings), run, SUBSCRIBERS.name, frame, "2026-02")
    line = str(stopped.value)
    assert "\n" not in line
    assert "could not be evaluated: " in line and "No space left on device (simulated)" in line
    assert "observed None" not in line
    recorded = [r for r in lake.read(QUALITY_RESULTS.name).where(F.col("run_id") == run.run_id).collect()
                if r.column == "status"]
    assert recorded and all(not r.success and r.observed_value.startswith("not evaluated: ") for r in recorded)
