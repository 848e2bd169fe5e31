"""Failures as a user sees them in JupyterLab, with screenshots to look at: a %%remote
cell that fails after it returned, a cell whose worker is killed mid-run (retried), and
an interrupted cell.  Screenshots go to $REFBOOK_SCREENSHOTS (default: screenshots/ at
the top of the repository, git-ignored); the test prints where."""

import os
import time

import nbformat

from tests.ui.test_notebook_ui import _outputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _shots_dir() -> str:
    d = os.environ.get("REFBOOK_SCREENSHOTS") or os.path.join(REPO, "screenshots")
    os.makedirs(d, exist_ok=True)
    return d


def _run_all(page, url, name):
    """Open ``name`` and start running every cell, without waiting for them (the last
    one waits until it is interrupted)."""
    page.goto(f"{url}/lab/tree/{name}?token=refbook-test")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.serviceManager."
                           "sessions.running().next().value !== undefined", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _wait(pred, timeout: float, what: str, page=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    if page is not None:
        page.screenshot(path=os.path.join(_shots_dir(), "timed-out.png"), full_page=True)
    raise AssertionError(f"timed out waiting for {what}")


def test_failed_retried_and_interrupted_cells(lab, page):
    url, root = lab
    pidfile = root / "worker.pid"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "%load_ext refbook",
        # fails after the cell returned: the traceback shows under it
        "%%remote\nimport time\nrows = [1, 2, 3]\ntime.sleep(0.5)\n"
        "total = sum(rows) / (len(rows) - 3)",
        # its worker is killed while it runs: retried, each attempt's output labelled
        f"%%remote\nimport os, time\nprint('loading part 1', flush=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(4)\n"
        f"print('loaded')\ndata = list(range(10))",
        # interrupted while it waits
        "import time\n@refbook.remote\ndef slow():\n    time.sleep(100)\n\n"
        "result = refbook.get(slow.remote())",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "failures.ipynb")
    _run_all(page, url, "failures.ipynb")
    pid = int(_wait(lambda: pidfile.exists() and pidfile.read_text(), 60, "the worker's pid",
                     page))
    # kill it once its first line has reached the notebook: a line still in the dying
    # worker's socket queue (a loaded machine) is lost with it, and that is no test of
    # how each attempt's output is labelled
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        outs = _outputs(page)
        if len(outs) > 2 and "loading part 1" in outs[2]:
            break
        time.sleep(0.1)
    os.kill(pid, 9)
    time.sleep(2.0)                             # the last cell waits in refbook.get
    page.evaluate("window.jupyterapp.commands.execute('notebook:interrupt-kernel')")

    def settled():
        outs = _outputs(page)
        return len(outs) == 4 and "ZeroDivisionError in cell[2]" in outs[1] \
            and "loaded" in outs[2] and "done" in outs[2] and "KeyboardInterrupt" in outs[3] \
            and "cancelled 1 task" in outs[3] and outs
    outs = _wait(settled, 60, "the cells to settle", page)
    time.sleep(0.5)
    d = _shots_dir()
    cells = page.query_selector_all(".jp-Notebook .jp-CodeCell")
    names = {1: "failed-remote-cell.png", 2: "retried-cell.png", 3: "interrupted-cell.png"}
    for i, name in names.items():
        cells[i].scroll_into_view_if_needed()
        cells[i].screenshot(path=os.path.join(d, name))
    page.screenshot(path=os.path.join(d, "failures-notebook.png"), full_page=True)
    # the lines use the theme's colours: the same notebook in JupyterLab Dark
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    _wait(lambda: page.evaluate("document.body.dataset.jpThemeLight") == "false", 30,
          "the dark theme", page)
    time.sleep(1.0)
    page.screenshot(path=os.path.join(d, "failures-notebook-dark.png"), full_page=True)
    print(f"\nscreenshots in {d}: {', '.join(names.values())}, failures-notebook.png, "
          f"failures-notebook-dark.png")

    failed, retried, interrupted = outs[1], outs[2], outs[3]
    assert "ZeroDivisionError" in failed and "<remote cell [2]>" in failed
    assert "total = sum(rows) / (len(rows) - 3)" in failed
    assert "refs holding the error: rows, total" in failed
    assert "retried after worker died (attempt 2)" in retried, retried
    assert retried.count("loading part 1") == 2 and "attempt 2" in retried
    assert "refs: data" in retried
    assert "zmq" not in interrupted and "refbook/runtime" not in interrupted, interrupted
    assert len(interrupted.splitlines()) < 15, interrupted
