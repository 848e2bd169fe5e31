"""The object graph in real JupyterLab and headless Chromium, with every request to
another host blocked: a small pipeline drawn as a graph (checked in the Bokeh document's
models, since Bokeh draws on canvas), a click on a node filling the details panel, and
the first render of 5,000 objects (grouped) and of 7,500 nodes drawn one by one, timed
from the cell's start to the first frame that shows them.  Screenshots in the light and
the dark theme go to $REFBOOK_SCREENSHOTS (default: screenshots/)."""

import os
import time

import nbformat
import pytest

from tests.ui.test_failures_ui import _shots_dir, _wait
from tests.ui.test_views_ui import _block_remote

PIPELINE = """\
@refbook.remote
def load(i):
    time.sleep(0.3)
    return np.ones(250_000 * (i + 1))
@refbook.remote
def clean(x):
    return x - x.mean()
@refbook.remote
def combine(*parts):
    return float(sum(p.sum() for p in parts))
raw = [load.remote(i) for i in range(3)]
cleaned = [clean.remote(r) for r in raw]
result = combine.remote(*cleaned)
config = refbook.put({"alpha": 0.1})
bundle = refbook.put([config, result])
refbook.get(result)"""

MANY = """\
@refbook.remote
def inc(x):
    return x + 1
many = [refbook.put(i) for i in range(2500)]
more = [inc.remote(x) for x in many]
_ = refbook.wait(more, num_returns=len(more))"""

# a node that holds the only copy of some object dies: they are rebuilt from lineage
KILL = """\
from refbook import state
more_parts = [load.remote(i) for i in range(4)]
_ = refbook.wait(more_parts, num_returns=4)
time.sleep(1.0)
head = [n['node_id'] for n in state.nodes() if n['is_head']][0]
where = [o['nodes'] for o in state.objects()]
alone = sorted({ns[0] for ns in where if len(ns) == 1} - {head})
print('VICTIM', alone[0] if alone else None)
if alone:
    state.kill_node(alone[0])"""

CELLS = [
    "import refbook, time, numpy as np\n"
    "refbook.init(num_nodes=3, num_cpus=1)",
    "%load_ext refbook",
    PIPELINE,
    "from refbook import widgets\ng = widgets.object_graph()\ng",
    KILL,
    "g.close()\n" + MANY,
    "print('T0', time.time())\nbig = widgets.object_graph(['many', 'more'])\n"
    "print('B0', time.time())\nbig",
    "from refbook.widgets.graph_view import ObjectGraphView\n"
    "print('T1', time.time())\nflat = ObjectGraphView(['many', 'more'], collapse_at=10_000)\nflat",
]

# Watches every animation frame for a graph whose nodes match, and notes when it was
# first drawn (Date.now(), the same clock as the kernel's time.time() on this host).
WATCH_JS = r"""([key, test]) => {
  window.__seen = window.__seen || {};
  const check = () => {
    if (window.__seen[key]) return;
    if (window.Bokeh) for (const d of window.Bokeh.documents) for (const m of d.all_models) {
      if (m.type !== "ColumnDataSource") continue;
      const data = m.data instanceof Map ? m.data : new Map(Object.entries(m.data));
      const kind = data.get("kind");
      if (!kind || !data.get("made_txt")) continue;
      const ks = Array.from(kind);
      const names = Array.from(data.get("name") || []);
      const only = names.every(n => /^(put|inc)( \u00d7\d+)?$/.test(n));
      if ((test === "grouped" && ks.includes("object group") && only) ||
          (test === "flat" && ks.length >= 7000)) {
        window.__seen[key] = Date.now(); return;
      }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""

GRAPHS_JS = """() => {
  const out = [];
  for (const d of window.Bokeh.documents) for (const m of d.all_models) {
    if (m.type !== "ColumnDataSource") continue;
    const data = m.data instanceof Map ? m.data : new Map(Object.entries(m.data));
    if (!data.get("made_txt")) continue;
    const col = k => Array.from(data.get(k) || []);
    out.push({n: col("index").length, kind: col("kind").slice(0, 60),
              name: col("name").slice(0, 60), state: col("state").slice(0, 60),
              x: col("x").slice(0, 60), y: col("y").slice(0, 60)});
  }
  return out;
}"""

# Notes, at every animation frame, the states of the pipeline's objects (the graph
# whose names include "result") in window.__graphStates.
STATES_JS = """() => {
  window.__graphStates = new Set();
  const graphs = """ + GRAPHS_JS + """;
  const check = () => {
    for (const gr of graphs()) {
      if (gr.name.includes("result")) for (const s of gr.state) window.__graphStates.add(s);
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""

# the pixel on the page of the node named `name` in a graph drawn on the page now (a
# plot sent whole again leaves its old view behind, detached)
LOCATE_JS = """(name) => {
  let found = null;
  for (const view of window.Bokeh.index.roots) {
    const stack = [view];
    while (stack.length) {
      const v = stack.pop();
      if (v.model && v.model.type === "GraphRenderer") {
        const pv = v.parent;
        const el = pv.canvas_view.el;
        const box = el.getBoundingClientRect();
        if (!el.isConnected || box.width === 0) continue;
        const src = v.model.node_renderer.data_source;
        const D = src.data instanceof Map ? src.data : new Map(Object.entries(src.data));
        const i = Array.from(D.get("name")).indexOf(name);
        if (i < 0) continue;
        const sx = pv.frame.x_scale.compute(D.get("x")[i]);
        const sy = pv.frame.y_scale.compute(D.get("y")[i]);
        found = [box.left + sx, box.top + sy];
      }
      if (v.child_views) stack.push(...v.child_views);
      if (v.renderer_views) stack.push(...v.renderer_views.values());
    }
  }
  return found;
}"""


def _graph_views(page) -> list:
    """The object graph views on the page (outermost), in order."""
    return [e for e in page.query_selector_all(
        ".jp-Notebook .jp-CodeCell .jp-OutputArea-output .refbook-view")
        if e.evaluate("e => !e.parentElement.closest('.refbook-view')")]


def _run_cells(page, first: int, last: int | None) -> None:
    """Run the notebook's cells ``first`` to ``last`` (None: to the end)."""
    if first == 0 and last is not None:
        cmd, at = "notebook:run-all-above", last + 1
    elif last == first:
        cmd, at = "notebook:run-cell", first
    else:
        assert last is None, "run 0..n, one cell, or n..the end"
        cmd, at = "notebook:run-all-below", first
    page.evaluate(f"""() => {{
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = {at};
        window.jupyterapp.commands.execute('{cmd}');
    }}""")


def _printed_text(page, tag: str) -> str | None:
    text = page.evaluate("() => Array.from(document.querySelectorAll("
                         "'.jp-OutputArea-output')).map(e => e.innerText).join('\\n')")
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return line.split()[1]
    return None


def _printed(page, tag: str) -> float | None:
    got = _printed_text(page, tag)
    return None if got is None else float(got)


def _shoot(page, el, name: str) -> str:
    el.scroll_into_view_if_needed()
    path = os.path.join(_shots_dir(), name)
    el.screenshot(path=path)
    return path


def _dark(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    _wait(lambda: page.evaluate("document.body.dataset.jpThemeLight") == "false", 30,
          "the dark theme", page)
    time.sleep(1.0)


def _light(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Light'})")
    _wait(lambda: page.evaluate("document.body.dataset.jpThemeLight") == "true", 30,
          "the light theme", page)
    time.sleep(1.0)


@pytest.mark.timeout(300)
def test_graph_renders_offline_a_click_shows_details_and_5000_objects_render_fast(lab, page):
    url, root = lab
    blocked = _block_remote(page)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "graph.ipynb")
    page.goto(f"{url}/lab/tree/graph.ipynb?token=refbook-test")
    _open(page)
    _run_cells(page, 0, 3)                   # the pipeline and its graph

    def small():
        graphs = page.evaluate(GRAPHS_JS) if page.evaluate("!!window.Bokeh") else []
        return [g for g in graphs if "result" in g["name"] and g["n"] == 16 and
                all(s in ("ready", "done") for s in g["state"])]
    g = _wait(small, 90, "the pipeline's graph", page)[0]
    names = set(g["name"])
    assert {"result", "config", "bundle", "load", "clean", "combine"} <= names, names
    assert g["kind"].count("task") == 7 and g["kind"].count("object") == 9, g["kind"]
    # laid out by dependency: load, then its output, then clean, its output, combine
    col = {n: x for n, x in zip(g["name"], g["x"], strict=True)}
    assert col["load"] < col["clean"] < col["combine"] < col["result"] < col["bundle"]
    view = _graph_views(page)[0]
    text = view.inner_text()
    assert "9 objects" in text and "7 tasks" in text and "click a node" in text, text
    assert "no refbook cluster" not in text
    # a click on a node shows its details beside the graph
    panel = view.query_selector(".refbook-graph-details")

    def details_shown():
        text = panel.inner_text()
        return "why alive" in text.lower() and "variable result" in text and text
    details = None
    for _attempt in range(3):     # a click while the plot is being sent again is lost
        time.sleep(0.5)
        xy = page.evaluate(LOCATE_JS, "result")
        assert xy, "the node 'result' is drawn"
        page.mouse.click(*xy)
        try:
            details = _wait(details_shown, 10, "the details of 'result'")
            break
        except AssertionError:
            continue
    assert details, panel.inner_text()
    assert "made by combine" in details and "result" in details, details
    assert "inside object bundle" in details, details
    page.mouse.move(5, 5)                    # no tooltip over the graph
    time.sleep(0.5)
    shots = [_shoot(page, view, "graph.png")]
    _dark(page)
    shots.append(_shoot(page, view, "graph-dark.png"))
    _light(page)

    # a node dies: what it alone held turns red (lost), then rebuilding, then ready
    page.evaluate(STATES_JS)
    _run_cells(page, 4, 4)
    victim = _wait(lambda: _printed_text(page, "VICTIM"), 30, "the victim", page)
    seen: list = []
    if victim != "None":
        def saw(state):
            # the page notes every state it draws (a lost object shows red for 1.2 s:
            # polling from here missed it under CI load)
            seen.extend(s for s in page.evaluate("Array.from(window.__graphStates)")
                        if s not in seen)
            return state in seen
        _wait(lambda: saw("lost"), 30, "a lost object", page)
        shots.append(_shoot(page, view, "graph-node-lost.png"))
        _wait(lambda: saw("reconstructing"), 30, "a rebuilt object", page)
        shots.append(_shoot(page, view, "graph-node-reconstructing.png"))
        def settled():
            return [gr for gr in page.evaluate(GRAPHS_JS) if "result" in gr["name"] and
                    gr["n"] == 24 and all(s in ("ready", "done") for s in gr["state"])]
        _wait(settled, 30, "everything ready again", page)
        print(f"\nstates the browser showed after node {victim} died: {seen}")
    else:
        print("\nno node held the only copy of anything: no node killed")

    # 5,000 objects and 2,500 tasks: the first render, grouped, and drawn one by one
    page.evaluate(WATCH_JS, ["grouped", "grouped"])
    page.evaluate(WATCH_JS, ["flat", "flat"])
    _run_cells(page, 5, None)
    seen = _wait(lambda: page.evaluate("window.__seen && window.__seen.flat && "
                                       "window.__seen"), 110, "the big graphs", page)
    t0, t1 = _printed(page, "T0"), _printed(page, "T1")
    grouped = seen["grouped"] / 1000 - t0
    flat = seen["flat"] / 1000 - t1
    built = _printed(page, "B0") - t0
    print(f"\nfirst render in the browser, from the cell's start: 5,000 objects + 2,500 "
          f"tasks grouped {grouped:.2f} s (the view made in the kernel in {built:.2f} s); "
          f"the same 7,500 nodes one by one {flat:.2f} s", flush=True)
    # the target is for the browser's part; the kernel's depends on how busy this
    # shared machine is (both are printed above)
    assert grouped - built <= 2.0, (grouped, built)
    assert grouped <= 4.0, (grouped, built)
    big = [v for v in _graph_views(page) if "grouped by function" in v.inner_text()]
    assert len(big) == 1
    big_text = big[0].inner_text()
    assert "5,000 objects" in big_text and "2,500 tasks" in big_text, big_text
    assert "grouped by function and call site" in big_text
    time.sleep(1.0)
    shots.append(_shoot(page, big[0], "graph-5000.png"))
    _dark(page)
    shots.append(_shoot(page, big[0], "graph-5000-dark.png"))
    print(f"screenshots: {', '.join(shots)}")
    assert not blocked, f"requests to other hosts: {blocked}"


def _open(page) -> None:
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.serviceManager."
                           "sessions.running().next().value !== undefined", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
