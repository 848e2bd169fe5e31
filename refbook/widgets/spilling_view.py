"""``widgets.spilling()``: bytes spilled to disk and restored over time, the objects
involved, and the spill files they went to (from the ``object_spilled`` and
``object_restored`` events, and each node's store counters)."""

from __future__ import annotations

import html
import time

import ipywidgets

from .. import state
from ..units import fmt_bytes
from . import plots, theme
from .base import LiveView

KINDS = ("object_spilled", "object_restored", "spill_failed")
KEEP = 1000                 # events kept in .data
SHOWN = 10                  # rows of the objects table
POINTS = 1000               # points of the plot (the last ones)
STEPS = 200                 # events a batch plots one by one


def _bytes(e: dict) -> int:
    return int(e.get("bytes") or e.get("size") or 0)


class SpillingView(LiveView):
    """What went to disk and came back, when, and where it lies."""

    kinds = KINDS
    since = 0                # what this driver still holds: spilling already done shows
    poll_s = 1.0
    title = "Spilling"

    def empty(self) -> dict:
        return {"spilled_bytes": 0, "restored_bytes": 0, "events": [], "files": [],
                "on_disk_bytes": 0, "spill_files": 0}

    def build(self) -> list:
        from bokeh.models import ColumnDataSource
        self._files: dict = {}              # file -> {"file", "node_id", "objects", "bytes"}
        self._events: list = []
        self._spilled = self._restored = 0
        self._plotted = False
        self._last_t = 0.0                 # the time of the last point (s)
        self._points: list = []            # (time s, spilled, restored) plotted
        self.source = ColumnDataSource({"t": [], "spilled": [], "restored": []})
        p = plots.figure(height=200, x_axis_type="datetime",
                         y_axis_label="bytes, since the cluster started")
        p.line(x="t", y="spilled", source=self.source, line_width=2,
               color=theme.SPILLED, legend_label="spilled to disk")
        p.line(x="t", y="restored", source=self.source, line_width=2,
               color=theme.RESTORED, legend_label="restored from disk")
        p.y_range.start = 0
        plots.bytes_axis(p.yaxis[0])
        plots.time_axis(p.xaxis[0])
        plots.style_legend(p)
        self.plot = p
        self.plot_pane = self.pane(p)
        self.objects_html = ipywidgets.HTML()
        self.files_html = ipywidgets.HTML()
        return [ipywidgets.HTML(theme.section("over time")), self.plot_pane,
                ipywidgets.HTML(theme.section("objects involved (newest first)")),
                self.objects_html, ipywidgets.HTML(theme.section("spill files")),
                self.files_html]

    def update(self, events: list, poll: bool) -> None:
        fresh = [e for e in events if e["kind"] in KINDS]
        for e in fresh:
            if e["kind"] == "object_spilled":
                self._spilled += _bytes(e)
                f = e.get("file")
                if f is not None:        # a file's number on its node
                    key = (e.get("node_id"), f)
                    rec = self._files.setdefault(key, {"file": f, "node_id": e.get("node_id"),
                                                       "objects": 0, "bytes": 0})
                    rec["objects"] += 1
                    rec["bytes"] += _bytes(e)
            elif e["kind"] == "object_restored":
                self._restored += _bytes(e)
        self._events = (self._events + fresh)[-KEEP:]
        nodes = [n for n in state.nodes() if n["alive"]] if poll or fresh else None
        data = dict(self._data)        # replaced key by key: no deep copy
        if nodes is not None:
            data["on_disk_bytes"] = sum(n["store"].get("spilled_bytes", 0) for n in nodes)
            data["spill_files"] = sum(n["store"].get("spill_files", 0) for n in nodes)
        data.update(spilled_bytes=self._spilled, restored_bytes=self._restored,
                    events=list(self._events), files=[dict(f) for f in self._files.values()])
        self.set_data(data)
        self._plot(fresh, poll)
        self._show(data)

    def _plot(self, fresh: list, poll: bool) -> None:
        """Add the totals to the plot as steps, one per event (per batch beyond
        ``STEPS`` events), in time order, starting from zero; a poll extends them to
        now."""
        moved = [e for e in fresh if e["kind"] != "spill_failed"]
        if not moved and not (poll and self._spilled):
            return
        s = self._spilled - sum(_bytes(e) for e in moved if e["kind"] == "object_spilled")
        r = self._restored - sum(_bytes(e) for e in moved if e["kind"] == "object_restored")
        t0 = self._last_t
        pts = []
        if not self._plotted and moved:
            pts.append((moved[0]["time"] - 0.001, s, r))
        if len(moved) > STEPS:          # one step for the whole batch
            moved = [dict(moved[-1], bytes=0)]
            s, r = self._spilled, self._restored
        for e in moved:
            t = max(e["time"], t0)
            pts.append((t, s, r))
            if e["kind"] == "object_spilled":
                s += _bytes(e)
            elif e["kind"] == "object_restored":
                r += _bytes(e)
            pts.append((t, s, r))
            t0 = t
        if not moved:
            pts.append((max(time.time(), t0), s, r))
        self._plotted = True
        self._last_t = pts[-1][0]
        # the whole line, not a stream of new points: a reloaded page got the streamed
        # points twice (drawn as a line back through time)
        self._points = (self._points + pts)[-POINTS:]
        plots.set_source(self.source, {"t": [p[0] * 1000 for p in self._points],
                                       "spilled": [p[1] for p in self._points],
                                       "restored": [p[2] for p in self._points]})

    def _show(self, data: dict) -> None:
        on_disk = data["on_disk_bytes"]
        summary = (f"{fmt_bytes(data['spilled_bytes'])} spilled, "
                   f"{fmt_bytes(data['restored_bytes'])} restored &middot; "
                   f"{fmt_bytes(on_disk)} on disk now in {data['spill_files']} file"
                   f"{'s' if data['spill_files'] != 1 else ''}")
        theme.set_html(self.header, theme.header(self.title, summary))
        rows = []
        for e in reversed(data["events"][-SHOWN:]):
            what = theme.chip(e["kind"])
            rows.append([theme.clock(e["time"]), what, theme.short(e.get("object_id")),
                         fmt_bytes(_bytes(e)), theme.short(e.get("node_id"), 8),
                         _file(e.get("file"))])
        theme.set_html(self.objects_html, theme.table(
            [("time", False), ("what", False), ("object", False), ("bytes", True),
             ("node", False), ("file", False)], rows,
            "nothing spilled yet: the store spills its oldest unpinned objects when it is "
            "fuller than its spill threshold (try refbook.init(object_store_memory=...))"))
        files = sorted(data["files"], key=lambda f: -f["bytes"])[:SHOWN]
        theme.set_html(self.files_html, theme.table(
            [("file", False), ("node", False), ("objects", True), ("bytes written", True)],
            [[_file(f["file"]), theme.short(f["node_id"], 8),
              str(f["objects"]), fmt_bytes(f["bytes"])] for f in files],
            "no spill files written"))

    def close_widgets(self) -> None:
        super().close_widgets()
        for name in ("plot_pane", "objects_html", "files_html"):
            w = getattr(self, name, None)
            if w is not None:
                w.close()


def _file(f) -> str:
    """A spill file: its number on its node (or its path's last parts)."""
    if f is None:
        return ""
    if isinstance(f, int):
        return f"file {f}"
    return f'<span class="rb-id">{html.escape("/".join(str(f).split("/")[-2:]))}</span>'

