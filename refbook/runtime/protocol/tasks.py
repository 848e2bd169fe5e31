r"""The owner's task table, without I/O.

Each process that submits tasks keeps one :class:`TaskManager`.  A task waits until
its ref arguments are resolved, then queues under its *scheduling class* (its resource
shape).  The manager asks the node manager for leases, pushes tasks to leased workers
(up to ``depth`` in flight per worker, batched), returns leases that stay idle, and
decides what happens to tasks whose worker died: retry or fail.

Methods return actions (the NamedTuples below; the first field names the kind) for the
owner to carry out:
  ``Push(lease, [task, ...])``          send PUSH_TASKS to ``lease.worker``
  ``Request(req_id, resources, task)``  send LEASE_REQUEST (``task``: for locality)
  ``Return(lease_id)``                  send LEASE_RETURN
  ``Fail(task, error)``                 finish the task with ``error`` for every return
  ``Cancel(task, worker, force)``       the task is running: interrupt or kill it

A task's state changes only through ``_to``, along the edges of ``EDGES``::

    waiting --> queued --> running --> done
       ^  \______^___________/  |       |
       |_________________________|_______|   (retries, lost arguments, rebuilds)

Anything else (a task finishing twice, a done task pushed) raises
:class:`IllegalTransition`: a bug in the caller, caught where it happens.
The clock is ``now``, set by the caller before each call.
"""

from __future__ import annotations

from collections import deque
from itertools import count
from typing import Any, NamedTuple

from ...exceptions import OutOfMemoryError, TaskCancelledError, WorkerCrashedError

QUEUED, WAITING, RUNNING, DONE = "queued", "waiting", "running", "done"

# state -> the states it may go to
EDGES = {
    WAITING: {QUEUED, DONE},             # arguments ready; or failed/cancelled
    QUEUED: {RUNNING, WAITING, DONE},    # pushed; no node yet (a rebuild waits); failed
    RUNNING: {DONE, QUEUED, WAITING},    # replied or failed; handed back or retried;
                                         # an argument lost before it was sent
    DONE: {WAITING, QUEUED},             # retried after an error, or rebuilt (lineage)
}


class IllegalTransition(RuntimeError):
    """A task was asked to change state along an edge that does not exist."""


def _to(task: Task, state: str) -> None:
    if state not in EDGES[task.state]:
        raise IllegalTransition(f"task {task.name} ({task.task_id.hex()}): "
                                f"{task.state} -> {state}")
    task.state = state


class TaskPayload(NamedTuple):
    """What the owner sends to run a task (opaque to the task manager)."""
    fn_id: bytes
    fn_blob: bytes
    args_entry: tuple        # the serialized arguments, or ("ref", oid) if stored
    top_refs: list           # [(oid, owner)] passed at top level: resolved to values


class CallPayload(NamedTuple):
    """What a caller sends to run an actor method."""
    method: str
    args_entry: tuple
    top_refs: list


class Push(NamedTuple):
    kind: str
    lease: Any
    tasks: list


class Request(NamedTuple):
    kind: str
    req_id: int
    resources: dict
    task: Any


class Return(NamedTuple):
    kind: str
    lease_id: int


class Fail(NamedTuple):
    kind: str
    task: Any
    error: BaseException


class Cancel(NamedTuple):
    kind: str
    task: Any
    worker: str
    force: bool


class Task:
    __slots__ = ("task_id", "name", "key", "resources", "return_ids", "arg_refs",
                 "deps", "max_retries", "retry_exceptions", "attempts", "state",
                 "lease", "payload", "cancelled", "quick", "_rebuilds", "unplaceable_since",
                 "site", "submitted_at", "started_at", "finished_at", "actor_id")

    def __init__(self, task_id: bytes, name: str, resources: dict, return_ids: list,
                 arg_refs: list, payload, max_retries: int = 3,
                 retry_exceptions=False):
        self.task_id = task_id
        self.name = name
        self.resources = resources
        self.key = tuple(sorted(resources.items()))
        self.return_ids = return_ids
        self.arg_refs = arg_refs          # [(oid, owner)] counted as submitted
        self.deps: set = set()            # top-level ref args not yet resolved
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.attempts = 0
        self.state = WAITING
        self.lease: OwnerLease | None = None
        self.payload = payload            # a TaskPayload or CallPayload: what is sent
        self.cancelled = False
        self.quick = False                # known to run in well under a millisecond
        self._rebuilds = 0                # times run again to rebuild lost outputs
        self.unplaceable_since: float | None = None   # a rebuild no node can run yet
        self.site = None                  # (made_by, filename, line) of the submit call
        # for the state API, on the owner's clock (``now``): set by the task manager
        self.submitted_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.actor_id: bytes | None = None        # the actor it calls (an actor call)


class OwnerLease:
    __slots__ = ("lease_id", "worker", "key", "inflight", "idle_since", "paused")

    def __init__(self, lease_id: int, worker: str, key: tuple, now: float):
        self.lease_id = lease_id
        self.worker = worker
        self.key = key
        self.inflight: dict[bytes, Task] = {}
        self.idle_since = now
        self.paused = False               # the worker blocked; push nothing until done


class TaskManager:
    def __init__(self, depth: int = 8, idle_timeout: float = 0.2,
                 max_requests: int = 2, rebuild_wait: float = 30.0):
        self.depth = depth
        # A rebuild that no node can run waits this long for one to join (the node it
        # ran on may have just died); a new task that no node can run fails at once.
        self.rebuild_wait = rebuild_wait
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        self.now = 0.0
        self.tasks: dict[bytes, Task] = {}
        self.waiting: dict[bytes, list[Task]] = {}
        self.queues: dict[tuple, deque[Task]] = {}
        self.leases: dict[int, OwnerLease] = {}
        self.requests: dict[int, tuple] = {}          # req_id -> key
        self.delayed: list[tuple[float, Task]] = []   # (not before, task): retry backoff
        self._req_ids = count(1)

    # -- submission and dependencies ---------------------------------------------
    def submit(self, task: Task, unresolved: set) -> list:
        self.tasks[task.task_id] = task
        if task.submitted_at is None:
            task.submitted_at = self.now
        if unresolved:
            task.deps = set(unresolved)
            if task.state != WAITING:
                _to(task, WAITING)
            for oid in unresolved:
                self.waiting.setdefault(oid, []).append(task)
            return []
        return self._enqueue(task)

    def resolved(self, oid: bytes) -> list:
        """A dependency is ready.  Tasks it unblocks go to the *front* of their queue:
        running consumers as soon as their inputs exist (depth first) keeps those
        inputs in memory instead of spilling them behind a long queue of producers."""
        actions = []
        for task in self.waiting.pop(oid, ()):
            task.deps.discard(oid)
            if not task.deps and task.state == WAITING and not task.cancelled:
                actions += self._enqueue(task, front=True)
        return actions

    def dependency_failed(self, oid: bytes, error: BaseException) -> list:
        actions = []
        for task in self.waiting.pop(oid, ()):
            if task.state == WAITING:
                actions += self._finish_failed(task, error)
        return actions

    def _enqueue(self, task: Task, front: bool = False) -> list:
        _to(task, QUEUED)
        q = self.queues.setdefault(task.key, deque())
        if front:
            q.appendleft(task)
        else:
            q.append(task)
        return self._pump(task.key)

    # -- leases ----------------------------------------------------------------------
    def lease_granted(self, req_id: int, lease_id: int, worker: str) -> list:
        key = self.requests.pop(req_id, None)
        if key is None:
            return [Return("return", lease_id)]
        lease = self.leases[lease_id] = OwnerLease(lease_id, worker, key, self.now)
        actions = self._pump(key)
        if not lease.inflight:
            del self.leases[lease_id]
            actions.append(Return("return", lease_id))
        return actions

    def lease_rejected(self, req_id: int, message: str) -> list:
        """No node can run tasks of this shape.  New tasks fail at once; a rebuild
        retries every second until ``rebuild_wait`` has passed, then fails with the
        latest message (the cluster as it is then)."""
        key = self.requests.pop(req_id, None)
        actions = []
        if key is not None:
            q = self.queues.pop(key, deque())
            for task in q:
                if task._rebuilds and not task.cancelled:
                    if task.unplaceable_since is None:
                        task.unplaceable_since = self.now
                    if self.now - task.unplaceable_since < self.rebuild_wait:
                        _to(task, WAITING)
                        self.delayed.append((self.now + 1.0, task))
                        continue
                actions += self._finish_failed(task, _infeasible(task, message,
                                                                 self.rebuild_wait))
        return actions

    def reclaim(self) -> list:
        """The node manager needs workers: give back every lease with nothing in flight."""
        actions = []
        for lease in list(self.leases.values()):
            if not lease.inflight:
                del self.leases[lease.lease_id]
                actions.append(Return("return", lease.lease_id))
        return actions

    def tick(self) -> list:
        actions = []
        if self.delayed:
            due = [t for when, t in self.delayed if when <= self.now]
            self.delayed = [(w, t) for w, t in self.delayed if w > self.now]
            for task in due:
                if not task.cancelled:
                    actions += self._enqueue(task)
        for lease in list(self.leases.values()):
            if not lease.inflight and self.now - lease.idle_since >= self.idle_timeout:
                del self.leases[lease.lease_id]
                actions.append(Return("return", lease.lease_id))
        return actions

    def _pump(self, key: tuple) -> list:
        q = self.queues.get(key)
        if not q:
            return []
        pushes: dict[int, list] = {}
        leases = [lease for lease in self.leases.values()
                  if lease.key == key and not lease.paused]
        while q and leases:
            # Pipeline several tasks per worker only when they are known to be quick:
            # a task of unknown length behind another could wait while a CPU idles.
            lease = min(leases, key=lambda le: len(le.inflight))
            n = len(lease.inflight)
            if n and (n >= self.depth or not q[0].quick
                      or not all(t.quick for t in lease.inflight.values())):
                break
            task = q.popleft()
            _to(task, RUNNING)
            task.lease = lease
            task.attempts += 1
            task.started_at = self.now
            lease.inflight[task.task_id] = task
            pushes.setdefault(lease.lease_id, []).append(task)
        actions = [Push("push", self.leases[lid], batch) for lid, batch in pushes.items()]
        if q:
            pending = sum(1 for k in self.requests.values() if k == key)
            if pending < self.max_requests:
                req_id = next(self._req_ids)
                self.requests[req_id] = key
                actions.append(Request("request", req_id, q[0].resources, q[0]))
        return actions

    # -- completion ------------------------------------------------------------------
    def done(self, task_id: bytes) -> tuple[Task | None, list]:
        """A worker replied for ``task_id``.  Returns the task (None if unknown, e.g.
        already failed by a cancel) and follow-up actions."""
        task = self.tasks.pop(task_id, None)
        if task is None:
            return None, []
        _to(task, DONE)
        task.finished_at = self.now
        lease = task.lease
        actions = []
        if lease is not None:
            lease.inflight.pop(task_id, None)
            lease.paused = False
            if not lease.inflight:
                lease.idle_since = self.now
            actions = self._pump(lease.key)
        return task, actions

    def unpush(self, task: Task, missing: set) -> None:
        """``task`` was about to be sent but an argument's value has gone (lost with a
        node, being rebuilt): it waits for it again instead."""
        lease = task.lease
        if lease is not None:
            lease.inflight.pop(task.task_id, None)
            if not lease.inflight:
                lease.idle_since = self.now
        task.lease = None
        task.attempts -= 1
        _to(task, WAITING)
        task.deps = set(missing)
        for oid in missing:
            self.waiting.setdefault(oid, []).append(task)

    def should_retry_exception(self, task: Task, exc_type) -> bool:
        rx = task.retry_exceptions
        if not rx or task.attempts > task.max_retries:
            return False
        if rx is True:
            return True
        try:
            return exc_type is not None and issubclass(exc_type, tuple(rx))
        except TypeError:
            return False

    def retry(self, task: Task) -> list:
        """Run ``task`` again (an application error it may retry)."""
        self.tasks[task.task_id] = task
        lease = task.lease
        if lease is not None:
            lease.inflight.pop(task.task_id, None)
        task.lease = None
        actions = self._enqueue(task)
        if lease is not None and lease.lease_id in self.leases:
            actions += self._pump(lease.key)
        return actions

    def run_later(self, task: Task, delay: float) -> None:
        """Queue ``task`` (which just finished with an error) again after ``delay``."""
        _to(task, WAITING)
        self.tasks[task.task_id] = task
        self.delayed.append((self.now + delay, task))

    def forget(self, task: Task) -> None:
        """Stop tracking ``task`` (its node manager died: the owner fails it)."""
        self.tasks.pop(task.task_id, None)

    def returned(self, worker: str, task_ids: list) -> list:
        """A blocked worker handed back tasks it had not started."""
        actions = []
        for lease in self.leases.values():
            if lease.worker != worker:
                continue
            lease.paused = True
            back = [lease.inflight.pop(t) for t in task_ids if t in lease.inflight]
            q = self.queues.setdefault(lease.key, deque())
            for task in reversed(back):
                _to(task, QUEUED)
                task.lease = None
                task.attempts -= 1
                q.appendleft(task)
            actions += self._pump(lease.key)
        return actions

    def worker_died(self, worker: str, reason: str, oom: bool = False) -> list:
        """The worker died (``oom``: the memory monitor killed it).  Its tasks run again
        while they have retries left (after a backoff if memory was short), else fail."""
        actions = []
        for lease in [le for le in self.leases.values() if le.worker == worker]:
            del self.leases[lease.lease_id]
            for task in lease.inflight.values():
                task.lease = None
                if task.cancelled:
                    actions += self._finish_failed(task, TaskCancelledError(
                        f"task {task.name} ({task.task_id.hex()}) was cancelled"))
                elif task.attempts <= task.max_retries and oom:
                    _to(task, WAITING)
                    backoff = min(0.25 * 2 ** (task.attempts - 1), 5.0)
                    self.delayed.append((self.now + backoff, task))
                elif task.attempts <= task.max_retries:
                    actions += self._enqueue(task)
                elif oom:
                    actions += self._finish_failed(task, OutOfMemoryError(
                        f"task {task.name} ({task.task_id.hex()}) ran out of memory: "
                        f"{reason}. It was tried {task.attempts} time(s) "
                        f"(max_retries={task.max_retries}). Make the task use less memory "
                        f"(smaller inputs, or process them in pieces), run fewer tasks at "
                        f"once (a larger num_cpus= per task), or allow more retries."))
                else:
                    actions += self._finish_failed(task, WorkerCrashedError(
                        f"the worker running task {task.name} ({task.task_id.hex()}) "
                        f"died: {reason}. It was tried {task.attempts} time(s) and has "
                        f"no retries left (max_retries={task.max_retries})."))
            actions += self._pump(lease.key)
        return actions

    def cancel(self, task_id: bytes, force: bool) -> list:
        task = self.tasks.get(task_id)
        if task is None or task.cancelled:
            return []
        task.cancelled = True
        err = TaskCancelledError(f"task {task.name} ({task.task_id.hex()}) was cancelled")
        if task.state == RUNNING and task.lease is not None:
            return [Cancel("cancel", task, task.lease.worker, force)]
        if task.state == QUEUED:
            self.queues[task.key].remove(task)
        return self._finish_failed(task, err)

    def _finish_failed(self, task: Task, error: BaseException) -> list:
        self.tasks.pop(task.task_id, None)
        if task.lease is not None:
            task.lease.inflight.pop(task.task_id, None)
            task.lease = None
        for oid in task.deps:
            waiters = self.waiting.get(oid)
            if waiters and task in waiters:
                waiters.remove(task)
                if not waiters:
                    del self.waiting[oid]
        _to(task, DONE)
        task.finished_at = self.now
        return [Fail("fail", task, error)]

    # -- introspection ---------------------------------------------------------------
    def pending(self) -> int:
        return len(self.tasks)

    def inflight_on(self, worker: str) -> list[Task]:
        return [t for lease in self.leases.values() if lease.worker == worker
                for t in lease.inflight.values()]


def _infeasible(task: Task, message: str, waited: float) -> BaseException:
    from ...exceptions import ObjectReconstructionFailedError, RefbookError
    if task._rebuilds:
        return ObjectReconstructionFailedError(
            f"the outputs of task {task.name} were lost and it cannot run again: no node "
            f"that can run it joined within {waited:g} s ({message})")
    return RefbookError(f"task {task.name} cannot be scheduled: {message}")
