"""Lineage and reconstruction, in the owner.

The owner of a task's outputs keeps the finished task (its *lineage*) while any output
may still be needed, and its arguments' lineage with it (``ReferenceTable.add_lineage``:
their entries, not their values).  When every copy of an output is lost, the owner runs
the task again, first rebuilding any lost argument it owns, recursively.  Objects made
by ``put`` have no lineage, so a kept task also keeps the put() values it read (as Ray
does): ``objects()`` lists them under ``lineage``, and ``refbook.release_lineage(ref)``
or ``max_retries=0`` lets them go.  A rebuild that runs out of retries, or whose lineage
was released or dropped to stay under ``max_bytes``, fails with a clear error.  Part of
the :class:`~refbook.runtime.protocol.owner.Owner`: no I/O; what it decides goes to the
owner's outbox.
"""

from __future__ import annotations

from collections import deque

from ... import exceptions as exc
from .entries import ERROR
from .events import ended, entry_size, retried
from .ids import is_put, task_of
from .refcount import Effects
from .tasks import WAITING, Task, _to


def _task_bytes(task: Task) -> int:
    args_entry = task.payload.args_entry
    n = 256 + len(task.arg_refs) * 64
    if args_entry[0] != "ref":
        n += len(args_entry[1]) + sum(len(b) for b in args_entry[2])
    return n


class Lineage:
    def __init__(self, owner, max_bytes: int = 256 << 20):
        self.owner = owner
        self.max_bytes = max_bytes
        self.tasks: dict[bytes, Task] = {}         # task id -> finished task (insertion order)
        self.args: dict[bytes, list] = {}          # task id -> owned args it keeps
        self.bytes = 0
        self.evicted: deque = deque(maxlen=100_000)
        self._evicted_set: set = set()
        self.rebuilding: set[bytes] = set()        # outputs being made again
        self.released_by_user: set[bytes] = set()  # lineage dropped by release_lineage()
        self.announced: set[bytes] = set()         # object_reconstructing emitted
        self.retried: dict[bytes, tuple] = {}     # task id -> (next attempt, why)
        self.unkept_calls: dict[bytes, str] = {}   # actor call id -> name, kept no lineage

    def note_retry(self, task_id: bytes, attempt: int, why: str) -> None:
        """A task runs again (``attempt``) because ``why``: for the notebook's views."""
        self.retried[task_id] = (attempt, why)
        if len(self.retried) > 10_000:
            del self.retried[next(iter(self.retried))]

    # -- keeping lineage -----------------------------------------------------------------------
    def keep(self, task: Task) -> None:
        """A task we own finished: keep it while its outputs may need rebuilding."""
        if task.max_retries == 0 and task.actor_id is not None:
            self.unkept_calls[task.task_id] = task.name      # to say why, if lost
            if len(self.unkept_calls) > 10_000:
                del self.unkept_calls[next(iter(self.unkept_calls))]
        if task.max_retries == 0 or task.task_id in self.tasks:
            return
        me = self.owner.me
        # (an actor call's lineage does not keep its actor alive: as Ray's, a call is
        # run again only on an actor that still lives, or restarts)
        owned = [oid for oid, owner in task.arg_refs if owner == me and oid != task.actor_id]
        self.owner.rt.add_lineage(owned)
        # put() values cannot be rebuilt, so the lineage keeps their values, not only
        # their entries (released with the lineage; bounded by max_bytes)
        pinned = [(oid, me) for oid in owned if is_put(oid)]
        self.owner.rt.add_kept(pinned)
        self.tasks[task.task_id] = task
        self.args[task.task_id] = (owned, pinned)
        self.bytes += _task_bytes(task)
        if self.bytes > self.max_bytes:
            fx = Effects()
            while self.bytes > self.max_bytes * 0.5 and self.tasks:
                oldest = next(iter(self.tasks))
                self._drop(oldest, fx)
                self.evicted.append(oldest)
                self._evicted_set.add(oldest)
                if len(self._evicted_set) > self.evicted.maxlen:
                    self._evicted_set = set(self.evicted)
            self.owner.apply(fx)

    def kept_for(self) -> dict[bytes, list[Task]]:
        """The put() values that kept lineage holds (``oid -> [task, ...]``): such a
        value cannot be rebuilt, so it stays while a task that read it may run again."""
        out: dict[bytes, list[Task]] = {}
        for tid, (_owned, pinned) in self.args.items():
            for oid, _owner in pinned:
                out.setdefault(oid, []).append(self.tasks[tid])
        return out

    def release(self, tid: bytes) -> bool:
        """Forget the lineage of task ``tid`` on request (``refbook.release_lineage``):
        its outputs can no longer be rebuilt, and the put() values it kept are freed
        unless something else holds them.  Returns False if no lineage was kept."""
        if tid not in self.tasks:
            return False
        fx = Effects()
        self._drop(tid, fx)
        self.evicted.append(tid)
        self._evicted_set.add(tid)
        self.released_by_user.add(tid)
        self.owner.apply(fx)
        return True

    def released(self, oid: bytes, fx: Effects) -> None:
        """``oid``'s entry is gone; drop its task once none of its outputs remain."""
        tid = task_of(oid)
        task = self.tasks.get(tid)
        if task is not None and not any(r in self.owner.rt for r in task.return_ids):
            self._drop(tid, fx)

    def _drop(self, tid: bytes, fx: Effects) -> None:
        task = self.tasks.pop(tid)
        self.bytes -= _task_bytes(task)
        owned, pinned = self.args.pop(tid, ([], []))
        self.owner.rt.remove_kept(pinned, fx)
        self.owner.rt.remove_lineage(owned, fx)

    # -- losing and rebuilding -----------------------------------------------------------------
    def lost(self, oid: bytes, why: str) -> None:
        """Every copy of ``oid`` (ours) is gone: rebuild it, or fail it clearly."""
        owner = self.owner
        entry = owner.values.pop(oid, None)
        owner.out.lost.append(oid)
        owner.events.add("object_lost", oid, entry_size(entry) if entry and entry[0] < ERROR
                         else None, why)
        if is_put(oid):
            owner.set_value(oid, (ERROR, exc.ObjectLostError(
                f"object {oid.hex()} was created by put() and {why}; a put value has no "
                f"lineage to rebuild it from. Keep such data where it cannot be lost, or "
                f"make it with a task.")))
            return
        tid = task_of(oid)
        task = self.tasks.get(tid)
        if task is None:
            if tid in owner.tm.tasks:        # its task has not finished yet: it will
                return
            if tid in self.released_by_user:
                reason = "its lineage was released with refbook.release_lineage()"
            elif tid in self._evicted_set:
                reason = "its lineage was dropped to stay under the lineage memory limit"
            elif tid in self.unkept_calls:
                reason = (f"it was returned by actor method {self.unkept_calls[tid]}, and "
                          f"an actor's calls are run again only if it has "
                          f"max_task_retries != 0 (and it restarts: max_restarts)")
            else:
                reason = "no lineage is kept for it (its task has max_retries=0)"
            owner.set_value(oid, (ERROR, exc.ObjectReconstructionFailedError(
                f"object {oid.hex()} {why}, and it cannot be rebuilt: {reason}.")))
            return
        self.rebuild(task, why)

    def _fail_outputs(self, task, err) -> None:
        """``task``'s outputs that someone still holds become ``err``."""
        owner = self.owner
        for rid in task.return_ids:
            if rid in owner.rt:
                owner.values.pop(rid, None)
                owner.set_value(rid, (ERROR, err))

    def rebuild(self, task: Task, why: str, retry: bool = False) -> None:
        """Run ``task`` again to make its lost outputs (``retry``: it had not finished,
        and runs again because an argument was lost while it ran)."""
        owner = self.owner
        if task.task_id in owner.tm.tasks:
            return                           # already running again
        rebuilds = task._rebuilds + 1
        task._rebuilds = rebuilds
        if rebuilds > max(task.max_retries, 0):
            err = exc.ObjectReconstructionFailedError(
                f"the outputs of task {task.name} ({task.task_id.hex()}) {why}, and it was "
                f"already run again {rebuilds - 1} time(s) (max_retries={task.max_retries})")
            self._fail_outputs(task, err)
            if retry:
                ended(owner.events, task, err)
            return
        if task.actor_id is not None and task.actor_id not in owner.rt:
            err = exc.ObjectReconstructionFailedError(
                f"the outputs of actor call {task.name} ({task.task_id.hex()}) {why}, and "
                f"they cannot be made again: the actor is gone (no handle to it is left)")
            self._fail_outputs(task, err)
            return
        if retry:
            retried(owner.events, task, why)
        fx = Effects()
        # hold the arguments first: the old outputs may be all that kept one of them
        # (a ref the task returned nested in its value), and clearing them must not
        # free an argument the task is about to need again
        owner.rt.add_submitted(task.arg_refs)
        for rid in task.return_ids:
            if rid in owner.rt:
                owner.values.pop(rid, None)
                owner.rt.clear_nested(rid, fx)
                self.rebuilding.add(rid)
        top_refs = task.payload.top_refs
        unresolved = set()
        for oid, arg_owner in top_refs:
            if oid in owner.values:
                continue
            unresolved.add(oid)
            if arg_owner == owner.me:
                if oid not in self.rebuilding:
                    self.lost(oid, f"was needed to rebuild {task.name}")
            else:
                owner.fetch(oid, arg_owner)
        unresolved = {oid for oid in unresolved if oid not in owner.values}
        if task.state != WAITING:
            _to(task, WAITING)
        task.lease = None
        task.attempts = 0
        task.cancelled = False
        task.unplaceable_since = None
        if not retry:
            ev = owner.events
            ev.add("task_submitted", task.task_id, task.name, f"reconstruct: {why}")
            for rid in task.return_ids:
                if rid in self.rebuilding:
                    self.announced.add(rid)
                    ev.add("object_reconstructing", rid, None, task.task_id, task.name, why)
        if task.actor_id is not None:      # an actor call: on the (restarted) actor
            owner.actor_resubmit(task, unresolved)
        else:
            owner.do(owner.tm.submit(task, unresolved))
        owner.apply(fx)

    def rebuilt(self, oid: bytes, entry: tuple) -> None:
        """A task returned ``oid``'s value: made again, or made for the first time."""
        if self.rebuilding:
            self.rebuilding.discard(oid)
        if self.announced and oid in self.announced:
            self.announced.discard(oid)
            self.owner.events.add("object_reconstructed", oid, entry_size(entry), task_of(oid))
        else:
            self.owner.events.add("object_created", oid, entry_size(entry))
