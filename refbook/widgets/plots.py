"""Bokeh plots in a view, through ``jupyter_bokeh``: a plot is a ``BokehModel`` widget,
so it travels over the kernel's own comm, with no Bokeh server, no port, no proxy.

BokehJS must be on the page before a ``BokehModel`` renders (its view calls
``window.Bokeh.require`` when it is made).  jupyter_bokeh 4's labextension does not
bundle BokehJS (212 kB, without it), and ``output_notebook()`` fetches it from a CDN
(or inlines 4 MB into the notebook).  :func:`bokehjs` sends the package's own
``bokeh.min.js`` (1.3 MB) once per kernel in a hidden ``Output`` widget that every
view shows first: JupyterLab renders an Output widget's outputs as trusted, so its
``application/javascript`` runs as it renders, adds the script to the page's head
unless this BokehJS is there already, and nothing is fetched from anywhere.  Widget
state is not saved in the notebook by default, so the notebook file stays small.

The plots have transparent backgrounds and mid-tone text, grid and colours, so that
they read on JupyterLab's light and dark themes alike (canvas cannot read ``--jp-*``).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import ipywidgets

log = logging.getLogger("refbook.widgets")

_loader: ipywidgets.Output | None = None
TEXT = "#8a8a8a"            # axis labels and ticks, on light and dark alike
GRID = "#8a8a8a"


def _bokeh_source() -> tuple[str, str]:
    import bokeh
    from bokeh.util.paths import bokehjs_path
    path = Path(bokehjs_path()) / "js" / "bokeh.min.js"
    return bokeh.__version__, path.read_text(encoding="utf-8")


def loader_js() -> str:
    """JavaScript that adds this package's BokehJS to the page unless it is there."""
    version, src = _bokeh_source()
    return ("(function(){var B=window.Bokeh;"
            f"if(B!==undefined&&B.version==={json.dumps(version)})return;"
            "var s=document.createElement('script');s.setAttribute('data-refbook','bokehjs');"
            f"s.text={json.dumps(src)};document.head.appendChild(s);}})();")


def bokehjs() -> ipywidgets.Output:
    """The hidden widget that puts BokehJS on the page (one per kernel, shared)."""
    global _loader
    if _loader is None or getattr(_loader, "comm", None) is None:
        out = ipywidgets.Output(layout=ipywidgets.Layout(display="none"))
        out.add_class("refbook-bokehjs")
        out.outputs = ({"output_type": "display_data", "metadata": {},
                        "data": {"application/javascript": loader_js(),
                                 "text/plain": "(BokehJS for refbook's views)"}},)
        _loader = out
    return _loader


def figure(height: int = 200, width: int = 640, **kw):
    """A figure styled for both themes: transparent, grey text, faint grid, no toolbar
    (hover still works)."""
    from bokeh.plotting import figure as bk_figure
    kw.setdefault("toolbar_location", None)
    p = bk_figure(height=height, width=width, background_fill_alpha=0,
                  border_fill_alpha=0, outline_line_alpha=0, min_border_left=60, **kw)
    for ax in (p.xaxis, p.yaxis):
        ax.axis_line_color = GRID
        ax.axis_line_alpha = 0.5
        ax.major_tick_line_color = GRID
        ax.minor_tick_line_color = None
        ax.major_label_text_color = TEXT
        ax.axis_label_text_color = TEXT
        ax.axis_label_text_font_style = "normal"
        ax.major_label_text_font_size = "11px"
    p.grid.grid_line_color = GRID
    p.grid.grid_line_alpha = 0.2
    p.title.text_color = TEXT
    return p


def style_legend(p, outside: bool = True) -> None:
    """A quiet legend, above the plot (where it covers nothing)."""
    for lg in list(p.legend):
        if outside and lg in p.center:
            p.center.remove(lg)
            p.add_layout(lg, "above")
        lg.background_fill_alpha = 0
        lg.border_line_alpha = 0
        lg.label_text_color = TEXT
        lg.label_text_font_size = "11px"
        lg.location = "top_left"
        lg.padding = 2
        lg.margin = 0
        lg.orientation = "horizontal"
        lg.glyph_width = 14
        lg.spacing = 12


def bytes_axis(axis) -> None:
    from bokeh.models import NumeralTickFormatter
    axis.formatter = NumeralTickFormatter(format="0.[0] b")


def time_axis(axis) -> None:
    from bokeh.models import DatetimeTickFormatter
    fine = "%H:%M:%S.%3N"
    axis.ticker.desired_num_ticks = 5
    axis.formatter = DatetimeTickFormatter(microseconds=fine, milliseconds=fine,
                                           seconds="%H:%M:%S", minsec="%H:%M:%S",
                                           minutes="%H:%M", hourmin="%H:%M")


_Plot = None


def pane(model) -> ipywidgets.DOMWidget:
    """A Bokeh model as a widget (jupyter_bokeh), which may be closed twice (by its
    view, then by the garbage collector: jupyter_bokeh's own close fails the second
    time).

    jupyter_bokeh sends a change as a patch to the views that exist in the browser;
    a view made later starts from the document as it was when the widget was made (or
    last resent).  So a live view calls ``resend()`` when it is displayed, and again
    a little later, once the browser has made its views (see ``base.RESEND``); and a
    page that loads the widgets anew (reloaded) gets the document as it is now."""
    global _Plot
    if _Plot is None:
        from jupyter_bokeh import BokehModel

        class Plot(BokehModel):
            def close(self) -> None:
                try:
                    super().close()
                except KeyError:
                    pass

            def get_state(self, key=None, drop_defaults=False):
                """The full state (a frontend loading every widget: a page opened
                or reloaded) holds the document as it is now, not as first sent."""
                if key is None and getattr(self, "_model", None) is not None:
                    try:       # set quietly: this very state is what gets sent
                        self._trait_values["render_bundle"] = \
                            self._model_to_traits(self._model)
                    except RuntimeError:   # changed meanwhile: the last one will do
                        pass
                return super().get_state(key=key, drop_defaults=drop_defaults)

            def _document_patched(self, event) -> None:
                held = getattr(self._document, "_refbook_batch", None)
                if held is not None and event.setter is not self:
                    held.append((self, event))       # sent by batch(), in one patch
                    return
                super()._document_patched(event)

            def send_patch(self, events: list) -> None:
                """Send ``events`` as one PATCH-DOC: the browser applies them together,
                so it never draws a state half changed."""
                from bokeh.protocol import Protocol
                msg = Protocol().create("PATCH-DOC", events)
                for part in (msg.header_json, msg.metadata_json, msg.content_json):
                    self.send({"msg": "patch", "payload": part})
                for buffer in msg.buffers:
                    self.send({"msg": "patch", "payload": json.dumps(buffer.ref)})
                    self.send({"msg": "patch"}, [buffer.to_bytes()])

            def resend(self) -> None:
                """Send the whole document again: a view made in the browser after
                changes were sent (which only views that exist receive) starts from
                what the plot shows now."""
                self.render_bundle = self._model_to_traits(self._model)
        _Plot = Plot
    w = _Plot(model)
    w.add_class("refbook-plot")
    return w


@contextmanager
def batch(model):
    """Send the changes made inside as one patch of the model's document.

    Bokeh's own hold still triggers its held events one by one, and jupyter_bokeh sends
    each as a patch of its own, so the browser could draw between them (edges to
    nodes not placed yet); here the plot widgets collect them and send them at once."""
    doc = model.document
    if doc is None:
        yield
        return
    if getattr(doc, "_refbook_batch", None) is not None:     # nested: the outer sends
        yield
        return
    doc._refbook_batch = []
    doc.hold("combine")
    try:
        yield
    finally:
        try:
            doc.unhold()
        finally:
            held, doc._refbook_batch = doc._refbook_batch, None
            by_pane: dict = {}
            for w, event in held:
                by_pane.setdefault(id(w), (w, []))[1].append(event)
            for w, events in by_pane.values():
                try:
                    w.send_patch(events)
                except Exception:  # noqa: BLE001 - a closed widget: nothing to show
                    log.debug("a plot's patch was not sent", exc_info=True)


def set_source(source, data: dict) -> None:
    """Replace a ColumnDataSource's columns, unless they are the same already."""
    if dict(source.data) != data:
        source.data = data

