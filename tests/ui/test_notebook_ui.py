"""The notebook as a user sees it in JupyterLab: task output under the cell that
submitted it (also what is printed after that cell finished), live status lines, the
rich display of a ref."""

import time

import nbformat


def _run_all(page, url, name):
    page.goto(f"{url}/lab/tree/{name}?token=refbook-test")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.serviceManager."
                           "sessions.running().next().value !== undefined", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _outputs(page) -> list[str]:
    return [c.inner_text() for c in
            page.query_selector_all(".jp-Notebook .jp-CodeCell .jp-Cell-outputWrapper")]


def test_late_task_output_lands_under_the_cell_that_submitted_it(lab, page):
    url, root = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "%load_ext refbook",
        "import time\n@refbook.remote\ndef talk(tag, s):\n    print(tag, 'early', flush=True)"
        "\n    time.sleep(s)\n    print(tag, 'late')\n    return 0",
        "r1 = talk.remote('A', 2)",
        "%%remote\nimport time\nprint('B early', flush=True)\ntime.sleep(2)\n"
        "print('B late')\nq = 1",
        "x = 1  # prints nothing",
        "r1",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "t.ipynb")
    _run_all(page, url, "t.ipynb")
    deadline = time.monotonic() + 60
    outs = []
    while time.monotonic() < deadline:
        outs = _outputs(page)
        if len(outs) == 6 and "A late" in outs[2] and "B late" in outs[3] and \
                "done" in outs[2] and "done" in outs[3]:
            break
        time.sleep(0.2)
    assert "CPUs" in outs[0] and "store" in outs[0], outs
    assert "A early" in outs[2] and "A late" in outs[2], outs
    assert "talk done" in outs[2]
    assert "B early" in outs[3] and "B late" in outs[3] and "q" in outs[3], outs
    assert "A " not in outs[3] + outs[4] and "B " not in outs[2] + outs[4], outs
    assert "ObjectRef" in outs[5] and "made by talk" in outs[5], outs
