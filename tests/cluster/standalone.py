"""A Spark standalone cluster on 127.0.0.1 from the pip-installed pyspark: one master and N workers started with
`bin/spark-class`, and every process of it stopped again by the ids this module started.

Each daemon starts in a session of its own (its pid is its process group; `spark-class` execs java, so the pid is
the JVM's). Executors are children of a worker, in its group; PySpark's worker daemons make a group of their own,
so every process is also started with a marker variable (`FLOWOPS_CLUSTER_RUN=<token>`) that its children
inherit: `leftovers()` finds any process of this run by it, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "FLOWOPS_CLUSTER_RUN"


def spark_home() -> Path:
    """The pip-installed pyspark's folder, which holds bin/spark-class and bin/spark-submit."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Processes:
    """Every process this run started, each the leader of its own process group, and the marker its children carry."""

    token: str
    env: dict[str, str]
    started: list[subprocess.Popen] = field(default_factory=list)
    killed_strays: int = 0

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**self.env, **(env or {}), MARKER: self.token}, start_new_session=True)
        self.started.append(proc)
        return proc

    def run(self, argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> float:
        """Run a command to its end; returns its seconds, raises with the log's tail when it fails."""
        began = time.monotonic()
        proc = self.start(argv, log, env)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise RuntimeError(f"{' '.join(argv[:3])}... took over {timeout:.0f} s (log: {log})") from None
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise RuntimeError(f"exit code {code}: {' '.join(argv)}\n--- {log} (last lines) ---\n{tail}")
        return time.monotonic() - began

    def stop(self, proc: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM to the process group `proc` leads, SIGKILL after `grace` seconds. Only while `proc` is not yet
        reaped: until then its id (and so its group's) cannot belong to another process. What an ended process left
        running is found by the marker (`stop_all`)."""
        if proc.returncode is not None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self, settle: float = 10.0) -> list[str]:
        """Stop every started process (workers before the master, newest first); then any process still carrying
        this run's marker (a child that made a group of its own) is killed. Returns what remains (should be none)."""
        for proc in reversed(self.started):
            self.stop(proc)
        strays = _gone_within(self.token, settle)   # PySpark's workers end once their executor has
        for pid, _ in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.killed_strays = len(strays)
        return [f"{pid} {cmd}" for pid, cmd in _gone_within(self.token, 10)]


def leftovers(token: str) -> list[tuple[int, str]]:
    """Processes whose environment carries this run's marker (read from /proc), with their command lines."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":   # a zombie is already gone; its parent (ours) reaps it
                    found.append((int(entry.name), cmd))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _gone_within(token: str, seconds: float) -> list[tuple[int, str]]:
    """Wait up to `seconds` for the run's processes to end; returns those still there."""
    deadline = time.monotonic() + seconds
    while (remaining := leftovers(token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return remaining


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class Cluster:
    """A master and `workers` workers (each `cores` cores and `memory`) started under `root`."""

    procs: Processes
    root: Path
    workers: int
    cores: int = 1
    memory: str = "2g"
    master_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    daemons: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the master, then the workers, and wait until every worker has registered."""
        spark_class = str(spark_home() / "bin" / "spark-class")
        logs = self.root / "logs"
        self.daemons.append(self.procs.start(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(self.master_port), "--webui-port", str(self.ui_port)], logs / "master.log"))
        self._wait(lambda state: state is not None, timeout, "the master to answer")
        for n in range(self.workers):
            work = self.root / f"worker-{n}"
            work.mkdir(parents=True, exist_ok=True)
            self.daemons.append(self.procs.start(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores",
                 str(self.cores), "--memory", self.memory, "--work-dir", str(work), "--webui-port", str(free_port()),
                 self.url], logs / f"worker-{n}.log"))
        self._wait(lambda state: state is not None and state.get("aliveworkers", 0) >= self.workers, timeout,
                   f"{self.workers} worker(s) to register")

    def state(self) -> dict | None:
        """The master's JSON status page, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as page:
                return json.load(page)
        except OSError:
            return None

    def _wait(self, ready, timeout: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(self.state()):
                return
            if any(p.poll() is not None for p in self.daemons):
                break
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what} (logs in {self.root / 'logs'})")

    def stop(self) -> None:
        """Stop this cluster's daemons, workers first (a worker stops its executors as it goes)."""
        for proc in reversed(self.daemons):
            self.procs.stop(proc)
