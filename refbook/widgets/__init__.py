"""What refbook shows in a notebook: live status lines for cells, refs and the cluster
(``live.py``), progress bars for long gets and waits (``progress.py``), and the live
views of API.md §4, each an ``ipywidgets`` box with ``.data`` and ``.close()``, built on
the state API only (``base.py``: subscriptions, at most 5 updates a second, stopping):

- :func:`object_graph` (``graph_view.py``; its model and layout in ``graph_model.py``,
  its details panel in ``graph_details.py``, its drawing in ``graph_draw.py``);
- :func:`memory` (``memory_view.py``), :func:`spilling` (``spilling_view.py``),
  :func:`recovery` (``recovery_view.py``) and :func:`dashboard` (``dashboard_view.py``).

Plots are Bokeh, through ``jupyter_bokeh`` (``plots.py``); colours follow JupyterLab's
theme (``theme.py``).  :func:`figure` and :func:`plot` show a Bokeh plot of your own the
same way."""

from __future__ import annotations


def object_graph(refs=None):
    """Refs and tasks as a live graph, laid out by dependency (arguments, task,
    outputs), coloured by state, sized by bytes, in boxes per node; click a node for
    what made it and what keeps it alive.  ``refs`` None: this notebook's refs;
    otherwise refs, object ids or notebook variable names (or a list of them), with
    their lineage."""
    from .graph_view import ObjectGraphView
    return ObjectGraphView(refs)


def memory():
    """Per node: used / pinned / spilled / capacity (the spill threshold marked), the
    last minutes of it, and the largest objects with what holds them."""
    from .memory_view import MemoryView
    return MemoryView()


def spilling():
    """Bytes spilled and restored over time, the objects involved, the spill files."""
    from .spilling_view import SpillingView
    return SpillingView()


def recovery():
    """Failures (a worker, a node, an OOM kill) and what each caused; on a local
    cluster, buttons to kill a worker, kill a node or add a node."""
    from .recovery_view import RecoveryView
    return RecoveryView()


def dashboard():
    """All the views in one widget, one tab each."""
    from .dashboard_view import Dashboard
    return Dashboard()


def figure(height: int = 300, width: int = 640, **kw):
    """A Bokeh figure styled as the views' plots (transparent, readable on JupyterLab's
    light and dark themes); ``kw`` go to ``bokeh.plotting.figure``."""
    from .plots import figure as _figure
    return _figure(height=height, width=width, **kw)


def plot(fig):
    """A Bokeh figure (or any Bokeh layout) of your own as a widget, shown the way the
    views show theirs: over the kernel's comm, with BokehJS from the installed package,
    so nothing is fetched from the internet and no Bokeh server runs."""
    import ipywidgets

    from .plots import bokehjs, pane
    box = ipywidgets.VBox([bokehjs(), pane(fig)])
    box.add_class("refbook-user-plot")
    return box


__all__ = ["object_graph", "memory", "spilling", "recovery", "dashboard", "figure", "plot"]
