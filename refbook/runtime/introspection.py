"""What a process tells about itself (part of :class:`~refbook.runtime.core.CoreWorker`):
the state API's answers (``objects``, ``pending``...) and the state of single tasks and
refs that the notebook's live views show."""

from __future__ import annotations

import logging

from . import protocol as P
from .entries import (
    ERROR,
    INLINE,
    STORED,
    _node_of,
)
from .refcount import Effects

log = logging.getLogger("refbook.core")


class Introspection:
    """Mixed into CoreWorker; only reads its tables."""

    # ------------------------------------------------------------- introspection
    def _on_state_query(self, msg):
        _, requester, req, what = msg
        self.transport.send(requester, (P.STATE_REPLY, req, self.describe(what)))

    def describe(self, what: str):
        if what == "pending":
            return self.pending_calls() if self.pending_calls is not None else 0
        if what != "objects":
            return None
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)
            return self._describe_objects()

    def _describe_objects(self) -> list:
        out = []
        for oid, r in self.rt.refs.items():
            if r.owner != self.me or oid in self.actors.owned or r.freed:
                continue
            entry = self.values.get(oid)
            if entry is not None and entry[0] == 3:     # an actor's location
                continue
            if entry is None:
                state = "reconstructing" if oid in self.recovery.rebuilding else "pending"
                size, nodes = None, []
            elif entry[0] == ERROR:
                state, size, nodes = "failed", None, []
            elif entry[0] == STORED:
                state, size = "ready", entry[3]
                nodes = [entry[1], *sorted(self.copies.get(oid, ()))]
            else:
                state = "ready"
                size = len(entry[1]) + sum(len(b) for b in entry[2])
                nodes = [self.node_id]
            out.append({
                "object_id": oid.hex(), "owner": self.me, "size": size, "state": state,
                "nodes": nodes, "spilled": False,
                "task": None if oid.endswith(b"\xff\xff\xff\xff") else oid[:16].hex(),
                "local_refs": r.local, "submitted_refs": r.submitted,
                "borrowers": sorted(a for a, n in (r.borrowers or {}).items() if n),
                "inline": entry is not None and entry[0] == INLINE,
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
                node = _node_of(t.lease.worker) or self.node_id
            return t.state, node
