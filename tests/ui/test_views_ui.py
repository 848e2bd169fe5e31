"""The live views (memory, spilling, recovery, the dashboard) in real JupyterLab and
headless Chromium, with every request to a host other than this one blocked: BokehJS
must come from the kernel, not from a CDN.  Checks what a person sees (the DOM, and
the models of the Bokeh documents, since Bokeh draws on canvas), and saves screenshots
in the light and the dark theme to $REFBOOK_SCREENSHOTS (default: screenshots/)."""

import os
import time
from urllib.parse import urlparse

import nbformat
import pytest

from tests.ui.test_failures_ui import _run_all, _shots_dir, _wait

LOCAL = {"127.0.0.1", "localhost", "::1", "[::1]"}

CELLS = [
    "import refbook, numpy as np\n"
    "refbook.init(num_nodes=2, num_cpus=1, object_store_memory=100 * 2**20)",
    "%load_ext refbook",
    # 160 MB into a 100 MiB store: some of it spills
    "xs = [refbook.put(np.ones(2_500_000)) for _ in range(8)]",
    # a node with results on it dies: they are rebuilt
    "from refbook import state\n"
    "import time\n"
    "@refbook.remote\ndef part(i):\n    time.sleep(0.3)\n    return np.ones(500_000) * i\n"
    "other = [n['node_id'] for n in state.nodes() if not n['is_head']][0]\n"
    "parts = [part.remote(i) for i in range(4)]\n"
    "refbook.wait(parts, num_returns=4)\n"
    "state.kill_node(other)\n"
    "total = sum(float(p.sum()) for p in refbook.get(parts))\n"
    "new = state.add_node(num_cpus=1, object_store_memory=100 * 2**20)",
    "%refbook memory",
    "%refbook spilling",
    "%refbook recovery",
    "%refbook dashboard",
]

MODELS_JS = """() => {
  const out = [];
  for (const d of window.Bokeh.documents) {
    for (const m of d.all_models) {
      if (m.type !== "ColumnDataSource") continue;
      const data = {};
      const entries = m.data instanceof Map ? m.data.entries() : Object.entries(m.data);
      for (const [k, v] of entries) data[k] = Array.from(v).slice(-50);
      out.push(data);
    }
  }
  return out;
}"""


def _block_remote(page) -> list:
    blocked: list = []

    def route(r):
        host = urlparse(r.request.url).hostname or ""
        if host in LOCAL or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()
    page.route("**/*", route)
    return blocked


def _view_texts(page) -> list[str]:
    return page.evaluate("""() => Array.from(document.querySelectorAll(
        '.jp-Notebook .jp-CodeCell .jp-OutputArea-output .refbook-view'))
        .filter(e => !e.parentElement.closest('.refbook-view'))
        .map(e => e.innerText)""")


@pytest.mark.timeout(400)
def test_views_render_offline_in_both_themes(lab, page):
    url, root = lab
    blocked = _block_remote(page)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "views.ipynb")
    _run_all(page, url, "views.ipynb")

    def rendered():
        texts = _view_texts(page)
        if len(texts) < 4:
            return None
        mem, spill, rec = texts[:3]
        ok = ("Memory" in mem and "largest objects" in mem.lower() and "spilled" in spill
              and "node_died" not in rec and "node died" in rec and "reconstructed" in rec)
        return ok and page.evaluate("window.Bokeh !== undefined && "
                                    "window.Bokeh.documents.length >= 5") and texts
    _wait(rendered, 120, "the views to render", page)
    time.sleep(1.5)                      # a few more updates
    mem, spill, rec, dash = _view_texts(page)[:4]
    import bokeh
    assert page.evaluate("window.Bokeh.version") == bokeh.__version__
    assert page.evaluate("document.querySelectorAll('script[data-refbook=bokehjs]').length") \
        == 1, "BokehJS is added once, however many views show"
    sources = page.evaluate(MODELS_JS)
    # memory: a bar per node (the head, and the node added after the other one
    # died), with the 20 MB objects in use; the timeline has points
    bars = [s for s in sources if "capacity" in s and "threshold" in s]
    assert bars and len(bars[0]["node"]) == 2 and max(bars[0]["used"]) > 20_000_000, bars
    assert bars[0]["threshold"][0] == 0.8 * bars[0]["capacity"][0]
    timeline = [s for s in sources if set(s) == {"t", "used", "spilled"}]
    assert timeline and len(timeline[0]["t"]) >= 1
    # spilling: cumulative bytes spilled
    spilled = [s for s in sources if set(s) == {"t", "spilled", "restored"}]
    assert spilled and max(spilled[0]["spilled"]) > 0, spilled
    t = spilled[0]["t"]          # one line through time: no point drawn twice
    assert all(a <= b for a, b in zip(t, t[1:], strict=False)), t
    # recovery: the node's death and the rebuilds it caused, as dots
    dots = [s for s in sources if "desc" in s]
    rows = set(dots[0]["row"])
    assert {"node died", "lost", "reconstructing", "reconstructed"} <= rows, rows
    # Playwright's selectors pierce the shadow DOM that Bokeh draws into
    assert len(page.query_selector_all(".jp-OutputArea-output .refbook-plot canvas")) >= 4, \
        "the plots are drawn"
    assert "kill a worker" in rec and "kill a node" in rec and "add a node" in rec
    assert "Object graph" in dash and "Memory" in dash
    assert "no refbook cluster" not in mem + spill + rec + dash
    assert not blocked, f"requests to other hosts: {blocked}"

    # a reloaded page shows the plots as they are now, still with nothing fetched
    n_points = len(timeline[0]["t"])
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    _wait(lambda: '"application/vnd.jupyter.widget-view+json"' in
          (root / "views.ipynb").read_text(), 20, "the notebook saved with its views", page)
    size = (root / "views.ipynb").stat().st_size
    assert size < 200_000, f"BokehJS (1.3 MB) must not be saved in the notebook: {size}"
    page.on("dialog", lambda dialog: dialog.accept())    # "leave the page?"
    page.reload()
    _wait(lambda: page.evaluate("window.Bokeh !== undefined && "
                                "window.Bokeh.documents.length >= 5"), 60,
          "the plots after a reload", page)
    time.sleep(1.0)
    again = page.evaluate(MODELS_JS)
    bars = [s for s in again if "capacity" in s and "threshold" in s]
    assert bars and len(bars[0]["node"]) == 2 and max(bars[0]["used"]) > 20_000_000, bars
    timeline = [s for s in again if set(s) == {"t", "used", "spilled"}]
    assert timeline and len(timeline[0]["t"]) >= n_points, (n_points, timeline)
    for s in again:              # each line through time once: no point drawn twice
        if set(s) in ({"t", "used", "spilled"}, {"t", "spilled", "restored"}):
            assert all(a <= b for a, b in zip(s["t"], s["t"][1:], strict=False)), s
    assert not blocked, f"requests to other hosts: {blocked}"

    d = _shots_dir()
    shots = []

    def shoot(suffix: str) -> None:
        views = page.query_selector_all(".jp-Notebook .jp-CodeCell .jp-OutputArea-output "
                                        "> .jupyter-widgets, .jp-Notebook .jp-CodeCell "
                                        ".jp-OutputArea-output .refbook-view")
        tops = [v for v in views if v.evaluate("e => e.classList.contains('refbook-view') "
                                               "&& !e.parentElement.closest('.refbook-view')")]
        for name, el in zip(["memory", "spilling", "recovery", "dashboard"], tops,
                            strict=False):
            el.scroll_into_view_if_needed()
            path = os.path.join(d, f"view-{name}{suffix}.png")
            el.screenshot(path=path)
            shots.append(path)
    shoot("")
    # the dashboard's other tabs draw their plots once shown
    dash_el = page.locator(".refbook-dashboard").first
    dash_el.locator(".lm-TabBar-tab", has_text="Recovery").click()
    _wait(lambda: dash_el.locator(".refbook-view:visible .refbook-plot canvas").count() >= 1,
          10, "the recovery tab's plot", page)
    time.sleep(0.5)
    box = dash_el.locator(".refbook-view:visible .refbook-plot").first.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150, box
    dash_el.screenshot(path=os.path.join(d, "view-dashboard-recovery-tab.png"))
    shots.append(os.path.join(d, "view-dashboard-recovery-tab.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    _wait(lambda: page.evaluate("document.body.dataset.jpThemeLight") == "false", 30,
          "the dark theme", page)
    time.sleep(1.0)
    shoot("-dark")
    print(f"\nscreenshots: {', '.join(shots)}")
    assert not blocked, f"requests to other hosts: {blocked}"
