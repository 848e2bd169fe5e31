"""``widgets.recovery()``: a timeline of failures (a worker died, a node died, an OOM
kill) and of what each caused (tasks retried, objects lost, reconstructing and
reconstructed, actors restarted); on a local cluster, buttons to cause them.

What a failure caused is read from the order of events: each consequence counts for
the last failure before it (a retry with no failure before it counts for none)."""

from __future__ import annotations

import html
import threading
import time

import ipywidgets

from .. import state
from ..units import short_id
from . import plots, theme
from .base import LiveView

FAILURES = ("worker_died", "node_died", "oom_kill")
CAUSED = ("task_retried", "actor_restarted", "object_lost", "object_reconstructing",
          "object_reconstructed")
KINDS = FAILURES + CAUSED
ROWS = [k.replace("_", " ").replace("object ", "") for k in KINDS][::-1]
KEEP = 2000                 # events kept in .data
SHOWN = 8                   # failures listed
HIT_SHOWN = 20              # objects offered in "show in the graph"
REMOTE = "refbook start"    # nodes started so are not ours to kill


def label(kind: str) -> str:
    return kind.replace("_", " ").replace("object ", "")


def describe(e: dict) -> str:
    """One event in a few words."""
    k = e["kind"]
    if k == "node_died":
        return f"node {str(e.get('node') or e.get('node_id'))[:8]} died ({e.get('reason', '')})"
    if k == "worker_died":
        why = e.get("reason") or ""
        return (f"worker pid {e.get('pid')} on node {str(e.get('node_id'))[:8]} died"
                + (f" ({why})" if why else ""))
    if k == "oom_kill":
        return f"out of memory: a task was killed on node {str(e.get('node_id'))[:8]}"
    if k == "task_retried":
        return f"task {e.get('name')} retried (attempt {e.get('attempt')})"
    if k == "actor_restarted":
        return f"actor {e.get('name') or e.get('actor_id') or ''} restarted"
    what = f"object {str(e.get('object_id'))[:12]}"
    if k == "object_reconstructing":
        return f"{what} being rebuilt by {e.get('name')}"
    return f"{what} {label(k)}"


class RecoveryView(LiveView):
    """Failures, what they caused, and (local clusters) the buttons to cause them."""

    kinds = KINDS
    since = 0
    poll_s = 2.0             # the node list, for the buttons
    title = "Recovery"

    def empty(self) -> dict:
        return {"events": [], "failures": [], "local": False}

    def build(self) -> list:
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool
        self._events: list = []
        self._failures: list = []      # {"event", "caused": {kind: n}}
        self._orphans: dict = {}       # consequences with no failure before them
        self.source = ColumnDataSource({"t": [], "row": [], "colour": [], "desc": []})
        p = plots.figure(height=230, x_axis_type="datetime", y_range=FactorRange(*ROWS))
        dots = p.scatter(x="t", y="row", source=self.source, size=9, color="colour",
                         line_alpha=0, fill_alpha=0.85)
        p.add_tools(HoverTool(renderers=[dots], tooltips="@desc"))
        p.ygrid.grid_line_alpha = 0.12
        plots.time_axis(p.xaxis[0])
        self.plot = p
        self.plot_pane = self.pane(p)
        self.table_html = ipywidgets.HTML()
        self.action_html = ipywidgets.HTML()
        lay = ipywidgets.Layout(width="auto")
        self.kill_worker_b = ipywidgets.Button(description="kill a worker", icon="bolt",
                                               button_style="warning", layout=lay,
                                               tooltip="SIGKILL a worker that runs a task")
        self.kill_node_b = ipywidgets.Button(description="kill a node", icon="times",
                                             button_style="danger", layout=lay,
                                             tooltip="SIGKILL the chosen node")
        self.add_node_b = ipywidgets.Button(description="add a node", icon="plus",
                                            layout=lay, tooltip="one more node, 1 CPU")
        self.node_pick = ipywidgets.Dropdown(options=[], description="node:",
                                             layout=ipywidgets.Layout(width="200px"))
        self.node_pick.style.description_width = "40px"
        # in a dashboard: an object a failure hit, shown in the object graph
        self.show_in_graph = None        # set by the dashboard: callable(object id)
        self.graph_pick = ipywidgets.Dropdown(
            options=[("pick an object that a failure hit", "")], value="",
            description="show in the graph:",
            layout=ipywidgets.Layout(width="auto", display="none"))
        self.graph_pick.style.description_width = "initial"
        self.graph_pick.observe(self._on_graph_pick, names="value")
        self.kill_worker_b.on_click(lambda _: self._act("kill a worker", state.kill_worker))
        self.kill_node_b.on_click(lambda _: self._act(
            "kill a node", lambda: state.kill_node(self._target())))
        self.add_node_b.on_click(lambda _: self._act(
            "add a node", lambda: f"node {state.add_node(num_cpus=1)[:8]} added"))
        self.controls = ipywidgets.HBox(
            [self.kill_worker_b, self.node_pick, self.kill_node_b, self.add_node_b,
             self.action_html], layout=ipywidgets.Layout(align_items="center",
                                                         display="none"))
        return [self.controls, self.plot_pane,
                ipywidgets.HTML(theme.section("failures and what each caused")),
                self.table_html, self.graph_pick]

    # -- the link to the object graph ---------------------------------------------------
    def _on_graph_pick(self, change) -> None:
        oid = change["new"]
        if oid and self.show_in_graph is not None:
            self.show_in_graph(oid)

    def _show_hit(self) -> None:
        """The objects failures hit (lost, rebuilt), newest first, in the dropdown."""
        if self.show_in_graph is None:
            return
        seen: dict = {}
        for e in reversed(self._events):
            oid = e.get("object_id")
            if oid and oid not in seen and e["kind"].startswith("object_"):
                seen[oid] = f"{short_id(oid)}: {label(e['kind'])} at {theme.clock(e['time'])}"
            if len(seen) >= HIT_SHOWN:
                break
        options = [("pick an object that a failure hit", "")] + \
            [(v, k) for k, v in seen.items()]
        if list(self.graph_pick.options) != options:
            keep = self.graph_pick.value
            self.graph_pick.options = options
            self.graph_pick.value = keep if keep in seen else ""
        self.graph_pick.layout.display = "flex" if seen else "none"

    # -- the buttons ----------------------------------------------------------------------
    def _target(self) -> str:
        if not self.node_pick.value:
            raise ValueError("no node to kill: only the head (and this notebook's own "
                             "node) are left. Add a node first")
        return self.node_pick.value

    def _act(self, what: str, fn) -> None:
        """Run a control in a thread (they wait for the cluster) and say how it went."""
        if not self.live():
            return
        theme.set_html(self.action_html, f'<span class="rb-muted">{what}...</span>')

        def run():
            t = time.monotonic()
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001 - shown in the widget, e.g. refused
                msg = (f'<span style="color:var(--jp-error-color1, #d32f2f)">{what}: '
                       f'{html.escape(str(e))}</span>')
            else:
                if isinstance(out, dict):
                    out = f"killed worker pid {out.get('pid')} on node {out['node_id'][:8]}"
                msg = (f'<span class="rb-muted">{html.escape(out or what + ": done")} '
                       f'({time.monotonic() - t:.1f} s)</span>')
            try:
                theme.set_html(self.action_html, msg)
            except Exception:  # noqa: BLE001 - closed meanwhile
                pass
        threading.Thread(target=run, name="refbook-control", daemon=True).start()

    # -- updating -------------------------------------------------------------------------
    def update(self, events: list, poll: bool) -> None:
        fresh = [e for e in events if e["kind"] in KINDS]
        for e in fresh:
            if e["kind"] in FAILURES:
                self._failures.append({"event": e, "caused": {}})
            else:
                caused = self._failures[-1]["caused"] if self._failures else self._orphans
                caused[e["kind"]] = caused.get(e["kind"], 0) + 1
        self._events = (self._events + fresh)[-KEEP:]
        data = dict(self._data)        # replaced key by key: no deep copy
        if poll:
            nodes = [n for n in state.nodes() if n["alive"]]
            data["local"] = bool(nodes) and all(n.get("started_by") != REMOTE
                                                for n in nodes)
            self._show_controls(nodes, data["local"])
        data["events"] = list(self._events)
        data["failures"] = [{**f["event"], "caused": dict(f["caused"])}
                            for f in self._failures]
        self.set_data(data)
        if fresh:
            self.source.stream({
                "t": [e["time"] * 1000 for e in fresh],
                "row": [label(e["kind"]) for e in fresh],
                "colour": [theme.KIND_COLOURS.get(e["kind"], "#8c8c8c") for e in fresh],
                "desc": [f"{theme.clock(e['time'])} {describe(e)}" for e in fresh]},
                rollover=KEEP)
        self._show(data)
        self._show_hit()

    def _show_controls(self, nodes: list, local: bool) -> None:
        self.controls.layout.display = "flex" if local else "none"
        options = [(f"{n['node_id'][:8]}", n["node_id"]) for n in nodes if not n.get("is_head")]
        self.kill_node_b.disabled = not options
        self.node_pick.layout.display = "flex" if options else "none"
        if list(self.node_pick.options) != options:
            keep = self.node_pick.value
            self.node_pick.options = options
            ids = [v for _, v in options]
            if ids:                     # the one chosen before, or the newest
                self.node_pick.value = keep if keep in ids else ids[-1]

    def _show(self, data: dict) -> None:
        fails = data["failures"]
        n = len(fails)
        summary = (f"{n} failure{'s' if n != 1 else ''}" if n else "no failures yet")
        if data["local"]:
            summary += " &middot; local cluster: the buttons below cause failures"
        theme.set_html(self.header, theme.header(self.title, summary))
        rows = []
        for f in reversed(fails[-SHOWN:]):
            rows.append([theme.clock(f["time"]), theme.chip(f["kind"]),
                         html.escape(describe(f)), _caused(f["caused"])])
        if self._orphans:
            rows.append(["", "", '<span class="rb-muted">before any failure seen</span>',
                         _caused(self._orphans)])
        theme.set_html(self.table_html, theme.table(
            [("time", False), ("failure", False), ("what", False), ("caused", False)], rows,
            "no failures yet: when a worker or a node dies, it shows here with the "
            "retries and rebuilds it caused"))

    def close_widgets(self) -> None:
        super().close_widgets()
        for name in ("plot_pane", "table_html", "controls", "action_html",
                     "kill_worker_b", "kill_node_b", "add_node_b", "node_pick",
                     "graph_pick"):
            w = getattr(self, name, None)
            if w is not None:
                w.close()


def _caused(caused: dict) -> str:
    if not caused:
        return '<span class="rb-muted">nothing (yet)</span>'
    parts = []
    for k in CAUSED:
        if caused.get(k):
            parts.append(f"{theme.chip(k)} &times;{caused[k]}")
    return " ".join(parts)
