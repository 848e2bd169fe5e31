"""The core of every driver and worker process: owner, borrower and task submitter.

One :class:`CoreWorker` per process wraps the I/O-free protocol classes
(:class:`ReferenceTable`, :class:`TaskManager`) with the real things: a ZeroMQ
transport, the node's shared-memory arena and an I/O thread.

Threads.  User code (the driver's caller, or a worker's task) calls ``put``, ``submit``,
``get`` directly: those take ``self.lock``, change the protocol state and send at once,
so no hand-off sits on the per-task path.  The I/O thread reads the inbox and handles
what arrives (task replies, registrations, lease grants) under the same lock.
``ObjectRef.__del__`` and zero-copy view finalizers may run in any thread at any time,
so they never take the lock: they append to ``self._releases`` and wake the I/O thread.

Values.  ``self.values`` maps an object id to an *entry*:
``(INLINE, meta, buffers)`` for small values held in this process's memory,
``(STORED, node_id, offset, size)`` for values in a node's arena, or
``(ERROR, exception)``.  Owners keep entries of what they own; borrowers cache
entries of what they hold.

Parts.  This module holds putting, submitting and the replies to tasks; the class takes
the rest from ``reading.py`` (fetch, get, pins), ``iothread.py`` (the inbox),
``failures.py`` (deaths of processes and nodes) and ``introspection.py`` (the state
API), with shared names in ``entries.py``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections import deque

from ... import exceptions as exc
from ..data.arena import Arena, layout_size
from ..data.serialization import Serialized, serialize
from ..protocol import messages as P
from ..protocol.entries import (
    ERROR,
    INLINE,
    STORED,
    _node_of,
)
from ..protocol.ids import IdGenerator, new_tag, object_id
from ..protocol.refcount import Effects, ReferenceTable
from ..protocol.tasks import Task, TaskManager
from ..wire.transport import Transport
from . import context
from .failures import Failures
from .introspection import Introspection
from .iothread import IOThread
from .object_ref import ObjectRef
from .reading import ObjectReading

log = logging.getLogger("refbook.core")

INLINE_MAX = 100 * 1024
QUICK_TASK = 0.002     # tasks quicker than this may be pipelined on one worker

# This process's core lives in context.py; these names stay for the notebook's views.
current = context.current
set_current = context.set_current


class _TopArg:
    """Placeholder for a top-level ref argument, resolved to its value before the
    task runs (API.md: top-level refs arrive as values, nested refs as refs)."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __reduce__(self):
        return (_TopArg, (self.i,))


class CoreWorker(ObjectReading, IOThread, Failures, Introspection):
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
        self.rt = ReferenceTable(address)
        self.tm = TaskManager(rebuild_wait=float(os.environ.get("REFBOOK_REBUILD_WAIT_S", 30)))
        self.values: dict[bytes, tuple] = {}
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
        self._fetching: set[bytes] = set()       # GET_OBJECT outstanding
        self._fn_sent: set = set()
        self._fn_time: dict[bytes, float] = {}   # fn id -> recent run time (seconds)
        self._extra_fds: dict[int, object] = {}  # fd -> callback (I/O thread)
        self.on_block = None                     # worker hook: hand back queued tasks
        self.on_push = None                      # worker hook: tasks arrived
        self.on_cancel = None                    # worker hook: cancel a running task
        self.output_sink = None                  # driver hook: task output
        # The notebook sets ``task_context`` (the running cell) while a cell runs; tasks
        # submitted meanwhile remember it, so their output and status find that cell.
        self.task_context = None
        self.contexts: dict[bytes, object] = {}
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
        self._lease_reqs: dict[int, tuple] = {}   # lease request id -> (resources, dedicated)
        self._lease_nm: dict[int, str] = {}       # lease id -> the node manager that granted it
        self.dead_nodes: set[str] = set()
        self.copies: dict[bytes, set] = {}    # owned oid -> nodes with a secondary copy
        self._stale: dict[bytes, set] = {}        # task id -> {(node, worker)} of attempts
                                                  # that died
        self._refetch: list = []                  # (when, oid, owner): ask the owner again
        self.head_address = node_address
        from ..protocol.lineage import Recovery
        from .actor_runtime import ActorRuntime
        self.actors = ActorRuntime(self)
        self.recovery = Recovery(self, int(os.environ.get("REFBOOK_LINEAGE_MAX_BYTES",
                                                          256 << 20)))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._io.start()

    def register(self, timeout: float = 10.0) -> dict:
        info = self.call(self.node_address,
                         lambda req: (P.REGISTER, self.me, self.kind, os.getpid(), req),
                         timeout)
        self.head_address = info.get("head", self.node_address)
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
            err = exc.WorkerCrashedError(
                f"the refbook node manager died ({reason}); every pending task failed. "
                f"Call refbook.shutdown() and refbook.init() to start again.")
            for task in list(self.tm.tasks.values()):
                self.tm.tasks.pop(task.task_id, None)
                self._fail_task(task, err)
            for oid in list(self.rt.refs):
                if oid not in self.values:
                    self._do(self._set_value(oid, (ERROR, err)))
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

    def call(self, addr: str, make_msg, timeout: float | None = 10.0):
        """Send a request that carries a fresh ``req_id`` and wait for its reply."""
        req = next(self._req_ids)
        slot = [threading.Event(), None]
        self._replies[req] = slot
        self._check_usable()
        self.send(addr, make_msg(req))
        if not self._wait_event(slot[0], timeout):
            self._replies.pop(req, None)
            raise exc.RefbookError(f"no reply from {addr} within {timeout} s")
        self._replies.pop(req, None)
        self._check_usable()
        return slot[1]

    def _check_usable(self) -> None:
        if not self.alive:
            raise exc.RefbookError("refbook was shut down")
        if self.broken:
            raise exc.RefbookError(
                f"the refbook node manager died ({self.broken}). Call refbook.shutdown() "
                f"and refbook.init() to start again.")

    def _on_reply(self, msg):
        slot = self._replies.get(msg[1])
        if slot is not None:
            slot[1] = msg[2] if len(msg) == 3 else msg[2:]
            slot[0].set()

    # --------------------------------------------------------------- releases
    def release_soon(self, oid: bytes) -> None:
        """Called from ``ObjectRef.__del__`` and view finalizers, in any thread.  The
        next API call in this process, or the I/O thread within ``TICK`` seconds,
        carries it out; waking the I/O thread for every dropped ref would cost more
        than it saves on the per-task path."""
        if self.alive:
            self._releases.append(oid)

    def _view_gone(self, oid: bytes) -> None:
        """The last view of ``oid`` made by one read died (any thread)."""
        if self.alive:
            self._view_releases.append(oid)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _drain_releases(self, fx: Effects) -> None:
        rel = self._releases
        rt = self.rt
        while rel:
            rt.remove_local(rel.popleft(), fx)
        views = self._view_releases
        while views:
            oid = views.popleft()
            p = self.pins.get(oid)
            if p is not None:
                p[2] -= 1
            rt.remove_local(oid, fx)

    # ------------------------------------------------------------------ effects
    def _apply(self, fx: Effects) -> None:
        """Carry out what the reference table decided.  Caller holds the lock."""
        if fx.free:
            frees: dict[str, list] = {}
            for oid in fx.free:
                if oid in self.actors.owned:
                    self.actors.out_of_scope(oid)
                entry = self.values.pop(oid, None)
                for node_id in self.copies.pop(oid, ()):
                    frees.setdefault(node_id, []).append(oid)
                if entry is not None and entry[0] == STORED:
                    frees.setdefault(entry[1], []).append(oid)
                    p = self.pins.get(oid)
                    if p is not None and p[2] <= 0:
                        del self.pins[oid]
                self.waiters.pop(oid, None)
            for node_id, oids in frees.items():
                if node_id not in self.dead_nodes:
                    self.transport.send(self.node_address, (P.FREE, oids, node_id))
        if fx.dropped:
            for oid in fx.dropped:
                self.values.pop(oid, None)
            self._release_pins(fx.dropped)
        for addr, msg in fx.send:
            self.send(addr, msg)
        fx.free.clear()
        fx.dropped.clear()
        fx.send.clear()
        while fx.released:       # entries gone: the lineage that only they needed goes
            released, fx.released = fx.released, []
            for oid in released:
                self._lineage_released(oid, fx)
            self._apply(fx)

    def _lineage_released(self, oid: bytes, fx: Effects) -> None:
        self.recovery.released(oid, fx)

    def _set_value(self, oid: bytes, entry: tuple) -> list:
        """A value became known; wake waiters and return follow-up task actions."""
        self.values[oid] = entry
        for cb in self.waiters.pop(oid, ()):
            try:
                cb()
            except Exception:  # noqa: BLE001 - one bad waiter must not starve the rest
                log.exception("a waiter for %s failed", oid.hex())
        actors = self.actors
        if actors.queues or actors.waiting:
            actors.on_value(oid, entry)
        if entry[0] == ERROR:
            self.recovery.rebuilding.discard(oid)
            return self.tm.dependency_failed(oid, entry[1])
        return self.tm.resolved(oid)

    # ----------------------------------------------------------------------- put
    def new_ref(self, oid: bytes) -> ObjectRef:
        """An owned ref handed to user code.  Caller holds the lock."""
        self.rt.add_local(oid, self.me)
        return ObjectRef(oid, self.me, self)

    def put(self, value) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself "
                            "or put() a container that holds it")
        s = serialize(value)
        oid = self.ids.put_id()
        if s.size <= INLINE_MAX:
            entry = (INLINE, s.meta, [bytes(b) for b in s.buffers])
        else:
            entry = self.store(oid, s, self.me, pin=True)
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self.rt.own(oid, s.refs)
            ref = self.new_ref(oid)
            self.values[oid] = entry
            self._apply(fx)
        return ref

    def store(self, oid: bytes, s: Serialized, owner: str, pin: bool = False) -> tuple:
        """Write a serialized value into this node's arena; one copy.  Not callable
        from the I/O thread (it waits for the node manager's reply)."""
        size = layout_size(s)
        self._check_usable()
        if self._releases:
            # free what was dropped first, so the node can reuse that (warm) memory
            with self.lock:
                fx = Effects()
                self._drain_releases(fx)
                self._apply(fx)
        try:
            _, status, detail = self.transport.request(
                self.node_address,
                lambda reply_to: (P.ALLOC, self.me, reply_to, oid, size, owner), 180)
        except TimeoutError:
            self._check_usable()
            raise exc.RefbookError("the node manager did not answer an allocation request "
                                   "within 180 s") from None
        if status == "full":
            raise exc.ObjectStoreFullError(detail)
        if status == "ok":
            self.arena.write(detail, s)
            if pin:     # we wrote it and may read it: keep it pinned for us
                with self.lock:
                    self.pins[oid] = [detail, size, 0]
            self.transport.send(self.node_address,
                                (P.SEAL, oid, detail, size, owner, self.me if pin else None))
        return (STORED, self.node_id, detail, size)

    # -------------------------------------------------------------------- submit
    def prepare_args(self, name: str, args, kwargs, signature=None):
        """Serialize a call's arguments (outside the lock).  Top-level refs are left out
        and resolved to values before the call runs; a large blob goes to the store.
        Returns ``(args_entry, top_refs, nested_refs, blob_oid)``."""
        top: list = []

        def mark(a):
            if isinstance(a, ObjectRef):
                a.check_live()
                top.append(a)
                return _TopArg(len(top) - 1)
            return a

        args2 = [mark(a) for a in args]
        kwargs2 = {k: mark(v) for k, v in kwargs.items()}
        try:
            s = serialize((args2, kwargs2))
        except exc.ClusterShutdownError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the argument named
            raise _argument_error(name, args, kwargs, signature, e) from None
        self._check_usable()
        blob_oid = None
        if s.size > INLINE_MAX:
            blob_oid = self.ids.put_id()
            args_entry = self.store(blob_oid, s, self.me, pin=True)
        else:
            args_entry = (INLINE, s.meta, [bytes(b) for b in s.buffers])
        return args_entry, [(r._id, r._owner) for r in top], s.refs, blob_oid

    def hold_args(self, prepared) -> tuple:
        """Count a call's argument refs as submitted (caller holds the lock).  Returns
        ``(args_entry, top_refs, arg_refs, unresolved)``."""
        args_entry, top_refs, nested, blob_oid = prepared
        arg_refs = top_refs + nested
        if blob_oid is not None:
            self.rt.own(blob_oid)
            self.values[blob_oid] = args_entry
            arg_refs.append((blob_oid, self.me))
            args_entry = ("ref", blob_oid)
        self.rt.add_submitted(arg_refs)
        unresolved = set()
        for oid, owner in top_refs:
            if oid not in self.values:
                unresolved.add(oid)
                if owner != self.me:
                    self._fetch(oid, owner)
        return args_entry, top_refs, arg_refs, unresolved

    def submit(self, fn_id: bytes, fn_blob: bytes, name: str, args, kwargs,
               num_returns: int, resources: dict, max_retries: int,
               retry_exceptions, signature=None) -> list[ObjectRef]:
        prepared = self.prepare_args(name, args, kwargs, signature)
        task_id = self.ids.task_id()
        ctx = self.task_context
        if ctx is not None:
            self.note_context(ctx, task_id, name)
        return_ids = [object_id(task_id, i) for i in range(num_returns)]
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            args_entry, top_refs, arg_refs, unresolved = self.hold_args(prepared)
            refs = []
            for oid in return_ids:
                self.rt.own(oid)
                refs.append(self.new_ref(oid))
            self.tm.now = time.monotonic()
            task = Task(task_id, name, resources, return_ids, arg_refs,
                        (fn_id, fn_blob, args_entry, top_refs), max_retries,
                        retry_exceptions)
            task.quick = self._fn_time.get(fn_id, 1.0) < QUICK_TASK
            if not unresolved:
                near = self._where_args_are(task)
                if near is not None and near != self.node_id:
                    # its own queue and leases, so that it runs where its data is
                    task.key = task.key + (("@node", near),)
            actions = self.tm.submit(task, unresolved)
            self._do(actions)
            if task.state == "queued":
                stored = [oid for oid, _ in top_refs
                          if self.values.get(oid, (None,))[0] == STORED]
                if stored:   # it waits for a worker: have the node restore its arguments
                    self.transport.send(self.node_address, (P.PREFETCH, stored))
            self._apply(fx)
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
        names = []
        with self.lock:
            for tid in task_ids:
                t = self.tm.tasks.get(tid)
                if t is not None and not t.cancelled:
                    names.append(t.name)
                    self._do(self.tm.cancel(tid, False))
        return names

    def _do(self, actions: list) -> None:
        """Carry out task-manager actions.  Caller holds the lock."""
        for a in actions:
            kind = a[0]
            if kind == "push":
                lease, batch = a[1], a[2]
                specs = []
                for t in batch:
                    missing = {oid for oid, _ in t.payload[3] if oid not in self.values}
                    if missing:          # lost since it was queued: wait for it again
                        self.tm.unpush(t, missing)
                        for oid, owner in t.payload[3]:
                            if oid in missing and owner != self.me:
                                self._fetch(oid, owner)
                        continue
                    specs.append(self._wire_spec(t, lease.worker))
                if specs:
                    self.transport.send(lease.worker,
                                        (P.PUSH_TASKS, self.me, lease.lease_id, specs))
            elif kind == "request":
                self.request_lease(a[1], a[2], False, prefer=self._where_args_are(a[3]))
            elif kind == "return":
                self.transport.send(self._lease_nm.pop(a[1], self.node_address),
                                    (P.LEASE_RETURN, a[1]))
            elif kind == "fail":
                self._fail_task(a[1], a[2])
            elif kind == "cancel":
                task, worker, force = a[1], a[2], a[3]
                if force:
                    self.transport.send(self.node_address,
                                        (P.KILL_WORKER, worker, "cancelled with force=True"))
                else:
                    self.transport.send(worker, (P.CANCEL_TASK, task.task_id))

    def _free_stale(self, task: Task, keep: dict) -> None:
        """Outputs an attempt that died may have stored, on nodes other than where each
        final copy is (``keep``: oid -> node): nobody else knows about them.  Only the
        copy that dead worker wrote goes: the node may meanwhile hold another copy of
        the same object, pulled there for a reader of the final value."""
        for node, worker in self._stale.pop(task.task_id, ()):
            oids = [oid for oid in task.return_ids if keep.get(oid) != node]
            if oids and node not in self.dead_nodes:
                self.transport.send(self.node_address, (P.FREE, oids, node, worker))

    def _fail_task(self, task: Task, error: BaseException) -> None:
        if task.task_id in self._stale:
            self._free_stale(task, {})
        entry = (ERROR, error)
        follow = []
        for oid in task.return_ids:
            follow += self._set_value(oid, entry)
        fx = Effects()
        self.rt.remove_submitted(task.arg_refs, fx)
        for oid in task.return_ids:
            self.rt.release_if_unreferenced(oid, fx)
        self._apply(fx)
        self._do(follow)

    def _wire_spec(self, task: Task, worker: str) -> tuple:
        fn_id, fn_blob, args_entry, top_refs = task.payload
        key = (worker, fn_id)
        if key in self._fn_sent:
            blob = None
        else:
            self._fn_sent.add(key)
            blob = fn_blob
        if args_entry[0] == "ref":
            args_entry = (self.values[args_entry[1]], args_entry[1])
        else:
            args_entry = (args_entry, None)
        resolved = [(oid, owner, self.values[oid]) for oid, owner in top_refs]
        return (task.task_id, fn_id, blob, args_entry, resolved, task.return_ids, task.name,
                task.attempts <= task.max_retries)

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

    # ------------------------------------------------------------- task replies
    def _on_tasks_done(self, msg):
        _, worker, results = msg
        self.tm.now = time.monotonic()
        follow = []
        fx = Effects()
        fn_time = self._fn_time
        for task_id, ok, payload, borrowed, seconds in results:
            task, actions = self.tm.done(task_id)
            follow += actions
            if task is not None and task_id in self._stale:
                keep = {}
                if ok and task.resources:
                    for oid, ret in zip(task.return_ids, payload, strict=False):
                        if ret[0] == STORED:
                            keep[oid] = ret[1][0]
                self._free_stale(task, keep)
            if task is None:
                if task_id in self.actors.creating:
                    rec = self.actors.owned.get(self.actors.creating[task_id])
                    if borrowed and rec is not None:   # the instance keeps these refs
                        self.rt.task_borrowed(borrowed, worker, rec.create_payload[4], fx)
                    self.actors.created(task_id, ok, payload)
                    continue
                task = self.actors.done(task_id)
                if task is None:
                    if ok:
                        self._discard_returns(task_id, payload, fx)
                    self.rt.task_borrowed(borrowed, worker, [], fx)
                    continue
            else:
                fn_id = task.payload[0]
                prev = fn_time.get(fn_id)
                fn_time[fn_id] = seconds if prev is None else 0.7 * prev + 0.3 * seconds
            if not ok:
                error = payload
                cause = getattr(error, "cause_cls", None)
                lost_arg = task.resources and isinstance(cause, type) and \
                    issubclass(cause, exc.ObjectLostError)
                if lost_arg and any(o == self.me and oid not in self.values
                                    for oid, o in task.payload[3]):
                    # an argument was lost while the task ran: rebuild it, run again
                    self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
                    follow += self.recovery.rebuild(task, "lost an argument while running")
                    self.rt.remove_submitted(task.arg_refs, fx)
                    continue
                if lost_arg and task._rebuilds < max(3, task.max_retries) and any(
                        o == self.me and self.values.get(oid, (None,))[0] == STORED
                        and self.values[oid][1] != self.node_id
                        for oid, o in task.payload[3]):
                    # the worker saw a node die before we did: run it again a little
                    # later, when its arguments have been marked lost (and are rebuilt)
                    task._rebuilds += 1
                    self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
                    task.state = "waiting"
                    self.tm.tasks[task.task_id] = task
                    self.tm.delayed.append((self.tm.now + 0.3, task))
                    continue
                if self.tm.should_retry_exception(task, getattr(error, "cause_cls", None)):
                    self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
                    follow += self.tm.retry(task)
                    continue
                for oid in task.return_ids:
                    follow += self._set_value(oid, (ERROR, error))
            else:
                for oid, (kind, data, nested) in zip(task.return_ids, payload, strict=True):
                    self.rt.task_returned(oid, nested, task.arg_refs, fx)
                    self.recovery.rebuilt(oid)
                    entry = (INLINE, data[0], data[1]) if kind == INLINE else (STORED, *data)
                    follow += self._set_value(oid, entry)
                    if kind == STORED and data[0] in self.dead_nodes:
                        follow += self.recovery.lost(oid, f"was stored on node {data[0]}, "
                                                          f"which died")
            self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
            if ok and task.resources:       # a task (not an actor call): keep its lineage
                self.recovery.keep(task)
            self.rt.remove_submitted(task.arg_refs, fx)
            for oid in task.return_ids:
                self.rt.release_if_unreferenced(oid, fx)
        self._apply(fx)
        self._do(follow)

    def _discard_returns(self, task_id: bytes, payload, fx: Effects) -> None:
        """Results of a task we no longer track (cancelled, or a duplicate after a
        retry): free what the worker stored for us and repay registrations."""
        for i, (kind, data, nested) in enumerate(payload):
            oid = object_id(task_id, i)
            if oid in self.rt:
                continue
            self.rt.own(oid, [(x, o) for x, o, _ in nested])
            for x, o, reg in nested:
                if reg and o == self.me:
                    self.rt.on_dec(x, self.me, 1, fx)
                elif reg:
                    self.rt.mark_registered(x, o)
            if kind == STORED:
                self.values[oid] = (STORED, *data)
            self.rt.release_if_unreferenced(oid, fx)

    def _on_lease_granted(self, msg):
        _, req_id, lease_id, worker, nm = msg
        if lease_id is not None and _node_of(worker) in self.dead_nodes:
            req = self._lease_reqs.get(req_id)   # a node already written off: ask again
            if req is not None:
                self.request_lease(req_id, req[0], req[1])
            return
        self._lease_reqs.pop(req_id, None)
        if lease_id is not None:
            self._lease_nm[lease_id] = nm
        if self.actors.owns_request(req_id):
            self.actors.lease_granted(req_id, lease_id, worker)
            return
        self.tm.now = time.monotonic()
        if lease_id is None:
            self._do(self.tm.lease_rejected(req_id, worker))
        else:
            self._do(self.tm.lease_granted(req_id, lease_id, worker))

    def request_lease(self, req_id: int, resources: dict, dedicated: bool,
                      nm: str | None = None, prefer: str | None = None) -> None:
        """Ask a node manager (ours unless told otherwise) for a worker, preferably on
        node ``prefer`` (where the task's arguments are)."""
        nm = nm or self.node_address
        self._lease_reqs[req_id] = (resources, dedicated, nm, prefer)
        self.transport.send(nm, (P.LEASE_REQUEST, self.me, req_id, resources, dedicated,
                                 prefer))

    def _where_args_are(self, task) -> str | None:
        """Locality: the node holding the most bytes of ``task``'s stored arguments, if
        that is a good share of them (at least 1 MiB)."""
        if task is None or not task.resources:
            return None
        by_node: dict[str, int] = {}
        for oid, _owner in task.payload[3]:
            e = self.values.get(oid)
            if e is not None and e[0] == STORED:
                for node in (e[1], *self.copies.get(oid, ())):
                    by_node[node] = by_node.get(node, 0) + e[3]
        if not by_node:
            return None
        node, size = max(by_node.items(), key=lambda kv: kv[1])
        return node if size >= (1 << 20) else None

    def _on_spillback(self, msg):
        _, req_id, nm = msg
        req = self._lease_reqs.get(req_id)
        if req is not None:
            if any(f"/n-{n}/" in nm for n in self.dead_nodes):
                nm = None                        # stale advice: ask our own node again
            self.request_lease(req_id, req[0], req[1], nm, req[3])

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
            self._do(self.tm.cancel(task_of(ref._id), force))


def first_unpicklable(named_values) -> tuple | None:
    """``(name, error)`` of the first value of ``(name, value)`` pairs that cannot be
    pickled (refs always can), or None."""
    import cloudpickle
    for name, value in named_values:
        if isinstance(value, ObjectRef):
            continue
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as e:  # noqa: BLE001
            return name, e
    return None


def _argument_error(name: str, args, kwargs, signature, err: BaseException) -> TypeError:
    """Find which argument cannot be pickled, and say so."""
    names = []
    if signature is not None:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            names = list(bound.arguments.items())
        except TypeError:
            names = []
    if not names:
        names = [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    bad = first_unpicklable(names)
    if bad is not None:
        arg_name, e = bad
        return TypeError(
            f"cannot pass argument {arg_name!r} of {name}(): it cannot be pickled "
            f"({type(e).__name__}: {e}). Values sent to a task must be picklable; "
            f"create the object inside the task instead, or pass what is needed to "
            f"rebuild it.")
    return TypeError(f"cannot pickle the arguments of {name}(): {type(err).__name__}: {err}")
