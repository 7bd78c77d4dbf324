"""The `flowops` command: one subcommand per job, plus generate, demo and show.

Every subcommand takes --conf, --master, --lake and --engine. Exit code 0 only on success; a failure prints
one line saying what failed and where, then the details.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from flowops import __version__, logs
from flowops.errors import FlowopsError, NothingToDoYet

log = logging.getLogger("flowops")
Handler = Callable[[argparse.Namespace], int | None]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowops` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, log_file=args.command not in QUICK_COMMANDS)
    try:
        return int(args.handler(args) or 0)
    except NothingToDoYet as exc:
        print(f"flowops {args.command}: nothing to do yet: {exc}", file=sys.stderr)
        return exc.exit_code
    except FlowopsError as exc:
        print(f"flowops {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"flowops {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a clear line
        print(f"flowops {args.command} failed: {describe_exception(exc)}", file=sys.stderr)
        print("details:", file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        tracking = sys.modules.get("flowops.tracking")   # loaded by the commands that run jobs (not the quick ones)
        if tracking is not None:
            tracking.flush()   # the jobs' MLflow runs, written in the background, are written when a command returns
        if logs.current_file() is not None:
            print(f"full log: {logs.current_file()}", file=sys.stderr)


def describe_exception(exc: BaseException) -> str:
    """`Type: first line of the message (at file:line)`, where the location is flowops' deepest frame."""
    first = (str(exc).strip().splitlines() or [""])[0]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/flowops/" in f.filename]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {first}{where}"


# Commands that read, check or print: no log file of their own (every other command writes one under its lake).
QUICK_COMMANDS = {"show", "check", "quality", "scenarios", "generate", "jvm-archive", "apps", "terminals"}


def setup_logging(verbose: int = 0, *, log_file: bool = False) -> None:
    """One line per job on stderr (every INFO line with -v, DEBUG with -vv), the whole log in the run's log file
    (`flowops.logs`); Spark's and py4j's chatter stays at warnings."""
    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(logs.ConsoleFilter(verbose))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logs.console(verbose, log_file=log_file)
    for noisy in ("py4j", "pyspark", "urllib3", "great_expectations", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PySpark logs every failed query as JSON before raising it; the CLI reports the error itself.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (notebooks and test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def build_parser() -> argparse.ArgumentParser:
    """The full command tree (each command module adds its own subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", default="conf", metavar="DIR", help="config folder (default: conf/)")
    common.add_argument("--master", help="Spark master URL (default: spark.master in conf, local[*])")
    common.add_argument("--lake", help="lake root (default: lake.root in conf, ./lakehouse)")
    common.add_argument("--engine", choices=["auto", "delta-rs", "spark-delta"],
                        help="Delta engine (default: lake.engine in conf)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")

    parser = argparse.ArgumentParser(
        prog="flowops",
        description="Batch pipeline for mobile data-traffic operations: raw xDR logs in, per-scenario target "
                    "lists out, and a measured answer to 'did it work'.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"flowops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from flowops import commands

    for register in commands.REGISTRARS:
        register(sub, common)
    return parser


if __name__ == "__main__":
    sys.exit(main())
