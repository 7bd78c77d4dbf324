"""`make bench` writes its report between BENCHMARKS.md's markers and keeps the rest of the file."""

from __future__ import annotations

from tests.benchmarks.run import BEGIN, END, REPORT, against_lines, embed


def test_the_report_replaces_only_what_is_between_the_markers_and_each_heading_goes_one_level_down():
    document = f"# Benchmarks\n\nkept analysis\n\n## Latest run\n\n{BEGIN}\nold report\n{END}\n\nkept footer\n"
    report = "# Benchmarks\n\nnew figures\n\n## The ladder\n\n| a |\n"

    out = embed(report, document)

    assert out == (f"# Benchmarks\n\nkept analysis\n\n## Latest run\n\n{BEGIN}\n## Benchmarks\n\nnew figures\n\n"
                   f"### The ladder\n\n| a |\n{END}\n\nkept footer\n")
    assert embed(report, out) == out   # a second run replaces the first


def test_the_comparison_with_an_older_revision_gives_its_ratios_from_the_same_runs_seconds():
    """What `--only-against` prints on a machine with no earlier run: each ratio from the seconds it compares."""
    now = {"seconds": 50.0, "lines": 3_000_000, "xdr_lines": 2_950_000, "usage_seconds": 45.0, "cores": 2,
           "steps": {"read and parse": 15.0, "rollup silver": 30.0}}
    against = {"revision": "abc1234", "subscribers": 4000,
               "before": {"seconds": 200.0, "lines": 3_000_000, "steps": {"parse": 120.0}},
               "now": {"ingest": now, "duckdb": {"seconds": 30.0}, "duckdb_no_handsets": {"seconds": 15.0}}}

    text = "\n".join(against_lines(against))

    assert "| abc1234 | 200.0 | 7,500 | 1x |" in text
    assert "| this commit | 50.0 | 30,000 | 4.0x faster |" in text
    assert "usage ingest is 1.50x its time" in text and "| 3.00x |" in text
    assert "| parse | 120.0 | read and parse | 15.0 |" in text and "|  |  | rollup silver | 30.0 |" in text


def test_benchmarks_md_has_the_markers():
    text = REPORT.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def test_a_process_that_exited_keeps_its_kind_in_the_cpu_sampled():
    """An exited process not yet reaped has no command line: its last sample, which holds all its CPU, must count
    under what it was (here a worker), not under the driver."""
    import subprocess
    import sys
    import time

    from tests.benchmarks.run import Sampler

    # The parent starts a "worker" that burns CPU and exits, waits for its exit without reaping it (WNOWAIT), and
    # leaves it unreaped for more than two samples.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "worker = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
        "while time.process_time() - t < 1.2: pass', 'pyspark.daemon'])\n"
        "os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)\n"
        "time.sleep(1.2)\n")])
    sampler = Sampler(parent.pid)
    sampler.start()
    parent.wait()
    time.sleep(0.6)
    sampler.done = True
    sampler.join()
    cpu = sampler.cpu_by_kind()
    assert cpu.get("worker", 0) >= 1.1 and cpu.get("driver", 0) < 0.5, cpu


def test_spark_work_is_counted_in_the_run_it_started_in_and_the_rest_between_runs():
    from tests.benchmarks.steps import BETWEEN, per_step, report

    runs = [("target", 1_000, 2.0), ("tags", 5_000, 1.0), ("target", 10_000, 1.0)]   # ms, seconds
    events = [
        {"Event": "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart", "executionId": 1, "time": 1_100},
        {"Event": "SparkListenerJobStart", "Submission Time": 1_200},
        {"Event": "SparkListenerStageCompleted", "Stage Info": {"Submission Time": 1_200}},
        {"Event": "SparkListenerTaskEnd", "Task Info": {"Launch Time": 1_300},
         "Task Metrics": {"Executor Run Time": 400, "Executor CPU Time": 100_000_000}},
        {"Event": "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd", "executionId": 1, "time": 3_500},
        {"Event": "SparkListenerJobStart", "Submission Time": 4_000},                    # between the runs
        {"Event": "SparkListenerJobStart", "Submission Time": 5_900},                    # tags
        {"Event": "SparkListenerTaskEnd", "Task Info": {"Launch Time": 10_500}, "Task Metrics": {}},   # 2nd target
    ]

    work = per_step(events, runs)

    target, tags, between = work["target"], work["tags"], work[BETWEEN]
    assert (target.runs, target.seconds, target.queries, target.query_s) == (2, 3.0, 1, [2.4])
    assert (target.jobs, target.stages, target.tasks, target.task_run_s, target.task_cpu_s) == (1, 1, 2, 0.4, 0.1)
    assert (tags.runs, tags.jobs, tags.tasks) == (1, 1, 0) and (between.runs, between.jobs) == (0, 1)
    assert report(work, 12.0).splitlines()[2].startswith("| target | 2 | 3.0 | 1 | 2.40 | 1 | 1 | 2 | 0.4 | 0.1 |")


def test_spark_events_reads_a_rolling_log_and_a_single_file_log_and_skips_status_and_checksum_files(tmp_path):
    import json

    from tests.benchmarks.run import spark_events

    rolling = tmp_path / "rolling" / "eventlog_v2_local-1"
    rolling.mkdir(parents=True)
    (rolling / "events_1_local-1").write_text(json.dumps({"Event": "a"}) + "\n" + json.dumps({"Event": "b"}) + "\n")
    (rolling / "events_2_local-1").write_text(json.dumps({"Event": "c"}) + "\n")
    (rolling / "appstatus_local-1").write_text("")
    (rolling / ".appstatus_local-1.crc").write_bytes(b"crc\x00\x01")
    single = tmp_path / "single"
    single.mkdir()
    (single / "local-2").write_text(json.dumps({"Event": "d"}) + "\n")

    assert [e["Event"] for e in spark_events(tmp_path / "rolling")] == ["a", "b", "c"]
    assert [e["Event"] for e in spark_events(single)] == ["d"]
    assert list(spark_events(tmp_path / "missing")) == []
