"""Worker leases on one node, without I/O.

An owner asks the node manager for a *lease*: a worker plus the resources its tasks
need.  While the lease lasts the owner pushes tasks straight to that worker; the node
manager is off the per-task path.  :class:`LeaseScheduler` decides grants, queues what
cannot run yet, asks for more workers, and takes resources back from workers that block
in ``get`` (so the nested tasks they wait for can run).

Every method returns a list of actions, tuples the node manager carries out:
  ``("grant", owner, req_id, lease_id, worker)``
  ``("reject", owner, req_id, message)``      the request can never be satisfied here
  ``("start_worker",)``                       start one more worker process
  ``("reclaim", owner)``                      ask an owner to return its idle leases
"""

from __future__ import annotations

from collections import deque


def fits(need: dict, avail: dict) -> bool:
    return all(avail.get(k, 0) >= v for k, v in need.items() if v)


class WorkerState:
    __slots__ = ("addr", "lease", "blocked", "dedicated")

    def __init__(self, addr: str):
        self.addr = addr
        self.lease: int | None = None
        self.blocked = False
        self.dedicated = False


class Lease:
    __slots__ = ("lease_id", "owner", "worker", "resources")

    def __init__(self, lease_id: int, owner: str, worker: str, resources: dict):
        self.lease_id = lease_id
        self.owner = owner
        self.worker = worker
        self.resources = resources


class LeaseScheduler:
    """``max_workers`` caps the workers that can run (those not blocked in ``get``): a
    worker that blocks lends its resources back and no longer counts, so nested tasks
    get workers of their own however deep the recursion (as in Ray).  ``hard_max``
    caps every worker process; a request that could only be served by one more worker
    beyond it, while every worker that could finish is blocked, is rejected with a
    message that names the limit (it would otherwise wait for ever)."""

    def __init__(self, resources: dict, max_workers: int, pool_size: int = 0,
                 lease_base: int = 0, hard_max: int | None = None,
                 hard_max_name: str = "the worker limit"):
        self.pool_size = pool_size          # shared (not dedicated) workers to keep
        self.total = dict(resources)
        self.available = dict(resources)
        self.max_workers = max_workers
        self.hard_max = hard_max or max_workers + pool_size
        self.hard_max_name = hard_max_name
        self.workers: dict[str, WorkerState] = {}
        self.idle: deque[str] = deque()        # most recently idle at the right
        self.starting = 0
        self.leases: dict[int, Lease] = {}
        self.queue: deque[tuple[str, int, dict, bool]] = deque()
        self._next_lease = lease_base + 1     # lease ids differ across nodes

    # -- workers -------------------------------------------------------------------
    def worker_starting(self) -> None:
        self.starting += 1

    def worker_registered(self, addr: str) -> list:
        if self.starting:
            self.starting -= 1
        self.workers[addr] = WorkerState(addr)
        self.idle.append(addr)
        return self._schedule()

    def worker_died(self, addr: str) -> list:
        w = self.workers.pop(addr, None)
        if w is None:
            if self.starting:
                self.starting -= 1
            return self._schedule()
        try:
            self.idle.remove(addr)
        except ValueError:
            pass
        if w.lease is not None:
            lease = self.leases.pop(w.lease)
            if not w.blocked:
                self._give_back(lease.resources)
        return self._schedule()

    def worker_blocked(self, addr: str) -> list:
        w = self.workers.get(addr)
        if w is None or w.blocked or w.lease is None:
            return []
        w.blocked = True
        self._give_back(self.leases[w.lease].resources)
        return self._schedule()

    def worker_unblocked(self, addr: str) -> list:
        w = self.workers.get(addr)
        if w is None or not w.blocked:
            return []
        w.blocked = False
        if w.lease is not None:   # may oversubscribe for a moment; that is intended
            for k, v in self.leases[w.lease].resources.items():
                self.available[k] = self.available.get(k, 0) - v
        return []

    # -- leases ---------------------------------------------------------------------
    def request(self, owner: str, req_id: int, resources: dict,
                dedicated: bool = False) -> list:
        """A lease for a task queue, or (``dedicated``) a worker of its own for an
        actor, held until that worker exits."""
        for k, v in resources.items():
            if v and self.total.get(k, 0) < v:
                have = ", ".join(f"{n}={q:g}" for n, q in sorted(self.total.items()))
                want = ", ".join(f"{n}={q:g}" for n, q in sorted(resources.items()) if q)
                return [("reject", owner, req_id,
                         f"no node can ever satisfy the resources {{{want}}}: "
                         f"this node has {{{have}}}")]
        self.queue.append((owner, req_id, resources, dedicated))
        actions = self._schedule()
        if self.queue and not any(a[0] == "grant" and a[2] == req_id for a in actions):
            actions.extend(("reclaim", o) for o in
                           {lease.owner for lease in self.leases.values()} if o != owner)
        return actions

    def release(self, lease_id: int) -> list:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return []
        w = self.workers.get(lease.worker)
        if w is not None:
            if not w.blocked:
                self._give_back(lease.resources)
            w.lease = None
            w.blocked = False
            self.idle.append(w.addr)
        else:
            self._give_back(lease.resources)
        return self._schedule()

    def owner_died(self, owner: str) -> list:
        self.queue = deque(q for q in self.queue if q[0] != owner)
        actions = []
        for lease_id in [i for i, lease in self.leases.items() if lease.owner == owner]:
            actions.extend(self.release(lease_id))
        return actions

    def respill(self, view: list[dict], me: str) -> list[tuple[str, int, str]]:
        """Take out of the queue the actor requests that a node idle now can run (see
        :func:`respill`): ``[(owner, req_id, address)]``, to be sent there."""
        queued = list(self.queue)
        moves = respill(queued, self.available, view, me)
        if moves:
            gone = {i for i, _ in moves}
            self.queue = deque(q for i, q in enumerate(queued) if i not in gone)
        return [(queued[i][0], queued[i][1], addr) for i, addr in moves]

    def _give_back(self, res: dict) -> None:
        for k, v in res.items():
            self.available[k] = self.available.get(k, 0) + v

    def _schedule(self) -> list:
        actions = []
        needed_workers = 0
        while self.queue:
            owner, req_id, res, dedicated = self.queue[0]
            if not fits(res, self.available):
                break
            if not self.idle:
                if self._stuck():
                    self.queue.popleft()
                    actions.append(("reject", owner, req_id, self._stuck_message()))
                    continue
                needed_workers += 1
                break
            self.queue.popleft()
            worker = self.idle.pop()
            lease_id = self._next_lease
            self._next_lease += 1
            self.leases[lease_id] = Lease(lease_id, owner, worker, res)
            self.workers[worker].lease = lease_id
            self.workers[worker].dedicated = dedicated
            for k, v in res.items():
                self.available[k] = self.available.get(k, 0) - v
            actions.append(("grant", owner, req_id, lease_id, worker))
        total = len(self.workers) + self.starting
        if needed_workers > self.starting:
            # blocked workers wait for the tasks we are about to start: they do not count
            running = total - sum(1 for w in self.workers.values() if w.blocked)
            if running < self.max_workers and total < self.hard_max:
                self.starting += 1
                total += 1
                actions.append(("start_worker",))
        # keep the shared pool full when actors took workers out of it
        shared = sum(1 for w in self.workers.values() if not w.dedicated) + self.starting
        while shared < self.pool_size and total < self.hard_max:
            self.starting += 1
            shared += 1
            total += 1
            actions.append(("start_worker",))
        return actions

    def _stuck(self) -> bool:
        """No worker may start, none is starting, and none that holds a lease can
        return it without one more worker (each is blocked, or an actor's own)."""
        return (len(self.workers) + self.starting >= self.hard_max and not self.starting
                and not any(w.lease is not None and not w.blocked and not w.dedicated
                            for w in self.workers.values()))

    def _stuck_message(self) -> str:
        blocked = sum(1 for w in self.workers.values() if w.blocked)
        return (f"cannot start another worker process: this node has {len(self.workers)}, "
                f"the limit ({self.hard_max_name}={self.hard_max}), and {blocked} of them "
                f"are blocked in get() waiting for tasks that need one more worker "
                f"(nested get() deeper than the limit?); raise {self.hard_max_name} or "
                f"block less deeply")

    def snapshot(self) -> dict:
        return {"total": dict(self.total), "available": dict(self.available),
                "workers": len(self.workers), "idle": len(self.idle),
                "leases": len(self.leases), "queued": len(self.queue)}


def respill(queue, available: dict, view: list[dict], me: str) -> list[tuple[int, str]]:
    """Actor requests (``dedicated``) queued on node ``me`` (``(owner, req_id,
    resources, dedicated)``, in order) that cannot run here now but can on another live
    node idle now: ``[(index, address)]``.  A node's free resources are given once
    (two requests never go to its one free CPU), and what fits here now stays, to be
    granted here.

    A request queues here when it arrives and this node looked best; but an actor holds
    its CPU for as long as it lives, and this node's view of the others is a heartbeat
    old, so an actor could wait here for ever beside an idle node.  Asked again every
    heartbeat, it moves (Ray's spillback of queued leases).  A task's request waits:
    leases come back within a task, and its arguments are here."""
    local = dict(available)
    free = {n["address"]: dict(n["available"]) for n in view
            if n["alive"] and n["node_id"] != me}
    out = []
    for i, (_owner, _req, res, dedicated) in enumerate(queue):
        if fits(res, local):
            for k, v in res.items():
                local[k] = local.get(k, 0) - v
            continue
        if not dedicated:      # a task's lease comes back soon: it waits by its data
            continue
        able = [a for a, av in free.items() if fits(res, av)]
        if not able:
            continue
        addr = max(able, key=lambda a: free[a].get("CPU", 0))
        for k, v in res.items():
            free[addr][k] = free[addr].get(k, 0) - v
        out.append((i, addr))
    return out
