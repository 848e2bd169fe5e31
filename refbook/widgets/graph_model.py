"""The object graph's model, without any widget: which objects and tasks to show (from
``state.objects()`` and ``state.tasks()`` snapshots), their edges, the collapse of big
graphs into groups, and the layout by dependency.  Pure functions on plain dicts, so
that they are tested without a cluster (``tests/unit/test_graph_model.py``).

A graph is ``{"nodes": {id: node}, "edges": [(src, dst, kind)]}``; a node is a dict
with at least ``id``, ``kind`` (``object`` | ``task``, or ``object_group`` |
``task_group`` once collapsed), ``state``, ``size``, ``name`` and ``band`` (the
background box it is drawn in: its node, or its owner).  Edges: ``arg`` (object to the
task that takes it), ``return`` (task to the object it made), ``contains`` (an object
to a ref its value holds).
"""

from __future__ import annotations

from collections import defaultdict

from . import theme

# the graph's states (objects, then tasks) and how urgent each is: a collapsed group
# takes its most urgent member's
URGENCY = ("lost", "failed", "reconstructing", "retrying", "running", "pending",
           "spilled", "ready", "done", "cancelled", "freed")
TASK_STATES = {"waiting": "pending", "queued": "pending", "running": "running",
               "done": "done", "failed": "failed", "cancelled": "cancelled",
               "retrying": "retrying"}
COLOURS = {"pending": "#a5acaf", "running": "#edc948", "ready": "#59a14f",
           "done": "#4e79a7", "spilled": theme.SPILLED, "lost": "#e15759",
           "failed": "#b3262c", "reconstructing": "#b07aa1", "retrying": "#b07aa1",
           "cancelled": "#8c8c8c", "freed": "#8c8c8c"}
GRID_WIDTH = 6              # nodes with no edge: at most this many a row
COLLAPSE_AT = 1500          # more nodes than this: groups by function and call site
INLINE = "small values, in their owner's memory"   # the box of ready objects in no store


def band_of(node_ids, owner: str | None, group_by: str) -> str:
    """The background box a node is drawn in: the (first) node holding it, or its
    owner process."""
    if group_by == "owner":
        return f"owner {process_name(owner)}" if owner else "owner unknown"
    if group_by == "none":
        return ""
    if isinstance(node_ids, str):
        node_ids = [node_ids]
    return f"node {node_ids[0][:8]}" if node_ids else "not placed yet"


def process_name(address) -> str:
    """A process by the last part of its address: ``driver d-...``, ``worker w-...``."""
    tail = str(address or "?").rsplit("/", 1)[-1]
    return {"d": "driver ", "w": "worker "}.get(tail[:1], "") + tail


def _object_node(o: dict, group_by: str, _empty=()) -> dict:
    names = o.get("names") or _empty
    h = o["object_id"]
    where = o.get("nodes") or _empty
    owner = o.get("owner")
    if group_by == "node":
        if where:
            band = f"node {where[0][:8]}"
        else:       # a small value lives in its owner's memory, in no node's store
            band = INLINE if (o.get("state") or "ready") == "ready" else "not placed yet"
    else:
        band = band_of(where, owner, group_by)
    return {"id": h, "kind": "object", "state": o.get("state") or "ready",
            "size": o.get("size"), "name": ", ".join(names) if names else
            theme.object_name(h), "made_by": o.get("made_by"),
            "call_site": o.get("call_site"), "owner": owner, "where": where,
            "names": names, "borrowers": o.get("borrowers") or _empty,
            "contained_in": o.get("contained_in") or _empty, "band": band}


def _task_node(t: dict, group_by: str) -> dict:
    where = t.get("node_id")
    return {"id": t["task_id"], "kind": "task",
            "state": TASK_STATES.get(t.get("state"), t.get("state") or "done"),
            "size": None, "name": t.get("name") or "task", "made_by": t.get("name"),
            "call_site": t.get("call_site"), "owner": t.get("owner"),
            "where": [where] if where else [], "attempt": t.get("attempt"),
            "pid": t.get("pid"), "args": list(t.get("args") or ()),
            "returns": list(t.get("returns") or ()),
            "band": band_of([where] if where else [], t.get("owner"), group_by)}


def event_node(e: dict, me: str, group_by: str) -> dict:
    """A node from its ``object_created`` or ``task_submitted`` event alone (until a
    snapshot knows more)."""
    if e["kind"] == "object_created":
        return _object_node({"object_id": e["object_id"], "owner": me, "size": e.get("size"),
                             "nodes": [e["node_id"]] if e.get("node_id") else []},
                            group_by)
    return _task_node({"task_id": e["task_id"], "name": e.get("name"), "state": "waiting",
                       "owner": me}, group_by)


def select(objects: list, tasks: list, me: str | None, roots: set | None,
           group_by: str = "node") -> dict:
    """The graph to show.  ``roots`` None: this notebook's refs (the objects ``me``
    owns or that a notebook name holds), the tasks it submitted, what those take and
    make, and what their values contain.  Otherwise the objects ``roots`` names (ids)
    and their lineage: the tasks that made them, those tasks' arguments, and so on
    back, and the refs their values contain."""
    objs = {o["object_id"]: o for o in objects}
    tks = {t["task_id"]: t for t in tasks}
    made_by_task: dict = {}
    for t in tasks:
        for r in t.get("returns") or ():
            made_by_task[r] = t["task_id"]
    contains: dict = defaultdict(list)          # container -> the refs its value holds
    for o in objects:
        for c in o.get("contained_in") or ():
            contains[c].append(o["object_id"])
    keep_o: set = set()
    keep_t: set = set()
    if roots is None:
        keep_o = {h for h, o in objs.items() if o.get("owner") == me or o.get("names")}
        keep_t = {h for h, t in tks.items() if t.get("owner") == me}
        for h in keep_t:
            keep_o.update(x for x in tks[h].get("args") or () if x in objs)
            keep_o.update(x for x in tks[h].get("returns") or () if x in objs)
        todo = list(keep_o)
        while todo:                         # and what their values contain, down
            h = todo.pop()
            for x in contains.get(h, ()):
                if x not in keep_o:
                    keep_o.add(x)
                    todo.append(x)
        for h in keep_o:
            tid = objs[h].get("task") or made_by_task.get(h)
            if tid:
                keep_t.add(tid)
    else:
        todo = [h for h in roots if h in objs or h in tks]
        seen: set = set()
        while todo:                         # lineage: back through tasks and contents
            h = todo.pop()
            if h in seen:
                continue
            seen.add(h)
            if h in tks:
                keep_t.add(h)
                todo.extend(x for x in tks[h].get("args") or () if x in objs)
                todo.extend(x for x in tks[h].get("returns") or () if x in objs)
                continue
            if h not in objs:
                continue
            keep_o.add(h)
            tid = objs[h].get("task") or made_by_task.get(h)
            if tid:
                keep_t.add(tid)
                if tid in tks:
                    todo.append(tid)
            todo.extend(contains.get(h, ()))
    nodes: dict = {}
    for h in keep_o:
        nodes[h] = _object_node(objs[h], group_by)
    for tid in keep_t:
        if tid in tks:
            nodes[tid] = _task_node(tks[tid], group_by)
        else:   # a finished task no longer kept: what its outputs say of it
            outs = sorted(h for h in keep_o
                          if (objs[h].get("task") or made_by_task.get(h)) == tid)
            first = objs[outs[0]] if outs else {}
            nodes[tid] = _task_node({"task_id": tid, "name": first.get("made_by"),
                                     "state": "done", "call_site": first.get("call_site"),
                                     "owner": first.get("owner"), "returns": outs,
                                     "node_id": (first.get("nodes") or [None])[0]},
                                    group_by)
    edges: set = set()
    for tid in keep_t:
        t = tks.get(tid)
        for x in (t.get("args") or ()) if t else ():
            if x in nodes:
                edges.add((x, tid, "arg"))
        for x in nodes[tid]["returns"]:
            if x in nodes:
                edges.add((tid, x, "return"))
    for h in keep_o:
        tid = objs[h].get("task") or made_by_task.get(h)
        if tid in nodes:
            edges.add((tid, h, "return"))
        for c in objs[h].get("contained_in") or ():
            if c in nodes:
                edges.add((c, h, "contains"))
    return {"nodes": nodes, "edges": sorted(edges)}


def merge_lineage(graph: dict, lineage: dict, group_by: str = "node") -> None:
    """Add what ``state.lineage()`` knows and the snapshots did not (only live nodes:
    a freed argument is not shown again)."""
    nodes = graph["nodes"]
    for n in lineage.get("nodes", ()):
        if n["id"] in nodes or n.get("state") in ("freed", "unknown"):
            continue
        if n["kind"] == "task":
            nodes[n["id"]] = _task_node({**n, "task_id": n["id"]}, group_by)
        else:
            nodes[n["id"]] = _object_node({**n, "object_id": n["id"]}, group_by)
    edges = set(graph["edges"])
    for e in lineage.get("edges", ()):
        if e["src"] in nodes and e["dst"] in nodes:
            edges.add((e["src"], e["dst"], e["kind"]))
    graph["edges"] = sorted(edges)


def edges_by_node(edges: list) -> dict:
    """``{node id: [the edges that touch it]}``."""
    out: dict = defaultdict(list)
    for e in edges:
        out[e[0]].append(e)
        out[e[1]].append(e)
    return out


def export(g: dict, collapsed: bool, n_obj: int, n_task: int, selected) -> dict:
    """The view's ``.data`` (API.md §4): nodes, edges (with counts once grouped)."""
    nodes = []
    for n in g["nodes"].values():
        row = {"id": n["id"], "kind": n["kind"], "state": n["state"],
               "size": n.get("size"), "name": n["name"], "band": n["band"]}
        if collapsed:
            row.update(count=n["count"], states=dict(n["states"]))
        nodes.append(row)
    counts = g.get("edge_counts", {})
    edges = [{"src": s, "dst": d, "kind": k, **({"count": counts[(s, d, k)]}
                                                 if counts else {})}
             for s, d, k in g["edges"]]
    return {"nodes": nodes, "edges": edges, "collapsed": collapsed,
            "objects": n_obj, "tasks": n_task, "selected": selected}


def most_urgent(states) -> str:
    ranks = {s: i for i, s in enumerate(URGENCY)}
    return min(states, key=lambda s: ranks.get(s, len(URGENCY)))


def collapse(graph: dict, limit: int = COLLAPSE_AT) -> dict:
    """Nodes grouped by function (or ``put``) and call site, within their band: a node
    per group with ``count``, ``states`` (how many members are in each state) and the
    bytes of all; edges between groups with ``count``.  If that still leaves more than
    ``limit`` groups, call sites are dropped from the key."""
    for with_site in (True, False):
        key_of: dict = {}
        groups: dict = {}
        for h, n in graph["nodes"].items():
            kind = "task_group" if n["kind"] == "task" else "object_group"
            label = n.get("made_by") or n["name"] if n["kind"] == "task" else \
                (n.get("made_by") or "object")
            site = n.get("call_site") or "" if with_site else ""
            key = (kind, label, site, n["band"])
            key_of[h] = key
            g = groups.get(key)
            if g is None:
                gid = f"group:{len(groups)}"
                g = groups[key] = {"id": gid, "kind": kind, "label": label,
                                   "call_site": site or None, "band": n["band"],
                                   "count": 0, "size": 0, "states": {}, "members": [],
                                   "made_by": label, "owner": n.get("owner"),
                                   "where": n.get("where") or []}
            g["count"] += 1
            g["size"] += n.get("size") or 0
            g["states"][n["state"]] = g["states"].get(n["state"], 0) + 1
            g["members"].append(h)
        if not with_site or len(groups) <= limit:
            break
    nodes: dict = {}
    for g in groups.values():
        g["state"] = most_urgent(g["states"])
        g["name"] = f"{g['label']} \u00d7{g['count']}" if g["count"] > 1 else g["label"]
        nodes[g["id"]] = g
    counts: dict = defaultdict(int)
    for s, d, k in graph["edges"]:
        a, b = groups[key_of[s]]["id"], groups[key_of[d]]["id"]
        if a != b:
            counts[(a, b, k)] += 1
    return {"nodes": nodes, "edges": sorted(counts), "edge_counts": dict(counts),
            "collapsed": True}


# ------------------------------------------------------------------------- layout
def layout(graph: dict, order_hint: dict | None = None) -> dict:
    """``{id: (x, y)}``: columns by dependency (arguments left of their task, outputs
    right of it, an object left of the objects whose value holds it), rows grouped by
    band (one box per band, in ``order_hint`` or first-seen order), each column
    ordered to keep edges short (barycentre sweeps)."""
    nodes = graph["nodes"]
    if not nodes:
        return {}
    succ: dict = defaultdict(list)
    pred: dict = defaultdict(list)
    for s, d, k in graph["edges"]:
        if k == "contains":
            s, d = d, s            # the inner object exists first
        if s in nodes and d in nodes and s != d:
            succ[s].append(d)
            pred[d].append(s)
    linked = [h for h in nodes if h in succ or h in pred]
    alone = [h for h in nodes if h not in succ and h not in pred]
    layer = _layers(linked, succ, pred)
    hint = order_hint or {}
    bands = sorted({n["band"] for n in nodes.values()},
                   key=lambda b: (hint.get(b, len(hint)), b))
    cols: dict = defaultdict(list)
    for h in linked:
        cols[layer[h]].append(h)
    pos_y: dict = {}
    for c in cols.values():
        c.sort(key=lambda h: (nodes[h]["band"], hint.get(h, 0), h))
        for i, h in enumerate(c):
            pos_y[h] = i
    order = sorted(cols) or [0]
    for sweep in range(4):       # barycentre: down the columns, then back up
        seq = order if sweep % 2 == 0 else order[::-1]
        nbrs = pred if sweep % 2 == 0 else succ
        for x in seq:
            col = cols.get(x, [])
            bary = {}
            for h in col:
                ys = [pos_y[v] for v in nbrs.get(h, ()) if v in pos_y]
                bary[h] = sum(ys) / len(ys) if ys else pos_y[h]
            col.sort(key=lambda h: (nodes[h]["band"], bary[h]))
            for i, h in enumerate(col):
                pos_y[h] = i
    # nodes with no edge (a put() nothing took yet) go in a grid under the others
    lo, hi = min(order), max(order)
    alone.sort(key=lambda h: (hint.get(h, 0), h))
    per_alone: dict = defaultdict(list)
    for h in alone:
        per_alone[nodes[h]["band"]].append(h)
    wide = max(hi - lo + 1, min(GRID_WIDTH, max((len(v) for v in per_alone.values()),
                                                default=1)))
    # rows: each band as tall as its fullest column; bands stacked top to bottom
    per_band: dict = defaultdict(lambda: defaultdict(list))
    for x, col in cols.items():
        for h in col:
            per_band[nodes[h]["band"]][x].append(h)
    pos: dict = {}
    top = 0.0
    extents: dict = {}
    for b in bands:
        colmap = per_band[b]
        height = max((len(v) for v in colmap.values()), default=0)
        for x, col in colmap.items():
            off = (height - len(col)) / 2.0      # centre short columns in the band
            for i, h in enumerate(col):
                pos[h] = (float(x), -(top + off + i))
        for i, h in enumerate(per_alone.get(b, ())):
            pos[h] = (float(lo + i % wide), -(top + height + i // wide))
        height += -(-len(per_alone.get(b, ())) // wide)
        extents[b] = (top, height)
        top += height + 0.8
    graph["bands"] = extents
    graph["columns"] = (lo, lo + wide - 1)
    return pos


def _layers(ids: list, succ: dict, pred: dict) -> dict:
    """Longest-path layering, edges that close a cycle ignored; sources (a ``put``)
    moved right, next to the first task that takes them."""
    indeg = {h: 0 for h in ids}
    back = _back_edges(ids, succ)
    for s, ds in succ.items():
        for d in ds:
            if (s, d) not in back:
                indeg[d] += 1
    ready = [h for h in ids if indeg[h] == 0]
    layer = dict.fromkeys(ids, 0)
    topo = []
    while ready:
        h = ready.pop()
        topo.append(h)
        for d in succ.get(h, ()):
            if (h, d) in back:
                continue
            layer[d] = max(layer[d], layer[h] + 1)
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    for h in reversed(topo):
        outs = [layer[d] for d in succ.get(h, ()) if (h, d) not in back]
        if outs and not pred.get(h):
            layer[h] = min(outs) - 1
    return layer


def _back_edges(ids: list, succ: dict) -> set:
    """The edges that close a cycle, found by an iterative depth-first search."""
    colour: dict = {}
    back: set = set()
    for root in ids:
        if root in colour:
            continue
        colour[root] = 1
        stack = [(root, iter(succ.get(root, ())))]
        while stack:
            h, it = stack[-1]
            for d in it:
                c = colour.get(d)
                if c is None:
                    colour[d] = 1
                    stack.append((d, iter(succ.get(d, ()))))
                    break
                if c == 1:
                    back.add((h, d))
            else:
                colour[h] = 2
                stack.pop()
    return back


def curve(a: tuple, b: tuple, n: int = 9) -> tuple[list, list]:
    """An S-shaped cubic from ``a`` to ``b``, leaving and arriving horizontally."""
    (x0, y0), (x1, y1) = a, b
    dx = (x1 - x0) / 2 if x1 != x0 else 0.5
    c0, c1 = (x0 + dx, y0), (x1 - dx, y1)
    xs, ys = [], []
    for i in range(n):
        t = i / (n - 1)
        u = 1 - t
        xs.append(round(u**3 * x0 + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t**3 * x1, 3))
        ys.append(round(u**3 * y0 + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t**3 * y1, 3))
    return xs, ys
