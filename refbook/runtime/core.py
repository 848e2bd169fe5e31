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
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections import deque

import zmq

from .. import exceptions as exc
from . import protocol as P
from .arena import Arena, layout_size
from .ids import IdGenerator, new_tag, object_id
from .object_ref import ObjectRef
from .refcount import Effects, ReferenceTable
from .serialization import Serialized, deserialize, serialize
from .tasks import Task, TaskManager
from .transport import Transport

log = logging.getLogger("refbook.core")

INLINE_MAX = 100 * 1024
TICK_MS = 20           # the I/O thread's housekeeping period (releases, idle leases)
LAZY_S = 0.002         # a thread that waited keeps polling the inbox this long after
QUICK_TASK = 0.002     # tasks quicker than this may be pipelined on one worker
INLINE, STORED, ERROR = 0, 1, 2

_current: CoreWorker | None = None
_tls = threading.local()       # .covered: set of oids covered by the running task


def current() -> CoreWorker | None:
    return _current


def set_current(core: CoreWorker | None) -> None:
    global _current
    _current = core


class _TopArg:
    """Placeholder for a top-level ref argument, resolved to its value before the
    task runs (API.md: top-level refs arrive as values, nested refs as refs)."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __reduce__(self):
        return (_TopArg, (self.i,))


class _Countdown:
    """Sets ``ev`` once ``hit`` has been called ``n`` times (under the core lock)."""

    __slots__ = ("n", "ev")

    def __init__(self, n: int):
        self.n = n
        self.ev = threading.Event()

    def hit(self) -> None:
        self.n -= 1
        if self.n <= 0:
            self.ev.set()


class CoreWorker:
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
        self.tm = TaskManager()
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
        self._stale: dict[bytes, set] = {}        # task id -> nodes of attempts that died
        self._refetch: list = []                  # (when, oid, owner): ask the owner again
        self.head_address = node_address
        from .actor_runtime import ActorRuntime
        from .recovery import Recovery
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

    def _wait_event(self, ev: threading.Event, timeout: float | None) -> bool:
        """Wait for ``ev``, polling the inbox in this thread if nobody else does."""
        if threading.current_thread() is self._io or not self.take_poller():
            return ev.wait(timeout)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not ev.is_set() and self.alive and not self.broken:
                wait_ms = TICK_MS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait_ms = max(1, min(TICK_MS, int(left * 1000) + 1))
                self.poll_once(wait_ms)
        finally:
            self.give_poller()
        return ev.is_set()

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
            unpins = []
            for oid in fx.dropped:
                self.values.pop(oid, None)
                p = self.pins.get(oid)
                if p is not None and p[2] <= 0:
                    del self.pins[oid]
                    unpins.append(oid)
            if unpins:
                self.transport.send(self.node_address, (P.UNPIN, self.me, unpins))
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
                top.append(a)
                return _TopArg(len(top) - 1)
            return a

        args2 = [mark(a) for a in args]
        kwargs2 = {k: mark(v) for k, v in kwargs.items()}
        try:
            s = serialize((args2, kwargs2))
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
        final copy is (``keep``: oid -> node): nobody else knows about them."""
        for node in self._stale.pop(task.task_id, ()):
            oids = [oid for oid in task.return_ids if keep.get(oid) != node]
            if oids and node not in self.dead_nodes:
                self.transport.send(self.node_address, (P.FREE, oids, node))

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

    # --------------------------------------------------------------------- fetch
    def _fetch(self, oid: bytes, owner: str) -> None:
        if oid in self._fetching:
            return
        if self.rt.get(oid) is not None and self.rt.get(oid).owner_dead:
            self._set_value(oid, (ERROR, _owner_died(oid, owner)))
            return
        self._fetching.add(oid)
        self.transport.send(owner, (P.GET_OBJECT, self.me, 0, oid))

    def _on_get_object(self, msg):
        _, requester, req, oid = msg
        entry = self.values.get(oid)
        if entry is not None:       # the primary copy: a reader's node uses its own
            self.transport.send(requester, (P.OBJECT_REPLY, req, oid, entry))  # if any
            return
        if self.rt.owns(oid):
            def reply(oid=oid, requester=requester, req=req):
                e = self.values.get(oid)
                if e is not None:
                    self.transport.send(requester, (P.OBJECT_REPLY, req, oid, e))
            self.waiters.setdefault(oid, []).append(reply)
            return
        err = exc.ObjectLostError(
            f"object {oid.hex()} is no longer held by its owner {self.me}; it was "
            f"freed, or this process restarted")
        self.transport.send(requester, (P.OBJECT_REPLY, req, oid, (ERROR, err)))

    def _on_object_reply(self, msg):
        _, _req, oid, entry = msg
        self._fetching.discard(oid)
        if oid not in self.rt:
            return
        if entry[0] == STORED and entry[1] in self.dead_nodes:
            # the owner has not heard of that node's death yet: ask again shortly
            self._refetch.append((time.monotonic() + 0.2, oid, self.rt.get(oid).owner))
            return
        self._do(self._set_value(oid, entry))

    # ----------------------------------------------------------------------- get
    def on_ready(self, ref: ObjectRef, callback) -> None:
        """Run ``callback()`` (in some thread) once ``ref``'s value is known here."""
        with self.lock:
            if ref._id in self.values:
                ready = True
            else:
                ready = False
                self.waiters.setdefault(ref._id, []).append(callback)
                if ref._owner != self.me:
                    self._fetch(ref._id, ref._owner)
        if ready:
            callback()

    def wait_ready(self, refs: list, num: int, timeout: float | None) -> set:
        """Block until at least ``num`` of ``refs`` have values here (or timeout).
        Returns the set of ready object ids."""
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)
            values = self.values
            ready = {r._id for r in refs if r._id in values}
            if len(ready) >= num:
                return ready
            missing = {}
            for r in refs:
                if r._id not in ready:
                    missing[r._id] = r._owner
            countdown = _Countdown(num - len(ready))
            self._countdowns.add(countdown)
            for oid, owner in missing.items():
                self.waiters.setdefault(oid, []).append(countdown.hit)
                if owner != self.me:
                    self._fetch(oid, owner)
        blocked = self.kind == "worker"
        if blocked:
            self._block()
        try:
            self._wait_event(countdown.ev, timeout)
        finally:
            self._countdowns.discard(countdown)
            with self.lock:            # a timed-out wait leaves no callbacks behind
                for oid in missing:
                    ws = self.waiters.get(oid)
                    if ws and countdown.hit in ws:
                        ws.remove(countdown.hit)
                        if not ws:
                            del self.waiters[oid]
            if blocked:
                self.transport.send(self.node_address, (P.UNBLOCKED, self.me))
        if not self.alive:
            raise exc.RefbookError("refbook was shut down while waiting")
        with self.lock:
            values = self.values
            ready.update(oid for oid in missing if oid in values)
        return ready

    def _block(self) -> None:
        self.transport.send(self.node_address, (P.BLOCKED, self.me))
        if self.on_block is not None:
            self.on_block()

    def get(self, refs: list, timeout: float | None):
        ids = [r._id for r in refs]
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(20):
            if not all(oid in self.values for oid in ids):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = self.wait_ready(refs, len(set(ids)), left)
                if len(ready) < len(set(ids)):
                    pending = [r.hex() for r in refs if r._id not in ready]
                    raise exc.GetTimeoutError(
                        f"get() timed out after {timeout} s; {len(pending)} of {len(refs)} "
                        f"ref(s) not ready: {', '.join(pending[:5])}"
                        f"{' ...' if len(pending) > 5 else ''}")
            values = self.values
            entries = [(r._id, values[r._id]) for r in refs]
            try:
                self.pin_for_read(entries)
                break
            except exc.ObjectLostError:
                # The copy we were pointed at is gone.  If its node died, the owner is
                # rebuilding it (or will tell us it cannot): wait for the new value.
                if attempt == 19 or not self._lost_in_flight(entries):
                    raise
        out = []
        try:
            for r in refs:
                out.append(self.decode(r._id, r._owner, values[r._id], cover=True))
        except BaseException:
            self.unreserve([r._id for r in refs[len(out) + 1:]], values)
            raise
        return out

    def _lost_in_flight(self, entries) -> bool:
        """After a failed pin: did any of these values change or go away (its node was
        declared dead, so its owner rebuilds it)?  Waits up to a few heartbeats."""
        for _ in range(50):
            with self.lock:
                for oid, e in entries:     # borrowed copies on a dead node: ask again
                    if e[0] == STORED and e[1] in self.dead_nodes and \
                            self.values.get(oid) is e and not self.rt.owns(oid):
                        del self.values[oid]
                        r = self.rt.get(oid)
                        if r is not None:
                            self._fetch(oid, r.owner)
                if any(self.values.get(oid) is not entry for oid, entry in entries):
                    return True
                if any(e[0] == STORED and e[1] in self.dead_nodes for _oid, e in entries):
                    return True
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------------- pins
    def pin_for_read(self, items) -> None:
        """Make sure every stored object in ``items`` (``(oid, entry)`` pairs) is
        resident and pinned for this process, and reserve one view of it per item.
        Cached pins need no message; the rest are pinned in one request, which the node
        may answer only once it has restored them from disk (admission control)."""
        stored = [oid for oid, e in items if e[0] == STORED]
        if not stored:
            return
        missing = []
        with self.lock:
            pins = self.pins
            for oid in stored:
                p = pins.get(oid)
                if p is None:
                    missing.append(oid)
                else:
                    p[2] += 1
        if not missing:
            return
        where = {}
        entries = dict(items)
        for oid in missing:
            node = entries[oid][1]
            if node != self.node_id:
                where[oid] = node          # the node pulls it over first
        want = list(dict.fromkeys(missing))
        try:
            _, status, detail = self.transport.request(
                self.node_address, lambda reply_to: (P.PIN, self.me, reply_to, want, where),
                300)
        except TimeoutError:
            status, detail = "full", "the node did not make the objects resident in 300 s"
        if status != "ok":
            self.unreserve([o for o in stored if o not in missing], self.values)
            if status == "full":
                raise exc.ObjectStoreFullError(detail)
            raise exc.ObjectLostError(detail)
        with self.lock:
            for oid in missing:
                p = self.pins.get(oid)
                if p is None:
                    off, size = detail[oid]
                    self.pins[oid] = [off, size, 1]
                else:
                    p[2] += 1

    def unreserve(self, oids, values) -> None:
        with self.lock:
            for oid in oids:
                p = self.pins.get(oid)
                if p is not None and values.get(oid, (None,))[0] == STORED:
                    p[2] -= 1

    def _on_unpin_request(self, msg):
        released = []
        for oid in msg[1]:
            p = self.pins.get(oid)
            if p is not None and p[2] <= 0:
                del self.pins[oid]
                released.append(oid)
        if released:
            self.transport.send(self.node_address, (P.UNPIN, self.me, released))

    def decode(self, oid: bytes, owner: str, entry: tuple, cover: bool):
        """Rebuild a value from its entry.  Stored values become read-only views of
        the arena; while any view lives this process holds ``oid``."""
        kind = entry[0]
        if kind == ERROR:
            # Raise a copy: a raised exception's traceback references this frame and
            # its refs, and the stored one must not keep them alive.
            raise _fresh(entry[1])
        prev = getattr(_tls, "cover", None)
        _tls.cover = (oid, owner) if cover else None
        try:
            if kind == INLINE:
                return deserialize(entry[1], entry[2])
            with self.lock:
                offset, size, _views = self.pins[oid]    # reserved by pin_for_read
                self.rt.add_local(oid, owner)
                covered = getattr(_tls, "covered", None)
                if covered is not None:
                    covered.add(oid)
            return self.arena.read(offset, size, lambda: self._view_gone(oid))
        finally:
            _tls.cover = prev

    def deserialized_ref(self, oid: bytes, owner: str) -> ObjectRef:
        """A ref came out of a value we unpickled (see ReferenceTable.deserialized)."""
        self.register_deserialized(oid, owner)
        return ObjectRef(oid, owner, self)

    def register_deserialized(self, oid: bytes, owner: str) -> None:
        """Count one new local handle of ``oid`` (an ObjectRef or an ActorHandle about
        to be made) and get ourselves registered with its owner if needed."""
        with self.lock:
            fx = Effects()
            self.rt.deserialized(oid, owner, getattr(_tls, "covered", None),
                                 getattr(_tls, "cover", None), fx)
            self._apply(fx)

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

    def _on_reclaim(self, msg):
        self._do(self.tm.reclaim())

    def _on_tasks_returned(self, msg):
        _, worker, task_ids = msg
        self._do(self.tm.returned(worker, task_ids))

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
                self._stale.setdefault(t.task_id, set()).add(node)
        follow += self.tm.worker_died(addr, reason, oom)
        for t in inflight:
            if t.task_id in self.tm.tasks:
                self.recovery.event("task_retried", task_id=t.task_id.hex(), task=t.name,
                                    attempt=t.attempts, reason=reason)
        self.actors.process_died(addr, reason)
        self._apply(fx)
        self._do(follow)
        self.transport.disconnect(addr)

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
        from .ids import task_of
        with self.lock:
            if ref._owner != self.me:
                raise ValueError(f"only the owner of {ref!r} can cancel the task that makes it")
            self._do(self.tm.cancel(task_of(ref._id), force))

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

    # ------------------------------------------------------------------ I/O loop
    def _dispatch(self, msg) -> None:
        handler = self._handlers.get(msg[0])
        if handler is None:
            log.warning("unexpected message type %r", msg[0])
            return
        try:
            handler(msg)
        except Exception:  # noqa: BLE001 - a bad message must not kill the process
            log.exception("error handling message type %r", msg[0])

    # The inbox has one poller at a time.  Normally the I/O thread polls it.  A thread
    # that is about to wait for a reply (a driver in get(), an idle worker waiting for
    # tasks) takes the poller over and handles what arrives itself, so the reply it
    # waits for reaches it without a hand-off between threads.  Taking it over happens
    # while the request is in flight, off the critical path.

    def _io_loop(self) -> None:
        """The I/O thread.  It must never die while the process lives: an unexpected
        error is logged and the loop goes on; if it keeps failing, the core is marked
        broken so that callers get an error instead of waiting forever."""
        poller = self._poller = zmq.Poller()
        poller.register(self.transport.inbox, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        for fd in self._extra_fds:
            poller.register(fd, zmq.POLLIN)
        self._last_tick = time.monotonic()
        failures = 0
        cond = self._pcond
        while not self._stop:
            if self._poll_owner is not None:
                with cond:
                    while self._poll_owner is not None and not self._stop:
                        self._io_parked = True
                        cond.notify_all()
                        cond.wait(LAZY_S)
                        if not self._poll_busy and \
                                time.monotonic() - self._poll_released >= LAZY_S:
                            self._poll_owner = None      # its owner moved on: take it back
                    self._io_parked = False
                continue
            try:
                self._io_step(poller, TICK_MS)
                failures = 0
            except Exception as e:  # noqa: BLE001
                if self._stop:
                    return
                failures += 1
                log.exception("error in the I/O loop")
                if failures >= 100:
                    self.node_died(f"the I/O thread of {self.me} keeps failing: {e!r}")
                    return
                time.sleep(0.001)

    def take_poller(self) -> bool:
        """Become the inbox's poller (False if another thread already is)."""
        cond = self._pcond
        me = threading.get_ident()
        with cond:
            owner = self._poll_owner
            if owner == me or (owner is not None and not self._poll_busy):
                # still ours from the last wait (no hand-off at all), nested, or left
                # idle by another thread
                self._poll_owner = me
                self._poll_depth += 1
                self._poll_busy = True
                return True
            if owner is not None or self._poller is None or self._stop:
                return False
            self._poll_owner = me
            self._poll_depth = 1
            self._poll_busy = True
        try:
            self._wake()                    # get the I/O thread out of its poll
            with cond:
                while not self._io_parked and not self._stop:
                    if not self._io.is_alive():
                        raise exc.RefbookError("the I/O thread is gone")
                    cond.wait(0.05)
        except BaseException:
            with cond:
                self._poll_owner = None
                self._poll_depth = 0
                self._poll_busy = False
                cond.notify_all()
            if isinstance(sys.exc_info()[1], exc.RefbookError):
                return False
            raise
        return not self._stop

    def give_poller(self, now: bool = False) -> None:
        """Done waiting.  The poller stays with this thread for ``LAZY_S`` in case it
        waits again at once (a loop of calls); then the I/O thread takes it back.
        ``now``: give it back at once (before running user code that may be long)."""
        with self._pcond:
            self._poll_depth -= 1
            if self._poll_depth <= 0:
                self._poll_depth = 0
                self._poll_busy = False
                self._poll_released = time.monotonic()
                if now:
                    self._poll_owner = None
                    self._pcond.notify_all()

    def poll_once(self, timeout_ms: int) -> None:
        """Handle what arrives within ``timeout_ms`` (the caller owns the poller)."""
        self._io_step(self._poller, timeout_ms)

    def _io_step(self, poller, timeout_ms: int) -> None:
        events = dict(poller.poll(timeout_ms))      # a Ctrl-C may interrupt the wait...
        if self._stop:
            return
        if self.defer_sigint and threading.current_thread() is threading.main_thread():
            with _DeferSigint():                    # ...but not what it read
                self._handle(poller, events)
        else:
            self._handle(poller, events)

    def _handle(self, poller, events: dict) -> None:
        inbox = self.transport.inbox
        msgs = []
        if inbox in events:
            while inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                m = self.transport.recv(zmq.NOBLOCK)
                if m is not None:
                    msgs.append(m)
        if self._wake_r in events:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        for fd in [fd for fd in self._extra_fds if fd in events]:
            cb = self._extra_fds.pop(fd)    # one-shot: a pidfd stays readable
            poller.unregister(fd)
            cb()
        now = time.monotonic()
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)
            for m in msgs:
                self._dispatch(m)
            if now - self._last_tick > TICK_MS / 1000:
                self._last_tick = now
                self.tm.now = now
                self._do(self.tm.tick())
                if self._refetch:
                    due = [r for r in self._refetch if r[0] <= now]
                    self._refetch = [r for r in self._refetch if r[0] > now]
                    for _, oid, owner in due:
                        if oid in self.rt and oid not in self.values:
                            self._fetch(oid, owner)


class _DeferSigint:
    """In the main thread (a notebook's get() polls there), a KeyboardInterrupt raised in
    the middle of handling messages would lose them or leave a handler half done.  Ctrl-C
    is held back until the messages read are handled, then raised as usual."""

    __slots__ = ("old", "hit")

    def __enter__(self):
        self.hit = False
        try:
            self.old = signal.signal(signal.SIGINT, self._hit)
        except (ValueError, TypeError):
            self.old = None
        return self

    def _hit(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> bool:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            if self.hit and callable(self.old):
                self.old(signal.SIGINT, None)
        return False


def _node_of(addr: str) -> str | None:
    """The node id in a process address (``.../n-<node>/<process>``)."""
    i = addr.rfind("/n-")
    if i < 0:
        return None
    return addr[i + 3:].split("/", 1)[0]


def _fresh(err: BaseException) -> BaseException:
    try:
        return copy.copy(err)
    except Exception:  # noqa: BLE001 - an exotic exception class: raise it as is
        return err


def _owner_died(oid: bytes, owner: str) -> exc.OwnerDiedError:
    return exc.OwnerDiedError(
        f"object {oid.hex()} was owned by {owner}, which died; its objects died with it "
        f"(fate sharing). Re-create the value in a process that outlives its users, "
        f"e.g. the driver.")


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
