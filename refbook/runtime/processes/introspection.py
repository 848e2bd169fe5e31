"""What a process tells about itself (part of :class:`~refbook.runtime.processes.core.CoreWorker`):
the state API's answers (``objects``, ``pending``...) and the error a failed task ended
with."""

from __future__ import annotations

import threading
import time

from ..protocol import messages as P
from ..protocol.entries import (
    ERROR,
    INLINE,
    STORED,
)
from ..protocol.events import recording
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

    def query_many(self, asks, timeout: float = 5.0, poll: bool = True) -> list:
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
            ok = self._wait_event(slot[0], max(0.0, deadline - time.monotonic()), poll)
            self._replies.pop(req, None)
            out.append(slot[1] if ok else None)
        return out

    def known_dead(self):
        """The processes this one has heard are dead."""
        return self.rt.dead

    def describe(self, what):
        if what == "pending":
            return self.pending_calls() if self.pending_calls is not None else 0
        if type(what) is tuple and what[0] == "record":     # the events bench's switch
            self.owner.events = recording(self.owner.events, bool(what[1]))
            return True
        if type(what) is tuple and what[0] == "events":     # the state API's pull
            # without the lock: the ring reads itself safely beside its writer, and a
            # reader in this process would otherwise queue behind the task path
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
            h = oid.hex()
            if oid.endswith(b"\xff\xff\xff\xff"):     # a put: no task made it
                task = None
                made_by = "put"
            else:
                task = h[:32]
                made_by = None
            site = r.site
            if site is None:
                call_site = None
                made_by = made_by or self._made_by(oid, None)
            else:
                made_by = site[0]
                call_site = sites.get(site)
                if call_site is None:
                    call_site = sites[site] = format_site(site[1], site[2])
            if r.nested:
                contains[h] = [x.hex() for x, _ in r.nested]
            if oid in kept:
                # kept (a put value) so that these finished tasks can run again
                lineage = [{"task_id": t.task_id.hex(), "name": t.name,
                            "returns": [x.hex() for x in t.return_ids]} for t in kept[oid]]
            else:
                lineage = []
            b = r.borrowers
            append({
                "object_id": h, "owner": me, "size": size, "state": state,
                "nodes": nodes, "spilled": False, "task": task,
                "local_refs": r.local, "submitted_refs": r.submitted,
                "lineage_refs": r.lineage_refs(task is None), "lineage": lineage,
                "borrowers": sorted(a for a, n in b.items() if n) if b else [],
                "inline": inline, "made_by": made_by, "call_site": call_site,
                "names": list(named[h]) if h in named else [], "contained_in": [],
            })
        return out

    def task_error(self, task_id: bytes) -> BaseException | None:
        """The error a failed task ended with (its first return value), else None."""
        with self.lock:
            e = self.values.get(object_id(task_id, 0))
        return e[1] if e is not None and e[0] == ERROR else None

    @staticmethod
    def _error_name(err) -> str:
        cls = getattr(err, "cause_cls", None)
        return cls.__name__ if cls is not None else type(err).__name__

