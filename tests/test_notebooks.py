"""The inspection notebooks execute on a demo run (slow: needs `make demo` output first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("UNIFASHION_RUN_DIR", ROOT / "runs" / "demo"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    import nbformat

    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.slow
@pytest.mark.skipif(not (RUN_DIR / "metrics.json").is_file(), reason=f"no demo run at {RUN_DIR} (make demo)")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("UNIFASHION_RUN_DIR", str(RUN_DIR))
    monkeypatch.setenv("UNIFASHION_DATA", str(ROOT / "data" / "synthetic"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
