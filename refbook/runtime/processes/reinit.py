"""``init(option=...)`` while a cluster runs: what to tell the user."""

from __future__ import annotations

from ...units import fmt_bytes


def warn_ignored(session, **given) -> None:
    """``init(option=...)`` while a cluster runs changes nothing: say so, and how to
    get the option (a warning, so scripts that call init twice keep working)."""
    now = {"num_cpus": session.num_cpus, "object_store_memory": session.capacity,
           "spill_dir": session.spill_dir, "address": getattr(session, "joined", None),
           "resources": getattr(session, "resources", None),
           "memory_monitor_threshold": getattr(session, "memory_threshold", None),
           "num_nodes": getattr(session, "num_nodes", None)}
    ignored = [k for k, v in given.items()
               if v is not None and (k not in now or v != now[k])]
    if not ignored:
        return
    import warnings
    shown = ", ".join(f"{k}={fmt_bytes(given[k])}" if k == "object_store_memory"
                      else f"{k}={given[k]!r}" for k in ignored)
    flags = " ".join(f"--{k.replace('_', '-')} {_flag_value(k, given[k])}"
                     for k in ignored if k not in ("address", "num_nodes"))
    cpus = session.num_cpus
    warnings.warn(
        f"refbook is already running (object store {fmt_bytes(session.capacity)}, "
        f"{cpus} CPU{'s' if cpus != 1 else ''}), so init({shown}) changes nothing. To "
        f"restart with these options call refbook.shutdown() first (every ref of the "
        f"old cluster becomes unusable); in a notebook: %refbook restart {flags}".rstrip(),
        RuntimeWarning, stacklevel=3)


def _flag_value(name: str, v) -> str:
    if name == "object_store_memory" and isinstance(v, int):
        return f"{v >> 20}MiB" if v % (1 << 20) == 0 else str(v)
    if name == "resources" and isinstance(v, dict):
        return ",".join(f"{k}={n:g}" for k, n in v.items())
    return str(v)
