"""How ``refbook memory`` and ``refbook events`` lay out what the state API says (the
object table, the event log) for a terminal.  The command line reads the cluster with
the state API's own code (``snapshots.objects_of``, ``events.Collector``), through a
probe: it is not a driver."""

from __future__ import annotations

import time
from collections.abc import Callable

from .units import fmt_bytes

Ask = Callable[..., object]


# -- the object table --------------------------------------------------------------------
GROUPS = ("call_site", "node", "owner")


def process_name(addr: str | None) -> str:
    """``worker 3 @1a2b3c4d`` for a worker's address, ``driver @1a2b3c4d`` for a driver's."""
    if not addr:
        return "-"
    last = addr.rstrip("/").rsplit("/", 1)[-1]
    node = addr.split("/n-", 1)[1].split("/", 1)[0] if "/n-" in addr else ""
    at = f" @{node}" if node else ""
    if last.startswith("w-") and last.count("-") >= 2:
        return f"worker {last.split('-')[1]}{at}"
    if last.startswith("d-"):
        return f"driver{at}"
    return last + at


def _group_key(o: dict, by: str) -> str:
    if by == "node":
        return (o.get("nodes") or ["(in no store)"])[0]
    if by == "owner":
        return process_name(o.get("owner"))
    return o.get(by) or "(unknown)"


def _refs(o: dict) -> str:
    borrowers = o.get("borrowers") or []
    return f"{o.get('local_refs', 0)}/{o.get('submitted_refs', 0)}/{len(borrowers)}"


def _made_by(o: dict) -> str:
    if o.get("made_by"):
        return str(o["made_by"])
    if o.get("task") is None:
        return "put"
    return f"task #{int(o['task'][16:32] or '0', 16)}"     # its owner's n-th task


def alive_because(o: dict) -> str:
    """Why the object is still alive, in short: what holds it (``state.why_alive`` gives
    every path)."""
    why = []
    if o.get("names"):
        why.append("variable " + ", ".join(o["names"]))
    if o.get("contained_in"):
        more = len(o["contained_in"]) - 1
        why.append(f"inside {o['contained_in'][0]}" + (f" +{more}" if more else ""))
    if o.get("submitted_refs"):
        why.append(f"{o['submitted_refs']} pending task(s)")
    if o.get("borrowers"):
        why.append(f"{len(o['borrowers'])} borrower(s)")
    if o.get("lineage"):
        why.append(f"lineage of {len(o['lineage'])} task(s)")
    if o.get("local_refs") and not o.get("names"):
        why.append(f"a ref in {process_name(o.get('owner'))}")
    return "; ".join(why) or "-"


def memory_table(objects: list[dict], group_by: str = "node") -> list[str]:
    """The lines ``refbook memory`` prints: the objects grouped by ``group_by``, the
    biggest groups first, then a summary line.  A field that this cluster does not
    record is replaced by the owner, and a line says so."""
    lines = []
    by = group_by
    if by not in ("node", "owner") and objects and not any(by in o for o in objects):
        lines.append(f"(objects carry no {by!r} in this version of refbook: grouped by "
                     f"owner instead)")
        by = "owner"
    groups: dict[str, list[dict]] = {}
    for o in objects:
        groups.setdefault(_group_key(o, by), []).append(o)
    head = (f"  {'OBJECT ID':<42}{'SIZE':>10}  {'STATE':<15}{'NODE(S)':<19}"
            f"{'REFS L/S/B':<12}{'MADE BY':<22}")
    head += "ALIVE BECAUSE"
    for key, objs in sorted(groups.items(),
                            key=lambda kv: -sum(o.get("size") or 0 for o in kv[1])):
        size = sum(o.get("size") or 0 for o in objs)
        lines.append(f"--- {by} {key}: {len(objs)} object(s), {fmt_bytes(size)} ---")
        lines.append(head)
        for o in sorted(objs, key=lambda o: -(o.get("size") or 0)):
            state = o.get("state", "?") + (" (spilled)" if o.get("spilled")
                                           and o.get("state") != "spilled" else "")
            nodes = ",".join(o.get("nodes") or []) or "-"
            size_s = fmt_bytes(o["size"]) if o.get("size") is not None else "-"
            line = (f"  {o['object_id']:<42}{size_s:>10}  {state:<15}"
                    f"{nodes[:18]:<19}{_refs(o):<12}{_made_by(o)[:21]:<22}")
            line += alive_because(o)
            lines.append(line.rstrip())
        lines.append("")
    total = sum(o.get("size") or 0 for o in objects)
    spilled = [o for o in objects if o.get("spilled")]
    lines.append(f"{len(objects)} object(s), {fmt_bytes(total)} in all; {len(spilled)} "
                 f"spilled ({fmt_bytes(sum(o.get('size') or 0 for o in spilled))}).  "
                 f"REFS: local refs / refs held by pending tasks / borrowing processes; "
                 f"state.why_alive(object id) gives every path that holds one")
    return lines


# -- the event log ------------------------------------------------------------------------
_SHOWN_FIRST = ("name", "task", "task_id", "object_ids", "object_id", "node", "dead_node",
                "bytes", "size", "reason")


def event_line(e: dict) -> str:
    """``12:03:04.512  1a2b3c4d  spill           bytes=10 MiB objects=3 (ab12…)``"""
    ms = int(e["time"] * 1000) % 1000
    t = time.strftime("%H:%M:%S", time.localtime(e["time"])) + f".{ms:03d}"
    rest = {k: v for k, v in e.items()
            if k not in ("time", "kind", "node_id", "seq", "process")}
    parts = []
    for k in sorted(rest, key=lambda k: (_SHOWN_FIRST.index(k) if k in _SHOWN_FIRST
                                         else len(_SHOWN_FIRST), k)):
        v = rest[k]
        if v is None:
            continue
        if k in ("owner", "worker", "process") and isinstance(v, str):
            v = process_name(v).replace(" ", "-")
        elif k in ("bytes", "size", "rss", "used", "total") and isinstance(v, (int, float)):
            v = fmt_bytes(v)
        elif k == "object_ids" and isinstance(v, list):
            v = f"{len(v)} ({', '.join(x[:8] for x in v[:3])}{', ...' if len(v) > 3 else ''})"
            k = "objects"
        elif isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, str) and len(v) > 60:
            v = v[:57] + "..."
        parts.append(f"{k}={v}")
    seq = f"{e['seq']:>6}  " if "seq" in e else ""
    return f"{seq}{t}  {str(e.get('node_id', '-')):<9} {e['kind']:<22}{' '.join(parts)}"
