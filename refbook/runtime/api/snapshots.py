"""The state API's snapshots and queries (API.md section 3): ``objects``, ``tasks``,
``nodes``, ``actors``, ``lineage`` and ``why_alive``, cluster-wide, from any driver.

A snapshot asks every node manager which processes it has, asks all those processes at
once (``STATE_QUERY``, answered by ``processes/state_answers.py`` and
``introspection.py``) and merges what they say.  A query asks the object's owner, then
the processes the owner names (a borrower, the owner of an argument).

Who asks is a *viewer*: this driver's core, or the command line's probe
(``processes/probe.py``), which is no process of the cluster: ``objects_of(viewer)``
and ``tasks_of(viewer)`` serve both, so ``refbook memory`` prints what the state API
says.  A viewer has ``me``, ``kind`` (None for a probe), ``node_address`` (a node to
ask for the list of nodes), ``query``, ``query_many`` and ``known_dead()``."""

from __future__ import annotations

import os

from ..processes import context
from ..processes.object_ref import ObjectRef
from .functions import actors, nodes

__all__ = ["objects", "tasks", "nodes", "actors", "lineage", "why_alive", "objects_of",
           "tasks_of", "objects_by_id", "tasks_by_id"]

TIMEOUT = 2.0            # a process that does not answer in this time is left out
MAX_PATHS = 64
MAX_HOPS = 16            # why_alive: borrowers followed at most this far
MAX_ROUNDS = 64          # lineage: owners asked in turn at most this many times


def _processes(core, states: bool = False) -> tuple[dict, dict]:
    """``({process address: {"kind", "pid", "node_id"}}, {object id: store state})``
    over the live nodes."""
    alive = [n for n in core.query(core.node_address, "nodes") if n["alive"]]
    asks = [(n["address"], "process_info") for n in alive]
    if states:
        asks += [(n["address"], "object_states") for n in alive]
    answers = core.query_many(asks, TIMEOUT)
    procs: dict = {}
    for n, info in zip(alive, answers, strict=False):
        for addr, p in (info or {}).items():
            procs[addr] = {**p, "node_id": n["node_id"]}
    if core.kind is not None:                # a driver lists itself; a probe is nobody
        procs.setdefault(core.me, {"kind": core.kind, "pid": os.getpid(),
                                   "node_id": core.node_id})
    store_states: dict = {}
    for st in answers[len(alive):]:
        store_states.update(st or {})
    return procs, store_states


def objects(ids=None) -> list[dict]:
    """Every live object of the cluster, as its owner sees it (as ``refbook.objects()``)
    plus ``made_by``, ``call_site``, ``names`` (the notebook variables that hold it)
    and ``contained_in`` (ids of objects whose value holds this ref).  ``ids``: only
    these objects (refs or ids), asked of their owners only (see :func:`objects_by_id`)."""
    if ids is not None:
        return objects_by_id(ids)
    return objects_of(context.running())


def objects_of(core) -> list[dict]:
    """:func:`objects` as ``core`` (a viewer: see the module) sees them."""
    procs, states = _processes(core, states=True)
    answers = core.query_many([(p, "state_objects") for p in procs], TIMEOUT)
    out: list = []
    named: dict = {}
    contained_in: dict = {}
    for a in answers:
        if not a:
            continue             # the process died or is stuck: its objects are left out
        out += a["objects"]
        for h, ns in a["names"].items():
            named.setdefault(h, []).extend(ns)
        for container, held in a["contains"].items():
            for h in held:
                contained_in.setdefault(h, []).append(container)
    spilled = {h for h, st in states.items() if st in ("spilled", "restoring")}
    special = spilled.union(named, contained_in)
    if special:      # what each owner could not know: one pass over the objects
        for o in out:
            h = o["object_id"]
            if h in special:
                if h in named:
                    o["names"] = sorted(set(named[h]))
                if h in contained_in:
                    o["contained_in"] = contained_in[h]
                if h in spilled:
                    o["spilled"] = True
                    o["state"] = "spilled"
    return out


def tasks(ids=None) -> list[dict]:
    """One dict per task the cluster still knows: not finished, or finished and kept
    as lineage (also failed or cancelled ones whose results are still held).  ``ids``:
    only these tasks, asked of their owners only (see :func:`tasks_by_id`)."""
    if ids is not None:
        return tasks_by_id(ids)
    return tasks_of(context.running())


def tasks_of(core) -> list[dict]:
    """:func:`tasks` as ``core`` (a viewer: see the module) sees them."""
    procs, _ = _processes(core)
    out: list = []
    for a in core.query_many([(p, "tasks") for p in procs], TIMEOUT):
        for t in a or ():
            p = procs.get(t["worker"]) if t["worker"] else None
            if p is not None:
                t["pid"] = p["pid"]
                t["node_id"] = p["node_id"]
            out.append(t)
    return out


def _resolve(core, ref_or_id) -> tuple[bytes, str | None]:
    """``(object id, owner or None if unknown here)``."""
    if isinstance(ref_or_id, ObjectRef):
        return ref_or_id._id, ref_or_id._owner
    oid = _one_id(ref_or_id)
    with core.lock:
        r = core.rt.get(oid)
        owner = r.owner if r is not None else None
    if owner is None:            # ask every process which one owns it
        procs, _ = _processes(core)
        addrs = list(procs)
        for addr, owns in zip(addrs, core.query_many([(p, ("owns", oid)) for p in addrs],
                                                     TIMEOUT), strict=True):
            if owns:
                return oid, addr
    return oid, owner


def _ask(core, addr: str, what):
    return core.query_many([(addr, what)], TIMEOUT)[0]


# ----------------------------------------------------------------------- why_alive
def why_alive(ref_or_id) -> list[list[dict]]:
    """Every path that keeps an object alive, each a list of steps from a root to the
    object: ``{"kind": "variable", "name"}`` (a notebook variable), ``{"kind": "ref",
    "process"}`` (a handle held in a process), ``{"kind": "task", "task_id"}`` (a
    pending task that takes it), ``{"kind": "borrower", "process"}`` (a process its
    owner counts as holding it), ``{"kind": "object", "object_id"}`` (an object whose
    value contains what follows), ``{"kind": "lineage", "task_id"}`` (a finished task
    kept to be run again).  The last step holds the object itself.  ``[]``: nothing
    keeps it (it is freed, or about to be)."""
    core = context.running()
    oid, owner = _resolve(core, ref_or_id)
    if owner is None:
        return []
    ans = _ask(core, owner, ("why", oid))
    if not ans:
        return []
    return _expand(core, ans["paths"], {}, 0, frozenset())


def _expand(core, paths: list, cache: dict, hops: int, visiting: frozenset) -> list:
    """Explain each path's unexplained borrower root by asking that process why it
    holds the object, and put its paths in front."""
    out: list = []
    for p in paths:
        first = p[0]
        of = first.pop("_of", None)
        if of is None:
            out.append(p)
        else:
            key = (first["process"], of)
            if hops >= MAX_HOPS or key in visiting:
                subs = []
            elif key in cache:
                subs = cache[key]
            else:
                a = _ask(core, key[0], ("why", bytes.fromhex(of)))
                subs = _expand(core, a["paths"] if a else [], cache, hops + 1,
                               visiting | {key})
                cache[key] = subs
            if subs:
                out += [[*(dict(s) for s in sp), *p] for sp in subs]
            else:
                out.append(p)    # no answer: the owner's count is all we know
        if len(out) >= MAX_PATHS:
            break
    return out[:MAX_PATHS]


# ------------------------------------------------------------------------- lineage
def lineage(ref_or_id, depth: int | None = None) -> dict:
    """The graph of tasks and objects that made an object, ``depth`` tasks back (None:
    as far as the owners know): ``{"nodes": [{"id", "kind": "object" | "task",
    "state", ...}], "edges": [{"src", "dst", "kind": "arg" | "return" | "contains"}]}``.
    Objects another process owns are asked of that process."""
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be a non-negative integer or None, not {depth!r}")
    core = context.running()
    oid, owner = _resolve(core, ref_or_id)
    nodes_: dict = {}
    edges: dict = {}
    asked: set = set()
    todo = {(owner, depth): [oid]} if owner is not None else {}
    rounds = 0
    while todo and rounds < MAX_ROUNDS:
        rounds += 1
        keys = list(todo)
        answers = core.query_many([(o, ("lineage", todo[(o, d)], d)) for o, d in keys],
                                  TIMEOUT)
        nxt: dict = {}
        for (o, d), ans in zip(keys, answers, strict=True):
            asked.update(x.hex() for x in todo[(o, d)])
            if not ans:
                for x in todo[(o, d)]:
                    nodes_.setdefault(x.hex(), _unknown(x.hex(), o))
                continue
            for n in ans["nodes"]:
                nodes_.setdefault(n["id"], n)
            for src, dst, kind in ans["edges"]:
                edges[(src, dst, kind)] = None
            for h, xo, level in ans["foreign"]:
                if h in nodes_ or h in asked:
                    continue
                if xo is None:
                    nodes_[h] = _unknown(h, None)
                    continue
                left = None if d is None else d - level
                nxt.setdefault((xo, left), []).append(bytes.fromhex(h))
        todo = nxt
    if oid.hex() not in nodes_:
        nodes_[oid.hex()] = _unknown(oid.hex(), owner, "freed")
    for src, dst, _kind in edges:
        for h in (src, dst):
            if h not in nodes_:
                nodes_[h] = _unknown(h, None)
    return {"nodes": list(nodes_.values()),
            "edges": [{"src": s, "dst": d, "kind": k} for s, d, k in edges]}


def _unknown(h: str, owner: str | None, state: str = "unknown") -> dict:
    return {"id": h, "kind": "object", "state": state, "size": None, "owner": owner,
            "made_by": None, "call_site": None}


# ------------------------------------------------------------------ targeted queries
# What a live view asks every fraction of a second: a few objects or tasks by id, each
# asked of its owner only.  An id names the process that made it (its first 8 bytes are
# that process's tag) and that process owns it, so a driver answers for its own objects
# and tasks without a message; another owner is known from the ref this driver holds,
# and only an id known nowhere here is asked of every process.
TARGET_TIMEOUT = 1.0     # an owner that does not answer in this time: state "unknown"


def objects_by_id(ids) -> list[dict]:
    """The rows of ``state.objects()`` of these objects (refs, or ids as bytes or hex),
    in the order given; freed ones are left out, and one whose owner does not answer
    gets state ``"unknown"``.  Each row also has ``error``: the class name of the error
    a failed object holds (else None).  Not looked up: ``spilled`` (always False here)
    and ``contained_in`` beyond containers of the same owner."""
    core = context.running()
    mine = _own_ids(core, ids, 20)
    if mine is not None:             # all this driver's own: no message
        return core.objects_of(mine)
    wanted = _ids(ids, 20, "object")
    owners = {oid: _owner_of(core, oid, x) for oid, x in wanted.items()}
    rows = _ask_owners(core, "objects_of", owners)
    out = []
    for oid, owner in owners.items():
        h = oid.hex()
        row = rows.get(h)
        if row is None and h in rows:           # its owner did not answer
            row = dict(_NO_OBJECT, object_id=h, owner=owner, task=None if
                       oid.endswith(b"\xff\xff\xff\xff") else h[:32])
        if row is not None:
            out.append(row)
    return out


def tasks_by_id(ids) -> list[dict]:
    """The rows of ``state.tasks()`` of these tasks (ids as bytes or hex), in the order
    given, also finished ones whose first result is still held (state ``done``,
    ``failed`` or ``cancelled``).  Each row also has ``error`` (a failed task's error
    class name), ``rebuilds`` and ``retried_because``; ``pid`` is not looked up (None).
    A task its owner forgot (finished, its results freed) is left out; one whose owner
    does not answer gets state ``"unknown"``."""
    core = context.running()
    mine = _own_ids(core, ids, 16)
    if mine is not None:
        return core.tasks_of(mine)
    wanted = _ids(ids, 16, "task")
    owners = {tid: _owner_of(core, tid + b"\0\0\0\0", x) for tid, x in wanted.items()}
    rows = _ask_owners(core, "tasks_of", owners)
    out = []
    for tid, owner in owners.items():
        h = tid.hex()
        row = rows.get(h)
        if row is None and h in rows:
            row = dict(_NO_TASK, task_id=h, owner=owner)
        if row is not None:
            out.append(row)
    return out


_NO_OBJECT = {"object_id": None, "owner": None, "size": None, "state": "unknown",
              "nodes": [], "spilled": False, "task": None, "local_refs": 0,
              "submitted_refs": 0, "lineage_refs": 0, "lineage": [], "borrowers": [],
              "inline": False,
              "made_by": None, "call_site": None, "names": [], "contained_in": [],
              "error": None}
_NO_TASK = {"task_id": None, "name": None, "state": "unknown", "node_id": None,
            "worker": None, "pid": None, "attempt": None, "args": [], "returns": [],
            "owner": None, "call_site": None, "submitted_at": None, "started_at": None,
            "finished_at": None, "rebuilds": 0, "retried_because": None, "error": None}


def _a(what: str) -> str:
    return f"an {what}" if what[0] in "aeiou" else f"a {what}"


def _own_ids(core, ids, length: int) -> list | None:
    """``ids`` without repeats if all are ids (bytes) of this driver's own objects or
    tasks (the common case, checked quickly), else None."""
    if type(ids) is not list:
        return None
    tag = core.tag
    for x in ids:
        if type(x) is not bytes or len(x) != length or x[:8] != tag:
            return None
    return list(dict.fromkeys(ids)) if len(ids) > 1 else ids


def _ids(ids, length: int, what: str) -> dict:
    """``{id bytes: what the caller gave}`` without repeats, in order; a clear error
    for anything that is not an id of ``length`` bytes."""
    if isinstance(ids, (str, bytes, bytearray, ObjectRef)):
        raise TypeError(f"ids must be a list of {what} ids, not one {what} id: "
                        f"write ids=[...]")
    out: dict = {}
    for x in ids:
        oid = _one_id(x, length, what)
        out.setdefault(oid, x)
    return out


def _one_id(x, length: int = 20, what: str = "object") -> bytes:
    """``x`` (an ObjectRef for an object, or an id as bytes or hex) as id bytes; a
    clear error for anything else."""
    if isinstance(x, ObjectRef) and length == 20:
        return x._id
    if isinstance(x, str):
        try:
            oid = bytes.fromhex(x)
        except ValueError:
            raise ValueError(f"not {_a(what)} id: {x!r}") from None
    elif isinstance(x, (bytes, bytearray)):
        oid = bytes(x)
    else:
        raise TypeError(f"expected {'an ObjectRef or ' if length == 20 else ''}"
                        f"{_a(what)} id, not {type(x).__name__}")
    if len(oid) != length:
        raise ValueError(f"not {_a(what)} id (it has {len(oid)} bytes, not "
                         f"{length}): {x!r}")
    return oid


def _owner_of(core, oid: bytes, given) -> str | None:
    """The owner of an object (or of a task's first result), or None if unknown here."""
    if oid[:8] == core.tag:
        return core.me
    if isinstance(given, ObjectRef) and given._owner:
        return given._owner
    with core.lock:
        r = core.rt.get(oid)
        return r.owner if r is not None else None


def _ask_owners(core, what: str, owners: dict) -> dict:
    """``{hex id: row}`` from asking each owner about its ids (every process about
    those whose owner is unknown); an owner that did not answer: ``{hex id: None}``."""
    by_owner: dict = {}
    for x, owner in owners.items():
        by_owner.setdefault(owner, []).append(x)
    unknown = by_owner.pop(None, None)
    asks = [(o, (what, xs)) for o, xs in by_owner.items()]
    if unknown:
        procs, _ = _processes(core)
        asks += [(p, (what, unknown)) for p in procs]
    key = "object_id" if what == "objects_of" else "task_id"
    rows: dict = {}
    answers = core.query_many(asks, TARGET_TIMEOUT)
    for i, ((_o, (_w, xs)), answer) in enumerate(zip(asks, answers, strict=True)):
        if answer is None and i < len(by_owner):
            for x in xs:
                rows.setdefault(x.hex(), None)
        for row in answer or ():
            rows[row[key]] = row
    return rows
