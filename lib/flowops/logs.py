"""What a person sees while a command runs: one line per job on the console, everything in the run's log file.

The CLI turns this on (`console`): the console then shows each job's end (`tags 2026-03 finished in 12.3s`), the
warnings and the errors; `-v` shows every INFO line there too, `-vv` DEBUG. The full log, at INFO or more, goes to
LAKE/_logs/<UTC time>-<app>.log from the moment the command opens its lake (`attach_file`, called by `Context`), and
the command's last line says where it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

PROGRESS = "progress"   # a record logged with extra={"progress": True} is one of the console's lines
FOLDER = "_logs"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_state: dict[str, object] = {"console": False, "verbose": 0, "file": None}


class ConsoleFilter(logging.Filter):
    """Passes progress lines, warnings and errors; everything when verbose."""

    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(self.verbose or record.levelno >= logging.WARNING or getattr(record, PROGRESS, False))


def console(verbose: int, *, log_file: bool = True) -> None:
    """The CLI's logging is set up (once per command): with `log_file`, the command's whole log goes to a file under
    the lake it opens."""
    _state.update(console=log_file, verbose=verbose, file=None)


def attach_file(lake_root: str | Path, app_name: str) -> Path | None:
    """Send the whole log to LAKE/_logs/<time>-<app>.log (once per process; only under the CLI)."""
    if not _state["console"] or _state["file"] is not None or "://" in str(lake_root):
        return _state["file"]  # type: ignore[return-value]
    folder = Path(lake_root) / FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{app_name}.log"
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("no log file under %s (%s): the console has what there is", folder, exc)
        _state["file"] = False
        return None
    handler.setLevel(logging.DEBUG if int(_state["verbose"]) > 1 else logging.INFO)   # type: ignore[call-overload]
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    _state["file"] = path
    return path


def current_file() -> Path | None:
    """The log file of this command, when there is one."""
    found = _state["file"]
    return found if isinstance(found, Path) else None
