"""``%refs``: the notebook's refs as a table that fits a notebook's width: short object
ids, owners as "this kernel" or "worker 3 on node a1b2" rather than socket paths."""

from __future__ import annotations

import refbook

from ..runtime.api import frontend
from ..units import fmt_bytes


def short_id(hexid: str) -> str:
    """``9f3e:17`` (the creating process's tag, and its counter) or ``9f3e:17/1`` for a
    task's second return value: unique among the objects of a session."""
    if len(hexid) != 40:
        return hexid[:12]
    tag, counter, index = hexid[:4], int(hexid[16:32], 16), hexid[32:]
    out = f"{tag}:{counter}"
    if index not in ("00000000", "ffffffff"):
        out += f"/{int(index, 16)}"
    return out


def owner_name(addr: str | None, me: str | None) -> str:
    """``this kernel``, ``worker 3 on node a1b2``, ``a driver on node a1b2``."""
    if not addr:
        return "?"
    if addr == me:
        return "this kernel"
    i = addr.rfind("/n-")
    node = addr[i + 3:].split("/", 1)[0] if i >= 0 else None
    proc = addr.rsplit("/", 1)[-1]
    on = f" on node {node}" if node else ""
    if proc.startswith("w-"):
        num = proc.split("-")[1]
        return f"worker {num}{on}" if num.isdigit() else f"a worker{on}"
    if proc.startswith("d-"):
        return f"another driver{on}"
    return f"node {node}" if proc == "nm" and node else proc[:16]


def refs_table(ns: dict, long: bool = False) -> str:
    objs = {o["object_id"]: o for o in refbook.objects()}
    drv = frontend.driver()
    me = drv.me if drv is not None else None
    names: dict[str, list] = {}
    gone = set()          # refs of a cluster that was shut down: their values are gone
    for n, v in ns.items():
        if isinstance(v, refbook.ObjectRef) and not n.startswith("_"):
            names.setdefault(v.hex(), []).append(n)
            if drv is None or not drv.owns(v):
                gone.add(v.hex())
    rows = [(", ".join(ns_names), hexid, objs.get(hexid, {}))
            for hexid, ns_names in names.items()]
    rows += [("(no name)", hexid, o) for hexid, o in objs.items()
             if hexid not in names and o.get("owner") == me]
    if not rows:
        return "no refs"
    table = []
    for label, hexid, o in rows:
        holders = []
        if o.get("local_refs"):
            holders.append(f"{o['local_refs']} ref(s) here")
        if o.get("submitted_refs"):
            holders.append(f"{o['submitted_refs']} pending task(s)")
        for t in o.get("lineage") or ():
            made = [n for x in t["returns"] for n in names.get(x, ())]
            holders.append(f"kept to rebuild {', '.join(made) or t['name']} (lineage)")
        if o.get("borrowers"):
            holders.append(f"{len(o['borrowers'])} borrower(s)")
        size = o.get("size")
        if hexid in gone:
            state, owner = "gone (its cluster was shut down)", "-"
        else:
            state, owner = o.get("state", "borrowed"), owner_name(o.get("owner"), me)
        table.append((label, state, "" if size is None else fmt_bytes(size),
                      ",".join(o.get("nodes") or []), owner, "; ".join(holders),
                      hexid if long else short_id(hexid)))
    heads = ("name", "state", "size", "node", "owner", "held by", "id")
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
