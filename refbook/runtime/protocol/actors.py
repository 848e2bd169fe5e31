"""Actors, without I/O: the caller's per-actor call queue and the owner's actor lifecycle.

An actor is owned by the process that created it, and reference counted like an
object: its handle *is* a ref (the actor id), and the value of that ref is where the
actor lives, ``(ACTOR, address, incarnation)``.  Callers fetch that value from the owner
like any other value and send method calls straight to the actor's process.

:class:`ActorQueue` (one per actor a process calls) keeps calls in submission order:
a call leaves only when every call before it has left, its ref arguments are resolved
and the actor's address is known.  When the actor's process dies, calls in flight are
sent again to the restarted actor if ``max_task_retries`` allows, else they fail.

:class:`OwnedActor` (one per actor a process created) is the owner's state machine::

    pending --created--> alive --died, restarts left--> restarting --created--> alive
       |                   |                                  |
       +-- ctor raised / died, no restarts left / killed ----> dead

Why it died (``OwnedActor.end``) is one of ``DEATHS``.
"""

from __future__ import annotations

from collections import deque

from ...exceptions import ActorError
from .entries import node_of

PENDING, ALIVE, RESTARTING, DEAD = "pending", "alive", "restarting", "dead"
# the ``reason`` of an ``actor_died`` event
DEATHS = ("killed", "process_died", "restarts_exhausted", "out_of_scope", "owner_died",
          "constructor_failed", "unschedulable")


class ActorQueue:
    """One caller's calls to one actor.  Methods return actions:
    ``("send", address, [task, ...])``, ``("fail", task, error)`` and ``("retry", task,
    reason)`` (sent again when the actor is back)."""

    def __init__(self, actor_id: bytes, name: str, max_task_retries: int):
        self.actor_id = actor_id
        self.name = name
        self.max_task_retries = max_task_retries
        self.address: str | None = None
        self.dead: BaseException | None = None
        self.pending: deque = deque()           # not sent yet, in submission order
        self.inflight: dict[bytes, object] = {}  # sent, no reply yet (insertion ordered)

    def submit(self, task) -> list:
        if self.dead is not None:
            return [("fail", task, self.dead)]
        self.pending.append(task)
        return self._pump()

    def resolved(self) -> list:
        """Some argument of a queued call became available."""
        return self._pump()

    def located(self, address: str) -> list:
        self.address = address
        return self._pump()

    def _pump(self) -> list:
        if self.address is None:
            return []
        batch = []
        while self.pending and not self.pending[0].deps:
            task = self.pending.popleft()
            task.attempts += 1
            self.inflight[task.task_id] = task
            batch.append(task)
        return [("send", self.address, batch)] if batch else []

    def done(self, task_id: bytes):
        return self.inflight.pop(task_id, None)

    def lost(self, address: str, reason: str) -> list:
        """The actor's process at ``address`` died.  Calls in flight go back to the
        front of the queue, in order, if they may be retried; the others fail."""
        if address != self.address:
            return []
        self.address = None
        actions = []
        retry = []
        for task in self.inflight.values():
            if task.attempts <= self.max_task_retries:
                retry.append(task)
                actions.append(("retry", task, reason))
            else:
                actions.append(("fail", task, ActorError(
                    f"actor {self.name} ({self.actor_id.hex()}) died while running "
                    f"{task.name}: {reason}. The call was not retried "
                    f"(max_task_retries={self.max_task_retries}).")))
        self.inflight.clear()
        self.pending.extendleft(reversed(retry))
        return actions

    def died(self, error: BaseException) -> list:
        """The actor is dead for good: every call fails with ``error``."""
        self.dead = error
        self.address = None
        actions = [("fail", t, error) for t in list(self.inflight.values()) + list(self.pending)]
        self.inflight.clear()
        self.pending.clear()
        return actions

    def cancel(self, task_id: bytes):
        for t in list(self.pending):
            if t.task_id == task_id:
                self.pending.remove(t)
                return t
        return None


class OwnedActor:
    """The owner's record of an actor it created."""

    def __init__(self, actor_id: bytes, class_name: str, name: str | None, options: dict,
                 create_payload):
        self.actor_id = actor_id
        self.class_name = class_name
        self.name = name
        self.options = options
        self.max_restarts = options.get("max_restarts", 0)
        self.create_payload = create_payload   # what the core needs to (re)create it
        # how this process holds the constructor's arguments: "submitted" until the
        # constructor ran, then "kept" (lineage, for restarts) or None (no restarts)
        self.args_held: str | None = "submitted"
        self.state = PENDING
        self.address: str | None = None
        self.lease_id: int | None = None
        self.incarnation = 0
        self.restarts = 0
        self.no_restart = False
        self.error: BaseException | None = None
        self.creating: bytes | None = None     # task id of the constructor call in flight
        self.out_of_scope = False
        self.pid: int | None = None            # of its process, once its constructor ran
        self.last_death: str | None = None     # why its process died last
        self.end: str | None = None            # one of DEATHS, once reported dead

    @property
    def node_id(self) -> str | None:
        """The node it runs on (is placed on), or None."""
        return node_of(self.address) if self.address else None

    def placed(self, lease_id: int, address: str, creation_task: bytes) -> None:
        self.lease_id = lease_id
        self.address = address
        self.creating = creation_task

    def created(self, ok: bool, error: BaseException | None = None) -> str:
        """The constructor finished.  Returns the new state."""
        self.creating = None
        if ok:
            self.state = ALIVE
            self.incarnation += 1
        else:
            self.state = DEAD
            self.error = error
        return self.state

    def died(self, reason: str) -> str:
        """Its process died.  Returns ``RESTARTING`` (create it again) or ``DEAD``."""
        self.address = None
        self.lease_id = None
        self.creating = None
        self.pid = None
        self.last_death = reason
        if self.state == DEAD:
            return DEAD
        unlimited = self.max_restarts == -1
        if not self.no_restart and not self.out_of_scope and \
                (unlimited or self.restarts < self.max_restarts):
            self.restarts += 1
            self.state = RESTARTING
            return RESTARTING
        self.state = DEAD
        why = "it was killed" if self.no_restart else reason
        if self.error is None:
            self.error = ActorError(
                f"actor {self.name or self.class_name} ({self.actor_id.hex()}) is dead: "
                f"{why}. It was restarted {self.restarts} time(s) "
                f"(max_restarts={self.max_restarts}).")
        return DEAD

    def kill(self, no_restart: bool) -> None:
        self.no_restart = self.no_restart or no_restart

    def death(self) -> str:
        """Why it is dead now that its process died (one of DEATHS)."""
        if self.no_restart:
            return "killed"
        return "restarts_exhausted" if self.max_restarts else "process_died"

    def view(self) -> dict:
        return {"actor_id": self.actor_id.hex(), "name": self.name,
                "class_name": self.class_name, "state": self.state,
                "address": self.address, "restarts": self.restarts,
                "node_id": self.node_id, "pid": self.pid}
