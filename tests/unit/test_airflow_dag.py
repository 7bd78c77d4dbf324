"""jobs/flowops_dag.py, the Airflow schedule: parsed by Airflow itself where it is installed (it is not in the
project's virtualenv: Airflow 3 pins packages this project pins differently), and in any case loaded against a
stand-in for the few Airflow names it uses, so that its tasks, their order, retries and the commands they render
for a month are checked here, and each command is parsed by the flowops command line it ends in."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "jobs" / "flowops_dag.py"
ORDER = ["ingest", "evaluate_previous_campaign", "train_churn", "tags", "segment", "target"]
SUBMIT = "spark-submit --master yarn --py-files /opt/flowops/flowops.zip"


class _Dag:
    current: _Dag | None = None

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        self.kwargs, self.tasks = kwargs, {}

    def __enter__(self) -> _Dag:
        _Dag.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        _Dag.current = None


class _Bash:
    def __init__(self, *, task_id: str, bash_command: str, **kwargs) -> None:  # noqa: ANN003
        self.task_id, self.bash_command, self.kwargs, self.upstream = task_id, bash_command, kwargs, set()
        assert _Dag.current is not None, "a task outside the DAG"
        _Dag.current.tasks[task_id] = self

    def __rshift__(self, other: _Bash) -> _Bash:
        other.upstream.add(self.task_id)
        return other


def _stand_in(name: str, **names: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(names)
    return module


@pytest.fixture
def dag(monkeypatch, tmp_path) -> _Dag:
    """The DAG file loaded against stand-ins of airflow.sdk and the BashOperator, with this environment."""
    monkeypatch.setenv("FLOWOPS_SPARK_SUBMIT", SUBMIT)
    monkeypatch.setenv("FLOWOPS_HOME", "/opt/flowops")
    monkeypatch.setenv("FLOWOPS_RAW", "/data/landing")
    monkeypatch.setenv("FLOWOPS_LAKE", str(tmp_path / "lake"))
    sdk = _stand_in("airflow.sdk", DAG=_Dag, Param=lambda default, **kw: {"default": default, **kw},
                    CronTriggerTimetable=lambda cron, timezone: (cron, timezone),
                    TriggerRule=types.SimpleNamespace(NONE_FAILED="none_failed"))
    for name, module in {"airflow": _stand_in("airflow"), "airflow.sdk": sdk,
                         "airflow.providers": _stand_in("airflow.providers"),
                         "airflow.providers.standard": _stand_in("airflow.providers.standard"),
                         "airflow.providers.standard.operators": _stand_in("airflow.providers.standard.operators"),
                         "airflow.providers.standard.operators.bash": _stand_in("bash", BashOperator=_Bash)}.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("flowops_dag_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def render(dag: _Dag, task_id: str, logical_date: dt.datetime | None, month: str | None = None) -> str:
    """A task's command as Airflow renders it: Jinja with the DAG's macros, the run's logical date and params."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals.update(dag.kwargs["user_defined_macros"])
    return env.from_string(dag.tasks[task_id].bash_command).render(logical_date=logical_date,
                                                                   params={"month": month})


def test_one_task_per_step_in_order_with_retries(dag):
    assert list(dag.tasks) == ORDER
    assert [sorted(dag.tasks[t].upstream) for t in ORDER] == [[], *[[before] for before in ORDER[:-1]]]
    assert dag.kwargs["default_args"]["retries"] >= 1
    assert dag.kwargs["default_args"]["retry_delay"] >= dt.timedelta(minutes=1)
    assert dag.kwargs["max_active_runs"] == 1   # months in order: tags read history, targeting learns from M-1
    assert dag.kwargs["schedule"] == ("0 2 3 * *", "Asia/Shanghai")
    assert dag.tasks["train_churn"].kwargs["trigger_rule"] == "none_failed"   # runs after a skipped evaluation
    assert dag.tasks["tags"].kwargs["trigger_rule"] == "none_failed"          # and after a skipped training
    assert dag.tasks["train_churn"].kwargs["skip_on_exit_code"] == 99        # `flowops train` with nothing to train
    assert dag.tasks["ingest"].kwargs["depends_on_past"] is True


@pytest.mark.parametrize(("logical_date", "month", "previous"), [
    (dt.datetime(2026, 4, 3, 2, tzinfo=ZoneInfo("Asia/Shanghai")), "2026-03", "2026-02"),
    (dt.datetime(2026, 1, 2, 18, tzinfo=dt.UTC), "2025-12", "2025-11"),   # the 3rd, 02:00 in Shanghai
])
def test_commands_take_the_month_before_the_run(dag, tmp_path, logical_date, month, previous):
    commands = {t: render(dag, t, logical_date) for t in ORDER}
    for task in ("ingest", "train_churn", "tags", "segment", "target"):
        assert commands[task].endswith(f"--month {month}")
    assert commands["evaluate_previous_campaign"].endswith(
        f"jobs/evaluate.py --conf /opt/flowops/conf --lake {tmp_path / 'lake'} --month {previous}")
    assert f"--lake {tmp_path / 'lake'} --raw /data/landing --month {month}" in commands["ingest"]


def test_the_month_param_overrides_the_date_and_a_run_without_date_needs_it(dag):
    assert render(dag, "segment", None, month="2025-07").endswith("--month 2025-07")
    assert render(dag, "evaluate_previous_campaign", None, month="2025-01").endswith("--month 2024-12")
    with pytest.raises(ValueError, match="param month"):
        render(dag, "segment", None)


def test_each_command_is_a_spark_submit_of_an_entry_point_the_cli_accepts(dag, tmp_path):
    build_parser = pytest.importorskip("flowops.cli").build_parser   # absent from an Airflow-only virtualenv
    jobs = DAG_FILE.parent
    for task in ORDER:
        command = render(dag, task, dt.datetime(2026, 4, 3, tzinfo=dt.UTC)).split("; ")[-1]
        assert command.startswith(SUBMIT + " /opt/flowops/jobs/")
        entry, *arguments = shlex.split(command[len(SUBMIT):])
        source = (jobs / Path(entry).name).read_text()
        words = re.findall(r'"(\w+)"', re.search(r'main\(\[((?:"\w+", )+)\*sys\.argv\[1:\]\]\)', source).group(1))
        args = build_parser().parse_args([*words, *arguments])
        assert (args.command, args.conf, args.lake) == (words[0], "/opt/flowops/conf", str(tmp_path / "lake"))
        assert args.month == ("2026-02" if task.startswith("evaluate") else "2026-03")


def test_evaluate_is_skipped_when_the_previous_month_exported_nothing(dag, tmp_path):
    command = render(dag, "evaluate_previous_campaign", None, month="2026-03").replace(SUBMIT, "echo submitted")
    skipped = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert (skipped.returncode, skipped.stdout.strip()) == (99, "no contacts exported for 2026-02: nothing to evaluate")
    (tmp_path / "lake" / "ops" / "contact_history" / "month=2026-02").mkdir(parents=True)
    ran = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert ran.returncode == 0
    assert ran.stdout.startswith("submitted /opt/flowops/jobs/evaluate.py ")


def test_airflow_parses_the_dag_file():
    """Where Airflow 3 is installed (not in this virtualenv): its DagBag imports the file without errors."""
    pytest.importorskip("airflow.sdk")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["flowops_month"]
    assert [t.task_id for t in dag.topological_sort()] == ORDER
    assert all(t.retries >= 1 for t in dag.tasks)
