"""The flowops command: help, show, and one clear line for each kind of failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowops.cli import main
from flowops.runs import recorded_run

# A command opening a lake imports MLflow's store and Great Expectations in a background thread (tracking.register);
# their DeprecationWarnings, which pytest shows and a plain `flowops` never does, can land in any test's stderr here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]


def flowops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flowops.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=300)


def test_help_lists_the_commands():
    result = flowops("--help")

    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


COMMANDS = ["generate", "ingest", "tags", "segment", "target", "evaluate", "run", "demo", "simulate", "show", "apps",
            "terminals", "scenarios", "check", "jvm-archive", "quality"]


def test_no_production_step_reaches_the_channel_simulator():
    """Only `flowops simulate` and the demo use it: every other step module neither imports it nor its model."""
    import ast

    steps = ROOT / "lib" / "flowops" / "steps"
    for path in [*steps.glob("*.py"), ROOT / "lib" / "flowops" / "commands.py"]:
        if path.name == "simulate.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        allowed = {"flowops.steps.simulate"} if path.name == "commands.py" else set()
        assert not {m for m in modules if m and ("simulate" in m or "synth.response" in m)} - allowed, path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_own_help(command):
    result = flowops(command, "--help")

    assert result.returncode == 0
    assert f"usage: flowops {command}" in result.stdout
    assert "--conf DIR" in result.stdout


def test_missing_java_is_one_line_that_says_what_to_do(tmp_path):
    result = flowops("show", "ops/runs", "--lake", str(tmp_path),
                     env={"JAVA_HOME": str(tmp_path / "no-jdk"), "PATH": "/usr/bin/false-dir"})

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "flowops show: error: Java 17 is required by Spark 4 and no 'java' was found: install "
        "openjdk-17-jre-headless or set JAVA_HOME to a JDK 17"]


def test_bad_config_value_is_one_line(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "pipeline.yml").write_text("lake:\n  engine: fast\n")

    result = flowops("show", "ops/runs", "--conf", str(conf))

    assert result.returncode == 1
    assert result.stderr.strip() == (f"flowops show: error: {conf}/pipeline.yml: lake.engine: expected 'auto', "
                                     "'delta-rs' or 'spark-delta'; got 'fast'")


def test_show_prints_rows_and_a_count(lake, capsys):
    with recorded_run(lake, "unit-test", {"month": "2026-01"}) as run:
        run.count("lines", 12)

    code = main(["show", "ops/runs", "--lake", lake.root, "--columns", "job,status,counts"])

    out = capsys.readouterr().out
    assert code == 0
    assert "unit-test" in out and "{lines -> 12}" in out
    assert "ops/runs: 1 rows, showing up to 20" in out


def test_show_where_filters_and_bad_sql_is_one_line(lake, capsys):
    for job in ("a", "b"):
        with recorded_run(lake, job, {}):
            pass

    assert main(["show", "ops/runs", "--lake", lake.root, "--where", "job = 'b'"]) == 0
    assert "ops/runs: 1 rows matching" in capsys.readouterr().out

    assert main(["show", "ops/runs", "--lake", lake.root, "--where", "no_such_column = 1"]) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO " not in line]
    assert len(err) == 1
    assert err[0].startswith("flowops show: error: cannot apply --where/--columns to ops/runs: "
                             "[UNRESOLVED_COLUMN")


def test_show_history_lists_versions(lake, capsys):
    for job in ("a", "b"):
        with recorded_run(lake, job, {}):
            pass

    assert main(["show", "ops/runs", "--lake", lake.root, "--history"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["v1", "v0"]


def test_show_of_a_missing_table_says_which_and_where(tmp_path, spark, capsys):
    assert main(["show", "gold/flow_stages", "--lake", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"flowops show: error: table gold/flow_stages does not exist at {tmp_path}/gold/flow_stages; "
        "run the job that writes it first")


def test_unexpected_failures_print_a_located_line_then_details(monkeypatch, capsys):
    def boom(args):
        raise ZeroDivisionError("division by zero")

    import flowops.commands as commands

    monkeypatch.setattr(commands, "run_show", boom)
    monkeypatch.setattr(commands, "REGISTRARS", [commands.add_show])

    assert main(["show", "x/y"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"flowops show failed: ZeroDivisionError: division by zero \(at cli\.py:\d+\)", err[0])
    assert err[1] == "details:"
    assert any("Traceback" in line for line in err[2:])


def test_apps_match_prints_app_rule_and_confidence_or_unknown():
    result = flowops("apps", "match", "szextshort.weixin.qq.com", "nothing.example")

    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["szextshort.weixin.qq.com", "wechat", "微信 WeChat", "social",
                                    "rule=social:wechat:0", "confidence=0.99"]
    assert lines[1] == "nothing.example\tunknown"


def test_terminals_match_says_which_source_answered():
    by_tac = flowops("terminals", "match", "--tac", "35050700123456")
    by_ua = flowops("terminals", "match", "--tac", "99999999", "--ua",
                    "Mozilla/5.0 (Linux; Android 14; SM-S9180 Build/UP1A.231005.007; wv) Chrome/120 Mobile")

    assert by_tac.returncode == by_ua.returncode == 0
    assert "model       Nokia 105" in by_tac.stdout and "source      tac" in by_tac.stdout
    assert "brand       Samsung" in by_ua.stdout and "source      user_agent" in by_ua.stdout


def test_tags_catalog_prints_and_writes_the_catalogue(tmp_path):
    out = tmp_path / "catalogue.md"
    result = flowops("tags", "--catalog", "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") in result.stdout
    assert "| `churn_risk_score` | double |" in result.stdout


def test_tags_check_names_the_file_and_tag_of_a_broken_definition(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    path = conf / "tags" / "value.yml"
    path.write_text(path.read_text(encoding="utf-8").replace("expr: complaints > 0", "expr: complaints > zero"),
                    encoding="utf-8")
    result = flowops("tags", "--check", "--conf", str(conf))

    assert result.returncode != 0
    assert re.search(r"value\.yml: tag has_complaints: unknown dependency 'zero'", result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_show_refuses_personal_data_without_the_flag_and_hostile_filters(tmp_path, capsys):
    lake = str(tmp_path / "lake")

    assert main(["show", "restricted/subscriber_keys", "--lake", lake]) == 1
    assert main(["show", "ops/runs", "--lake", lake, "--where", "reflect('java.lang.System', 'exit', 0) = 1"]) == 1
    assert main(["show", "ops/runs", "--lake", lake, "--where", "run_id IN (SELECT x FROM parquet.`/etc`)"]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err == ["flowops show: error: restricted/subscriber_keys holds personal data (phone numbers): add "
                   "--personal-data to print it",
                   "flowops show: error: --where refused: reflect() calls Java methods, which flowops expressions "
                   "may not",
                   "flowops show: error: --where refused: a subquery (SELECT) reads other tables or files, which "
                   "flowops expressions may not"]


def test_scenarios_catalog_writes_every_scenario(tmp_path, capsys):
    out = tmp_path / "scenarios.md"

    assert main(["scenarios", "--catalog", "--out", str(out)]) == 0

    text = out.read_text(encoding="utf-8")
    assert text.count("\n## ") >= 12 + 2   # a section per scenario, then channels and the policy
    assert "有流量无套餐" in text and "## Channels" in text


def test_the_demo_replaces_an_earlier_demos_lake_but_never_a_folder_that_is_not_a_lake(tmp_path):
    from flowops.commands import _fresh_demo_lake
    from flowops.errors import FlowopsError

    lake = tmp_path / "lakehouse"
    (lake / "ops" / "runs" / "_delta_log").mkdir(parents=True)
    (lake / "bronze" / "usage_events").mkdir(parents=True)
    _fresh_demo_lake(lake)
    assert not lake.exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FlowopsError, match="not a flowops lake"):
        _fresh_demo_lake(other)
    assert (other / "holiday.jpg").exists()


def test_a_demo_argument_the_generator_refuses_is_one_line(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "demo"), "--records-per-day", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "flowops demo: error: demo: records_per_day must be between 2 and" in err
    assert "Traceback" not in err and "details:" not in err
