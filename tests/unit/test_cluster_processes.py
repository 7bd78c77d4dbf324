"""The cluster test's process handling (tests/cluster/standalone.py): everything it started ends, nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from tests.cluster.standalone import Processes, leftovers

# A leader with a child in its group, and a grandchild that makes a group of its own, as PySpark's daemon does.
TREE = ("import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setpgid(0, 0); time.sleep(600)']); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")


def own_groups(token: str) -> list[int]:
    """The run's processes that lead a process group of their own."""
    return [pid for pid, _ in leftovers(token) if os.getpgid(pid) == pid]


def test_stop_all_ends_the_run_s_processes_and_only_those(tmp_path):
    procs = Processes(uuid.uuid4().hex, dict(os.environ))
    procs.start([sys.executable, "-c", TREE], tmp_path / "tree.log")
    done = procs.start([sys.executable, "-c", "pass"], tmp_path / "done.log")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        done.wait(timeout=30)   # ended and reaped: stop_all must not signal its (reusable) id
        deadline = time.monotonic() + 30
        while len(own_groups(procs.token)) < 2 and time.monotonic() < deadline:   # the leader's and the grandchild's
            time.sleep(0.1)
        assert (len(leftovers(procs.token)), len(own_groups(procs.token))) == (3, 2)
        assert (procs.stop_all(settle=1), leftovers(procs.token), procs.killed_strays) == ([], [], 1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
