"""Actors in a driver or worker process: creating them (as their owner) and calling
them (as any holder of a handle).  The decisions live in protocol/actors.py; this module sends
the messages.  Every method that touches state runs with ``core.lock`` held.
"""

from __future__ import annotations

import logging
import time

from ... import exceptions as exc
from ..protocol import messages as P
from ..protocol.actors import ALIVE, DEAD, RESTARTING, ActorQueue, OwnedActor
from ..protocol.entries import ACTOR, ERROR
from ..protocol.events import actor_event, ended, retried
from ..protocol.ids import object_id
from ..protocol.refcount import Effects
from ..protocol.tasks import CallPayload, Task
from .callsite import here

log = logging.getLogger("refbook.actors")


class ActorRuntime:
    def __init__(self, core):
        self.core = core
        self.queues: dict[bytes, ActorQueue] = {}     # actors we call
        self.owned: dict[bytes, OwnedActor] = {}      # actors we created
        self.calls: dict[bytes, bytes] = {}           # call task id -> actor id
        self.creating: dict[bytes, bytes] = {}        # constructor task id -> actor id
        self.lease_reqs: dict[int, bytes] = {}        # lease request id -> actor id
        self.waiting: dict[bytes, set] = {}           # ref -> actors with calls waiting on it
        self._req_ids = iter(range(1 << 40, 1 << 62))  # apart from the task manager's ids
        core._handlers.update({
            P.ACTOR_KILL: self._on_kill,
        })

    # ------------------------------------------------------------------ creating
    def create(self, actor_id: bytes, class_name: str, class_id: bytes, class_blob: bytes,
               prepared, options: dict) -> None:
        core = self.core
        with core.lock:
            args_entry, top_refs, arg_refs, unresolved = core.hold_args(prepared)
            core.rt.own(actor_id)
            core.rt.add_local(actor_id, core.me)      # the handle the caller gets back
            rec = OwnedActor(actor_id, class_name, options.get("name"), options,
                             (class_id, class_blob, args_entry, top_refs, arg_refs,
                              unresolved))
            self.owned[actor_id] = rec
            self._update_directory(rec)
            self._request_lease(rec)

    def _request_lease(self, rec: OwnedActor) -> None:
        req = next(self._req_ids)
        self.lease_reqs[req] = rec.actor_id
        res = {"CPU": float(rec.options.get("num_cpus", 0))}
        for k, v in (rec.options.get("resources") or {}).items():
            res[k] = float(v)
        self.core.request_lease(req, res, True)

    def owns_request(self, req_id: int) -> bool:
        return req_id in self.lease_reqs

    def lease_granted(self, req_id: int, lease_id, worker) -> None:
        actor_id = self.lease_reqs.pop(req_id)
        rec = self.owned.get(actor_id)
        core = self.core
        if lease_id is None:                        # no node can ever host it
            self._dead(rec, exc.ActorError(
                f"actor {rec.name or rec.class_name} cannot be scheduled: {worker}"),
                "unschedulable")
            return
        if rec is None or rec.state == DEAD:
            core.transport.send(core.owner.lease_nm.get(lease_id, core.node_address),
                                (P.KILL_WORKER, worker, "actor is gone"))
            return
        class_id, class_blob, args_entry, top_refs, _arg_refs, unresolved = rec.create_payload
        missing = [oid for oid in unresolved if oid not in core.values]
        if missing:      # constructor arguments not ready: try again when they are
            core.transport.send(core.owner.lease_nm.pop(lease_id, core.node_address),
                                (P.LEASE_RETURN, lease_id))
            for oid in missing:
                self.waiting.setdefault(oid, set()).add(("create", actor_id))
            return
        task_id = core.ids.task_id()
        rec.placed(lease_id, worker, task_id)
        self.creating[task_id] = actor_id
        if args_entry[0] == "ref":
            args_entry = (core.values[args_entry[1]], args_entry[1])
        else:
            args_entry = (args_entry, None)
        resolved = [(oid, owner, core.values[oid]) for oid, owner in top_refs]
        for _oid, _, entry in resolved:
            if entry[0] == ERROR:   # the constructor cannot run
                self._dead(rec, exc.ActorError(
                    f"actor {rec.name or rec.class_name}: a constructor argument failed: "
                    f"{entry[1]}"), "constructor_failed")
                core.transport.send(self._nm_of(rec), (P.KILL_WORKER, worker, "ctor arg"))
                return
        spec = (task_id, actor_id, class_id, class_blob, args_entry, resolved,
                rec.name or rec.class_name, int(rec.options.get("max_concurrency", 1)))
        core.transport.send(worker, (P.CREATE_ACTOR, core.me, spec))
        self._update_directory(rec)

    def created_reply(self, task_id: bytes, ok: bool, payload, worker: str, borrowed,
                      fx) -> bool:
        """The owner's hook for a reply it has no task for: True if it is the reply of
        an actor's constructor (then handled here)."""
        actor_id = self.creating.get(task_id)
        if actor_id is None:
            return False
        rec = self.owned.get(actor_id)
        if borrowed and rec is not None:   # the instance keeps these refs
            self.core.rt.task_borrowed(borrowed, worker, rec.create_payload[4], fx)
        self.created(task_id, ok, payload)
        return True

    def created(self, task_id: bytes, ok: bool, payload) -> None:
        actor_id = self.creating.pop(task_id, None)
        rec = self.owned.get(actor_id)
        if rec is None:
            return
        core = self.core
        if ok:
            rec.created(True)
            self._constructed(rec)
            rec.pid = payload if type(payload) is int else None    # (the worker's pid)
            if rec.incarnation == 1:
                self._event(rec, "actor_created", owner=core.me)
            else:
                self._event(rec, "actor_restarted", attempt=rec.restarts,
                            reason=rec.last_death, restarts=rec.restarts)
            if rec.out_of_scope:
                core.transport.send(rec.address, (P.ACTOR_EXIT,))
            core._set_value(actor_id, (ACTOR, rec.address, rec.incarnation))
        else:
            err = exc.ActorError(
                f"the constructor of actor {rec.name or rec.class_name} "
                f"({actor_id.hex()}) raised, so every call fails:\n{payload}")
            rec.created(False, err)
            core.transport.send(self._nm_of(rec),
                                (P.KILL_WORKER, rec.address, "constructor failed"))
            lines = [ln for ln in str(payload).splitlines() if ln.strip()]
            self._dead(rec, err, "constructor_failed",
                       detail=f"its constructor raised: {lines[-1] if lines else payload}")
        self._update_directory(rec)

    def _nm_of(self, rec: OwnedActor) -> str:
        """The node manager of the node the actor runs on."""
        return self.core.owner.lease_nm.get(rec.lease_id, self.core.node_address)

    def _event(self, rec: OwnedActor, kind: str, where: tuple | None = None,
               **more) -> None:
        """An actor event in this process's ring (we own the actor: we decide what
        happens to it, so each happening is recorded once, here).  ``where``: the
        ``(node_id, pid)`` it ran at, if not where it is now."""
        node_id, pid = where or (rec.node_id, rec.pid)
        actor_event(self.core.owner.events, kind, rec.actor_id, rec.class_name, rec.name,
                    node_id, pid, **more)

    def _dead(self, rec: OwnedActor, err: BaseException, reason: str,
              where: tuple | None = None, detail: str | None = None) -> None:
        """``rec`` is dead for good, because ``reason`` (one of protocol.actors.DEATHS)."""
        rec.state = DEAD
        rec.error = rec.error or err
        self._died_event(rec, reason, where, detail)
        core = self.core
        if rec.actor_id in core.rt:
            core._set_value(rec.actor_id, (ERROR, rec.error))
        self._drop_args(rec)
        self._update_directory(rec)

    def _constructed(self, rec: OwnedActor) -> None:
        """The constructor ran: its arguments are submitted no more.  An actor that may
        restart keeps them (as lineage, Ray's ``lineage_ref_count``) to run it again."""
        if rec.args_held != "submitted":
            return
        core = self.core
        args = rec.create_payload[4]
        if rec.max_restarts != 0:
            core.rt.add_kept(args)
            rec.args_held = "kept"
            fx = Effects()
            core.rt.remove_submitted(args, fx)
            core._apply(fx)
        else:
            self._drop_args(rec)

    def _drop_args(self, rec: OwnedActor) -> None:
        """Let go of the constructor's arguments (the actor will not be created again)."""
        fx = Effects()
        if rec.args_held == "submitted":
            self.core.rt.remove_submitted(rec.create_payload[4], fx)
        elif rec.args_held == "kept":
            self.core.rt.remove_kept(rec.create_payload[4], fx)
        rec.args_held = None
        rec.create_payload = rec.create_payload[:4] + ([], set())
        self.core._apply(fx)

    def _died_event(self, rec: OwnedActor, reason: str, where: tuple | None,
                    detail: str | None = None) -> None:
        if rec.end is None:                       # once per actor
            rec.end = reason
            if detail is None and rec.error is not None:
                detail = str(rec.error).split("\n", 1)[0]
            self._event(rec, "actor_died", where, reason=reason, restarts=rec.restarts,
                        detail=detail)

    def out_of_scope(self, actor_id: bytes) -> None:
        """No handle to this actor exists anywhere: let it finish and exit."""
        rec = self.owned.get(actor_id)
        if rec is None:
            return
        rec.out_of_scope = True
        self._died_event(rec, "out_of_scope", None, "its last handle went")
        if rec.address is not None and rec.creating is None:
            self.core.transport.send(rec.address, (P.ACTOR_EXIT,))
        if rec.state != ALIVE or rec.address is None:
            rec.state = DEAD
        self._update_directory(rec, state=DEAD)
        self._drop_args(rec)
        del self.owned[actor_id]

    def _update_directory(self, rec: OwnedActor, state: str | None = None) -> None:
        v = rec.view()
        if state is not None:
            v["state"] = state
        v["owner"] = self.core.me
        v["meta"] = rec.options.get("_meta")
        self.core.transport.send(self.core.head_address, (P.ACTOR_UPDATE, v))

    # ---------------------------------------------------------------- killing
    def kill(self, actor_id: bytes, owner: str, no_restart: bool) -> None:
        core = self.core
        if owner != core.me:
            core.transport.send(owner, (P.ACTOR_KILL, actor_id, no_restart))
            return
        rec = self.owned.get(actor_id)
        if rec is None:
            return
        rec.kill(no_restart)
        if rec.address is not None:
            core.transport.send(self._nm_of(rec),
                                (P.KILL_WORKER, rec.address, "killed with refbook.kill()"))
        elif no_restart:
            self._dead(rec, exc.ActorError(
                f"actor {rec.name or rec.class_name} ({actor_id.hex()}) was killed"),
                "killed")

    def _on_kill(self, msg) -> None:
        m = P.ActorKill._make(msg)
        self.kill(m.actor_id, self.core.me, m.no_restart)

    # ------------------------------------------------------------------ calling
    def submit_call(self, actor_id: bytes, owner: str, actor_name: str, class_name: str,
                    max_task_retries: int, method: str, prepared, num_returns: int) -> list:
        """Call ``method`` of an actor (``actor_name``: its name, or its class's); the
        task is named ``Class.method``."""
        core = self.core
        name = f"{class_name}.{method}"
        site = here(name)
        task_id = core.ids.task_id()
        ctx = core.task_context
        if ctx is not None:
            core.note_context(ctx, task_id, name)
        return_ids = [object_id(task_id, i) for i in range(num_returns)]
        with core.lock:
            args_entry, top_refs, arg_refs, unresolved = core.hold_args(prepared)
            arg_refs.append((actor_id, owner))       # pending calls keep the actor alive
            core.rt.add_submitted([(actor_id, owner)])
            refs = []
            for oid in return_ids:
                core.rt.own(oid).site = site
                refs.append(core.new_ref(oid))
            task = Task(task_id, name, {}, return_ids, arg_refs,
                        CallPayload(method, args_entry, top_refs), max_task_retries, False)
            task.site = site
            task.submitted_at = time.monotonic()
            task.actor_id = actor_id
            core.owner.events.add("task_submitted", task_id, name, None, actor_id)
            task.deps = set(unresolved)
            for oid in unresolved:
                self.waiting.setdefault(oid, set()).add(("call", actor_id))
            q = self.queues.get(actor_id)
            if q is None:
                q = self.queues[actor_id] = ActorQueue(actor_id, actor_name, max_task_retries)
                self._locate(q, owner)
            self.calls[task_id] = actor_id
            self._do(q.submit(task))
        return refs

    def resubmit(self, task: Task, unresolved: set) -> None:
        """Run an actor call again, to rebuild its lost outputs (its lineage): on the
        actor as it is now (restarted, if its process died)."""
        actor_id = task.actor_id
        task.deps = set(unresolved)
        for oid in unresolved:
            self.waiting.setdefault(oid, set()).add(("call", actor_id))
        q = self.queues.get(actor_id)
        if q is None:
            owner = self.core.rt.get(actor_id).owner
            q = self.queues[actor_id] = ActorQueue(actor_id, task.name.split(".")[0],
                                                   task.max_retries)
            self._locate(q, owner)
        self.calls[task.task_id] = actor_id
        self._do(q.submit(task))

    def _locate(self, q: ActorQueue, owner: str) -> None:
        core = self.core
        entry = core.values.get(q.actor_id)
        if entry is not None:
            self.on_value(q.actor_id, entry)
        elif owner != core.me:
            core._fetch(q.actor_id, owner)

    def on_value(self, oid: bytes, entry: tuple) -> None:
        """A value became known here: an actor's location, or a call's argument."""
        q = self.queues.get(oid)
        if q is not None:
            if entry[0] == ACTOR:
                self._do(q.located(entry[1]))
            elif entry[0] == ERROR:
                self._do(q.died(entry[1]))
        for kind, actor_id in self.waiting.pop(oid, ()):
            if kind == "create":
                rec = self.owned.get(actor_id)
                if rec is not None and rec.state != DEAD and rec.address is None:
                    self._request_lease(rec)
                continue
            q = self.queues.get(actor_id)
            if q is None:
                continue
            failed = []
            for task in q.pending:
                if oid in task.deps:
                    task.deps.discard(oid)
                    if entry[0] == ERROR:
                        failed.append(task)
            for task in failed:
                q.pending.remove(task)
                self._do([("fail", task, entry[1])])
            self._do(q.resolved())

    def _do(self, actions: list) -> None:
        core = self.core
        for a in actions:
            if a[0] == "send":
                _, address, batch = a
                specs = []
                now = time.monotonic()
                for t in batch:
                    t.started_at = now
                    method, args_entry, top_refs = t.payload
                    if args_entry[0] == "ref":
                        args_entry = (core.values[args_entry[1]], args_entry[1])
                    else:
                        args_entry = (args_entry, None)
                    resolved = [(oid, owner, core.values[oid]) for oid, owner in top_refs]
                    specs.append((t.task_id, method, args_entry, resolved, t.return_ids,
                                  t.name, t.attempts <= t.max_retries))
                core.transport.send(address, (P.ACTOR_CALLS, core.me, specs))
            elif a[0] == "fail":
                task = a[1]
                self.calls.pop(task.task_id, None)
                core._fail_task(task, a[2])
                ended(core.owner.events, task, a[2])
            elif a[0] == "retry":
                retried(core.owner.events, a[1], a[2])

    def done(self, task_id: bytes):
        """A call's result arrived: the Task, or None if it is not an actor call."""
        actor_id = self.calls.pop(task_id, None)
        if actor_id is None:
            return None
        q = self.queues.get(actor_id)
        task = q.done(task_id) if q is not None else None
        if task is not None:
            task.finished_at = time.monotonic()
        return task

    # ------------------------------------------------------------------ failures
    def process_died(self, addr: str, reason: str) -> None:
        core = self.core
        for q in list(self.queues.values()):
            if q.address == addr:
                self._do(q.lost(addr, reason))
                if q.actor_id in core.values and core.values[q.actor_id][0] == ACTOR:
                    del core.values[q.actor_id]
                rec = self.owned.get(q.actor_id)
                if rec is None and q.actor_id in core.rt:
                    core._fetch(q.actor_id, core.rt.get(q.actor_id).owner)
        for rec in list(self.owned.values()):
            if rec.address != addr:
                continue
            if rec.creating is not None:
                self.creating.pop(rec.creating, None)
            where = (rec.node_id, rec.pid)
            state = rec.died(reason)
            core.values.pop(rec.actor_id, None)
            if state == RESTARTING:
                self._update_directory(rec)
                self._request_lease(rec)
            else:
                self._dead(rec, rec.error, rec.death(), where)
