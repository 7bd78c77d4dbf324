"""The notebooks run top to bottom on the demo's lake (the one the integration tests share), and are committed
without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} == {"usage", "segments_and_targets", "campaigns"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    book = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(book["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; clear them before committing"
    assert book["cells"][0]["cell_type"] == "markdown" and "Point it at another lake" in "".join(
        book["cells"][0]["source"])


@pytest.fixture(scope="module")
def kernel(demo_run):
    """One Python kernel for the three notebooks, started with the demo lake's settings: its Spark session (the
    kernel's JVM, about 10 s to start) serves them all. Each notebook starts from an empty namespace (`%reset -f`
    before its first cell), so one cannot lean on another's imports or variables."""
    from jupyter_client.manager import KernelManager

    assert demo_run.code == 0, demo_run.stdout
    root = NOTEBOOKS[0].parents[1]
    env = {**os.environ, "FLOWOPS_LAKE_ROOT": str(demo_run.lake), "FLOWOPS_MASTER": "local[2]",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "lib"), os.environ.get("PYTHONPATH")]))}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(root / "notebooks"))
    yield manager
    manager.shutdown_kernel(now=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_demo_lake(path, kernel, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    book.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    # Any cell's error raises CellExecutionError with the cell and its traceback.
    NotebookClient(book, km=kernel, timeout=300, resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, f"{path.name}: {len(images)} charts drawn"
    executed = tmp_path / path.name
    nbformat.write(book, executed)   # kept with the test's files, to open and look at
