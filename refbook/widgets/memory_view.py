"""``widgets.memory()``: per node, what the object store holds (used, pinned, spilled,
capacity, with the spill threshold marked), the last minutes of it, and the largest
objects with what holds each of them (a notebook variable, a containing object, a
borrower, a pending task, kept lineage)."""

from __future__ import annotations

import html
import math
import time

import ipywidgets

from .. import state
from ..units import fmt_bytes
from . import plots, theme
from .base import LiveView

HISTORY = 300               # timeline points kept (one a second: five minutes)
LARGEST = 8                 # objects listed
OBJECTS_S = 1.0             # state.objects() asked at most this often
KINDS = ("object_created", "object_freed", "object_spilled", "object_restored",
         "object_lost", "object_reconstructed", "node_added", "node_died")


def node_label(n: dict) -> str:
    return f"{n['node_id'][:8]}{' (head)' if n.get('is_head') else ''}"


def node_row(n: dict) -> dict:
    s = n["store"]
    return {"node_id": n["node_id"], "capacity": s["capacity"], "used": s["used"],
            "pinned": s.get("pinned", 0), "spilled_bytes": s.get("spilled_bytes", 0),
            "spill_threshold": s.get("spill_threshold"), "num_objects": s["num_objects"],
            "is_head": bool(n.get("is_head"))}


def holders(o: dict) -> list[str]:
    """What keeps an object alive, in words, most telling first."""
    out = [f"variable {n}" for n in o.get("names") or ()]
    out += [f"inside object {c[:12]}" for c in o.get("contained_in") or ()]
    out += [f"borrowed by {_process(b)}" for b in o.get("borrowers") or ()]
    if o.get("submitted_refs"):
        out.append(f"{o['submitted_refs']} pending task(s)")
    if o.get("lineage"):
        out.append("lineage (kept to rebuild)")
    if o.get("local_refs") and not o.get("names"):
        out.append(f"a ref in {_process(o.get('owner'))}")
    return out


def _process(address) -> str:
    """A process by the last part of its address: ``driver d-...``, ``worker w-...``."""
    tail = str(address or "?").rsplit("/", 1)[-1]
    kind = {"d": "driver ", "w": "worker "}.get(tail[:1], "")
    return kind + tail


class MemoryView(LiveView):
    """Per node: used / pinned / spilled / capacity, over time; the largest objects."""

    kinds = KINDS
    poll_s = 1.0
    title = "Memory"

    def empty(self) -> dict:
        return {"nodes": [], "timeline": [], "largest": []}

    def build(self) -> list:
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
        from bokeh.transform import dodge
        self._objects_at = 0.0
        self._stale = True          # objects changed since the table was made
        self._timeline: list = []
        cols = ("node", "capacity", "used", "pinned", "spilled", "threshold", "info")
        self.bar_source = ColumnDataSource({k: [] for k in cols})
        bars = plots.figure(height=110, y_range=FactorRange(), x_range=Range1d(0, 1),
                            x_axis_label="bytes in the node's object store")
        plots.bytes_axis(bars.xaxis[0])
        bars.ygrid.grid_line_alpha = 0
        src = self.bar_source
        cap = bars.hbar(y="node", left=0, right="capacity", height=0.55, source=src,
                        fill_color=theme.FREE, fill_alpha=0.12, line_color=theme.FREE,
                        line_alpha=0.6, legend_label="capacity")
        bars.hbar(y="node", left=0, right="used", height=0.55, source=src,
                  color=theme.USED, legend_label="used")
        bars.hbar(y="node", left=0, right="pinned", height=0.55, source=src,
                  fill_alpha=0, line_alpha=0, hatch_pattern="/", hatch_color=theme.PINNED,
                  hatch_alpha=0.9, hatch_scale=8, legend_label="pinned (in use)")
        bars.hbar(y=dodge("node", -0.36, range=bars.y_range), left=0, right="spilled",
                  height=0.12, source=src, color=theme.SPILLED, legend_label="spilled (disk)")
        bars.scatter(x="threshold", y="node", source=src, marker="dash", angle=math.pi / 2,
                     size=26, line_color=theme.THRESHOLD, line_width=2,
                     legend_label="spill threshold")
        bars.add_tools(HoverTool(renderers=[cap], tooltips="@info"))
        plots.style_legend(bars)
        self.bars = bars
        self.time_source = ColumnDataSource({"t": [], "used": [], "spilled": []})
        tl = plots.figure(height=170, x_axis_type="datetime", x_range=Range1d(0, 1),
                          y_axis_label="bytes, all nodes")
        tl.varea(x="t", y1=0, y2="used", source=self.time_source, fill_color=theme.USED,
                 fill_alpha=0.25)
        tl.line(x="t", y="used", source=self.time_source, color=theme.USED, line_width=2,
                legend_label="used")
        tl.line(x="t", y="spilled", source=self.time_source, color=theme.SPILLED,
                line_width=2, legend_label="spilled")
        tl.y_range.start = 0
        plots.bytes_axis(tl.yaxis[0])
        plots.time_axis(tl.xaxis[0])
        plots.style_legend(tl)
        self.timeline = tl
        self.bars_pane = self.pane(bars)
        self.timeline_pane = self.pane(tl)
        self.objects_html = ipywidgets.HTML()
        return [ipywidgets.HTML(theme.section("per node")), self.bars_pane,
                ipywidgets.HTML(theme.section("last minutes")), self.timeline_pane,
                ipywidgets.HTML(theme.section("largest objects")), self.objects_html]

    def update(self, events: list, poll: bool) -> None:
        nodes = [n for n in state.nodes() if n["alive"]]
        now = time.time()
        rows = [node_row(n) for n in nodes]
        data = dict(self._data)        # replaced key by key: no deep copy
        data["nodes"] = rows
        if poll or not data["timeline"]:
            point = {"time": now, "used": sum(r["used"] for r in rows),
                     "spilled_bytes": sum(r["spilled_bytes"] for r in rows)}
            self._timeline = (self._timeline + [point])[-HISTORY:]
            data["timeline"] = list(self._timeline)
        else:
            point = None
        if any(e["kind"].startswith("object_") for e in events):
            self._stale = True
        # the table asks every process: not while events wait to be shown, unless
        # they keep coming for a while
        since = time.monotonic() - self._objects_at
        due = (self._stale and since >= OBJECTS_S) or since >= 5 * OBJECTS_S
        if due and (not events or since >= 3 * OBJECTS_S):
            self._objects_at, self._stale = time.monotonic(), False
            data["largest"] = self._largest()
        self.set_data(data)
        self._show(nodes, rows, point, data)

    def _largest(self) -> list:
        objs = sorted(state.objects(), key=lambda o: o.get("size") or 0, reverse=True)
        return [{"object_id": o["object_id"], "size": o.get("size") or 0,
                 "state": o.get("state"), "nodes": list(o.get("nodes") or ()),
                 "made_by": o.get("made_by"), "call_site": o.get("call_site"),
                 "names": list(o.get("names") or ()), "held_by": holders(o)}
                for o in objs[:LARGEST]]

    def _show(self, nodes: list, rows: list, point: dict | None, data: dict) -> None:
        labels = [node_label(n) for n in nodes]
        top = max([max(r["capacity"], r["spilled_bytes"]) for r in rows] + [1])
        cols = {
            "node": labels,
            "capacity": [r["capacity"] for r in rows],
            "used": [r["used"] for r in rows],
            "pinned": [r["pinned"] for r in rows],
            "spilled": [r["spilled_bytes"] for r in rows],
            "threshold": [r["capacity"] * (r["spill_threshold"] or 0) for r in rows],
            "info": [self._info(r) for r in rows],
        }
        with plots.batch(self.bars):
            if list(self.bars.y_range.factors) != labels[::-1]:
                self.bars.y_range.factors = labels[::-1]
                self.bars.height = 90 + 46 * max(1, len(labels))
            end = top * 1.04
            if self.bars.x_range.end != end:
                self.bars.x_range.end = end
            plots.set_source(self.bar_source, cols)
        if point is not None:
            with plots.batch(self.timeline):
                # the whole history, not a stream of new points: a reloaded page got
                # the streamed points twice (drawn as a line back through time)
                tl = self._timeline
                plots.set_source(self.time_source, {
                    "t": [q["time"] * 1000 for q in tl], "used": [q["used"] for q in tl],
                    "spilled": [q["spilled_bytes"] for q in tl]})
                first = self._timeline[0]["time"]
                end = point["time"] + 1     # at least the last minute, at most five
                self.timeline.x_range.update(start=max(first, end - 60 * 5) * 1000
                                             if end - first > 60 else (end - 60) * 1000,
                                             end=end * 1000)
        used = sum(r["used"] for r in rows)
        cap = sum(r["capacity"] for r in rows)
        spilled = sum(r["spilled_bytes"] for r in rows)
        summary = (f"{len(rows)} node{'s' if len(rows) != 1 else ''} &middot; "
                   f"{fmt_bytes(used)} of {fmt_bytes(cap)} used"
                   + (f" &middot; {fmt_bytes(spilled)} spilled to disk" if spilled else ""))
        theme.set_html(self.header, theme.header(self.title, summary))
        theme.set_html(self.objects_html, self._objects_table(data["largest"]))

    @staticmethod
    def _info(r: dict) -> str:
        thr = r["spill_threshold"]
        return (f"node {r['node_id']}: {fmt_bytes(r['used'])} used "
                f"({fmt_bytes(r['pinned'])} pinned), {fmt_bytes(r['spilled_bytes'])} "
                f"spilled, capacity {fmt_bytes(r['capacity'])}"
                + (f", spills above {thr:.0%}" if thr else "")
                + f", {r['num_objects']} objects")

    @staticmethod
    def _objects_table(largest: list) -> str:
        rows = [[theme.short(o["object_id"]), fmt_bytes(o["size"]),
                 html.escape(o["state"] or ""), html.escape(", ".join(n[:8] for n in o["nodes"])),
                 html.escape(o["made_by"] or ""),
                 f'<span class="rb-muted">{html.escape(o["call_site"] or "")}</span>',
                 html.escape("; ".join(o["held_by"]) or "nothing (being freed)")]
                for o in largest]
        return theme.table([("object", False), ("size", True), ("state", False),
                            ("node", False), ("made by", False), ("where", False),
                            ("held by", False)], rows,
                           "no objects in the cluster: put() one or run a task")

    def close_widgets(self) -> None:
        super().close_widgets()
        for name in ("bars_pane", "timeline_pane", "objects_html"):
            w = getattr(self, name, None)
            if w is not None:
                w.close()
