"""Where runs and models are tracked, and every job's run in it: MLflow, embedded by default.

By default a SQLite store and an artifact folder live under the lake (`LAKE/_mlflow/mlflow.db`,
`LAKE/_mlflow/artifacts/`), so tracking needs no server and moves with the lake; `mlflow.tracking_uri` in
conf/pipeline.yml names a shared server instead, and the MLFLOW_TRACKING_URI variable overrides both.

Every job that records itself in ops/runs (`runs.recorded_run`) is also a run of the experiment: the job's params
plus the conf's hash, the code version, the engine and the ops/runs run id; its counts, the rates derived from
them and its step seconds as metrics; its status and error; its ops/runs row (and its rows of ops/quality_results,
once that table exists) as artifacts. `month_run` opens a month's parent run, under which the jobs run inside it
nest. Tracking never fails a job: the first error logs one warning and tracking stops for that store for the rest
of the process. `mlflow.enabled: false` in conf, or FLOWOPS_TRACKING=off, turns it off.

The runs are written by one background thread, in the order the jobs open and end them, while the jobs go on with
Spark: a job's run costs a few SQLite commits and artifact files (0.1-0.3 s of Python each) that would otherwise sit
between the jobs. `flush()` waits for them: every command calls it before it returns, and the process's exit waits
for the thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import flowops
from flowops.config import Settings
from flowops.lake import tables

if TYPE_CHECKING:
    from flowops.lake import Lake
    from flowops.runs import Run

log = logging.getLogger(__name__)

FOLDER = "_mlflow"
SWITCH = "FLOWOPS_TRACKING"
QUALITY_RESULTS = tables.QUALITY_RESULTS.name
CAMPAIGN_RESULTS = tables.CAMPAIGN_RESULTS.name
REPORTS = "reports"   # a month's run report, LAKE/reports/month=M/, is logged with the month's run when it is there
ALL_CHANNELS = "all"
_OFF, _ON = {"off", "0", "false", "no"}, {"on", "1", "true", "yes"}
T = TypeVar("T")


@dataclass(frozen=True)
class Tracking:
    """The tracking store's URI, the experiment's artifact location and its name."""

    uri: str
    artifacts: str | None   # None for a server, which keeps its own
    experiment: str


def tracking(settings: Settings, environ: dict[str, str] | None = None) -> Tracking:
    """Where this lake's runs and models are tracked."""
    env = os.environ if environ is None else environ
    if env.get("MLFLOW_TRACKING_URI"):
        return Tracking(env["MLFLOW_TRACKING_URI"], None, settings.mlflow.experiment)
    if settings.mlflow.tracking_uri:
        return Tracking(settings.mlflow.tracking_uri, None, settings.mlflow.experiment)
    folder = Path(settings.lake.root).resolve() / FOLDER
    return Tracking(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri(), settings.mlflow.experiment)


def configure(settings: Settings) -> Tracking:
    """Point MLflow at this lake's store and experiment (created on first use, with its artifact location); the
    folder under the lake is created owner-only. Returns where it points."""
    import mlflow

    where = tracking(settings)
    if where.artifacts:
        seed_store(Path(where.uri.removeprefix("sqlite:///")))
    point_mlflow(where.uri)
    if mlflow.get_experiment_by_name(where.experiment) is None:
        mlflow.create_experiment(where.experiment, artifact_location=where.artifacts)
    saved = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_experiment(where.experiment)   # which also writes MLFLOW_EXPERIMENT_ID into os.environ: put it back
    if saved is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = saved
    return where


def point_mlflow(uri: str) -> None:
    """Point MLflow's fluent API (tracking and registry) at `uri` for this process, leaving the environment as it
    was: MLflow's setters also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ, which `tracking()`
    reads as the user's override, so one lake's store would otherwise become every later lake's in the process."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def seed_store(db: Path) -> None:
    """Create a lake's SQLite store, when it has none, as a copy of an empty store already migrated to this MLflow's
    schema: MLflow builds a new store by running its whole migration history, about 10 to 25 s on this machine, so
    that runs once per MLflow version and machine (the copy is kept in ~/.cache/flowops/) instead of once per lake.
    MLflow checks the copy's schema version when it opens it, as it does any store's."""
    import mlflow

    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if db.exists():
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowops"
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.exists():
        _migrate_template(template)
    staged = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    shutil.copyfile(template, staged)
    try:
        os.link(staged, db)   # never over a store another process created meanwhile
    except FileExistsError:
        pass
    finally:
        staged.unlink()


def _migrate_template(template: Path) -> None:
    import fcntl

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one process migrates, the others wait for its copy
        if template.exists():
            return
        staged = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        staged.unlink(missing_ok=True)
        store = SqlAlchemyStore(f"sqlite:///{staged}", staged.parent.as_uri())
        store.engine.dispose()
        os.replace(staged, template)


def enabled(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """Whether jobs are tracked: FLOWOPS_TRACKING=off|on over `mlflow.enabled` in conf/pipeline.yml (default on)."""
    env = os.environ if environ is None else environ
    value = env.get(SWITCH, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    if value:
        _warn_once(f"{SWITCH}={env[SWITCH]!r} is neither on nor off: ignored, mlflow.enabled in conf decides")
    return settings.mlflow.enabled


# The settings the jobs writing to each lake run under, by `Lake.root`: `Context` registers the lake it opens (and
# `month_run` the month's), so `recorded_run`, which sees only the lake, knows where to track and which conf to hash.
_SETTINGS: dict[str, Settings] = {}


def register(lake_root: str, settings: Settings, then: Callable[[], object] | None = None) -> None:
    """Track the jobs that write to the lake at `lake_root` (spelled as `Lake.root`) under `settings`. A lake nobody
    registered (a `Lake` built by hand, as unit tests do) is not tracked.

    The store is opened in a background thread from here on, and `then` runs after it in the same thread (one
    thread, so two slow imports never race each other's module locks): importing MLflow's store takes several
    seconds of Python, which then overlaps the JVM's start and the job's first Spark work instead of adding to
    them."""
    _SETTINGS[lake_root] = settings

    def warm() -> None:
        if enabled(settings):
            _store(settings)
        if then is not None:
            try:
                then()
            except Exception as exc:  # noqa: BLE001 - a warm-up only; the step that needs it will say what fails
                log.debug("warm-up failed: %s", exc)

    threading.Thread(target=warm, name="flowops-warm-up", daemon=True).start()


@dataclass(frozen=True)
class _Store:
    client: Any            # mlflow.MlflowClient
    experiment_id: str
    key: tuple[str, str]   # (tracking URI, experiment name)


@dataclass
class Tracked:
    """An MLflow run being opened or open, and the params already logged to it (params cannot change once logged).
    The writer thread opens it: `run_id` waits for that (None when it could not be opened)."""

    store: _Store
    created: Future
    params: dict[str, str]

    @property
    def run_id(self) -> str | None:
        return self.created.result()


# One store per (URI, experiment) and process, opened on first use; None after a failure (tracking stops there).
_STORES: dict[tuple[str, str], _Store | None] = {}
_MONTH: ContextVar[Tracked | None] = ContextVar("flowops_month_run", default=None)
_OPENING = threading.Lock()
_JOBS: dict[str, Tracked] = {}   # the open run of each job, by its ops/runs run id
_WARNED: set[str] = set()


def _store(settings: Settings) -> _Store | None:
    where = tracking(settings)
    key = (where.uri, where.experiment)
    with _OPENING:   # one thread opens a store; the others wait for it
        if key not in _STORES:
            _STORES[key] = None
            try:
                _STORES[key] = _open(where)
            except Exception as exc:  # noqa: BLE001 - tracking never fails a job
                _give_up(key, "open the experiment", exc)
    return _STORES[key]


def _open(where: Tracking) -> _Store:
    from mlflow import MlflowClient

    if where.uri.startswith("sqlite:///"):
        # MLflow retries a store it cannot open for most of an hour: refuse one this user cannot write at once.
        db = Path(where.uri.removeprefix("sqlite:///"))
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.access(db.parent, os.W_OK | os.X_OK):
            seed_store(db)
        if not os.access(db.parent, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.R_OK | os.W_OK)):
            raise PermissionError(f"{db} cannot be written by this user")
    client = MlflowClient(tracking_uri=where.uri)
    experiment = client.get_experiment_by_name(where.experiment)
    if experiment is not None:
        return _Store(client, experiment.experiment_id, (where.uri, where.experiment))
    try:
        experiment_id = client.create_experiment(where.experiment, artifact_location=where.artifacts)
    except Exception:
        experiment = client.get_experiment_by_name(where.experiment)   # another process created it first
        if experiment is None:
            raise
        experiment_id = experiment.experiment_id
    return _Store(client, experiment_id, (where.uri, where.experiment))


_WRITER: list[ThreadPoolExecutor] = []   # the one writer thread, started on first use
_WRITTEN: list[Future] = []               # what it has been given and not yet waited for
_SUBMIT = threading.Lock()


def _later(store: _Store, action: str, call: Callable[[], T]) -> Future:
    """Run `_attempt(store, action, call)` on the writer thread, after everything submitted before it."""
    with _SUBMIT:
        try:
            if not _WRITER:
                _WRITER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowops-tracking"))
            done = _WRITER[0].submit(_attempt, store, action, call)
        except RuntimeError as exc:   # no thread to be had (the interpreter shutting down): tracking stops, not the job
            _give_up(store.key, action, exc)
            done = Future()
            done.set_result(None)
            return done
        _WRITTEN.append(done)
    return done


def flush() -> None:
    """Wait until every run opened or ended so far is written (each command calls this before it returns)."""
    with _SUBMIT:
        pending, _WRITTEN[:] = list(_WRITTEN), []
    for done in pending:
        done.result()   # `_attempt` never raises: a failure was logged and stopped tracking


def _attempt(store: _Store, action: str, call: Callable[[], T]) -> T | None:
    """`call()`, or None after one warning, tracking off for the store from then on."""
    if _STORES.get(store.key) is not store:
        return None
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - tracking never fails a job
        _give_up(store.key, action, exc)
        return None


def _give_up(key: tuple[str, str], action: str, exc: Exception) -> None:
    _STORES[key] = None
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    log.warning("MLflow tracking stops for this process: could not %s at %s (%s: %s); the jobs go on untracked",
                action, re.sub(r"//[^/@]*@", "//***@", key[0]), type(exc).__name__, first)


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


# ---- a job's run -------------------------------------------------------------------------------------------------

def start_job(lake: Lake, run: Run, started: dt.datetime) -> Tracked | None:
    """Open the MLflow run of a job (nested under the month's run when one is open on the same store) with its params
    so far. None when the lake is not registered, tracking is off, or the store failed."""
    settings = _SETTINGS.get(lake.root)
    if settings is None or not enabled(settings):
        return None
    store = _store(settings)
    if store is None:
        return None
    tags = {"flowops.kind": "step", "flowops.job": run.job}
    parent = _MONTH.get()
    params = {**run.params, **identity(settings, lake.engine_name), "job": run.job, "ops_run_id": run.run_id}
    name = run_name(run.job, run.params)

    logged: dict[str, str] = {}

    def begin() -> str:
        if parent is not None and parent.store is store and parent.run_id is not None:   # opened before: no wait
            tags["mlflow.parentRunId"] = parent.run_id
        run_id = store.client.create_run(store.experiment_id, start_time=_ms(started), tags=tags,
                                         run_name=name).info.run_id
        _log(store, run_id, logged, params=params, when=started)
        return run_id

    opened = _JOBS[run.run_id] = Tracked(store, _later(store, f"start the run of {run.job}", begin), logged)
    return opened


def log_folder(run: Run, folder: str | Path, artifact_path: str) -> None:
    """Log a local folder (a saved model, a report) as artifacts of a job's MLflow run, when the job is tracked."""
    tracked = _JOBS.get(run.run_id)
    if tracked is not None:
        flush()   # the folder may change once this returns
        if tracked.run_id is not None:
            _attempt(tracked.store, f"log {artifact_path} of {run.job}",
                     lambda: tracked.store.client.log_artifacts(tracked.run_id, str(folder), artifact_path))


def active_run_id(run: Run) -> str | None:
    """The MLflow run id of a job's run while it runs (None when the job is not tracked)."""
    tracked = _JOBS.get(run.run_id)
    if tracked is None:
        return None
    flush()   # the caller writes to the run itself: nothing of ours in flight meanwhile
    return tracked.run_id if _STORES.get(tracked.store.key) is tracked.store else None


def finish_job(tracked: Tracked | None, lake: Lake, run: Run, record: Mapping[str, Any]) -> None:
    """End a job's MLflow run: metrics, params added while it ran, status, error, table versions and artifacts (its
    ops/runs `record`, its quality results)."""
    _JOBS.pop(run.run_id, None)
    if tracked is None or _STORES.get(tracked.store.key) is not tracked.store:
        return
    ended = record["ended_at"]
    metrics = {"seconds": record["seconds"], "rows_in": record["rows_in"], "rows_out": record["rows_out"],
               **job_metrics(run.job, run.counts, run.params)}
    params = dict(run.params)
    # Read when the writer gets to it: the campaign results at the version this job wrote (a later evaluation of the
    # same month overwrites them); the quality results are only ever appended.
    results_version = run.table_versions.get(CAMPAIGN_RESULTS)
    tags = {"flowops.status": record["status"], **{f"table_version.{t}": str(v) for t, v in run.table_versions.items()}}
    if record.get("error"):
        tags["flowops.error"] = str(record["error"])[:4000]

    def end() -> None:
        if tracked.run_id is None:
            return
        artifacts: dict[str, Any] = {"ops_run.json": record}
        if run.job == "evaluate":
            metrics.update(evaluation_metrics(_read_rows(lake, CAMPAIGN_RESULTS, run.run_id, results_version) or []))
        quality = _read_rows(lake, QUALITY_RESULTS, run.run_id)
        if quality is not None:
            metrics.update(quality_metrics(quality))
            artifacts["quality_results.json"] = quality
        _log(tracked.store, tracked.run_id, tracked.params, metrics=metrics, params=params, tags=tags, when=ended)
        for name, content in artifacts.items():
            tracked.store.client.log_text(tracked.run_id, json.dumps(content, default=str, indent=1), name)
        tracked.store.client.set_terminated(tracked.run_id, "FINISHED" if record["status"] == "ok" else "FAILED",
                                            end_time=_ms(ended))

    _later(tracked.store, f"finish the run of {run.job}", end)


@contextmanager
def month_run(settings: Settings, lake: Lake, month: str, **params: object) -> Iterator[dict[str, float]]:
    """A month's parent run: every job run inside the block is nested under it. Yields a dict of metrics to add
    (logged when the block ends); when tracking is off or fails the block runs untracked all the same."""
    register(lake.root, settings)
    metrics: dict[str, float] = {}
    started = dt.datetime.now(dt.UTC)
    parent = _start_month(settings, lake, month, params, started)
    token = _MONTH.set(parent) if parent is not None else None
    status = "FAILED"
    try:
        yield metrics
        status = "FINISHED"
    finally:
        if token is not None:
            _MONTH.reset(token)
        if parent is not None:
            _end_month(parent, lake, month, metrics, status, started)


def _start_month(settings: Settings, lake: Lake, month: str, params: Mapping[str, object],
                 started: dt.datetime) -> Tracked | None:
    store = _store(settings) if enabled(settings) else None
    if store is None:
        return None
    tags = {"flowops.kind": "month", "flowops.month": month}
    logged = {"month": month, **{k: str(v) for k, v in params.items() if v is not None},
              **identity(settings, lake.engine_name)}

    params_logged: dict[str, str] = {}

    def begin() -> str:
        run_id = store.client.create_run(store.experiment_id, start_time=_ms(started), tags=tags,
                                         run_name=f"month {month}").info.run_id
        _log(store, run_id, params_logged, params=logged, when=started)
        return run_id

    return Tracked(store, _later(store, f"start the run of month {month}", begin), params_logged)


def _end_month(parent: Tracked, lake: Lake, month: str, metrics: Mapping[str, float], status: str,
               started: dt.datetime) -> None:
    ended = dt.datetime.now(dt.UTC)
    report = Path(lake.root) / REPORTS / f"month={month}"
    logged = {**metrics, "seconds": (ended - started).total_seconds()}

    def end() -> None:
        if parent.run_id is None:
            return
        _log(parent.store, parent.run_id, parent.params, metrics=logged, when=ended)
        if report.is_dir():
            parent.store.client.log_artifacts(parent.run_id, str(report), "report")
        parent.store.client.set_terminated(parent.run_id, status, end_time=_ms(ended))

    _later(parent.store, f"finish the run of month {month}", end)


def _log(store: _Store, run_id: str, logged: dict[str, str], *, metrics: Mapping[str, float] | None = None,
         params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None, when: dt.datetime) -> None:
    """Log to run `run_id` in batches (MLflow takes at most 1,000 values, 100 of them params and 100 tags, per call);
    a param already `logged` is skipped (its value cannot change)."""
    from mlflow.entities import Metric, Param, RunTag

    new = {_key(k): str(v)[:6000] for k, v in (params or {}).items() if _key(k) not in logged}
    logged.update(new)
    stamp = _ms(when)
    metric_list = [Metric(_key(k).replace(" ", "_"), float(v), stamp, 0) for k, v in (metrics or {}).items()
                   if v is not None and math.isfinite(float(v))]
    param_list = [Param(k, v) for k, v in new.items()]
    tag_list = [RunTag(_key(k), v) for k, v in (tags or {}).items()]
    while metric_list or param_list or tag_list:
        params_now, param_list = param_list[:100], param_list[100:]
        tags_now, tag_list = tag_list[:100], tag_list[100:]
        room = 1000 - len(params_now) - len(tags_now)
        metrics_now, metric_list = metric_list[:room], metric_list[room:]
        store.client.log_batch(run_id, metrics=metrics_now, params=params_now, tags=tags_now)


def _key(name: str) -> str:
    """A name MLflow accepts (letters, digits, `_ - . : /` and spaces)."""
    return re.sub(r"[^\w\-. :/]", "_", str(name))[:250]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def _read_rows(lake: Lake, table: str, run_id: str, version: int | None = None) -> list[dict[str, Any]] | None:
    """The rows of `table` (at `version`, else the newest) written by run `run_id` (delta-rs, whichever engine
    wrote them); None when there is no such table, or it cannot be read (one warning: the run is tracked without
    them)."""
    try:
        import pyarrow.dataset as ds
        from deltalake import DeltaTable

        path = lake.path(table)
        if not DeltaTable.is_deltatable(path):
            return None
        table_at = DeltaTable(path, version=version)
        return table_at.to_pyarrow_dataset().to_table(filter=ds.field("run_id") == run_id).to_pylist()
    except Exception as exc:  # noqa: BLE001 - tracking never fails a job
        _warn_once(f"MLflow tracking: could not read {table} for the run's metrics ({type(exc).__name__}: {exc})")
        return None


# ---- what a run is logged with -----------------------------------------------------------------------------------

def identity(settings: Settings, engine: str) -> dict[str, str]:
    """The params every run carries: what conf and code it ran with, on which engine."""
    return {"conf_hash": conf_hash(settings.conf_dir), "code_version": code_version(), "engine": engine}


def conf_hash(conf_dir: str | Path) -> str:
    """sha256 of every file under conf/ (its path and bytes), hidden files left out: equal hashes, equal conf."""
    root = Path(conf_dir)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts))
    for path in files:
        content = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


@cache
def code_version() -> str:
    """The package version, plus the git commit (and `.dirty` when tracked files changed) when the code runs from a
    git work tree: `0.1.0+f066d49571.dirty`. Read-only git: GIT_OPTIONAL_LOCKS=0 keeps `status` off the index."""
    here = Path(flowops.__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10,
                              check=True, env=env).stdout.strip()

    try:
        commit = git("describe", "--always", "--tags", "--abbrev=10")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return flowops.__version__
    return f"{flowops.__version__}+{commit}{'.dirty' if changed else ''}"


def run_name(job: str, params: Mapping[str, str]) -> str:
    """`target 2026-03 wave 2`, `ingest 2026-01-05`, `tags 2026-03`."""
    when = params.get("month") or params.get("date") or params.get("months") or ""
    wave = f" wave {params['wave']}" if params.get("wave") else ""
    return f"{job} {when}{wave}".strip()


def job_metrics(job: str, counts: Mapping[str, int], params: Mapping[str, str]) -> dict[str, float]:
    """A job's metrics from what it recorded: every count (step milliseconds as `step_s.<step>` seconds), every
    numeric param (a target's estimates and solver figures), and the rates each job's counts imply."""
    out: dict[str, float] = {}
    for name, value in params.items():
        number = _number(value)
        if number is not None:
            out[name] = number
    for name, value in counts.items():
        if name.startswith("step_ms."):
            out[f"step_s.{name.removeprefix('step_ms.')}"] = value / 1000
        else:
            out[name] = value
    if job == "ingest":
        lines = counts.get("accepted", 0) + counts.get("quarantined", 0) + counts.get("duplicates", 0)
        if lines:
            out["quarantine_rate"] = counts.get("quarantined", 0) / lines
            out["duplicate_rate"] = counts.get("duplicates", 0) / lines
        for kind in ("bytes", "records"):
            if f"unknown_app_{kind}_ppm" in counts:
                out[f"unknown_app_share.{kind}"] = counts[f"unknown_app_{kind}_ppm"] / 1e6
    elif job == "ingest-monthly":
        sources = sorted({n.split(".")[0] for n in counts if n.endswith(".rows")})
        for source in sources:
            rows, bad = counts.get(f"{source}.rows", 0), counts.get(f"{source}.quarantined", 0)
            if rows + bad:
                out[f"{source}.quarantine_rate"] = bad / (rows + bad)
        total = sum(counts.get(f"{s}.rows", 0) + counts.get(f"{s}.quarantined", 0) for s in sources)
        if total:
            out["quarantine_rate"] = sum(counts.get(f"{s}.quarantined", 0) for s in sources) / total
    elif job == "segment":
        stages = {n.removeprefix("stage."): v for n, v in counts.items() if n.startswith("stage.")}
        if sum(stages.values()):
            out.update({f"stage_share.{s}": v / sum(stages.values()) for s, v in stages.items()})
    elif job == "target":
        for prefix in ("targeted", "suppressed"):
            picked = {n: v for n, v in counts.items() if n.startswith(f"{prefix}.")}
            out[f"{prefix}_total"] = sum(picked.values())
        for name, value in counts.items():
            parts = name.split(".")
            if parts[0] == "targeted" and len(parts) == 3:
                out[f"targeted_by_channel.{parts[2]}"] = out.get(f"targeted_by_channel.{parts[2]}", 0) + value
    return out


FUNNEL = ("pushed", "delivered", "reached", "converted", "treated_rate", "control_rate", "uplift", "uplift_low",
          "uplift_high", "uplift_arms", "incremental_orders", "roi")
TOTALS = ("addressable", "assigned", "pushed", "delivered", "reached", "converted", "control", "control_converted",
          "orders", "incremental_orders", "revenue_yuan", "incremental_revenue_yuan", "incentive_cost_yuan",
          "channel_cost_yuan")
BY_CHANNEL = ("pushed", "delivered", "reached", "converted", "incremental_orders")


def evaluation_metrics(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """An evaluation's figures from its gold/campaign_results rows: each scenario's funnel and uplift per wave
    (`w<wave>.<scenario>.<figure>`, wave 0 the whole campaign), the campaign's totals (`campaign.<figure>`, over
    wave 0 when there is one) and each channel's (`channel.<channel>.<figure>`, over the waves)."""
    out: dict[str, float] = {}
    whole = [r for r in rows if r["channel"] == ALL_CHANNELS]
    for row in whole:
        for figure in FUNNEL:
            if row.get(figure) is not None:
                out[f"w{row['wave']}.{row['scenario']}.{figure}"] = row[figure]
    campaign = [r for r in whole if r["wave"] == 0] or whole
    if campaign:
        for figure in TOTALS:
            out[f"campaign.{figure}"] = sum(r.get(figure) or 0 for r in campaign)
        out["campaign.cost_yuan"] = out["campaign.incentive_cost_yuan"] + out["campaign.channel_cost_yuan"]
    for row in rows:
        if row["channel"] != ALL_CHANNELS and row["wave"] != 0:
            for figure in BY_CHANNEL:
                name = f"channel.{row['channel']}.{figure}"
                out[name] = out.get(name, 0) + (row.get(figure) or 0)
    return out


def quality_metrics(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """`quality_checked`, `quality_failed` and `quality_failed.<severity>` from a run's ops/quality_results rows."""
    failed = [r for r in rows if r.get("success") is False]
    out: dict[str, float] = {"quality_checked": len(rows), "quality_failed": len(failed)}
    for row in failed:
        name = f"quality_failed.{row.get('severity') or 'unknown'}"
        out[name] = out.get(name, 0) + 1
    return out


def _number(value: object) -> float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None

