"""The example notebooks run from top to bottom in a real kernel (nbclient)."""

import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
import nbformat  # noqa: E402

NOTEBOOKS = pathlib.Path(__file__).parents[2] / "examples" / "notebooks"


def text_of(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "\n".join(out)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path


def test_quickstart_runs(tmp_path):
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    os.environ.setdefault("REFBOOK_QUIET", "1")
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    texts = [text_of(c) for c in code]
    assert "CPUs" in texts[0]                                  # the summary line
    assert "0.5" in texts[1]                                   # mean of uniform samples
    assert "ObjectRef" in texts[2] and "ready" in texts[2]     # a ref's display
    assert "spread computed on a worker" in texts[5]
    assert all(f"task {i} says hello" in texts[7] for i in range(4))
    assert "[0, 1, 4, 9]" in texts[7]
    assert "Dashboard" in texts[8]                             # %refbook dashboard
    assert "left" in texts[9] and "this kernel" in texts[9]    # %refs lists it
    # del freed everything, with the dashboard open: views hold ids, never refs
    assert texts[10].strip().startswith("0 bytes")
