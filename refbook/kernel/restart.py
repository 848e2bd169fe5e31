"""``%refbook restart --object-store-memory 100MB ...``: a new cluster with new options
(``refbook.init`` on a running cluster changes nothing, and says so)."""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

import refbook

from ..units import SIZE_HELP, fmt_bytes, parse_bytes


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _resources(text: str) -> dict:
    out = {}
    for kv in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = kv.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--resources takes k=v pairs with numbers, not {kv!r}") from None
    return out


def parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%refbook restart", add_help=False,
                            description="Restart the notebook's cluster with new options.")
    p.add_argument("--num-cpus", type=int, help="CPUs (workers) of the new cluster")
    p.add_argument("--object-store-memory", type=_size, metavar="SIZE",
                   help=f"shared memory for objects: {SIZE_HELP}")
    p.add_argument("--spill-dir", metavar="PATH", help="where objects spill to disk")
    p.add_argument("--resources", type=_resources, metavar="K=V,...",
                   help="custom resources, e.g. gpu=1,far=2")
    p.add_argument("--memory-monitor-threshold", type=float, metavar="FRACTION",
                   help="machine memory use (0-1] above which a task is killed and retried")
    return p


def restart(ip, line: str) -> None:
    from ..runtime.api import frontend
    from . import _session
    args = parser().parse_argstring(line)
    opts = {k: v for k, v in vars(args).items() if v is not None}
    if frontend.joined_cluster():
        raise UsageError("this notebook joined a cluster that `refbook start` runs; "
                         "restart that cluster with `refbook stop` and `refbook start` "
                         "and its options")
    stale = sorted(n for n, v in ip.user_ns.items()
                   if isinstance(v, refbook.ObjectRef) and not n.startswith("_"))
    refbook.shutdown()
    ctx = refbook.init(log_to_stderr=False, **opts)
    if _session is not None:
        _session.attach_new_core()
    print(f"refbook restarted: {ctx.num_cpus} CPU{'s' if ctx.num_cpus != 1 else ''}, "
          f"object store {fmt_bytes(ctx.object_store_memory)}")
    if stale:
        names = ", ".join(stale[:10]) + (" ..." if len(stale) > 10 else "")
        print(f"refs of the old cluster, which can no longer be read: {names} "
              f"(run the cells that made them again)")
