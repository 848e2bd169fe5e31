"""Every example notebook (examples/notebooks) opened in real JupyterLab and run from
top to bottom in headless Chromium, one after another on one JupyterLab server: no cell
fails, the widgets render (the views, their Bokeh plots), and a screenshot of each whole
notebook goes to $REFBOOK_SCREENSHOTS (default: screenshots/), as
``notebook-<name>.png``.  What the cells print is checked by tests/notebooks."""

import os
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from tests.notebooks.nbfiles import NOTEBOOKS, ORDER
from tests.ui.test_failures_ui import _shots_dir, _wait

STATE_JS = """() => {
  const p = window.jupyterapp.shell.currentWidget;
  if (!p || !p.content || !p.content.widgets || !p.sessionContext) return null;
  const code = p.content.widgets.filter(c => c.model.type === 'code');
  const kernel = p.sessionContext.session && p.sessionContext.session.kernel;
  return {
    path: p.context.path,
    cells: code.length,
    ran: code.filter(c => c.model.executionCount !== null).length,
    busy: code.filter(c => (c.promptNode && c.promptNode.textContent || '').includes('*')).length,
    status: kernel ? kernel.status : 'none',
    errors: code.map(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error'))
                .flat().map(o => o.ename + ': ' + o.evalue),
  };
}"""

# what must have rendered in each notebook: CSS selector -> at least this many
RENDERED = {
    "quickstart": {".refbook-dashboard": 1},
    "ownership": {".refbook-view": 2, ".refbook-plot canvas": 2},
    "memory-pressure": {".refbook-view": 2, ".refbook-plot canvas": 2},
    "recovery": {".refbook-view": 2, ".refbook-plot canvas": 2},
    "actors": {".refbook-view": 1},
    "shuffle": {".refbook-view": 1, ".refbook-plot canvas": 1},
    "analysis": {".refbook-view": 1, ".refbook-user-plot canvas": 1},
    "multi-host": {".refbook-view": 1, ".refbook-plot canvas": 1},
}


def _count(page, selector: str) -> int:
    return page.locator(f".jp-NotebookPanel:visible .jp-OutputArea-output {selector}").count()


OPEN_ALL_JS = """async (paths) => {
  const app = window.jupyterapp;
  for (const path of paths) {
    await app.commands.execute('docmanager:open', {path, options: {activate: false}});
  }
}"""

KERNELS_JS = """(paths) => {
  const app = window.jupyterapp;
  const panels = Array.from(app.shell.widgets('main')).filter(w => w.sessionContext);
  return panels.filter(w => paths.includes(w.context.path) && w.sessionContext.session &&
                       w.sessionContext.session.kernel &&
                       w.sessionContext.session.kernel.status === 'idle').length;
}"""

ACTIVATE_JS = """(path) => {
  const app = window.jupyterapp;
  const w = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === path);
  app.shell.activateById(w.id);
}"""

CLOSE_JS = """async (path) => {
  const app = window.jupyterapp;
  const w = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === path);
  await w.sessionContext.shutdown();
  w.dispose();
}"""


def _run_one(page, name: str, d: str) -> float:
    """Run ``name`` (open already, its kernel started) and take its screenshot."""
    path = f"{name}.ipynb"
    t0 = time.monotonic()
    marks = {}
    page.evaluate(ACTIVATE_JS, path)
    _wait(lambda: (s := page.evaluate(STATE_JS)) and s["path"] == path
          and s["status"] == "idle", 60, f"{path} in front with its kernel idle", page)
    t = time.monotonic()
    marks["open"] = t - t0
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def finished():
        s = page.evaluate(STATE_JS)
        if s and s["errors"]:
            raise AssertionError(f"{path}: cells failed: {s['errors']}")
        return s and s["ran"] == s["cells"] and not s["busy"] and s["status"] == "idle"
    _wait(finished, 180, f"{path} to run to the end", page)
    took = time.monotonic() - t
    for selector, n in RENDERED[name].items():
        _wait(lambda sel=selector, n=n: _count(page, sel) >= n, 30,
              f"{n} x {selector} in {path}", page)
    marks["render"] = time.monotonic() - t - took
    time.sleep(0.5)                       # the live views' next update
    # the whole notebook in one picture: a viewport as tall as the notebook
    height = page.evaluate("""() => { const o = document.querySelector(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
        return o ? o.scrollHeight : 1600; }""")
    page.set_viewport_size({"width": 1280, "height": min(max(height + 160, 900), 16000)})
    page.evaluate("""() => { const o = document.querySelector(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
        if (o) o.scrollTop = 0; }""")
    time.sleep(0.5)
    page.locator(".jp-NotebookPanel:visible").screenshot(
        path=os.path.join(d, f"notebook-{name}.png"))
    page.set_viewport_size({"width": 1280, "height": 1600})
    marks["shot"] = time.monotonic() - t0
    # done: shut its kernel down, and close it (dispose: nothing asks to save)
    page.evaluate(CLOSE_JS, path)
    marks["closed"] = time.monotonic() - t0
    print(f"{name}: ran in {took:.1f} s", {k: round(v, 1) for k, v in marks.items()})
    return took


@pytest.mark.timeout(900)
def test_every_notebook_runs_in_jupyterlab(lab, page, tmp_path):
    url, root = lab
    home = tmp_path / "home"                  # multi-host's `refbook start` keeps its files here
    home.mkdir()
    names = [n for n in ORDER if n in os.environ.get("REFBOOK_NOTEBOOKS", n).split(",")]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        if name == "multi-host":
            at = next(i for i, c in enumerate(nb.cells)
                      if "parameters" in c.metadata.get("tags", []))
            nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"CLI_HOME = {str(home)!r}"))
        nbformat.write(nb, root / f"{name}.ipynb")
    t_start = time.monotonic()
    page.goto(f"{url}/lab?reset&token=refbook-test")
    page.wait_for_function("window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    page.evaluate("window.jupyterapp.started")
    page.wait_for_selector(".jp-DirListing-content", timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    # every notebook opens at once, so that their kernels start together (a kernel
    # takes seconds to start, and they wait idle, without refbook, until their turn)
    paths = [f"{n}.ipynb" for n in names]
    page.evaluate(OPEN_ALL_JS, paths)
    _wait(lambda: page.evaluate(KERNELS_JS, paths) == len(paths), 120,
          "every notebook's kernel", page)
    d = _shots_dir()
    print(f"\nlab loaded, notebooks open in {time.monotonic() - t_start:.1f} s")
    times = {}
    try:
        for name in names:
            times[name] = _run_one(page, name, d)
    finally:
        subprocess.run([sys.executable, "-m", "refbook.cli", "stop"], capture_output=True,
                       env=dict(os.environ, HOME=str(home)), timeout=60)
        shutil.rmtree(home, ignore_errors=True)
    print("\nrun all, in JupyterLab: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print(f"screenshots: {d}/notebook-*.png")
