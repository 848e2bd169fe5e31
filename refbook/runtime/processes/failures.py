"""What an owner does when processes and nodes die (part of
:class:`~refbook.runtime.processes.core.CoreWorker`): fate sharing, retries, copies that become
primary, and objects handed to lineage reconstruction."""

from __future__ import annotations

import time

from ..protocol import messages as P
from ..protocol.entries import (
    ERROR,
    STORED,
    _node_of,
    _owner_died,
)
from ..protocol.refcount import Effects


class Failures:
    """Mixed into CoreWorker; changes its ``values``, ``copies`` and task table."""

    def _on_node_died(self, msg):
        """Every process on that node is gone, and every object stored only there."""
        _, node_id, reason = msg
        self.dead_nodes.add(node_id)
        marker = f"/n-{node_id}/"
        addrs = set()
        for r in self.rt.refs.values():
            if marker in r.owner:
                addrs.add(r.owner)
        for lease in self.tm.leases.values():
            if marker in lease.worker:
                addrs.add(lease.worker)
        for q in self.actors.queues.values():
            if q.address and marker in q.address:
                addrs.add(q.address)
        for rec in self.actors.owned.values():
            if rec.address and marker in rec.address:
                addrs.add(rec.address)
        for req_id, (res, dedicated, nm, _prefer) in list(self._lease_reqs.items()):
            if marker in nm:                     # asked a node that is gone: ask again
                self.request_lease(req_id, res, dedicated)
        why = f"its node {node_id} died ({reason})"
        for addr in addrs:
            self._on_process_died((P.PROCESS_DIED, addr, why, False))
        follow = []
        for oid, nodes in list(self.copies.items()):
            nodes.discard(node_id)
            if not nodes:
                del self.copies[oid]
        for oid, entry in list(self.values.items()):
            if entry[0] != STORED or entry[1] != node_id:
                continue
            if self.rt.owns(oid):
                others = self.copies.get(oid)
                if others:           # a copy elsewhere survives: it is the primary now
                    self.values[oid] = (STORED, others.pop(), None, entry[3])
                    if not others:
                        del self.copies[oid]
                    continue
                follow += self.recovery.lost(oid, f"was stored only on node {node_id}, "
                                                  f"which died")
            else:
                del self.values[oid]         # ask its owner again: it rebuilds it
        self._do(follow)

    def _on_object_copy(self, msg):
        """A node gained or dropped a copy of an object we own (gained: also a copy that
        became primary there when its source died)."""
        _, oid, node_id, present = msg
        entry = self.values.get(oid)
        stored = entry is not None and entry[0] == STORED and self.rt.owns(oid)
        if present:
            if node_id in self.dead_nodes or (stored and node_id == entry[1]):
                return
            if stored:
                self.copies.setdefault(oid, set()).add(node_id)
            else:          # freed or rebuilt meanwhile: nobody else would free that copy
                self.transport.send(self.node_address, (P.FREE, [oid], node_id))
            return
        if oid in self.copies:
            self.copies[oid].discard(node_id)
            if not self.copies[oid]:
                del self.copies[oid]
        elif stored and node_id == entry[1]:
            # we had just promoted that copy (its source died) when it was dropped
            self._do(self.recovery.lost(oid, f"its last copy, on node {node_id}, was "
                                             f"dropped"))

    def _on_process_died(self, msg):
        _, addr, reason, oom = msg
        fx = Effects()
        orphaned = self.rt.on_process_died(addr, fx)
        follow = []
        for oid in orphaned:
            self._fetching.discard(oid)
            follow += self._set_value(oid, (ERROR, _owner_died(oid, addr)))
        self.tm.now = time.monotonic()
        inflight = [t for t in self.tm.inflight_on(addr)]
        node = _node_of(addr)
        for t in inflight:       # it may have stored outputs before it died: free them later
            if node is not None:
                self._stale.setdefault(t.task_id, set()).add((node, addr))
        follow += self.tm.worker_died(addr, reason, oom)
        for t in inflight:
            if t.task_id in self.tm.tasks:
                self.recovery.event("task_retried", task_id=t.task_id.hex(), task=t.name,
                                    attempt=t.attempts, reason=reason)
                self.recovery.note_retry(t.task_id, t.attempts + 1,
                                         "ran out of memory" if oom else "worker died")
        self.actors.process_died(addr, reason)
        self._apply(fx)
        self._do(follow)
        self.transport.disconnect(addr)
