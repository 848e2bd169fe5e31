"""``widgets.object_graph(refs=None)``: refs and tasks as a live graph, laid out by
dependency (arguments, then the task, then its outputs, left to right), in one box per
node (or per owner), coloured by state and sized by bytes.  Clicking a node shows what
made it, where, what holds it and every path that keeps it alive (``graph_details``).

The graph comes from snapshots (``state.objects()``, ``state.tasks()``, and
``state.lineage()`` for the refs asked for), taken when an event says the graph
changed, at most every ``snap_gap`` (three times what the last one took, so that the
view never spends more than a third of a core); events change states between snapshots.
Every state a node passes through shows for at least ``DWELL`` (a lost object is seen
red even when it is rebuilt within the same batch of events); a freed node fades out
over ``FADE`` and goes.  Above ``graph_model.COLLAPSE_AT`` nodes, nodes are grouped by
function and call site (with counts).

Drawn with Bokeh's graph renderer through ``jupyter_bokeh`` like the other views: the
positions are computed here, the browser only draws, so thousands of nodes render at
once, and a click (the selection) comes back over the same comm."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import ipywidgets

from .. import state
from ..units import fmt_bytes
from . import graph_details, graph_model, plots, theme
from .base import LiveView

DWELL = 0.6                 # s: every state a node passes through shows this long
FADE = 2.0                  # s: a freed node fades out over this, then goes
LABELS_MAX = 250            # nodes drawn with their names under them, at most
MIN_SNAP_GAP = 0.2          # s between snapshots, at least
LINEAGE_ROOTS = 20          # refs asked for: state.lineage() for each, up to this many
KINDS = ("task_submitted", "task_started", "task_finished", "task_failed",
         "task_retried", "task_cancelled", "object_created", "object_freed",
         "object_spilled", "object_restored", "object_lost", "object_reconstructing",
         "object_reconstructed", "node_added", "node_died", "worker_died")
EVENT_STATE = {"task_started": "running", "task_finished": "done",
               "task_failed": "failed", "task_retried": "retrying",
               "task_cancelled": "cancelled", "object_freed": "freed",
               "object_spilled": "spilled", "object_restored": "ready",
               "object_lost": "lost", "object_reconstructing": "reconstructing",
               "object_reconstructed": "ready"}
STRUCTURAL = ("task_submitted", "object_created", "object_freed", "task_finished",
              "task_failed", "task_cancelled", "node_added", "node_died", "worker_died")
COLOURS = graph_model.COLOURS
LEGEND = ("pending", "running", "ready", "spilled", "lost", "reconstructing", "freed",
          "done")
EDGE_COLOURS = {"arg": "#8a8a8a", "return": "#8a8a8a", "contains": "#b07aa1"}
Y_PX = 54                    # pixels per row, before the plot is capped


def node_px(n: dict) -> float:
    """A node's diameter on screen: objects by bytes, groups by count, tasks fixed."""
    if n["kind"].endswith("_group"):
        return min(30.0, 12 + 5 * math.log10(max(1, n["count"])))
    if n["kind"] == "task":
        return 13.0
    size = n.get("size") or 0
    return max(9.0, min(32.0, 10 + 4.5 * math.log10(max(size, 1000) / 1000)))


class ObjectGraphView(LiveView):
    """Refs and tasks as a live DAG (see the module)."""

    kinds = KINDS
    poll_s = 5.0                 # a full snapshot this often even without events
    title = "Object graph"

    def __init__(self, refs=None, collapse_at: int = graph_model.COLLAPSE_AT):
        self._roots_in = refs
        self.collapse_at = collapse_at     # more nodes than this: grouped
        super().__init__()

    def empty(self) -> dict:
        return {"nodes": [], "edges": [], "collapsed": False, "objects": 0, "tasks": 0,
                "selected": None}

    # -- building ---------------------------------------------------------------------
    def build(self) -> list:
        from bokeh.models import (
            BoxZoomTool,
            ColumnDataSource,
            GraphRenderer,
            HoverTool,
            LabelSet,
            MultiLine,
            NodesAndLinkedEdges,
            PanTool,
            Range1d,
            ResetTool,
            Scatter,
            StaticLayoutProvider,
            TapTool,
            WheelZoomTool,
        )
        self._me = self._driver.me
        self.roots = resolve_refs(self._roots_in)
        self._roots_in = None                    # never keep a ref
        self.group_by = "node"
        self.selected: str | None = None
        self.details: dict = {}
        self.state_log: deque = deque(maxlen=20_000)   # (time, id, state) as shown
        self.snapshot_times: deque = deque(maxlen=200)
        self._graph = {"nodes": {}, "edges": []}       # the last snapshot's graph
        self._freed: dict = {}                   # id -> (node, edges, time freed)
        self._queue: dict = {}                   # id -> deque of states to show
        self._cur: dict = {}                     # id -> (state, since) shown by event
        self._shown: dict = {}                   # id -> state shown last
        self._snap_at = 0.0
        self._snap_gap = MIN_SNAP_GAP
        self._dirty = True
        self._order: dict = {}                   # first-seen order, for stable layouts
        self._structure = None
        self._ids: list = []
        self._band_names: dict = {}
        p = plots.figure(height=300, width=760, x_range=Range1d(-1, 1),
                         y_range=Range1d(-1, 1), toolbar_location="right", tools="",
                         min_border_right=10, min_border_top=6)
        p.min_border_left = 10
        p.axis.visible = False
        p.grid.visible = False
        wheel = WheelZoomTool()
        p.add_tools(PanTool(), wheel, BoxZoomTool(), ResetTool())
        p.toolbar.autohide = True
        p.toolbar.logo = None
        self.band_source = ColumnDataSource({k: [] for k in
                                             ("left", "right", "top", "bottom", "label",
                                              "lx", "ly", "fill")})
        p.quad(left="left", right="right", top="top", bottom="bottom",
               source=self.band_source, fill_color="fill", fill_alpha=0.08,
               line_color=plots.GRID, line_alpha=0.25)
        p.add_layout(LabelSet(x="lx", y="ly", text="label", source=self.band_source,
                              text_color=plots.TEXT, text_font_size="11px",
                              text_font_style="italic", text_baseline="top"))
        g = GraphRenderer()
        cols = ("index", "x", "y", "marker", "px", "loff", "colour", "alpha", "name", "label",
                "kind", "state", "size_txt", "made_txt", "where_txt", "held_txt")
        g.node_renderer.data_source = ColumnDataSource({k: [] for k in cols})
        common = dict(size="px", marker="marker", fill_color="colour", fill_alpha="alpha",
                      line_color="colour", line_alpha="alpha")
        g.node_renderer.glyph = Scatter(line_width=1, **common)
        g.node_renderer.selection_glyph = Scatter(line_width=3, **{
            **common, "line_color": "#e15759", "line_alpha": 1})
        g.node_renderer.nonselection_glyph = Scatter(line_width=1, **common)
        g.node_renderer.hover_glyph = Scatter(line_width=3, **{**common,
                                                                "line_color": plots.TEXT})
        g.edge_renderer.data_source = ColumnDataSource(
            {k: [] for k in ("start", "end", "xs", "ys", "colour", "width", "dash", "kind",
                             "alpha")})
        ecommon = dict(line_color="colour", line_width="width", line_dash="dash")
        g.edge_renderer.glyph = MultiLine(line_alpha="alpha", **ecommon)
        g.edge_renderer.selection_glyph = MultiLine(line_alpha=1, **{
            **ecommon, "line_color": "#e15759"})
        g.edge_renderer.nonselection_glyph = MultiLine(line_alpha="alpha", **ecommon)
        g.edge_renderer.hover_glyph = MultiLine(line_alpha=1, **{
            **ecommon, "line_color": plots.TEXT})
        g.layout_provider = StaticLayoutProvider(graph_layout={})
        g.selection_policy = NodesAndLinkedEdges()
        g.inspection_policy = NodesAndLinkedEdges()
        p.renderers.append(g)
        self.labels = LabelSet(x="x", y="y", text="label", source=g.node_renderer.data_source,
                               text_color=plots.TEXT, text_font_size="11px",
                               text_align="center", text_baseline="top", y_offset="loff")
        p.add_layout(self.labels)
        p.add_tools(HoverTool(renderers=[g], tooltips=TOOLTIP),
                    TapTool(renderers=[g]))
        g.node_renderer.data_source.selected.on_change("indices", self._on_tap)
        self.plot, self.renderer = p, g
        self.nodes_source = g.node_renderer.data_source
        self.edges_source = g.edge_renderer.data_source
        self.legend_html = ipywidgets.HTML(legend())
        self.group_pick = ipywidgets.Dropdown(
            options=[("boxes: one per node", "node"), ("boxes: one per owner", "owner")],
            value="node", layout=ipywidgets.Layout(width="190px", flex="0 0 auto"))
        self.group_pick.observe(self._on_group, names="value")
        self.details_html = ipywidgets.HTML(graph_details.hint())
        self.details_box = ipywidgets.VBox(
            [self.details_html], layout=ipywidgets.Layout(
                width="280px", flex="0 0 280px", padding="0 0 0 12px", overflow="auto",
                max_height="640px"))
        self.details_box.add_class("refbook-graph-details")
        p.sizing_mode = "stretch_width"
        self.plot_pane = self.pane(p)
        self.plot_pane.layout = ipywidgets.Layout(flex="1 1 auto", min_width="0",
                                                  width="auto")
        self.body = ipywidgets.HBox([self.plot_pane, self.details_box],
                                    layout=ipywidgets.Layout(width="100%",
                                                             align_items="flex-start"))
        self.body.add_class("refbook-graph")
        css = ipywidgets.HTML(f"<style>{CSS}</style>",
                              layout=ipywidgets.Layout(height="0px", margin="0"))
        top = ipywidgets.HBox([self.legend_html, self.group_pick], layout=ipywidgets.Layout(
            justify_content="space-between", align_items="center", width="100%"))
        return [css, top, self.body]

    # -- the controls ------------------------------------------------------------------
    def _on_group(self, change) -> None:
        self.group_by = change["new"]
        self._dirty = True
        self._structure = None
        self.wake(0)

    def _on_tap(self, _attr, _old, new) -> None:
        """A click in the browser selected nodes: show the first one's details."""
        if new and new[0] < len(self._ids):
            self.select(self._ids[new[0]], from_tap=True)

    def select(self, node_id: str | None, from_tap: bool = False) -> None:
        """Show ``node_id``'s details beside the graph (None: none).  What keeps it
        alive is asked of the cluster on another thread, so a click never waits."""
        self.selected = node_id
        with self._lock:
            self._data["selected"] = node_id
        if node_id is None:
            theme.set_html(self.details_html, graph_details.hint())
            return
        node = self._node(node_id)
        if node is None:
            theme.set_html(self.details_html, graph_details.gone(node_id))
            return
        if not from_tap and node_id in self._ids:
            self.nodes_source.selected.indices = [self._ids.index(node_id)]
        theme.set_html(self.details_html, graph_details.render(node, None, self._names()))
        threading.Thread(target=self._fetch_details, args=(node,), daemon=True,
                         name="refbook-graph-details").start()

    def _fetch_details(self, node: dict) -> None:
        try:
            why = graph_details.fetch(node) if self.live() else None
        except Exception as e:  # noqa: BLE001 - shown in the panel
            why = {"error": f"{type(e).__name__}: {e}"}
        if self.selected != node["id"] or self.stopped is not None:
            return
        self.details = graph_details.summary(node, why)
        try:
            theme.set_html(self.details_html,
                           graph_details.render(node, why, self._names()))
        except Exception:  # noqa: BLE001 - the view was closed meanwhile
            pass

    def _node(self, node_id: str) -> dict | None:
        g = self._shown_graph if hasattr(self, "_shown_graph") else {"nodes": {}}
        return g["nodes"].get(node_id)

    def _names(self) -> dict:
        g = getattr(self, "_shown_graph", None) or {"nodes": {}}
        return {h: n["name"] for h, n in g["nodes"].items()}

    def wake(self, delay: float) -> None:
        """Have the timer call :meth:`update` again within ``delay`` seconds."""
        self._next_poll = min(self._next_poll, time.monotonic() + delay)

    # -- updating ----------------------------------------------------------------------
    def update(self, events: list, poll: bool) -> None:
        now = time.monotonic()
        for e in events:
            k = e["kind"]
            if k in STRUCTURAL:
                self._dirty = True
            st = EVENT_STATE.get(k)
            h = e.get("object_id") or e.get("task_id")
            if st and h:
                self._push(h, st, now)
        if poll and now - self._snap_at >= self.poll_s:
            self._dirty = True
        if self._dirty:
            if now - self._snap_at >= self._snap_gap:
                self._snapshot()
            else:
                self.wake(self._snap_gap - (now - self._snap_at))
        self._show(time.monotonic())

    def _push(self, h: str, st: str, now: float) -> None:
        """An event says ``h`` is now ``st``: show it next, for at least DWELL."""
        q = self._queue.setdefault(h, deque())
        last = q[-1] if q else self._cur.get(h, (None, 0))[0]
        if st != last:
            q.append(st)
        if st == "freed":
            self._dirty = True

    def _snapshot(self) -> None:
        t = time.monotonic()
        objs, tks = state.objects(), state.tasks()
        nodes = state.nodes()
        graph = graph_model.select(objs, tks, self._me, self.roots, self.group_by)
        if self.roots and len(self.roots) <= LINEAGE_ROOTS:
            for r in self.roots:
                graph_model.merge_lineage(graph, state.lineage(r), self.group_by)
        self._band_names = band_names(nodes)
        done = time.monotonic()
        self._snap_at = done
        self._dirty = False
        took = done - t
        self.snapshot_times.append(took)
        self._snap_gap = max(MIN_SNAP_GAP, 3 * took)
        # what went since the last snapshot is freed: it fades out
        for h, n in self._graph["nodes"].items():
            if h not in graph["nodes"] and h not in self._freed:
                edges = [e for e in self._graph["edges"] if h in (e[0], e[1])]
                self._freed[h] = (n, edges, done)
        for h in list(self._freed):
            if h in graph["nodes"] and self._shown.get(h) != "freed":
                del self._freed[h]            # back (a rebuilt object, a late answer)
        for h in graph["nodes"]:
            self._order.setdefault(h, len(self._order))
        self._graph = graph

    def _state_of(self, h: str, snap_state: str, now: float) -> str:
        """What to show for ``h``: the states events gave it, each for DWELL, then the
        snapshot's; freed stays freed."""
        q = self._queue.get(h)
        cur = self._cur.get(h)
        if q and (cur is None or now - cur[1] >= DWELL):
            cur = self._cur[h] = (q.popleft(), now)
            if not q:
                del self._queue[h]
        if cur is None:
            return snap_state
        if cur[0] == "freed" or h in self._queue or now - cur[1] < DWELL:
            return cur[0]
        del self._cur[h]
        return snap_state

    def _show(self, now: float) -> None:
        graph = {"nodes": dict(self._graph["nodes"]), "edges": list(self._graph["edges"])}
        for h, (n, edges, t) in list(self._freed.items()):
            if time.monotonic() - t > FADE:
                del self._freed[h]
                self._queue.pop(h, None)
                self._cur.pop(h, None)
                self._shown.pop(h, None)
                continue
            graph["nodes"][h] = {**n, "state": "freed", "_freed_at": t}
            graph["edges"].extend(edges)
        keep = graph["nodes"]
        graph["edges"] = sorted({e for e in graph["edges"] if e[0] in keep and e[1] in keep})
        busy = bool(self._freed) or bool(self._queue)
        for h, n in keep.items():
            st = self._state_of(h, n["state"], now)
            if st == "freed" and "_freed_at" not in n:
                n = keep[h] = {**n, "state": "freed", "_freed_at": self._cur[h][1]}
                self._freed.setdefault(h, (n, [e for e in graph["edges"] if h in e[:2]],
                                           self._cur[h][1]))
                busy = True
            elif st != n["state"]:
                n = keep[h] = {**n, "state": st}
            if self._shown.get(h) != st:
                self._shown[h] = st
                self.state_log.append((time.time(), h, st))
            if h in self._cur:
                busy = True
        n_obj = sum(1 for n in keep.values() if n["kind"] == "object")
        collapsed = len(keep) > self.collapse_at
        shown = graph_model.collapse(graph, self.collapse_at) if collapsed else graph
        self._shown_graph = shown
        self._draw(shown, now)
        self.set_data(self._export(shown, collapsed, n_obj, len(keep) - n_obj))
        self._summary(shown, collapsed, n_obj, len(keep) - n_obj)
        if busy:
            self.wake(0.15)

    def _export(self, g: dict, collapsed: bool, n_obj: int, n_task: int) -> dict:
        nodes = []
        for n in g["nodes"].values():
            row = {"id": n["id"], "kind": n["kind"], "state": n["state"],
                   "size": n.get("size"), "name": n["name"], "band": n["band"]}
            if collapsed:
                row.update(count=n["count"], states=dict(n["states"]))
            nodes.append(row)
        counts = g.get("edge_counts", {})
        edges = [{"src": s, "dst": d, "kind": k, **({"count": counts[(s, d, k)]}
                                                     if counts else {})}
                 for s, d, k in g["edges"]]
        return {"nodes": nodes, "edges": edges, "collapsed": collapsed,
                "objects": n_obj, "tasks": n_task, "selected": self.selected}

    # -- drawing -----------------------------------------------------------------------
    def _draw(self, g: dict, now: float) -> None:
        nodes = g["nodes"]
        ids = sorted(nodes, key=lambda h: self._order.get(h, 0))
        structure = (self.group_by, tuple(ids), tuple(g["edges"]),
                     tuple(sorted((h, nodes[h]["band"]) for h in ids)))
        cols = self._columns(ids, nodes, now)
        with plots.batch(self.plot):
            if structure != self._structure:
                self._structure = structure
                self._layout(g, ids, cols)
            else:
                patch = {k: [(i, v) for i, (v, old) in enumerate(zip(
                    cols[k], self.nodes_source.data[k], strict=False)) if v != old]
                    for k in ("colour", "alpha", "state", "name", "label", "px", "loff",
                              "held_txt", "size_txt", "where_txt")}
                patch = {k: v for k, v in patch.items() if v}
                if patch:
                    self.nodes_source.patch(patch)
                ealpha = self._edge_alpha(g, now)
                if list(self.edges_source.data["alpha"]) != ealpha:
                    self.edges_source.data = {**self.edges_source.data, "alpha": ealpha}
        if self.selected is not None and self.selected not in nodes and \
                not self.selected.startswith("group:"):
            theme.set_html(self.details_html, graph_details.gone(self.selected))

    def _columns(self, ids: list, nodes: dict, now: float) -> dict:
        labels = len(ids) <= LABELS_MAX
        cols: dict = {k: [] for k in ("colour", "alpha", "state", "name", "label", "px", "loff",
                                      "marker", "kind", "size_txt", "made_txt", "where_txt",
                                      "held_txt")}
        for h in ids:
            n = nodes[h]
            st = n["state"]
            cols["colour"].append(COLOURS.get(st, "#8c8c8c"))
            alpha = 0.85
            if st == "freed":
                age = time.monotonic() - n.get("_freed_at", time.monotonic())
                alpha = round(max(0.1, 0.7 * (1 - age / FADE)), 2)
            elif st == "pending":
                alpha = 0.5
            cols["alpha"].append(alpha)
            cols["state"].append(st)
            cols["name"].append(n["name"])
            cols["label"].append(_cut(label_of(n), 22) if labels else "")
            px = node_px(n)
            cols["px"].append(px)
            cols["loff"].append(-(px / 2 + 1))
            cols["marker"].append("square" if n["kind"].startswith("task") else "circle")
            cols["kind"].append(n["kind"].replace("_", " "))
            cols["size_txt"].append(graph_details.size_text(n))
            cols["made_txt"].append(graph_details.made_text(n))
            cols["where_txt"].append(", ".join(
                self._band_names.get(w, f"node {w[:8]}") for w in n.get("where") or ()))
            cols["held_txt"].append(graph_details.held_text(n))
        return cols

    def _edge_alpha(self, g: dict, now: float) -> list:
        nodes = g["nodes"]
        out = []
        for s, d, _k in g["edges"]:
            a = 0.7
            for h in (s, d):
                if nodes[h]["state"] == "freed":
                    age = time.monotonic() - nodes[h].get("_freed_at", time.monotonic())
                    a = min(a, round(max(0.05, 0.6 * (1 - age / FADE)), 2))
            out.append(a)
        return out

    def _layout(self, g: dict, ids: list, cols: dict) -> None:
        hint = {b: i for i, b in enumerate(sorted({n["band"] for n in g["nodes"].values()}))}
        hint.update(self._order)
        pos = graph_model.layout(g, hint)
        self._ids = ids
        xs = [pos[h][0] for h in ids]
        ys = [pos[h][1] for h in ids]
        data = {"index": ids, "x": xs, "y": ys, **cols}
        counts = g.get("edge_counts", {})
        edata: dict = {k: [] for k in ("start", "end", "xs", "ys", "colour", "width", "dash",
                                       "kind")}
        for s, d, k in g["edges"]:
            ex, ey = curve(pos[s], pos[d])
            edata["start"].append(s)
            edata["end"].append(d)
            edata["xs"].append(ex)
            edata["ys"].append(ey)
            edata["colour"].append(EDGE_COLOURS[k])
            c = counts.get((s, d, k), 1)
            edata["width"].append(round(min(4.5, 1.2 + math.log10(c)), 2))
            edata["dash"].append("dashed" if k == "contains" else "solid")
            edata["kind"].append(k)
        edata["alpha"] = self._edge_alpha(g, time.monotonic())
        bands = g.get("bands", {})
        lo, hi = g.get("columns", (0, 0))
        bd: dict = {k: [] for k in ("left", "right", "top", "bottom", "label", "lx", "ly",
                                    "fill")}
        for b, (top, height) in bands.items():
            if not b:
                continue
            bd["left"].append(lo - 0.55)
            bd["right"].append(hi + 0.55)
            bd["top"].append(-top + 0.75)
            bd["bottom"].append(-(top + height - 1) - 0.5)
            bd["label"].append(self._band_label(b))
            bd["lx"].append(lo - 0.5)
            bd["ly"].append(-top + 0.72)
            bd["fill"].append("#4e79a7" if "died" not in self._band_label(b) else "#e15759")
        self.renderer.layout_provider.graph_layout = {h: pos[h] for h in ids}
        self.nodes_source.data = data
        self.edges_source.data = edata
        self.band_source.data = bd
        rows = max((t + h for t, h in bands.values()), default=1)
        p = self.plot
        p.height = int(max(220, min(640, Y_PX * rows + 50)))
        p.x_range.update(start=lo - 0.6, end=hi + 0.6)
        p.y_range.update(start=-(rows - 1) - 0.6, end=0.8)
        self.labels.visible = len(ids) <= LABELS_MAX
        if self.selected in self._ids:
            self.nodes_source.selected.indices = [self._ids.index(self.selected)]
        elif self.nodes_source.selected.indices:
            self.nodes_source.selected.indices = []

    def _band_label(self, band: str) -> str:
        if band.startswith("node "):
            return self._band_names.get(band[5:], band)
        return band

    def _summary(self, g: dict, collapsed: bool, n_obj: int, n_task: int) -> None:
        if not g["nodes"]:
            what = ("the refs you asked for are gone (freed)" if self.roots else
                    "no refs yet: <code>refbook.put(x)</code> or call a remote function, "
                    "and its refs and tasks show here")
            theme.set_html(self.notice, theme.notice(what))
            self.body.layout.display = "none"
        else:
            if "rb-notice" in self.notice.value and "rb-error" not in self.notice.value:
                self.notice.value = ""
            self.body.layout.display = "flex"
        nb = sum((n.get("size") or 0) for n in g["nodes"].values())
        text = (f"{n_obj:,} object{'s' if n_obj != 1 else ''} ({fmt_bytes(nb)}), "
                f"{n_task:,} task{'s' if n_task != 1 else ''}")
        if self.roots:
            text += " &middot; the refs asked for, with their lineage"
        if collapsed:
            text += (f" &middot; grouped by function and call site ({n_obj + n_task:,} "
                     f"nodes)")
        theme.set_html(self.header, theme.header(self.title, text))

    def close_widgets(self) -> None:
        super().close_widgets()
        for name in ("plot_pane", "legend_html", "group_pick", "details_html",
                     "details_box", "body"):
            w = getattr(self, name, None)
            if w is not None:
                w.close()


CSS = """
.refbook-view .rb-graph-legend { line-height: 1.9; }
.refbook-view .rb-graph-legend .rb-chip { margin-right: 2px; }
.refbook-view .rb-graph-title { margin: 4px 0; font-size: var(--jp-ui-font-size2, 14px); }
.refbook-view table.rb-details th { width: 70px; border-bottom: none;
  color: var(--jp-ui-font-color2, #555); font-weight: normal; vertical-align: top; }
.refbook-view table.rb-details td { border-bottom: none; word-break: break-word; }
.refbook-view ul.rb-why { margin: 2px 0; padding-left: 16px; }
.refbook-view ul.rb-why li { margin: 2px 0; }
"""

TOOLTIP = """<div style="max-width:320px"><b>@name</b> <i>@kind</i> &middot; @state
<br>@size_txt<br>@made_txt<br>@where_txt<br>@held_txt</div>"""


def curve(a: tuple, b: tuple, n: int = 9) -> tuple[list, list]:
    """An S-shaped cubic from ``a`` to ``b``, leaving and arriving horizontally."""
    (x0, y0), (x1, y1) = a, b
    dx = (x1 - x0) / 2 if x1 != x0 else 0.5
    c0, c1 = (x0 + dx, y0), (x1 - dx, y1)
    xs, ys = [], []
    for i in range(n):
        t = i / (n - 1)
        u = 1 - t
        xs.append(round(u**3 * x0 + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t**3 * x1, 3))
        ys.append(round(u**3 * y0 + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t**3 * y1, 3))
    return xs, ys


def legend() -> str:
    chips = "".join(
        f'<span class="rb-chip" style="background:{COLOURS[s]}">{s}</span> '
        for s in LEGEND)
    return (f'<div class="rb-graph-legend">{chips}</div><div class="rb-muted">'
            f'&#9679; object, sized by bytes &middot; &#9632; task &middot; left to right: '
            f'arguments, task, outputs &middot; dashed line: the value contains the ref '
            f'&middot; click a node for details</div>')


def band_names(nodes: list) -> dict:
    """``{node id: "node 1a2b3c4d (head)"}`` (and ``(died)``), by the full id and its
    first 8 characters."""
    out = {}
    for n in nodes:
        nid = n["node_id"]
        label = f"node {nid[:8]}" + (" (head)" if n.get("is_head") else "") + \
            ("" if n.get("alive", True) else " (died)")
        out[nid] = out[nid[:8]] = label
    return out


def resolve_refs(refs) -> set | None:
    """The object ids ``refs`` names: None (this notebook's refs), a ref, an object id,
    a notebook variable name, or a list of those.  Keeps no ref."""
    if refs is None:
        return None
    from .. import ObjectRef

    def is_ref(x) -> bool:
        return isinstance(x, ObjectRef)
    if is_ref(refs) or isinstance(refs, str):
        refs = [refs]
    try:
        items = list(refs)
    except TypeError:
        raise TypeError(f"object_graph(refs=...) takes refs, object ids or notebook "
                        f"variable names (or a list of them), not "
                        f"{type(refs).__name__}") from None
    ids: set = set()
    names: list = []
    for r in items:
        if is_ref(r):
            ids.add(r.hex())
        elif isinstance(r, str) and len(r) in (32, 40) and _is_hex(r):
            ids.add(r.lower())
        elif isinstance(r, str) and r.isidentifier():
            names.append(r)
        else:
            raise TypeError(f"object_graph(refs=...): {r!r} is not a ref, an object id "
                            f"or a notebook variable name")
    if names:
        known: dict = {}
        for o in state.objects():
            for nm in o.get("names") or ():
                known.setdefault(nm, o["object_id"])
        ns = _user_ns()
        missing = []
        for nm in names:
            held = [known[nm]] if nm in known else \
                [r.hex() for r in refs_in(ns.get(nm), ObjectRef)]
            if not held:
                missing.append(nm)
            ids.update(held)
        if missing:
            raise ValueError(
                f"object_graph: no ref is held by notebook variable(s) "
                f"{', '.join(missing)} (variables holding refs: "
                f"{', '.join(sorted(known)) or 'none'})")
    return ids


def refs_in(v, ref_type) -> list:
    """The refs ``v`` is or holds at its top level (a list, tuple, set or dict)."""
    if isinstance(v, ref_type):
        return [v]
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, (list, tuple, set, frozenset)):
        return [x for x in v if isinstance(x, ref_type)]
    return []


def _user_ns() -> dict:
    """The notebook's variables, when this runs in IPython (else none)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    ip = get_ipython()
    return getattr(ip, "user_ns", None) or {}


def label_of(n: dict) -> str:
    """What is written under a node: a notebook name, else an object's size (the task
    beside it says what made it), a task's function, a group's name and count."""
    if n["kind"] == "object" and not n.get("names"):
        return fmt_bytes(n["size"]) if n.get("size") is not None else n["name"]
    return n["name"]


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"
