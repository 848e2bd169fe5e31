"""Notebook integration: ``%load_ext refbook`` starts (or joins) a cluster and adds the
``%%remote``, ``%put``, ``%get`` and ``%refs`` magics.  Built on the public API only."""

from __future__ import annotations


def load_ipython_extension(ip) -> None:
    import time

    import refbook

    from .magics import RefbookMagics
    t = time.perf_counter()
    ctx = refbook.init(log_to_stderr=False)
    ip.register_magics(RefbookMagics)
    ip.user_ns.setdefault("refbook", refbook)
    ip.events.register("post_run_cell", _forget_refs_in_history)
    nodes = refbook.nodes()
    cpus = sum(n["resources"].get("CPU", 0) for n in nodes if n["alive"])
    print(f"refbook: {len(nodes)} node(s), {cpus:g} CPU(s), object store "
          f"{ctx.object_store_memory / 2**30:.2f} GiB, ready in "
          f"{time.perf_counter() - t:.2f} s")


def _forget_refs_in_history(result=None) -> None:
    """IPython keeps every displayed value in ``Out`` and ``_``/``__``/``___``: refs
    there would keep their objects alive after ``del x``.  Keep the history, drop the
    refs from it (a ref's display already showed what it was)."""
    from IPython import get_ipython

    import refbook
    ip = get_ipython()
    if ip is None:
        return
    for r in (result, getattr(ip, "last_execution_result", None)):
        if isinstance(getattr(r, "result", None), refbook.ObjectRef):
            r.result = None          # IPython keeps the last cell's value here too
    out = ip.user_ns.get("Out", {})
    for k in [k for k, v in out.items() if isinstance(v, refbook.ObjectRef)]:
        out[k] = f"<ObjectRef {out[k].hex()}, not kept in the history>"
    ns = ip.user_ns
    for name in [n for n in ns if n in ("_", "__", "___") or
                 (n.startswith("_") and n[1:].isdigit())]:      # _, __, ___, _12 ...
        if isinstance(ns.get(name), refbook.ObjectRef):
            ns[name] = None
    dh = getattr(ip, "displayhook", None)
    for name in ("_", "__", "___"):
        if dh is not None and isinstance(getattr(dh, name, None), refbook.ObjectRef):
            setattr(dh, name, None)


def unload_ipython_extension(ip) -> None:
    import refbook
    try:
        ip.events.unregister("post_run_cell", _forget_refs_in_history)
    except ValueError:
        pass
    refbook.shutdown()
