"""What an owner does when processes and nodes die, without I/O (part of the
:class:`~refbook.runtime.protocol.owner.Owner`): fate sharing, retries of the tasks that
ran there, borrowers there forgotten, copies elsewhere that become primary, and objects
stored only there handed to lineage reconstruction."""

from __future__ import annotations

from ...exceptions import WorkerCrashedError
from . import messages as P
from .entries import ERROR, STORED, node_of, owner_died
from .events import ended, retried
from .refcount import Effects


class Deaths:
    def __init__(self, owner):
        self.owner = owner

    def known_dead(self, processes, nodes) -> None:
        """Deaths from before this process started (its node manager tells it when it
        registers): a ref owned by one of them may still reach us, and asking its owner
        for the value would never be answered."""
        o = self.owner
        o.rt.dead.update(processes)
        o.dead_nodes.update(nodes)

    def process_died(self, addr: str, reason: str, oom: bool) -> None:
        """A process is gone: the refs it owned die with it (fate sharing), and the tasks
        it ran run again or fail."""
        o = self.owner
        fx = Effects()
        for oid in o.rt.on_process_died(addr, fx):
            o.fetching.discard(oid)
            o.set_value(oid, (ERROR, owner_died(oid, addr)))
        inflight = o.tm.inflight_on(addr)
        node = node_of(addr)
        for t in inflight:       # it may have stored outputs before it died: free them later
            if node is not None:
                o.stale.setdefault(t.task_id, set()).add((node, addr))
        o.do(o.tm.worker_died(addr, reason, oom))
        for t in inflight:
            if t.task_id in o.tm.tasks:
                retried(o.events, t, reason)
                o.lineage.note_retry(t.task_id, t.attempts + 1,
                                     "ran out of memory" if oom else "worker died")
        o.apply(fx)

    def node_died(self, node_id: str, other_processes: set) -> list:
        """Every process on that node is gone, and every object stored only there.
        ``other_processes``: the addresses on it that the process knows of beyond the
        owner's own tables (actors).  Returns the addresses of its processes we knew."""
        o = self.owner
        o.dead_nodes.add(node_id)
        addrs = {a for a in other_processes if node_of(a) == node_id}
        for r in o.rt.refs.values():
            if node_of(r.owner) == node_id:
                addrs.add(r.owner)
            if r.borrowers:               # processes there that borrow what we own
                addrs.update(b for b in r.borrowers if node_of(b) == node_id)
        for lease in o.tm.leases.values():
            if node_of(lease.worker) == node_id:
                addrs.add(lease.worker)
        for req_id, (res, dedicated, nm, _prefer) in list(o.lease_reqs.items()):
            if node_of(nm) == node_id:           # asked a node that is gone: ask again
                o.request_lease(req_id, res, dedicated)
        return sorted(addrs)

    def node_objects_lost(self, node_id: str) -> None:
        """After ``node_died`` and the deaths of its processes: objects stored there."""
        o = self.owner
        for oid, nodes in list(o.copies.items()):
            nodes.discard(node_id)
            if not nodes:
                del o.copies[oid]
        for oid, entry in list(o.values.items()):
            if entry[0] != STORED or entry[1] != node_id:
                continue
            if o.rt.owns(oid):
                others = o.copies.get(oid)
                if others:           # a copy elsewhere survives: it is the primary now
                    primary = min(others)
                    others.discard(primary)
                    o.values[oid] = (STORED, primary, None, entry[3])
                    if not others:
                        del o.copies[oid]
                    continue
                o.lineage.lost(oid, f"was stored only on node {node_id}, which died")
            else:
                del o.values[oid]         # ask its owner again: it rebuilds it

    def object_copy(self, oid: bytes, node_id: str, present: bool) -> None:
        """A node gained or dropped a copy of an object we own (gained: also a copy that
        became primary there when its source died)."""
        o = self.owner
        entry = o.values.get(oid)
        stored = entry is not None and entry[0] == STORED and o.rt.owns(oid)
        if present:
            if node_id in o.dead_nodes or (stored and node_id == entry[1]):
                return
            if stored:
                o.copies.setdefault(oid, set()).add(node_id)
            else:          # freed or rebuilt meanwhile: nobody else would free that copy
                o.send(o.node_address, (P.FREE, [oid], node_id))
            return
        if oid in o.copies:
            o.copies[oid].discard(node_id)
            if not o.copies[oid]:
                del o.copies[oid]
        elif stored and node_id == entry[1]:
            # we had just promoted that copy (its source died) when it was dropped
            o.lineage.lost(oid, f"its last copy, on node {node_id}, was dropped")

    def our_node_died(self, reason: str) -> None:
        """Our node manager is gone: nothing pending can finish; fail it all now."""
        o = self.owner
        err = WorkerCrashedError(
            f"the refbook node manager died ({reason}); every pending task failed. "
            f"Call refbook.shutdown() and refbook.init() to start again.")
        for task in list(o.tm.tasks.values()):
            o.tm.forget(task)
            o.fail_task(task, err)
            ended(o.events, task, err)
        for oid in list(o.rt.refs):
            if oid not in o.values:
                o.set_value(oid, (ERROR, err))
