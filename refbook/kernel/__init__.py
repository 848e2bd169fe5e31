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
    nodes = refbook.nodes()
    cpus = sum(n["resources"].get("CPU", 0) for n in nodes if n["alive"])
    print(f"refbook: {len(nodes)} node(s), {cpus:g} CPU(s), object store "
          f"{ctx.object_store_memory / 2**30:.2f} GiB, ready in "
          f"{time.perf_counter() - t:.2f} s")


def unload_ipython_extension(ip) -> None:
    import refbook
    refbook.shutdown()
