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


def _append_and_run(page, code: str) -> None:
    """Add a cell with ``code`` at the end of the notebook in front, and run it."""
    page.evaluate("""(code) => { const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = nb.content.widgets.length - 1;
        window.jupyterapp.commands.execute('notebook:insert-cell-below').then(() => {
          nb.content.activeCell.model.sharedModel.setSource(code);
          window.jupyterapp.commands.execute('notebook:run-cell'); }); }""", code)


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
    # del in a cell: the row goes too
    _append_and_run(page, "del x")
    _wait(lambda: "x" not in _rows(page) and "big" in _rows(page), 20, "x's row to go",
          page)
    # the sidebar follows the notebook in front: a kernel without refbook says so
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', "
                  "{path: 'plain.ipynb'})")
    _wait(lambda: "%load_ext refbook" in page.inner_text(f"{SIDEBAR} .refbook-hint")
          and not _rows(page), 60, "the hint for a kernel without refbook", page)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', "
                  "{path: 'refs.ipynb'})")
    _wait(lambda: "big" in _rows(page), 30, "the first notebook's rows", page)
    # dark theme
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    time.sleep(0.5)
    page.click(f"{SIDEBAR} .refbook-ref[data-refbook-name='big']")
    page.wait_for_selector(f"{SIDEBAR} .refbook-detail-box", timeout=10_000)
    page.screenshot(path=os.path.join(_shots_dir(), "sidebar-dark.png"))
    # the dashboard opens in a panel beside the notebook, on the same kernel
    page.click(f"{SIDEBAR} .refbook-open-dashboard")
    page.wait_for_selector(".jp-ConsolePanel .jp-OutputArea-output .widget-tab, "
                           ".jp-ConsolePanel .jp-OutputArea-output .jupyter-widget-tab",
                           timeout=60_000)
    time.sleep(1.0)
    # the sidebar stays with the notebook (the console is the dashboard's, not a notebook)
    assert "refs.ipynb" in page.inner_text(f"{SIDEBAR} .refbook-head")
    assert "big" in _rows(page)
    page.screenshot(path=os.path.join(_shots_dir(), "sidebar-dashboard-dark.png"))
    # a ref's graph opens in such a panel too
    page.click(f"{SIDEBAR} .refbook-ref[data-refbook-name='big']")
    page.click(f"{SIDEBAR} .refbook-graph")
    _wait(lambda: page.locator(".jp-ConsolePanel").count() >= 2, 60, "the graph's panel",
          page)
    assert not outside, outside


def test_free_asks_then_deletes_the_variable(lab, page):
    """Free after a look at the details: the row goes.  (It stayed, at random, when
    JupyterLab's comm subshell had been deleted under the sidebar's comm: see
    test_sidebar_comm's deleted-subshell test.)"""
    url, root = lab
    _notebook(root, "free.ipynb", ["%load_ext refbook", "y = refbook.put(123)"])
    _open(page, url, "free.ipynb")
    page.evaluate("() => window.jupyterapp.shell.activateById('refbook-sidebar')")
    _run_all(page)
    _wait(lambda: "y" in _rows(page), 60, "y's row", page)
    page.click(f"{SIDEBAR} .refbook-ref[data-refbook-name='y']")
    page.wait_for_selector(f"{SIDEBAR} .refbook-detail-box", timeout=10_000)
    page.click(f"{SIDEBAR} .refbook-free")
    page.click(".jp-Dialog .jp-mod-accept")
    _wait(lambda: "y" not in _rows(page), 20, "y's row to go", page)


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


def test_a_killed_node_shows_in_the_sidebar_and_its_refs_come_back(lab, page):
    url, root = lab
    _notebook(root, "recovery.ipynb", [
        "import refbook\nrefbook.init(num_nodes=3, num_cpus=1)\n%load_ext refbook",
        "import time\nimport numpy as np\nfrom refbook import state\n\n"
        "@refbook.remote\ndef make(i):\n    time.sleep(1.5)\n    return np.full(200_000, i)\n\n"
        "a, b, c, d = [make.remote(i) for i in range(4)]\nrefbook.wait([a, b, c, d], "
        "num_returns=4)\nhead = [n['node_id'] for n in refbook.nodes() if n['is_head']][0]\n"
        "where = {n: state.objects(ids=[r])[0]['nodes'][0] for n, r in "
        "zip('abcd', [a, b, c, d])}\nvictim = next(v for v in where.values() if v != head)\n"
        "lost = sorted(n for n, v in where.items() if v == victim)",
    ])
    _open(page, url, "recovery.ipynb")
    page.evaluate("() => window.jupyterapp.shell.activateById('refbook-sidebar')")
    page.wait_for_selector(SIDEBAR, state="visible", timeout=30_000)
    _run_all(page)
    # the sidebar connects once refbook is loaded and the kernel is free (its comm
    # opens on the kernel's shell channel, after the cells queued before it)
    _wait(lambda: {"a", "b", "c", "d"} <= set(_rows(page)), 120, "the four refs", page)
    _append_and_run(page, "state.kill_node(victim)\ntime.sleep(1.0)\n"
                          "[float(x[0]) for x in refbook.get([a, b, c, d], timeout=60)]")
    seen: dict = {}
    shot = False
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        rows = _rows(page)
        for name, st in rows.items():
            if not seen.get(name) or seen[name][-1] != st:
                seen.setdefault(name, []).append(st)
        if not shot and any(st in ("lost", "reconstructing", "pending")
                            for n, sts in seen.items() for st in sts[1:]):
            page.screenshot(path=os.path.join(_shots_dir(), "sidebar-recovery.png"))
            shot = True
        done = page.evaluate("() => Array.from(document.querySelectorAll("
                             "'.jp-InputPrompt')).some(p => p.textContent.includes('[3]'))")
        if done and rows and all(v == "ready" for v in rows.values()):
            break
        time.sleep(0.1)
    page.screenshot(path=os.path.join(_shots_dir(), "sidebar-recovered.png"))
    assert {"a", "b", "c", "d"} <= set(seen), seen
    # the refs of the dead node went through a state other than ready, and came back
    changed = [n for n, sts in seen.items() if len(sts) > 2 and sts[-1] == "ready"]
    assert changed, seen
    assert all(sts[-1] == "ready" for sts in seen.values()), seen
    nodes_dead = page.inner_text(f"{SIDEBAR} .refbook-nodes")
    assert "dead" in nodes_dead, nodes_dead
