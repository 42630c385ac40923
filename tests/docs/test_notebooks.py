"""The notebooks run top to bottom, offline, as a reader would run them."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_there_are_three_notebooks() -> None:
    assert NAMES == ["01_quickstart.ipynb", "02_agent_image_tool.ipynb", "03_rag_image_descriptions.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_offline(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    notebook = nbformat.read(tmp_path / "notebooks" / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path / "notebooks")}},
    )
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Offline: local server at http://127.0.0.1:" in text
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert html, "each notebook shows images next to their answers"
