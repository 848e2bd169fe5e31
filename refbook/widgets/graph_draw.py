"""How the object graph view (``graph_view.py``) draws a graph into its Bokeh plot: a
new layout when the graph's structure changed, else a patch of what changed (states,
fading), in one PATCH-DOC (``plots.batch``); and the header's summary.  A mixin of
:class:`~refbook.widgets.graph_view.ObjectGraphView`, which decides *what* to show."""

from __future__ import annotations

from ..units import fmt_bytes
from . import graph_details, graph_model, graph_plot, plots, theme
from .graph_plot import LABELS_MAX

Y_PX = 54                    # pixels per row, before the plot is capped
MAX_HEIGHT = 640             # the plot's height at most (px)
LABEL_SQUEEZE = 1.6          # rows squeezed more than this: no labels


class GraphDrawing:
    """Drawing for ObjectGraphView: it sets ``plot``, ``renderer``, ``nodes_source``,
    ``edges_source``, ``band_source``, ``labels``, ``_order``, ``_band_names``."""

    def _draw(self, g: dict, now: float) -> None:
        nodes = g["nodes"]
        ids = sorted(nodes, key=lambda h: self._order.get(h, 0))
        structure = (self.group_by, tuple(ids), tuple(g["edges"]),
                     tuple(sorted((h, nodes[h]["band"]) for h in ids)))
        cols = graph_plot.node_columns(ids, nodes, self._band_names)
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
                ealpha = graph_plot.edge_alpha(g)
                if list(self.edges_source.data["alpha"]) != ealpha:
                    self.edges_source.data = {**self.edges_source.data, "alpha": ealpha}
        if self.selected is not None and self.selected not in nodes and \
                not self.selected.startswith("group:"):
            theme.set_html(self.details_html, graph_details.gone(self.selected))

    def _layout(self, g: dict, ids: list, cols: dict) -> None:
        hint = {b: i for i, b in enumerate(sorted({n["band"] for n in g["nodes"].values()}))}
        hint.update(self._order)
        pos = graph_model.layout(g, hint)
        self._ids = ids
        xs = [pos[h][0] for h in ids]
        ys = [pos[h][1] for h in ids]
        data = {"index": ids, "x": xs, "y": ys, **cols}
        edata = graph_plot.edge_columns(g, pos)
        bands = g.get("bands", {})
        lo, hi = g.get("columns", (0, 0))
        bd = graph_plot.band_columns(bands, lo, hi, self._band_label)
        self.renderer.layout_provider.graph_layout = {h: pos[h] for h in ids}
        self.nodes_source.data = data
        self.edges_source.data = edata
        self.band_source.data = bd
        rows = max((t + h for t, h in bands.values()), default=1)
        p = self.plot
        p.height = int(max(220, min(MAX_HEIGHT, Y_PX * rows + 50)))
        p.x_range.update(start=lo - 0.6, end=hi + 0.6)
        p.y_range.update(start=-(rows - 1) - 0.6, end=0.8)
        # labels only while the rows have room for them (squeezed, they overlap: a
        # shuffle's pieces); the names are still on hover and in the details
        self.labels.visible = len(ids) <= LABELS_MAX and \
            Y_PX * rows + 50 <= MAX_HEIGHT * LABEL_SQUEEZE
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
            text += " &middot; the refs asked for and their lineage"
        if collapsed:
            text += " &middot; grouped by function and call site"
        theme.set_html(self.header, theme.header(self.title, text))
