"""Notebook integration: ``%load_ext refbook`` starts (or joins, with REFBOOK_ADDRESS) a
cluster, shows a live summary of it, and adds the ``%%remote``, ``%put``, ``%get`` and
``%refs`` magics.  See session.py for how cells, tasks and output fit together."""

from __future__ import annotations

_session = None     # the NotebookSession while the extension is loaded
_closing = None     # set between %unload_ext and the end of its cell


def load_ipython_extension(ip) -> None:
    import os
    import time

    import refbook

    from .magics import RefbookMagics
    from .session import NotebookSession
    global _session, _closing
    t = time.perf_counter()
    if _closing is not None:            # %reload_ext: keep the cluster and every ref
        _unregister(ip, _closing)
        _closing = None
    if _session is not None:            # loaded already (the refbook kernel): the summary
        show_summary(None)
        return
    if not refbook.is_initialized():
        refbook.init(address=os.environ.get("REFBOOK_ADDRESS") or None, log_to_stderr=False)
    ip.register_magics(RefbookMagics)
    ip.user_ns.setdefault("refbook", refbook)
    _session = NotebookSession(ip)
    _name_cells_in_tracebacks(ip)
    _wrap_load_ext(ip)
    from .tracebacks import Installed
    _session.tracebacks = Installed(ip)
    show_summary(time.perf_counter() - t)


def show_summary(took: float | None) -> None:
    """The cluster's summary: a live line in a notebook, a line of text elsewhere."""
    from .. import state
    from ..units import fmt_bytes
    if _session is not None and _session.widgets:
        from ..widgets.live import ClusterLine
        line = ClusterLine()
        line.refresh()
        line.show()
        _session.refresher.add(line, slow=True)
        return
    nodes = [n for n in state.nodes() if n["alive"]]
    cpus = sum(n["resources"].get("CPU", 0) for n in nodes)
    store = sum(n["store"]["capacity"] for n in nodes)
    print(f"refbook: {len(nodes)} node(s), {cpus:g} CPU(s), object store "
          f"{fmt_bytes(store)}" + ("" if took is None else f", ready in {took:.2f} s"))


def _wrap_load_ext(ip) -> None:
    """``%load_ext refbook`` when it is loaded already (the "Python 3 (refbook)" kernel
    loads it at start): show the summary rather than "already loaded"."""
    magics = ip.magics_manager.magics["line"]
    original = magics.get("load_ext")
    if original is None or getattr(original, "_refbook_original", None) is not None:
        return

    def load_ext(line):
        if line.strip() == "refbook" and _session is not None and \
                "refbook" in ip.extension_manager.loaded:
            show_summary(None)
            return None
        return original(line)

    load_ext._refbook_original = original
    load_ext.__doc__ = original.__doc__
    magics["load_ext"] = load_ext


def _unwrap_load_ext(ip) -> None:
    magics = ip.magics_manager.magics["line"]
    original = getattr(magics.get("load_ext"), "_refbook_original", None)
    if original is not None:
        magics["load_ext"] = original


def unload_ipython_extension(ip) -> None:
    """Shut the cluster down when the cell that unloaded the extension ends, unless the
    extension is loaded again meanwhile (``%reload_ext``: refs must stay valid)."""
    global _session, _closing
    if _session is not None:
        _session.close()
        if getattr(_session, "tracebacks", None) is not None:
            _session.tracebacks.remove()
        _session = None
    from ..runtime.api.frontend import set_filename_display
    set_filename_display(None)
    _unwrap_load_ext(ip)
    magics = ip.magics_manager.magics           # %%remote must not start a new cluster
    magics["cell"].pop("remote", None)
    for name in ("put", "get", "refs", "refbook"):
        magics["line"].pop(name, None)

    def finish(result=None):
        global _closing
        _unregister(ip, finish)
        if _closing is finish:
            _closing = None
            import refbook
            refbook.shutdown()

    _closing = finish
    ip.events.register("post_run_cell", finish)


def _unregister(ip, fn) -> None:
    try:
        ip.events.unregister("post_run_cell", fn)
    except ValueError:
        pass


def _name_cells_in_tracebacks(ip) -> None:
    """A function defined in a cell and run remotely names the cell in its traceback
    (``File "<cell 3>", line 2``), not the kernel's temporary file for it."""
    from ..runtime.api.frontend import set_filename_display

    def display(filename: str) -> str | None:
        try:
            name = ip.compile.format_code_name(filename)
        except Exception:  # noqa: BLE001 - an IPython without it: keep the name
            return None
        if name and name[0] == "Cell" and name[1].startswith("In["):
            return f"<cell {name[1][3:-1]}>"
        return None
    set_filename_display(display)
