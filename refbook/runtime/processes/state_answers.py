"""What one process answers to the state API (part of
:class:`~refbook.runtime.processes.core.CoreWorker`): the tasks it owns, why it holds an
object, and the lineage of the objects it owns.  ``api/snapshots.py`` asks every
process and merges.  Only reads the owner's tables, under the lock; nothing here runs
on the per-task path.

A *path* (``why``) is a list of steps, root first, each a dict whose ``kind`` is
``variable`` (a notebook variable, from the names provider), ``ref`` (a handle in a
process, no name known), ``task`` (a pending task that takes it as an argument),
``lineage`` (a finished task kept to be run again, holding a ``put()`` value it read),
``borrower`` (another process the owner counts as holding it), or ``object`` (an object
whose value contains the next step's object, or the object asked about).  A borrower
step that carries ``_of`` (an object id) is not explained yet: the driver asks that
process why it holds ``_of`` and puts the answer in front of it.
"""

from __future__ import annotations

import time
from collections import deque

from ...exceptions import TaskCancelledError
from ..protocol.entries import ACTOR, ERROR, INLINE, STORED, node_of
from ..protocol.ids import is_put, task_of
from ..protocol.refcount import Effects
from ..protocol.tasks import DONE, RUNNING
from .callsite import Formatter, names
from .state_targets import TargetedAnswers

MAX_PATHS = 64          # why(): at most this many paths
MAX_DEPTH = 32          # why(): containing objects followed at most this deep
MAX_LINEAGE = 20_000    # lineage(): nodes one answer holds at most


class StateAnswers(TargetedAnswers):
    """Mixed into CoreWorker; reads its tables under its lock."""

    # ------------------------------------------------------------------ tasks
    def describe_tasks(self) -> list[dict]:
        """One dict per task this process owns and still knows: not finished, finished
        and kept as lineage, pending actor calls, and failed or cancelled tasks whose
        results are still held."""
        fmt = Formatter()
        off = time.time() - time.monotonic()
        rows = []
        with self.lock:
            seen = set()
            for t in self.tm.tasks.values():
                rows.append(self._task_row(t, None, fmt, off))
                seen.add(t.task_id)
            for t in self.recovery.tasks.values():
                if t.task_id not in seen:
                    rows.append(self._task_row(t, None, fmt, off))
                    seen.add(t.task_id)
            for q in self.actors.queues.values():
                for t in (*q.pending, *q.inflight.values()):
                    rows.append(self._task_row(t, q, fmt, off))
                    seen.add(t.task_id)
            rows += self._ended_tasks(seen, fmt)
        return rows

    def _task_row(self, t, q, fmt: Formatter, off: float) -> dict:
        return {"task_id": t.task_id.hex(), "name": t.name,
                "args": [x.hex() for x, _ in self._arg_refs(t, q)],
                "returns": [r.hex() for r in t.return_ids], "owner": self.me,
                "call_site": fmt(t.site), **self._task_now(t, q, off)}

    def _task_now(self, t, q, off: float) -> dict:
        """A task row's fields that change while it lives: state, where, attempt..."""
        worker = None
        if q is not None:
            if t.task_id in q.inflight:
                worker = q.address
        elif t.lease is not None:
            worker = t.lease.worker
        next_attempt, why = self.recovery.retried.get(t.task_id, (0, None))
        return {
            "state": self._task_state(t, q),
            "node_id": (node_of(worker) or self.node_id) if worker else None,
            "worker": worker, "pid": None,
            "attempt": max(t.attempts, next_attempt, 1),
            "submitted_at": None if t.submitted_at is None else t.submitted_at + off,
            "started_at": None if t.started_at is None else t.started_at + off,
            "finished_at": None if t.finished_at is None else t.finished_at + off,
            "rebuilds": t._rebuilds, "retried_because": why, "error": None,
        }

    def _task_state(self, t, q) -> str:
        if q is not None:
            if t.task_id in q.inflight:
                return "running"
            return "waiting" if t.deps else "queued"
        s = t.state
        if s == DONE:
            return "done"
        if s == RUNNING:
            return "running"
        if t.attempts or t._rebuilds or t.task_id in self.recovery.retried:
            return "retrying"
        return s                                  # waiting or queued

    def _arg_refs(self, t, q) -> list:
        """The object ids a task takes (top level and nested), without the stored blob
        of its arguments or the actor it calls."""
        skip = set()
        entry = t.payload.args_entry
        if entry[0] == "ref":
            skip.add(entry[1])
        actor_id = q.actor_id if q is not None else self.actors.calls.get(t.task_id)
        if actor_id is not None:
            skip.add(actor_id)
        if not skip:
            return t.arg_refs
        return [(x, o) for x, o in t.arg_refs if x not in skip]

    def _ended_tasks(self, seen: set, fmt: Formatter) -> list:
        """Tasks that failed or were cancelled (no longer tracked) whose results are
        still held: what their results' entries say."""
        out: dict = {}
        me, refs = self.me, self.rt.refs
        for oid, e in self.values.items():
            if e[0] != ERROR or is_put(oid):
                continue
            tid = task_of(oid)
            if tid in seen:
                continue
            r = refs.get(oid)
            if r is None or r.owner != me or r.freed:
                continue
            row = out.get(tid)
            if row is None:
                site = r.site
                out[tid] = row = {
                    "task_id": tid.hex(), "name": site[0] if site else None,
                    "state": "cancelled" if isinstance(e[1], TaskCancelledError) else "failed",
                    "node_id": None, "worker": None, "pid": None, "attempt": None,
                    "args": [], "returns": [], "owner": me, "call_site": fmt(site),
                    "submitted_at": None, "started_at": None, "finished_at": None,
                    "rebuilds": 0, "retried_because": None,
                    "error": None if isinstance(e[1], TaskCancelledError)
                    else self._error_name(e[1])}
            row["returns"].append(oid.hex())
        return list(out.values())

    def _find_task(self, tid: bytes) -> tuple:
        """``(task, actor queue or None)`` of a task this process owns, or (None, None)."""
        t = self.tm.tasks.get(tid) or self.recovery.tasks.get(tid)
        if t is not None:
            return t, None
        aid = self.actors.calls.get(tid)
        q = self.actors.queues.get(aid) if aid is not None else None
        if q is not None:
            t = q.inflight.get(tid) or next((x for x in q.pending if x.task_id == tid), None)
            if t is not None:
                return t, q
        return None, None

    # ------------------------------------------------------------------ why alive
    def why(self, oid: bytes) -> dict | None:
        """Why this process holds ``oid``: ``{"owner", "owned", "paths"}`` (see the
        module's docstring), or None if it has no entry for it (or freed it)."""
        named = names()
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)        # handles dropped since: not a reason
            self._apply(fx)
            r = self.rt.refs.get(oid)
            if r is None or r.freed:
                return None
            index: list = []
            paths = self._why_paths(oid, r, named, index, frozenset((oid,)), 0)
            return {"owner": r.owner, "owned": r.owner == self.me, "paths": paths[:MAX_PATHS]}

    def _why_paths(self, oid: bytes, r, named: dict, index: list, seen, depth: int) -> list:
        me = self.me
        out = []
        if r.local > 0:
            held_by = named.get(oid.hex())
            if held_by:
                out += [[{"kind": "variable", "name": n, "process": me}] for n in held_by]
            else:
                out.append([{"kind": "ref", "process": me}])
        if r.pinned > 0:
            out.append([{"kind": "ref", "process": me, "pinned": True}])
        if r.submitted > 0 or r.kept > 0:
            out += self._holding_tasks(oid)
        if r.contained > 0 and depth < MAX_DEPTH:
            for c in self._containers_of(oid, r, index):
                cr = self.rt.refs.get(c)
                if c in seen or cr is None:
                    continue
                step = {"kind": "object", "object_id": c.hex()}
                for p in self._why_paths(c, cr, named, index, seen | {c}, depth + 1):
                    out.append([*p, step])
                if len(out) >= MAX_PATHS:
                    break
        if r.owner == me and r.borrowers:
            for b, n in sorted(r.borrowers.items()):
                if n > 0:
                    out.append([{"kind": "borrower", "process": b, "_of": oid.hex()}])
        return out

    # Which objects contain a ref.  ``put()`` notes its containers (note_containers);
    # if those do not account for the whole ``contained`` count (a task's result holds
    # it), every entry is scanned once per question (about 10 ms per 100,000 entries).
    def note_containers(self, oid: bytes, refs) -> None:
        """``oid``, an object put here, holds ``refs`` ([(ref, owner)]).  Caller holds
        the lock.  Entries are checked when read, and pruned as they go stale."""
        holders = self._holders
        for x, _owner in refs:
            lst = holders.get(x)
            if lst is None:
                holders[x] = [oid]
            else:
                lst.append(oid)
        self._holders_n += len(refs)
        live = self.rt.refs
        if self._holders_n > 2 * len(live) + 10_000:     # amortized: drop what went
            kept, n = {}, 0
            for x, lst in holders.items():
                if x in live:
                    lst = [c for c in lst if c in live and not live[c].freed]
                    if lst:
                        kept[x] = lst
                        n += len(lst)
            self._holders, self._holders_n = kept, n

    def _containers_of(self, oid: bytes, r, index: list) -> list:
        refs, me = self.rt.refs, self.me
        found, n = [], 0
        for c in dict.fromkeys(self._holders.get(oid, ())):
            cr = refs.get(c)
            if cr is not None and cr.owner == me and not cr.freed:
                k = sum(1 for x, _ in cr.nested if x == oid)
                if k:
                    found.append(c)
                    n += k
        if n >= r.contained:
            return found
        if not index:
            index.append(self._containers())
        return index[0].get(oid, [])

    def _containers(self) -> dict:
        """``{oid: [owned objects whose value contains it]}``."""
        idx: dict = {}
        me = self.me
        for o, r in self.rt.refs.items():
            if r.nested and r.owner == me and not r.freed:
                for x, _owner in r.nested:
                    idx.setdefault(x, []).append(o)
        return idx

    def _holding_tasks(self, oid: bytes) -> list:
        """Paths for the tasks (pending, actor calls, constructors, kept lineage) that
        count ``oid`` as submitted here."""
        me = self.me
        out = []

        def takes(t) -> bool:
            return any(x == oid for x, _ in t.arg_refs)

        for t in self.tm.tasks.values():
            if takes(t):
                out.append([{"kind": "task", "task_id": t.task_id.hex(), "name": t.name,
                             "process": me}])
        for q in self.actors.queues.values():
            for t in (*q.pending, *q.inflight.values()):
                if takes(t):
                    out.append([{"kind": "task", "task_id": t.task_id.hex(),
                                 "name": t.name, "process": me}])
        for rec in self.actors.owned.values():
            if any(x == oid for x, _ in rec.create_payload[4]):
                kind = "lineage" if rec.args_held == "kept" else "task"  # (for restarts)
                out.append([{"kind": kind, "task_id": (rec.creating or rec.actor_id).hex(),
                             "name": f"{rec.class_name}.__init__", "process": me}])
        lineage = self.recovery
        for tid, (_owned, pinned) in lineage.args.items():
            if any(x == oid for x, _ in pinned):
                out.append([{"kind": "lineage", "task_id": tid.hex(),
                             "name": lineage.tasks[tid].name, "process": me}])
        return out

    # ------------------------------------------------------------------ lineage
    def lineage_of(self, oids: list, depth: int | None = None) -> dict:
        """The tasks and objects that made ``oids`` (objects this process owns), going
        back ``depth`` tasks (None: all it knows).  ``{"nodes", "edges", "foreign"}``:
        edges ``[src, dst, kind]``; foreign: ``[object id, owner, level]`` of objects
        owned elsewhere, for the caller to ask their owners."""
        fmt = Formatter()
        off = time.time() - time.monotonic()
        me = self.me
        nodes: dict = {}
        edges: list = []
        foreign: list = []
        with self.lock:
            refs = self.rt.refs
            queue = deque((oid, me, 0) for oid in oids)
            seen: set = set()
            while queue and len(nodes) < MAX_LINEAGE:
                oid, owner, d = queue.popleft()
                if oid in seen:
                    continue
                seen.add(oid)
                r = refs.get(oid)
                if r is not None:
                    owner = r.owner
                h = oid.hex()
                if owner != me:
                    foreign.append([h, owner, d])
                    continue
                nodes[h] = self._object_node(oid, r, fmt)
                if r is not None:
                    for x, xo in r.nested:
                        edges.append([h, x.hex(), "contains"])
                        queue.append((x, xo, d))
                if is_put(oid) or (depth is not None and d >= depth):
                    continue
                tid = task_of(oid)
                th = tid.hex()
                if th in nodes:
                    continue
                t, q = self._find_task(tid)
                if t is None:
                    continue
                row = self._task_row(t, q, fmt, off)
                nodes[th] = {"id": th, "kind": "task", **row}
                for rid in t.return_ids:
                    edges.append([th, rid.hex(), "return"])
                    if rid != oid:
                        queue.append((rid, me, d))
                for x, xo in self._arg_refs(t, q):
                    edges.append([x.hex(), th, "arg"])
                    queue.append((x, xo, d + 1))
        return {"nodes": list(nodes.values()), "edges": edges, "foreign": foreign}

    def _object_node(self, oid: bytes, r, fmt: Formatter) -> dict:
        size = None
        if r is None or r.freed:
            state = "freed"
        else:
            e = self.values.get(oid)
            if e is None:
                state = "reconstructing" if oid in self.recovery.rebuilding else "pending"
            elif e[0] == ERROR:
                state = "failed"
            elif e[0] == STORED:
                state, size = "ready", e[3]
            elif e[0] == INLINE:
                state, size = "ready", len(e[1]) + sum(len(b) for b in e[2])
            else:
                state = "ready" if e[0] == ACTOR else "unknown"
        site = r.site if r is not None else None
        return {"id": oid.hex(), "kind": "object", "state": state, "size": size,
                "owner": self.me, "made_by": self._made_by(oid, site),
                "call_site": fmt(site)}

    def _made_by(self, oid: bytes, site) -> str:
        if site is not None:
            return site[0]
        if is_put(oid):
            return "put"
        t, _q = self._find_task(task_of(oid))
        return t.name if t is not None else "a task"
