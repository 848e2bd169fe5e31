"""What a process tells about itself (part of :class:`~refbook.runtime.processes.core.CoreWorker`):
the state API's answers (``objects``, ``pending``...) and the state of single tasks and
refs that the notebook's live views show."""

from __future__ import annotations

import threading
import time

from ...exceptions import TaskCancelledError
from ..protocol import messages as P
from ..protocol.entries import (
    ERROR,
    INLINE,
    STORED,
    node_of,
)
from ..protocol.ids import object_id
from ..protocol.refcount import Effects
from .callsite import format_site, names, no_gc


class Introspection:
    """Mixed into CoreWorker; only reads its tables."""

    # ------------------------------------------------------------- introspection
    def _on_state_query(self, msg):
        q = P.StateQuery._make(msg)
        self.transport.send(q.addr, (P.STATE_REPLY, q.req_id, self.describe(q.what)))

    def query(self, addr: str, what, timeout: float = 5.0):
        """Ask process or node ``addr`` about ``what`` (its STATE_QUERY answer)."""
        return self.call(addr, lambda req: (P.STATE_QUERY, self.me, req, what), timeout)

    def query_many(self, asks, timeout: float = 5.0) -> list:
        """Ask several processes or nodes at once: ``asks`` is ``[(addr, what)]``;
        returns their answers in order (None for one that did not answer in time).
        This process answers itself directly."""
        self._check_usable()
        slots = []
        for addr, what in asks:
            if addr == self.me:
                slots.append((None, what))
                continue
            req = next(self._req_ids)
            slot = [threading.Event(), None]
            self._replies[req] = slot
            self.send(addr, (P.STATE_QUERY, self.me, req, what))
            slots.append((req, slot))
        deadline = time.monotonic() + timeout
        out = []
        for req, slot in slots:
            if req is None:
                out.append(self.describe(slot))
                continue
            ok = self._wait_event(slot[0], max(0.0, deadline - time.monotonic()))
            self._replies.pop(req, None)
            out.append(slot[1] if ok else None)
        return out

    def describe(self, what):
        if what == "pending":
            return self.pending_calls() if self.pending_calls is not None else 0
        if type(what) is tuple and what[0] == "events":     # the state API's pull
            with self.lock:
                evs, dropped, last = self.owner.events.since(what[1])
            return {"events": evs, "dropped": dropped, "last": last,
                    "node_id": self.node_id, "process": self.me}
        if what in ("objects", "state_objects"):
            full = what == "state_objects"
            named = names() if full else {}
            contains: dict = {}
            with self.lock, no_gc():
                fx = Effects()
                self._drain_releases(fx)
                self._apply(fx)
                objs = self._describe_objects(named, contains)
                if not full:         # what only the state API can know (all processes)
                    for o in objs:
                        del o["names"], o["contained_in"]
            if not full:
                return objs
            return {"objects": objs, "names": named, "contains": contains}
        if what == "tasks":
            return self.describe_tasks()
        if isinstance(what, tuple) and what:
            if what[0] == "why":
                return self.why(what[1])
            if what[0] == "lineage":
                return self.lineage_of(what[1], what[2])
            if what[0] == "objects_of":        # the state API's targeted queries
                return self.objects_of(what[1])
            if what[0] == "tasks_of":
                return self.tasks_of(what[1])
            if what[0] == "owns":
                with self.lock:
                    return self.rt.owns(what[1])
        return None

    def _describe_objects(self, named: dict, contains: dict) -> list:
        """One dict per live object this process owns (``names`` from ``named``, this
        process's names provider; ``contained_in`` left empty).  Fills ``contains``
        with ``{container id: [ids of the refs its value holds]}`` (hex)."""
        out = []
        append = out.append
        kept = self.recovery.kept_for()
        me, values, copies, node_id = self.me, self.values, self.copies, self.node_id
        actors, rebuilding = self.actors.owned, self.recovery.rebuilding
        sites: dict = {}
        for oid, r in self.rt.refs.items():
            if r.owner != me or r.freed or oid in actors:
                continue
            entry = values.get(oid)
            inline = False
            if entry is None:
                state = "reconstructing" if oid in rebuilding else "pending"
                size, nodes = None, []
            else:
                kind = entry[0]
                if kind == INLINE:
                    state, inline, nodes = "ready", True, [node_id]
                    size = len(entry[1]) + (sum(map(len, entry[2])) if entry[2] else 0)
                elif kind == STORED:
                    state, size = "ready", entry[3]
                    nodes = [entry[1], *sorted(copies[oid])] if oid in copies else [entry[1]]
                elif kind == ERROR:
                    state, size, nodes = "failed", None, []
                else:                                   # an actor's location
                    continue
            put = oid.endswith(b"\xff\xff\xff\xff")
            site = r.site
            if site is not None:
                made_by = site[0]
                call_site = sites.get(site)
                if call_site is None:
                    call_site = sites[site] = format_site(site[1], site[2])
            else:
                made_by = "put" if put else self._made_by(oid, None)
                call_site = None
            h = oid.hex()
            if r.nested:
                contains[h] = [x.hex() for x, _ in r.nested]
            lineage = []
            submitted = r.submitted
            if oid in kept:
                # kept (a put value) so that these finished tasks can run again
                lineage = [{"task_id": t.task_id.hex(), "name": t.name,
                            "returns": [x.hex() for x in t.return_ids]} for t in kept[oid]]
                submitted -= len(lineage)
            b = r.borrowers
            append({
                "object_id": h, "owner": me, "size": size, "state": state,
                "nodes": nodes, "spilled": False, "task": None if put else h[:32],
                "local_refs": r.local, "submitted_refs": submitted, "lineage": lineage,
                "borrowers": sorted(a for a, n in b.items() if n) if b else [],
                "inline": inline, "made_by": made_by, "call_site": call_site,
                "names": list(named[h]) if h in named else [], "contained_in": [],
            })
        return out

    def task_state(self, task_id: bytes):
        """``(state, node)`` of a task this process owns that has not finished:
        ``state`` is "waiting" (for its arguments), "queued" or "running"; None once it
        finished (its return values say how)."""
        with self.lock:
            t = self.tm.tasks.get(task_id)
            if t is None:
                return None
            node = None
            if t.state == "running" and t.lease is not None:
                node = node_of(t.lease.worker) or self.node_id
            return t.state, node

    def task_status(self, task_id: bytes) -> tuple[str, str | None, str | None]:
        """``(state, node, detail)`` of a task this process submitted: waiting, queued,
        running (on ``node``), pending (an actor call), done, failed or cancelled
        (``detail``: the error's class)."""
        st = self.task_state(task_id)
        if st is not None:
            return st[0], st[1], None
        oid = object_id(task_id, 0)
        with self.lock:
            e = self.values.get(oid)
            r = self.rt.get(oid)
            alive = r is not None and not r.freed
        if e is None:
            return ("pending" if alive else "done"), None, None
        if e[0] == ERROR:
            err = e[1]
            if isinstance(err, TaskCancelledError):
                return "cancelled", None, None
            return "failed", None, self._error_name(err)
        return "done", (e[1] if e[0] == STORED else None), None

    def task_attempt(self, task_id: bytes) -> dict | None:
        """How often a task this process submitted ran: ``attempt`` (1 for the first
        run), ``rebuilds`` (times it ran again to rebuild lost outputs) and
        ``retried_because`` (why the last retry happened, or None).  None once the task
        is forgotten (finished and no lineage kept)."""
        with self.lock:
            t = self.tm.tasks.get(task_id) or self.recovery.tasks.get(task_id)
            if t is None:
                return None
            next_attempt, why = self.recovery.retried.get(task_id, (0, None))
            return {"attempt": max(t.attempts, next_attempt, 1), "rebuilds": t._rebuilds,
                    "retried_because": why}

    def task_error(self, task_id: bytes) -> BaseException | None:
        """The error a failed task ended with (its first return value), else None."""
        with self.lock:
            e = self.values.get(object_id(task_id, 0))
        return e[1] if e is not None and e[0] == ERROR else None

    @staticmethod
    def _error_name(err) -> str:
        cls = getattr(err, "cause_cls", None)
        return cls.__name__ if cls is not None else type(err).__name__

    def ref_status(self, oid: bytes) -> dict:
        """A ref as the notebook shows it: ``state``, ``size``, ``where`` (node and copies,
        or inline), ``made_by`` (the task, or put) and ``detail`` (the error's class)."""
        tid = oid[:16]
        with self.lock:
            e = self.values.get(oid)
            r = self.rt.get(oid)
            owned = self.rt.owns(oid)
            copies = sorted(self.copies.get(oid, ()))
            task = self.tm.tasks.get(tid)
            name = task.name if task is not None else None
            ctx = self.contexts.get(tid)
        if name is None and ctx is not None:
            name = ctx.tasks.get(tid)
        put = oid.endswith(b"\xff\xff\xff\xff")
        info = {"id": oid.hex(), "made_by": "put" if put else (name or "a task"),
                "size": None, "where": None, "detail": None}
        if e is None:
            if r is None or r.freed:
                info["state"] = "freed"
            elif owned and task is not None:
                st = self.task_state(tid)
                info["state"] = st[0] if st else "pending"
                info["where"] = f"on node {st[1]}" if st and st[1] else None
            else:
                info["state"] = "pending"
        elif e[0] == ERROR:
            info["state"] = "failed"
            info["detail"] = self._error_name(e[1])
        elif e[0] == STORED:
            where = f"on node {e[1]}" + (f", copies on {', '.join(copies)}" if copies else "")
            info.update(state="ready", size=e[3], where=where)
        elif e[0] == INLINE:
            info.update(state="ready", size=len(e[1]) + sum(len(b) for b in e[2]),
                        where="inline, in its owner's memory")
        else:
            info["state"] = "ready"
        return info
