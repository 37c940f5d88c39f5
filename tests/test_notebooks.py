"""The notebooks run top to bottom in a fresh kernel at smoke size, and are stored clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nbclient", "nbformat", "ipykernel")),
    reason="needs nbclient, nbformat and ipykernel (the dev extra)",
)


def test_notebooks_exist() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "spec_building.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.stem == "quickstart" and importlib.util.find_spec("sklearn") is None:
        pytest.skip("the quickstart uses scikit-learn's digits")
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment: tiny runs, the repository importable, and
    # logs written under tmp_path (the kernel's working directory).
    monkeypatch.setenv("LIGHTKIT_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    text = "\n".join(
        out.get("text", "") or str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    if path.stem == "quickstart":
        assert "val/acc" in text and list(tmp_path.glob("lightkit_logs/*/version_0/metrics.csv"))
        assert any(
            "image/png" in out.get("data", {})
            for cell in nb.cells
            for out in cell.get("outputs", [])
        )
    else:
        assert "round trip ok" in text and "examples.programmatic:mlp" in text
