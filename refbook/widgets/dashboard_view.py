"""``widgets.dashboard()``: the views in one widget, one tab each.  Each view keeps its
own subscription and its own pace (at most 5 updates a second each); the dashboard
only holds them, and closes them with it."""

from __future__ import annotations

import ipywidgets

from . import theme
from .base import NO_CLUSTER, LiveView


def graph_tab() -> ipywidgets.Widget | None:
    """The object graph of this notebook's refs: the dashboard's first tab, with its
    ``.data`` under ``"object_graph"`` (None: the dashboard shows a note instead)."""
    from .graph_view import ObjectGraphView
    return ObjectGraphView()


class Dashboard(ipywidgets.VBox):
    """Memory, spilling and recovery (and the object graph, when it exists) as tabs."""

    def __init__(self):
        from .memory_view import MemoryView
        from .recovery_view import RecoveryView
        from .spilling_view import SpillingView
        super().__init__(layout=ipywidgets.Layout(width="100%"))
        self.add_class("refbook-view")
        self.add_class("refbook-dashboard")
        self.views: dict[str, LiveView] = {}
        graph = graph_tab()
        if graph is not None:
            self.views["object_graph"] = graph
        self.views.update(memory=MemoryView(), spilling=SpillingView(),
                          recovery=RecoveryView())
        if any(v.stopped == "no cluster" for v in self.views.values()):
            for v in self.views.values():
                v.close()
            self.views = {}
            self.children = [theme.style(), ipywidgets.HTML(theme.header("refbook", "")),
                             ipywidgets.HTML(theme.notice(NO_CLUSTER))]
            return
        pages = list(self.views.values())
        titles = [k.replace("_", " ").capitalize() for k in self.views]
        if graph is None:
            pages.append(ipywidgets.HTML(theme.notice(
                "the object graph (<code>widgets.object_graph()</code>) comes here; it is "
                "not built yet")))
            titles.append("Object graph")
        self.tabs = ipywidgets.Tab(children=pages, titles=titles)
        self.children = [self.tabs]
        self.tabs.observe(self._on_tab, names="selected_index")
        self._on_tab()
        if graph is not None:           # recovery: "show in the graph" picks the object
            self.views["recovery"].show_in_graph = self.show_in_graph

    def show_in_graph(self, object_id: str) -> None:
        """Bring the object graph to the front with ``object_id`` selected."""
        self.tabs.selected_index = list(self.views).index("object_graph")
        self.views["object_graph"].select(object_id)

    def _on_tab(self, _change=None) -> None:
        """The tabs not in front update seldom (``HIDDEN_S``); the one picked, at once."""
        front = self.tabs.selected_index or 0
        for i, v in enumerate(self.views.values()):
            v.set_hidden(i != front)

    def _repr_mimebundle_(self, **kwargs):
        for v in self.views.values():
            v.shown()
        return super()._repr_mimebundle_(**kwargs)

    @property
    def data(self) -> dict:
        """``{view name: that view's .data}``."""
        return {name: v.data for name, v in self.views.items()}

    @property
    def stopped(self) -> str | None:
        """Why the dashboard stopped updating, or None while it is live."""
        if not self.views:
            return "no cluster"
        whys = [v.stopped for v in self.views.values()]
        return whys[0] if all(whys) else None

    def close(self) -> None:
        for v in self.views.values():
            v.close()
        tabs = getattr(self, "tabs", None)
        if tabs is not None:
            for page in tabs.children:
                page.close()
            tabs.close()
        super().close()
