"""The refbook sidebar in a real JupyterLab and headless Chromium: it lists the active
notebook's refs live, shows a ref's details, frees a variable after asking, follows the
notebook in front, says what to do in a kernel without refbook, and stays fast with
10,000 refs.  Screenshots (light and dark) go to screenshots/."""

import os
import time

import nbformat

from tests.ui.test_failures_ui import _shots_dir, _wait

SIDEBAR = "#refbook-sidebar"


def _notebook(root, name, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / name)


def _open(page, url, name):
    page.goto(f"{url}/lab/tree/{name}?token=refbook-test")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session &&
                  w.sessionContext.session.kernel;
        return k && k.status === 'idle'; }""", timeout=90_000)


def _run_all(page):
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _rows(page) -> dict:
    return page.evaluate(f"""() => Object.fromEntries(Array.from(
        document.querySelectorAll('{SIDEBAR} .refbook-ref')).map(
        r => [r.dataset.refbookName, r.dataset.refbookState]))""")


def test_the_sidebar_lists_refs_live_and_frees_one(lab, page):
    url, root = lab
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
            else None)
    _notebook(root, "refs.ipynb", [
        "%load_ext refbook",
        "import numpy as np\nx = refbook.put(b'a' * 300_000)\nbig = refbook.put(np.ones(10**6))",
        "@refbook.remote\ndef twice(a):\n    return a * 2\n\ny = twice.remote(big)\n"
        "refbook.get(y).shape",
    ])
    _notebook(root, "plain.ipynb", ["1 + 1"])
    _open(page, url, "refs.ipynb")
    page.evaluate("() => window.jupyterapp.shell.activateById('refbook-sidebar')")
    page.wait_for_selector(SIDEBAR, state="visible", timeout=30_000)
    # before the first cell runs: what to do
    _wait(lambda: "%load_ext refbook" in page.inner_text(f"{SIDEBAR} .refbook-hint"), 30,
          "the hint to load refbook", page)
    _run_all(page)
    rows = _wait(lambda: (r := _rows(page)) and {"x", "big", "y"} <= set(r) and
                 all(s == "ready" for s in r.values()) and r, 60, "three ready rows", page)
    assert rows == {"x": "ready", "big": "ready", "y": "ready"}
    nodes = page.locator(f"{SIDEBAR} .refbook-node").count()
    assert nodes == 1
    assert "MiB of" in page.inner_text(f"{SIDEBAR} .refbook-node-label")
    # details: why it is alive, and the lineage of a task's output
    page.click(f"{SIDEBAR} .refbook-ref[data-refbook-name='y']")
    page.wait_for_selector(f"{SIDEBAR} .refbook-detail-box", timeout=10_000)
    details = page.inner_text(f"{SIDEBAR} .refbook-details")
    assert "variable y" in details and "made by twice" in details, details
    page.screenshot(path=os.path.join(_shots_dir(), "sidebar.png"))
    # Free asks first, then deletes the variable: its row goes
    page.click(f"{SIDEBAR} .refbook-free")
    page.click(".jp-Dialog .jp-mod-accept")
    _wait(lambda: "y" not in _rows(page), 10, "y's row to go", page)
    # the sidebar follows the notebook in front: a kernel without refbook says so
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', "
                  "{path: 'plain.ipynb'})")
    _wait(lambda: "%load_ext refbook" in page.inner_text(f"{SIDEBAR} .refbook-hint")
          and not _rows(page), 60, "the hint for a kernel without refbook", page)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', "
                  "{path: 'refs.ipynb'})")
    _wait(lambda: {"x", "big"} <= set(_rows(page)), 30, "the first notebook's rows", page)
    # dark theme
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    time.sleep(0.5)
    page.click(f"{SIDEBAR} .refbook-ref[data-refbook-name='big']")
    page.wait_for_selector(f"{SIDEBAR} .refbook-detail-box", timeout=10_000)
    page.screenshot(path=os.path.join(_shots_dir(), "sidebar-dark.png"))
    assert not outside, outside


def test_ten_thousand_refs_render_fast_and_virtualised(lab, page):
    url, root = lab
    _notebook(root, "many.ipynb", [
        "%load_ext refbook",
        "g = globals()\nfor i in range(10_000):\n    g[f'r{i:05d}'] = refbook.put(i)",
    ])
    _open(page, url, "many.ipynb")
    _run_all(page)
    _wait(lambda: page.evaluate("() => Array.from(document.querySelectorAll("
                                "'.jp-InputPrompt')).some(p => p.textContent.includes('[2]'))"),
          180, "the 10,000 puts", page)
    t = time.monotonic()
    page.evaluate("() => window.jupyterapp.shell.activateById('refbook-sidebar')")
    _wait(lambda: page.evaluate(f"() => document.querySelector("
                                f"'{SIDEBAR} .refbook-section-title').textContent")
          == "Refs (10000)", 30, "10,000 rows", page)
    first = time.monotonic() - t
    in_dom = page.locator(f"{SIDEBAR} .refbook-ref").count()
    assert 0 < in_dom < 200, in_dom             # only the rows in view exist
    page.evaluate(f"() => {{ document.querySelector('{SIDEBAR} .refbook-refs')"
                  f".scrollTop = 24 * 9000; }}")
    page.wait_for_selector(f"{SIDEBAR} .refbook-ref[data-refbook-name='r09000']",
                           timeout=5_000)
    print(f"10,000 refs: first render {first:.2f} s, {in_dom} rows in the DOM")
    assert first < 3.0, first      # target 1 s; the CI machine is slower and shared
