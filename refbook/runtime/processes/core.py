"""The core of every driver and worker process: the glue around the owner.

One :class:`CoreWorker` per process carries out what the I/O-free
:class:`~refbook.runtime.protocol.owner.Owner` decides (tasks, replies, failures,
lineage) with the real things: a ZeroMQ transport, the node's shared-memory arena, an
I/O thread, and the user's threads that block in ``get``.

Threads.  User code (the driver's caller, or a worker's task) calls ``put``, ``submit``,
``get`` directly: those take ``self.lock``, hand the event to the owner and carry out
its outbox at once (``_flush``), so no hand-off sits on the per-task path.  The I/O
thread reads the inbox and hands what arrives to the owner under the same lock.
``ObjectRef.__del__`` and zero-copy view finalizers may run in any thread at any time,
so they never take the lock: they append to ``self._releases`` and wake the I/O thread.

Parts.  This module holds submitting and the glue of every owner event; the class
takes the rest from ``reading.py`` (get, wait, pins), ``writing.py`` (put, storing,
arguments), ``iothread.py`` (the inbox) and ``introspection.py`` (what it tells the
state API).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections import deque

from ..data.arena import Arena
from ..protocol import messages as P
from ..protocol.events import Unrecorded
from ..protocol.ids import IdGenerator, new_tag, object_id
from ..protocol.owner import Owner
from ..protocol.refcount import Effects
from ..protocol.tasks import Task, TaskPayload
from ..wire.transport import Transport
from . import context
from .callsite import here
from .introspection import Introspection
from .iothread import IOThread
from .object_ref import ObjectRef
from .reading import ObjectReading
from .state_answers import StateAnswers
from .writing import ObjectWriting

log = logging.getLogger("refbook.core")

QUICK_TASK = 0.002     # tasks quicker than this may be pipelined on one worker

# This process's core lives in context.py; these names stay for the notebook's views.
current = context.current
set_current = context.set_current


class CoreWorker(ObjectReading, ObjectWriting, IOThread, Introspection, StateAnswers):
    def __init__(self, *, kind: str, address: str, node_address: str, node_id: str,
                 secret: bytes, arena: Arena):
        self.kind = kind
        self.me = address
        self.node_address = node_address
        self.node_id = node_id
        self.arena = arena
        self.tag = new_tag()
        self.ids = IdGenerator(self.tag)
        self.transport = Transport(address, secret, self.tag)
        self.lock = threading.RLock()
        self.owner = owner = Owner(
            address, node_id, node_address,
            rebuild_wait=float(os.environ.get("REFBOOK_REBUILD_WAIT_S", 30)),
            lineage_max_bytes=int(os.environ.get("REFBOOK_LINEAGE_MAX_BYTES", 256 << 20)))
        if os.environ.get("REFBOOK_EVENTS", "1") == "0":     # to measure what they cost
            owner.events = Unrecorded()
        owner.clock = time.time
        # the owner's tables, read (never changed) by the parts of this process
        self.rt = owner.rt
        self.tm = owner.tm
        self.values = owner.values
        self.copies = owner.copies
        self.dead_nodes = owner.dead_nodes
        self.recovery = owner.lineage
        self.waiters: dict[bytes, list] = {}
        self._countdowns: set = set()            # blocked wait_ready calls
        self._pcond = threading.Condition()      # who polls the inbox (see take_poller)
        self._poll_owner: int | None = None
        self._poll_depth = 0
        self._poll_busy = False
        self._poll_released = 0.0
        self._io_parked = False
        self._poller = None
        self._releases: deque = deque()
        self._view_releases: deque = deque()
        self.pins: dict[bytes, list] = {}        # oid -> [offset, size, live views]
        self._unpin_seq = 0                      # UNPINs sent (see send_unpin)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._req_ids = itertools.count(1)
        self._replies: dict[int, list] = {}      # req_id -> [Event, result]
        self._extra_fds: dict[int, object] = {}  # fd -> callback (I/O thread)
        self.on_block = None                     # worker hook: hand back queued tasks
        self.on_push = None                      # worker hook: tasks arrived
        self.on_cancel = None                    # worker hook: cancel a running task
        self.output_sink = None                  # driver hook: task output
        # The notebook sets ``task_context`` (the running cell) while a cell runs; tasks
        # submitted meanwhile remember it, so their output and status find that cell.
        self.task_context = None
        self.contexts: dict[bytes, object] = {}
        self._holders: dict[bytes, list] = {}     # ref -> objects put here that hold it
        self._holders_n = 0                       # (state_answers.note_containers)
        # A notebook interrupts get() with Ctrl-C and goes on: hold a Ctrl-C back while
        # messages are handled in the main thread (costs a few microseconds per step).
        self.defer_sigint = False
        self.task_info = None                    # worker hook: what runs now (monitor)
        self.pending_calls = None                # worker hook: queued actor calls
        self.alive = True
        self.broken: str | None = None           # why the node is unusable, if it is
        self._stop = False
        self._io = threading.Thread(target=self._io_loop, name="refbook-io", daemon=True)
        self._handlers = {
            P.TASKS_DONE: self._on_tasks_done,
            P.LEASE_GRANTED: self._on_lease_granted,
            P.LEASE_RECLAIM: self._on_reclaim,
            P.PROCESS_DIED: self._on_process_died,
            P.STATE_REPLY: self._on_reply,
            P.REGISTERED: self._on_reply,
            P.GET_OBJECT: self._on_get_object,
            P.OBJECT_REPLY: self._on_object_reply,
            P.INC_REF: self._on_inc,
            P.INC_ACK: self._on_ack,
            P.DEC_REF: self._on_dec,
            P.TASKS_RETURNED: self._on_tasks_returned,
            P.OUTPUT: self._on_output,
            P.STATE_QUERY: self._on_state_query,
            P.PUSH_TASKS: self._on_push,
            P.CANCEL_TASK: self._on_cancel,
            P.UNPIN_REQUEST: self._on_unpin_request,
            P.TASK_QUERY: self._on_task_query,
            P.LEASE_SPILLBACK: self._on_spillback,
            P.NODE_DIED: self._on_node_died,
            P.OBJECT_COPY: self._on_object_copy,
        }
        self._refetch: list = []                  # (when, oid, owner): ask the owner again
        self.head_address = node_address
        from .actor_runtime import ActorRuntime
        self.actors = ActorRuntime(self)
        owner.actor_done = self.actors.done
        owner.actor_created = self.actors.created_reply
        owner.actor_resubmit = self.actors.resubmit

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._io.start()

    def register(self, timeout: float = 10.0) -> dict:
        info = self.call(self.node_address,
                         lambda req: (P.REGISTER, self.me, self.kind, os.getpid(), req),
                         timeout)
        self.head_address = info.get("head", self.node_address)
        with self.lock:
            self.owner.deaths.known_dead(info.get("dead", ()), info.get("dead_nodes", ()))
        return info

    def stop(self) -> None:
        self.alive = False
        self._stop = True
        self._wake()
        with self._pcond:
            self._pcond.notify_all()
        if self._io.is_alive() and threading.current_thread() is not self._io:
            self._io.join(timeout=2)
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        with self.lock:
            for cd in list(self._countdowns):
                cd.ev.set()
            for slot in self._replies.values():
                slot[0].set()

    def node_died(self, reason: str) -> None:
        """Our node manager is gone (I/O thread): nothing pending here can finish, so
        fail it all now rather than let anyone wait forever."""
        with self.lock:
            self.broken = reason
            self.owner.deaths.our_node_died(reason)
            self._flush()
            for slot in self._replies.values():
                slot[0].set()

    def add_fd(self, fd: int, callback) -> None:
        """Call ``callback`` once, in the I/O thread, when ``fd`` becomes readable (a
        pidfd of a process we depend on).  Register before ``start``."""
        self._extra_fds[fd] = callback

    # --------------------------------------------------------------- sending
    def send(self, addr: str, msg: tuple) -> None:
        if addr == self.me:
            with self.lock:
                self._dispatch(msg)
            return
        self.transport.send(addr, msg)

    # ------------------------------------------------------------------ effects
    def _flush(self) -> None:
        """Carry out the owner's outbox.  Caller holds the lock.  What is carried out
        may lead to more (a message to ourselves, an actor going out of scope): keep
        going until it is empty."""
        out = self.owner.out
        while out.send or out.freed or out.gone or out.lost or out.ready:
            if out.send:
                sends, out.send = out.send, []
                for addr, msg in sends:
                    self.send(addr, msg)
            if out.freed:
                freed, out.freed = out.freed, []
                owned_actors, waiters, pins = self.actors.owned, self.waiters, self.pins
                for oid in freed:
                    if waiters:
                        waiters.pop(oid, None)
                    if pins:
                        p = pins.get(oid)
                        if p is not None and p[2] <= 0:   # the node frees it: no UNPIN
                            del pins[oid]
                    if owned_actors and oid in owned_actors:
                        self.actors.out_of_scope(oid)
            if out.gone:
                gone, out.gone = out.gone, []
                self._release_pins(gone)
            if out.lost:
                lost, out.lost = out.lost, []
                dropped = [oid for oid in lost if self.pins.pop(oid, None) is not None]
                if dropped:
                    self.send_unpin(dropped)
            if out.ready:
                ready, out.ready = out.ready, []
                actors = self.actors
                for oid in ready:
                    for cb in self.waiters.pop(oid, ()):
                        try:
                            cb()
                        except Exception:  # noqa: BLE001 - one bad waiter must not starve the rest
                            log.exception("a waiter for %s failed", oid.hex())
                    if actors.queues or actors.waiting:
                        entry = self.values.get(oid)
                        if entry is not None:
                            actors.on_value(oid, entry)

    # The owner's decisions, carried out at once (for the actor runtime and the API).
    def _apply(self, fx: Effects) -> None:
        if fx.free or fx.dropped or fx.send or fx.released:   # (most calls: nothing)
            self.owner.apply(fx)
            self._flush()

    def _do(self, actions: list) -> None:
        self.owner.do(actions)
        self._flush()

    def _fail_task(self, task, error: BaseException) -> None:
        self.owner.fail_task(task, error)
        self._flush()

    def _fetch(self, oid: bytes, owner: str) -> None:
        self.owner.fetch(oid, owner)
        self._flush()

    def _set_value(self, oid: bytes, entry: tuple) -> list:
        self.owner.set_value(oid, entry)
        self._flush()
        return []

    # ----------------------------------------------------------------------- refs
    def new_ref(self, oid: bytes) -> ObjectRef:
        """An owned ref handed to user code.  Caller holds the lock."""
        self.rt.add_local(oid, self.me)
        return ObjectRef(oid, self.me, self)

    # -------------------------------------------------------------------- submit
    def hold_args(self, prepared) -> tuple:
        """Count a call's argument refs as submitted (caller holds the lock).  Returns
        ``(args_entry, top_refs, arg_refs, unresolved)``."""
        args_entry, top_refs, nested, blob_oid = prepared
        args_entry, arg_refs, unresolved = self.owner.hold_args(args_entry, top_refs, nested,
                                                                blob_oid)
        self._flush()
        return args_entry, top_refs, arg_refs, unresolved

    def submit(self, fn_id: bytes, fn_blob: bytes, name: str, args, kwargs,
               num_returns: int, resources: dict, max_retries: int,
               retry_exceptions, signature=None) -> list[ObjectRef]:
        site = here(name)
        prepared = self.prepare_args(name, args, kwargs, signature)
        task_id = self.ids.task_id()
        ctx = self.task_context
        if ctx is not None:
            self.note_context(ctx, task_id, name)
        return_ids = [object_id(task_id, i) for i in range(num_returns)]
        owner = self.owner
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            args_entry, top_refs, nested, blob_oid = prepared
            args_entry, arg_refs, unresolved = owner.hold_args(args_entry, top_refs, nested,
                                                               blob_oid)
            refs = []
            for oid in return_ids:
                self.rt.own(oid).site = site
                refs.append(self.new_ref(oid))
            owner.now = time.monotonic()
            task = Task(task_id, name, resources, return_ids, arg_refs,
                        TaskPayload(fn_id, fn_blob, args_entry, top_refs),
                        max_retries, retry_exceptions)
            task.site = site
            owner.submit(task, unresolved)
            owner.apply(fx)
            self._flush()
        return refs

    def note_context(self, ctx, task_id: bytes, name: str) -> None:
        """``ctx.add(task_id, name)``, and remember ``ctx`` for the task's output."""
        ctx.add(task_id, name)
        with self.lock:
            contexts = self.contexts
            contexts[task_id] = ctx
            if len(contexts) > 20_000:      # the oldest go first; they finished long ago
                del contexts[next(iter(contexts))]

    def cancel_tasks(self, task_ids) -> list:
        """Cancel every one of ``task_ids`` that has not finished (a running one is
        interrupted).  Returns the names of those cancelled."""
        with self.lock:
            names = [self.owner.cancel(tid, False) for tid in task_ids]
            self._flush()
        return [n for n in names if n is not None]

    # --------------------------------------------------------- registration protocol
    def _on_inc(self, msg):
        _, sender, oid, for_addr, ack = msg
        fx = Effects()
        if not self.rt.handle_inc(sender, oid, for_addr, ack, fx):
            log.warning("INC_REF for unknown object %s from %s", oid.hex(), sender)
        self._apply(fx)

    def _on_ack(self, msg):
        fx = Effects()
        self.rt.on_ack(msg[1], fx)
        self._apply(fx)

    def _on_dec(self, msg):
        _, sender, oid, n = msg
        fx = Effects()
        self.rt.on_dec(oid, sender, n, fx)
        self._apply(fx)


    # ------------------------------------------------------------- owner events
    def _on_tasks_done(self, msg):
        _, worker, results = msg
        self.owner.now = time.monotonic()
        self.owner.tasks_done(worker, results)
        self._flush()

    def _on_lease_granted(self, msg):
        _, req_id, lease_id, worker, nm = msg
        self.owner.now = time.monotonic()
        if not self.owner.lease_granted(req_id, lease_id, worker, nm) and \
                self.actors.owns_request(req_id):
            self.actors.lease_granted(req_id, lease_id, worker)
        self._flush()

    def request_lease(self, req_id: int, resources: dict, dedicated: bool,
                      nm: str | None = None, prefer: str | None = None) -> None:
        self.owner.request_lease(req_id, resources, dedicated, nm, prefer)
        self._flush()

    def _on_spillback(self, msg):
        _, req_id, nm, prefer = msg
        self.owner.spillback(req_id, nm, prefer)
        self._flush()

    def _on_process_died(self, msg):
        _, addr, reason, oom = msg
        self.owner.now = time.monotonic()
        self.owner.deaths.process_died(addr, reason, oom)
        self.actors.process_died(addr, reason)
        self._flush()
        self.transport.disconnect(addr)

    def _on_node_died(self, msg):
        """Every process on that node is gone, and every object stored only there."""
        _, node_id, reason = msg
        actors = self.actors
        known = {q.address for q in actors.queues.values() if q.address} | \
            {rec.address for rec in actors.owned.values() if rec.address}
        why = f"its node {node_id} died ({reason})"
        for addr in self.owner.deaths.node_died(node_id, known):
            self._on_process_died((P.PROCESS_DIED, addr, why, False))
        self.owner.deaths.node_objects_lost(node_id)
        self._flush()

    def _on_object_copy(self, msg):
        _, oid, node_id, present = msg
        self.owner.deaths.object_copy(oid, node_id, present)
        self._flush()

    def _on_reclaim(self, msg):
        self._do(self.tm.reclaim())

    def _on_tasks_returned(self, msg):
        _, worker, task_ids = msg
        self._do(self.tm.returned(worker, task_ids))

    def _on_output(self, msg):
        _, worker, task_id, stream, text = msg
        sink = self.output_sink
        if sink is not None:
            sink(task_id, stream, text)
        else:
            (sys.stderr if stream == "err" else sys.stdout).write(text)

    def _on_push(self, msg):
        if self.on_push is not None:
            _, owner, lease_id, specs = msg
            self.on_push(owner, specs)

    def _on_task_query(self, msg):
        info = self.task_info() if self.task_info is not None else None
        self.transport.send(self.node_address, (P.TASK_INFO, self.me, msg[1], info))

    def _on_cancel(self, msg):
        if self.on_cancel is not None:
            self.on_cancel(msg[1])

    def register_all_for(self, refs: list, target: str, covered: set) -> list:
        """For a return value: ``[(ref, owner, registered_for_target)]``."""
        if not refs:
            return []
        with self.lock:
            fx = Effects()
            out = [(x, o, self.rt.register_for(x, o, target, fx, covered)) for x, o in refs]
            self._apply(fx)
        return out

    def end_task(self, covered: set) -> list:
        """A task finished here: the covered refs we still hold, for the reply."""
        if not covered:
            return []
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            borrowed = self.rt.report_borrowed(covered)
            self._apply(fx)
        return borrowed

    # -------------------------------------------------------------------- cancel
    def cancel(self, ref: ObjectRef, force: bool) -> None:
        from ..protocol.ids import task_of
        with self.lock:
            if ref._owner != self.me:
                raise ValueError(f"only the owner of {ref!r} can cancel the task that makes it")
            self.owner.cancel(task_of(ref._id), force)
            self._flush()
