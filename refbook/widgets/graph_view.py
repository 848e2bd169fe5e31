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

import itertools
import threading
import time
from collections import deque
from itertools import islice

import ipywidgets

from .. import state
from . import graph_details, graph_model, graph_plot, theme
from .base import RESEND, LiveView, log
from .graph_details import CSS, band_names, legend
from .graph_draw import GraphDrawing
from .graph_plot import FADE
from .graph_refs import resolve_refs

DWELL = 0.6                 # s: every state a node passes through shows this long
DWELLS = {"lost": 1.2}      # and these longer: a class sees the red
MIN_SNAP_GAP = 0.2          # s between snapshots, at least
LINEAGE_ROOTS = 20          # refs asked for: state.lineage() for each, up to this many
MAX_PROVISIONAL = 300       # nodes drawn from events before a snapshot has them, at
                            # most (beyond, a flood: the next snapshot shows them)
MAX_FADING = 200            # freed nodes fading out at once, at most (a flood of tasks
                            # frees thousands a second: the oldest go without fading)
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
CLUSTER_CHANGES = ("node_added", "node_died", "worker_died")   # may move anything
COLOURS = graph_model.COLOURS


class ObjectGraphView(GraphDrawing, LiveView):
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
        self._queued_at: dict = {}               # id -> when its first queued state came
        self._shown: dict = {}                   # id -> state shown last
        self._snap_at = 0.0
        self._snap_gap = MIN_SNAP_GAP
        self._snapper: threading.Thread | None = None   # takes snapshots (_take)
        self._fresh = None                       # its last result, not applied yet
        self._new: dict = {}                     # id -> when an event made it
        self._dirty = True
        self._order: dict = {}                   # first-seen order, for stable layouts
        self._seen = itertools.count()           # of what is in the graph, or fading
        self._structure = None
        self._ids: list = []
        self._band_names: dict = {}
        p, g, self.labels, self.band_source = graph_plot.make_plot()
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
        self.plot_pane = None            # made once the graph is drawn (_make_pane)
        self._changed = False            # the plot changed since it was last sent whole
        self.body = ipywidgets.HBox([self.details_box],
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

    def _make_pane(self) -> None:
        """The plot as a widget, made after the first drawing so that it is sent whole
        once, with the graph in it (jupyter_bokeh sends the whole document when a
        widget is made, then only changes)."""
        self.plot_pane = self.pane(self.plot)
        self.plot_pane.layout = ipywidgets.Layout(flex="1 1 auto", min_width="0",
                                                  width="auto")
        self.body.children = [self.plot_pane, self.details_box]
        self.plot.document.on_change(lambda _event: setattr(self, "_changed", True))

    def shown(self) -> None:
        """Displayed: send the plot whole only if it changed since it was (it is sent
        again a little later all the same, as every view does)."""
        if self.stopped is not None or self.plot_pane is None:
            return
        if self._changed:
            self._changed = False
            super().shown()
        else:
            now = time.monotonic()
            self._resend_at = [now + d for d in RESEND]

    def _resend(self) -> None:
        self._changed = False
        super()._resend()

    def wake(self, delay: float) -> None:
        """Have the timer call :meth:`update` again within ``delay`` seconds."""
        self._next_poll = min(self._next_poll, time.monotonic() + delay)

    # -- updating ----------------------------------------------------------------------
    def update(self, events: list, poll: bool) -> None:
        now = time.monotonic()
        nodes = self._graph["nodes"]
        mine = self.roots is None          # this notebook's refs: what it owns, and more
        for e in events:
            k = e["kind"]
            h = e.get("object_id") or e.get("task_id")
            known = h in nodes or h in self._freed            # what the graph shows
            if k in STRUCTURAL:
                ours = mine and e.get("process") == self._me
                # another driver's flood of tasks changes nothing here: no snapshot
                if ours or known or k in CLUSTER_CHANGES:
                    self._dirty = True
                if ours and k in ("object_created", "task_submitted"):
                    self._provisional(e)      # (not a kind that changes a state)
            st = EVENT_STATE.get(k)
            if st and h and known:
                self._push(h, st, now)
        if poll and now - self._snap_at >= self.poll_s:
            self._dirty = True
        if self._dirty:
            if now - self._snap_at >= self._snap_gap:
                self._snapshot()
            else:
                self.wake(self._snap_gap - (now - self._snap_at))
        self._apply()
        self._show(time.monotonic())

    def _provisional(self, e: dict) -> None:
        """A new object or task of this notebook's, shown at once from its event; the
        next snapshot says what made it and adds its edges."""
        nodes = self._graph["nodes"]
        h = e.get("object_id") or e.get("task_id")
        if h in nodes or h in self._freed or len(self._new) >= MAX_PROVISIONAL:
            return
        nodes[h] = graph_model.event_node(e, self._me, self.group_by)
        self._place(h)
        self._new[h] = time.monotonic()

    def _place(self, h: str) -> None:
        """Give ``h`` its place in the order nodes are laid out in (first seen first)."""
        if h not in self._order:
            self._order[h] = next(self._seen)

    def _push(self, h: str, st: str, now: float) -> None:
        """An event says ``h`` is now ``st``: show it next, for at least DWELL."""
        q = self._queue.get(h)
        if q is None:
            q = self._queue[h] = deque()
            self._queued_at[h] = now
        last = q[-1] if q else self._cur.get(h, (None, 0))[0]
        if st != last:
            q.append(st)
        if st == "freed":
            self._dirty = True

    def _snapshot(self) -> None:
        """Take a snapshot on the snapshot thread (one at a time), so that events keep
        changing states while it is taken; :meth:`_apply` takes its result in."""
        if self._snapper is not None and self._snapper.is_alive():
            return
        self._dirty = False
        self._snap_at = time.monotonic()
        if not self.snapshot_times:        # the first: before the view is first shown
            self._take()
            return
        self._snapper = threading.Thread(target=self._take, name="refbook-graph-snapshot",
                                         daemon=True)
        self._snapper.start()

    def _take(self) -> None:
        t = time.monotonic()
        try:
            objs, tks = state.objects(), state.tasks()
            nodes = state.nodes()
            graph = graph_model.select(objs, tks, self._me, self.roots, self.group_by)
            if self.roots and len(self.roots) <= LINEAGE_ROOTS:
                for r in self.roots:
                    graph_model.merge_lineage(graph, state.lineage(r), self.group_by)
        except Exception:  # noqa: BLE001 - the cluster went away: the ticker stops us
            log.debug("graph snapshot failed", exc_info=True)
            self._dirty = True
            return
        took = time.monotonic() - t
        self.snapshot_times.append(took)
        self._snap_gap = max(MIN_SNAP_GAP, 3 * took)
        self._fresh = (graph, band_names(nodes), t)
        self.wake(0)

    def _apply(self) -> None:
        """Take in the last snapshot: what went since the one before is freed and fades
        out, unless its event came after this snapshot began."""
        fresh, self._fresh = self._fresh, None
        if fresh is None:
            return
        graph, self._band_names, began = fresh
        done = time.monotonic()
        touching = None
        for h, n in self._graph["nodes"].items():
            if h in graph["nodes"] or h in self._freed:
                continue
            if self._new.get(h, 0) >= began:       # too new for this snapshot
                graph["nodes"][h] = n
                continue
            if touching is None:
                touching = graph_model.edges_by_node(self._graph["edges"])
            self._freed[h] = (n, touching.get(h, []), done)
        self._trim_fading()
        for h in list(self._freed):
            if h in graph["nodes"] and self._shown.get(h) != "freed":
                del self._freed[h]            # back (a rebuilt object, a late answer)
        for h, n in graph["nodes"].items():   # a lost object stays in its node's box
            before = self._graph["nodes"].get(h)  # until a new copy is made elsewhere
            if before is not None and not n.get("where") and n["kind"] == "object":
                n["band"] = before["band"]
        self._new = {h: t for h, t in self._new.items() if t >= began}
        # states queued for what this snapshot does not show (gone before it began,
        # or never this notebook's): nothing will show them
        for h in [h for h, t in self._queued_at.items() if t < began and
                  h not in graph["nodes"] and h not in self._freed]:
            self._queue.pop(h, None)
            self._cur.pop(h, None)
            del self._queued_at[h]
        for h in graph["nodes"]:
            self._place(h)
        self._order = {h: i for h, i in self._order.items()
                       if h in graph["nodes"] or h in self._freed}
        self._graph = graph

    def _trim_fading(self) -> None:
        """At most ``MAX_FADING`` freed nodes fade at once: the oldest go now."""
        extra = len(self._freed) - MAX_FADING
        if extra > 0:
            for h in list(islice(self._freed, extra)):     # oldest first (insertion)
                del self._freed[h]
                self._forget(h)

    def _forget(self, h: str) -> None:
        self._queue.pop(h, None)
        self._cur.pop(h, None)
        self._shown.pop(h, None)
        self._queued_at.pop(h, None)

    def _state_of(self, h: str, snap_state: str, now: float) -> str:
        """What to show for ``h``: the states events gave it, each for DWELL, then the
        snapshot's; freed stays freed."""
        q = self._queue.get(h)
        cur = self._cur.get(h)
        if q and (cur is None or now - cur[1] >= DWELLS.get(cur[0], DWELL)):
            cur = self._cur[h] = (q.popleft(), now)
            if not q:
                del self._queue[h]
        if cur is None:
            return snap_state
        if cur[0] == "freed" or h in self._queue or \
                now - cur[1] < DWELLS.get(cur[0], DWELL):
            return cur[0]
        del self._cur[h]
        return snap_state

    def _show(self, now: float) -> None:
        graph = {"nodes": dict(self._graph["nodes"]), "edges": list(self._graph["edges"])}
        for h, (n, edges, t) in list(self._freed.items()):
            if time.monotonic() - t > FADE:
                del self._freed[h]
                self._forget(h)
                continue
            graph["nodes"][h] = {**n, "state": "freed", "_freed_at": t}
            graph["edges"].extend(edges)
        keep = graph["nodes"]
        graph["edges"] = sorted({e for e in graph["edges"] if e[0] in keep and e[1] in keep})
        busy = bool(self._freed) or bool(self._queue)
        queue, cur, shown_before = self._queue, self._cur, self._shown
        wall = time.time()
        touching = None                           # node -> its edges, made if needed
        for h, n in keep.items():
            if h not in queue and h not in cur:   # most nodes: the snapshot's state
                st = n["state"]
            else:
                st = self._state_of(h, n["state"], now)
                if st == "freed" and "_freed_at" not in n:
                    if touching is None:
                        touching = graph_model.edges_by_node(graph["edges"])
                    n = keep[h] = {**n, "state": "freed", "_freed_at": cur[h][1]}
                    self._freed.setdefault(h, (n, touching.get(h, []), cur[h][1]))
                elif st != n["state"]:
                    n = keep[h] = {**n, "state": st}
                busy = busy or h in cur
            if shown_before.get(h) != st:
                shown_before[h] = st
                self.state_log.append((wall, h, st))
        self._trim_fading()
        n_obj = sum(1 for n in keep.values() if n["kind"] == "object")
        collapsed = len(keep) > self.collapse_at
        shown = graph_model.collapse(graph, self.collapse_at) if collapsed else graph
        self._shown_graph = shown
        self._draw(shown, now)
        if self.plot_pane is None:
            self._make_pane()
        self.set_data(graph_model.export(shown, collapsed, n_obj, len(keep) - n_obj,
                                        self.selected))
        self._summary(shown, collapsed, n_obj, len(keep) - n_obj)
        if busy:
            self.wake(0.15)

    def close_widgets(self) -> None:
        super().close_widgets()
        snapper = getattr(self, "_snapper", None)
        if snapper is not None:
            snapper.join(timeout=5)
        for name in ("plot_pane", "legend_html", "group_pick", "details_html",
                     "details_box", "body"):
            w = getattr(self, name, None)
            if w is not None:
                w.close()
