"""``%refs``: the notebook's refs as a table that fits a notebook's width: short object
ids, owners as "this kernel" or "worker 3 on node a1b2" rather than socket paths.  What
it shows comes from ``state.objects()``: where each object was made, and what holds it
(the facts ``state.why_alive`` follows: handles, pending tasks, kept lineage,
borrowers, containing objects)."""

from __future__ import annotations

import refbook

from .. import state
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
    """``this kernel``, ``worker 3 on node a1b2``, ``a driver on node a1b2`` (the
    node id's first 4 digits, as in short ids)."""
    if not addr:
        return "?"
    if addr == me:
        return "this kernel"
    i = addr.rfind("/n-")
    node = addr[i + 3:].split("/", 1)[0][:4] if i >= 0 else None   # as short ids
    proc = addr.rsplit("/", 1)[-1]
    on = f" on node {node}" if node else ""
    if proc.startswith("w-"):
        num = proc.split("-")[1]
        return f"worker {num}{on}" if num.isdigit() else f"a worker{on}"
    if proc.startswith("d-"):
        return f"another driver{on}"
    return f"node {node}" if proc == "nm" and node else proc[:16]


def made_by(o: dict) -> str:
    """``make (<cell 3>:2)``: the function (or ``put``) and where it was called."""
    who = o.get("made_by") or ""
    site = o.get("call_site")
    if site:
        who += f" ({site.replace(', line ', ':')})"
    return who


def held_by(o: dict, names: dict, me: str | None) -> list[str]:
    """What keeps an object alive besides the variables of its row (see
    ``state.why_alive``): other handles, pending tasks, kept lineage, borrowers, the
    objects whose value holds it."""
    out = []
    own = o.get("owner") == me
    extra = (o.get("local_refs") or 0) - (len(names.get(o["object_id"], ())) if own else 0)
    if extra > 0:
        out.append(f"{extra} {'other ' if own and o['object_id'] in names else ''}"
                   f"ref(s) {'here' if own else 'in its owner'}")
    if o.get("submitted_refs"):
        out.append(f"{o['submitted_refs']} pending task(s)")
    for t in o.get("lineage") or ():
        made = [n for x in t["returns"] for n in names.get(x, ())]
        out.append(f"kept to rebuild {', '.join(made) or t['name']} (lineage)")
    borrowers = o.get("borrowers") or []
    if 0 < len(borrowers) <= 2:
        out.append("borrowed by " + ", ".join(owner_name(b, me) for b in borrowers))
    elif borrowers:
        out.append(f"{len(borrowers)} borrowers")
    for c in (o.get("contained_in") or [])[:2]:
        out.append(f"inside {', '.join(names.get(c, ())) or short_id(c)}")
    return out


def refs_table(ns: dict, long: bool = False) -> str:
    drv = frontend.driver()
    objs = {o["object_id"]: o for o in state.objects()} if drv is not None else {}
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
        return "no refs: put a value with %put NAME or refbook.put(), or run a task"
    table = []
    for label, hexid, o in rows:
        size = o.get("size")
        if hexid in gone:
            state_, owner, made, held = "gone (its cluster was shut down)", "-", "", []
        else:
            state_ = o.get("state", "unknown (its owner did not answer)")
            owner = owner_name(o.get("owner"), me)
            made, held = made_by(o), held_by(o, names, me) if o else []
        table.append(((label, state_, "" if size is None else fmt_bytes(size),
                       ",".join(o.get("nodes") or []), owner, made, (held or [""])[0],
                       hexid if long else short_id(hexid)), held[1:]))
    heads = ("name", "state", "size", "node", "owner", "made by", "held by", "id")
    widths = [max(len(h), *(len(r[i]) for r, _ in table), *(len(x) for _, m in table
                                                          for x in (m if i == 6 else ())))
              for i, h in enumerate(heads)]
    at = sum(widths[:6]) + 2 * 6          # where "held by" starts
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    for r, more in table:       # what else holds it: one more line each, in its column
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines += [" " * at + x for x in more]
    return "\n".join(lines)
