"""The console shows one line per job, warnings and errors; the run's log file has everything."""

from __future__ import annotations

import logging

import pytest

from flowops import logs


def _record(level: int, progress: bool = False) -> logging.LogRecord:
    record = logging.LogRecord("flowops.x", level, __file__, 1, "message", None, None)
    if progress:
        setattr(record, logs.PROGRESS, True)
    return record


def test_the_console_shows_progress_warnings_and_errors_only_unless_verbose():
    quiet, verbose = logs.ConsoleFilter(0), logs.ConsoleFilter(1)
    assert not quiet.filter(_record(logging.INFO))
    assert quiet.filter(_record(logging.INFO, progress=True))
    assert quiet.filter(_record(logging.WARNING)) and quiet.filter(_record(logging.ERROR))
    assert verbose.filter(_record(logging.INFO))


@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(logs, "_state", {"console": False, "verbose": 0, "file": None})
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()


def test_the_log_file_has_every_info_line_under_the_lake(tmp_path, fresh_state):
    assert logs.attach_file(tmp_path, "flowops-x") is None          # not under the CLI: no file
    logs.console(0)
    path = logs.attach_file(tmp_path, "flowops-x")
    assert path is not None and path.parent == tmp_path / logs.FOLDER and path.name.endswith("-flowops-x.log")
    assert logs.attach_file(tmp_path / "other", "flowops-y") == path  # one file per process
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("flowops.test").info("a detail the console does not show")
    assert "a detail the console does not show" in path.read_text()
    assert logs.current_file() == path
