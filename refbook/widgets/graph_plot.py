"""How the object graph is drawn with Bokeh: the figure (band boxes, the graph
renderer with scatter markers for nodes and curves for edges, labels, hover, tap) and
the columns of its sources.  Canvas cannot read JupyterLab's CSS variables, so the
colours are mid-tones that read on the light and the dark theme alike."""

from __future__ import annotations

import math
import time

from . import graph_details, plots
from .graph_details import TOOLTIP, label_of
from .graph_model import COLOURS, curve

FADE = 2.0                  # s: a freed node fades out over this, then goes
LABELS_MAX = 250            # nodes drawn with their names under them, at most
SELECTED = "#17becf"         # the clicked node and its edges: a colour no state has
EDGE_COLOURS = {"arg": "#8a8a8a", "return": "#8a8a8a", "contains": "#b07aa1"}


def node_px(n: dict) -> float:
    """A node's diameter on screen: objects by bytes, groups by count, tasks fixed."""
    if n["kind"].endswith("_group"):
        return min(30.0, 12 + 5 * math.log10(max(1, n["count"])))
    if n["kind"] == "task":
        return 13.0
    size = n.get("size") or 0
    return max(9.0, min(32.0, 10 + 4.5 * math.log10(max(size, 1000) / 1000)))


def make_plot():
    """The figure: band boxes with their labels, the graph renderer (nodes as scatter
    markers, edges as curves), node labels, hover and tap.  Returns ``(figure,
    graph renderer, node labels, band source)``."""
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
    p = plots.figure(height=300, width=760, x_range=Range1d(-1, 1),
                     y_range=Range1d(-1, 1), toolbar_location="right", tools="",
                     x_axis_location=None, y_axis_location=None,
                     min_border_right=10, min_border_top=6)
    p.min_border_left = 10
    p.axis.visible = False
    p.grid.visible = False
    wheel = WheelZoomTool()
    p.add_tools(PanTool(), wheel, BoxZoomTool(), ResetTool())
    p.toolbar.autohide = True
    p.toolbar.logo = None
    band_source = ColumnDataSource({k: [] for k in
                                         ("left", "right", "top", "bottom", "label",
                                          "lx", "ly", "fill")})
    p.quad(left="left", right="right", top="top", bottom="bottom",
           source=band_source, fill_color="fill", fill_alpha=0.08,
           line_color=plots.GRID, line_alpha=0.25)
    p.add_layout(LabelSet(x="lx", y="ly", text="label", source=band_source,
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
        **common, "line_color": SELECTED, "line_alpha": 1})
    g.node_renderer.nonselection_glyph = Scatter(line_width=1, **common)
    g.node_renderer.hover_glyph = Scatter(line_width=3, **{**common,
                                                            "line_color": plots.TEXT})
    g.edge_renderer.data_source = ColumnDataSource(
        {k: [] for k in ("start", "end", "xs", "ys", "colour", "width", "dash", "kind",
                         "alpha")})
    ecommon = dict(line_color="colour", line_width="width", line_dash="dash")
    g.edge_renderer.glyph = MultiLine(line_alpha="alpha", **ecommon)
    g.edge_renderer.selection_glyph = MultiLine(line_alpha=1, **{
        **ecommon, "line_color": SELECTED})
    g.edge_renderer.nonselection_glyph = MultiLine(line_alpha="alpha", **ecommon)
    g.edge_renderer.hover_glyph = MultiLine(line_alpha=1, **{
        **ecommon, "line_color": plots.TEXT})
    g.layout_provider = StaticLayoutProvider(graph_layout={})
    g.selection_policy = NodesAndLinkedEdges()
    g.inspection_policy = NodesAndLinkedEdges()
    p.renderers.append(g)
    labels = LabelSet(x="x", y="y", text="label", source=g.node_renderer.data_source,
                           text_color=plots.TEXT, text_font_size="11px",
                           text_align="center", text_baseline="top", y_offset="loff")
    p.add_layout(labels)
    p.add_tools(HoverTool(renderers=[g], tooltips=TOOLTIP),
                TapTool(renderers=[g]))
    return p, g, labels, band_source


def node_columns(ids: list, nodes: dict, band_names: dict) -> dict:
    """The node source's columns that change with states (all but index, x, y)."""
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
        cols["label"].append(graph_details.cut(label_of(n), 22) if labels else "")
        px = node_px(n)
        cols["px"].append(px)
        cols["loff"].append(-(px / 2 + 1))
        cols["marker"].append("square" if n["kind"].startswith("task") else "circle")
        cols["kind"].append(n["kind"].replace("_", " "))
        cols["size_txt"].append(graph_details.size_text(n))
        cols["made_txt"].append(graph_details.made_text(n))
        cols["where_txt"].append(", ".join(
            band_names.get(w, f"node {w[:8]}") for w in n.get("where") or ()))
        cols["held_txt"].append(graph_details.held_text(n))
    return cols


def edge_alpha(g: dict) -> list:
    """Edges fade with a freed end."""
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


def edge_columns(g: dict, pos: dict) -> dict:
    """The edge source: a curve per edge, wider for more edges between two groups."""
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
    edata["alpha"] = edge_alpha(g)
    return edata


def band_columns(bands: dict, lo: float, hi: float, label) -> dict:
    """The band source: a box per band (a dead node's tinted red), labelled."""
    bd: dict = {k: [] for k in ("left", "right", "top", "bottom", "label", "lx", "ly",
                                "fill")}
    for b, (top, height) in bands.items():
        if not b:
            continue
        text = label(b)
        bd["left"].append(lo - 0.55)
        bd["right"].append(hi + 0.55)
        bd["top"].append(-top + 0.75)
        bd["bottom"].append(-(top + height - 1) - 0.5)
        bd["label"].append(text)
        bd["lx"].append(lo - 0.5)
        bd["ly"].append(-top + 0.72)
        bd["fill"].append("#e15759" if "(died)" in text else "#4e79a7")
    return bd
