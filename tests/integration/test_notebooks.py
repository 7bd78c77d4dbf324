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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_demo_lake(path, demo_run, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    assert demo_run.code == 0, demo_run.stdout
    monkeypatch.setenv("FLOWOPS_LAKE_ROOT", str(demo_run.lake))
    monkeypatch.setenv("FLOWOPS_MASTER", "local[2]")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(path.parents[1] / "lib"),
                                                                   os.environ.get("PYTHONPATH")])))
    book = nbformat.read(path, as_version=4)
    # Any cell's error raises CellExecutionError with the cell and its traceback.
    client = NotebookClient(book, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, f"{path.name}: {len(images)} charts drawn"
    executed = tmp_path / path.name
    nbformat.write(book, executed)   # kept with the test's files, to open and look at
