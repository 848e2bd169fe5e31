"""The owner, without I/O: what a process decides about the tasks it submitted and the
objects it owns.

Every driver and worker is an owner of what it creates (NSDI'21 ownership).  This class
holds the owner's whole protocol state: the reference table (``rt``), the task table
(``tm``), what it knows of each value (``values``: an *entry* per object, see
``entries.py``), where secondary copies are (``copies``), which nodes died, and the
lineage kept to rebuild lost objects (``lineage``).  It takes events, each a method
named after what happened (``submit``, ``tasks_done``, ``lease_granted``,
``get_object`` ...; deaths of processes and nodes in ``deaths.py``), and leaves what the
process must do in
``self.out``, an :class:`Outbox`: messages to send, values that became known (wake
whoever waits), entries that went away (drop cached pins).  No sockets, threads or
clocks: the process sets ``now`` before an event, then carries out the outbox
(``processes/core.py``).  The simulator (``refbook/testing/sim.py``) runs this class
as it is.

Messages the owner sends (see ``messages.py``): PUSH_TASKS to leased workers,
LEASE_REQUEST / LEASE_RETURN / KILL_WORKER / FREE / PREFETCH to node managers,
CANCEL_TASK to workers, GET_OBJECT / OBJECT_REPLY between owners and borrowers, and
the reference-counting messages of ``refcount.py``.
"""

from __future__ import annotations

from ...exceptions import ObjectLostError
from . import messages as P
from .deaths import Deaths
from .entries import ERROR, INLINE, STORED, node_of, owner_died
from .events import EventRing, ended, entry_size, error_name, retried
from .ids import object_id, task_of
from .lineage import Lineage
from .refcount import Effects, ReferenceTable
from .tasks import QUEUED, Cancel, Fail, Push, Request, Return, Task, TaskManager

QUICK_TASK = 0.002     # tasks quicker than this may be pipelined on one worker
LOCALITY_MIN = 1 << 20  # run a task where its arguments are if that is at least this much


class Outbox:
    """What the owner asks its process to do, in order, after an event."""

    __slots__ = ("send", "ready", "gone", "lost", "freed")

    def __init__(self):
        self.send: list[tuple[str, tuple]] = []   # (address, message)
        self.ready: list[bytes] = []    # values now known: wake whoever waits for them
        self.gone: list[bytes] = []     # borrowed entries dropped: release unused pins
        self.lost: list[bytes] = []     # every copy lost: drop this process's pins too
        self.freed: list[bytes] = []    # objects freed: forget unused pins, waiters; an
                                        # owned actor whose last handle went exits

    def __bool__(self) -> bool:
        return bool(self.send or self.ready or self.gone or self.lost or self.freed)


class Owner:
    """The protocol state of one owner process (see the module's docstring)."""

    def __init__(self, me: str, node_id: str, node_address: str, *, depth: int = 8,
                 idle_timeout: float = 0.2, rebuild_wait: float = 30.0,
                 lineage_max_bytes: int = 256 << 20):
        self.me = me
        self.node_id = node_id
        self.node_address = node_address          # our node manager
        self.rt = ReferenceTable(me)
        self.tm = TaskManager(depth=depth, idle_timeout=idle_timeout,
                              rebuild_wait=rebuild_wait)
        self.values: dict[bytes, tuple] = {}
        self.copies: dict[bytes, set] = {}        # owned oid -> nodes with a secondary copy
        self.dead_nodes: set[str] = set()
        self.lineage = Lineage(self, lineage_max_bytes)
        self.deaths = Deaths(self)
        self.out = Outbox()
        self.events = EventRing()                 # what it did (.clock: set by the process)
        self.fetching: set[bytes] = set()         # GET_OBJECT outstanding
        self.readers: dict[bytes, list] = {}      # oid -> [(requester, req)] to answer
        self.stale: dict[bytes, set] = {}         # task id -> {(node, worker)} of attempts
                                                  # that died (they may have stored outputs)
        self.lease_reqs: dict[int, tuple] = {}    # req id -> (resources, dedicated, nm, prefer)
        self.lease_nm: dict[int, str] = {}        # lease id -> the node manager that granted it
        self.fn_sent: set = set()                 # (worker, fn id): function blob sent
        self.fn_time: dict[bytes, float] = {}     # fn id -> recent run time (seconds)
        # Hooks for the actor part of the process (processes/actor_runtime.py).
        self.actor_done = None                    # task id -> Task | None: a call finished
        self.actor_created = None                 # (task id, ok, payload, worker, borrowed)
        self.actor_resubmit = None                # (Task, unresolved): run a call again

    # ------------------------------------------------------------------ the clock
    @property
    def now(self) -> float:
        return self.tm.now

    @now.setter
    def now(self, t: float) -> None:
        self.tm.now = t

    clock = property(lambda self: self.events.clock,
                     lambda self, fn: setattr(self.events, "clock", fn))

    def send(self, addr: str, msg: tuple) -> None:
        self.out.send.append((addr, msg))

    # ----------------------------------------------------------------- values
    def set_value(self, oid: bytes, entry: tuple) -> None:
        """A value became known: tasks waiting for it go on (or fail with it)."""
        self.values[oid] = entry
        self.out.ready.append(oid)
        for requester, req in self.readers.pop(oid, ()):
            self.send(requester, (P.OBJECT_REPLY, req, oid, entry))
        if entry[0] == ERROR:
            self.lineage.rebuilding.discard(oid)
            self.lineage.announced.discard(oid)
            self.do(self.tm.dependency_failed(oid, entry[1]))
        else:
            self.do(self.tm.resolved(oid))

    def apply(self, fx: Effects) -> None:
        """Carry out what the reference table decided."""
        out = self.out
        if fx.free:
            frees: dict[str, list] = {}
            values, copies, readers = self.values, self.copies, self.readers
            out.freed.extend(fx.free)
            for oid in fx.free:
                entry = values.pop(oid, None)
                if entry is not None and entry[0] < ERROR:       # a value: INLINE, STORED
                    self.events.add("object_freed", oid, entry_size(entry))
                if copies and oid in copies:
                    for node_id in sorted(copies.pop(oid)):
                        frees.setdefault(node_id, []).append(oid)
                if entry is not None and entry[0] == STORED:
                    frees.setdefault(entry[1], []).append(oid)
                if readers:
                    readers.pop(oid, None)
            for node_id, oids in frees.items():
                if node_id not in self.dead_nodes:
                    self.send(self.node_address, (P.FREE, oids, node_id))
            fx.free.clear()
        if fx.dropped:
            for oid in fx.dropped:
                self.values.pop(oid, None)
            out.gone.extend(fx.dropped)
            fx.dropped.clear()
        if fx.send:
            out.send.extend(fx.send)
            fx.send.clear()
        while fx.released:       # entries gone: the lineage that only they needed goes
            released, fx.released = fx.released, []
            for oid in released:
                self.lineage.released(oid, fx)
            self.apply(fx)

    # ------------------------------------------------------------------ fetching
    def fetch(self, oid: bytes, owner: str) -> None:
        """Ask ``owner`` for the value of ``oid`` (a ref we borrow)."""
        if oid in self.fetching:
            return
        r = self.rt.get(oid)
        if r is not None and (r.owner_dead or owner in self.rt.dead
                              or node_of(owner) in self.dead_nodes):
            # its owner died before the ref reached us: nobody would ever answer
            r.owner_dead = True
            self.set_value(oid, (ERROR, owner_died(oid, owner)))
            return
        self.fetching.add(oid)
        self.send(owner, (P.GET_OBJECT, self.me, 0, oid))

    def get_object(self, requester: str, req: int, oid: bytes) -> None:
        """A borrower asks where ``oid`` is: answer now, or once the value is known."""
        entry = self.values.get(oid)
        if entry is not None:       # the primary copy: a reader's node uses its own if any
            self.send(requester, (P.OBJECT_REPLY, req, oid, entry))
        elif self.rt.owns(oid):
            self.readers.setdefault(oid, []).append((requester, req))
            if self.rt.get(oid).freed and oid not in self.lineage.rebuilding and \
                    task_of(oid) not in self.tm.tasks:
                # freed when nothing held it, and kept only as the lineage of a task
                # that ran again and handed it on nested: make it again for the reader
                self.lineage.lost(oid, "was needed again after it was freed")
        else:
            err = ObjectLostError(
                f"object {oid.hex()} is no longer held by its owner {self.me}; it was "
                f"freed, or this process restarted")
            self.send(requester, (P.OBJECT_REPLY, req, oid, (ERROR, err)))

    def object_reply(self, oid: bytes, entry: tuple) -> bool:
        """The owner of a ref we borrow answered.  False: the copy it names is on a node
        we know is dead and it does not yet; ask again a little later."""
        self.fetching.discard(oid)
        if oid not in self.rt:
            return True
        if entry[0] == STORED and entry[1] in self.dead_nodes:
            return False
        self.set_value(oid, entry)
        return True

    # ----------------------------------------------------------------- submitting
    def hold_args(self, args_entry, top_refs: list, nested: list, blob_oid) -> tuple:
        """Count a call's argument refs as submitted.  ``blob_oid``: the arguments were
        large and went to the store as this object.  Returns ``(args_entry, arg_refs,
        unresolved)``."""
        arg_refs = top_refs + nested
        if blob_oid is not None:
            self.rt.own(blob_oid)
            self.put_value(blob_oid, args_entry)
            arg_refs.append((blob_oid, self.me))
            args_entry = ("ref", blob_oid)
        self.rt.add_submitted(arg_refs)
        unresolved = set()
        for oid, owner in top_refs:
            if oid not in self.values:
                unresolved.add(oid)
                if owner != self.me:
                    self.fetch(oid, owner)
        return args_entry, arg_refs, unresolved

    def put_value(self, oid: bytes, entry: tuple) -> None:   # put(), a call's large args
        self.values[oid] = entry
        self.events.add("object_created", oid, entry_size(entry))

    def submit(self, task: Task, unresolved: set) -> None:
        """A new task, its return ids already owned."""
        self.events.add("task_submitted", task.task_id, task.name, None)
        task.quick = self.fn_time.get(task.payload.fn_id, 1.0) < QUICK_TASK
        if not unresolved:
            near = self.where_args_are(task)
            if near is not None and near != self.node_id:
                # its own queue and leases, so that it runs where its data is
                task.key = task.key + (("@node", near),)
        self.do(self.tm.submit(task, unresolved))
        for oid in sorted(oid for oid in unresolved if oid in self.values):
            # known since hold_args (its owner was already dead): go on with it now
            entry = self.values[oid]
            self.do(self.tm.dependency_failed(oid, entry[1]) if entry[0] == ERROR
                    else self.tm.resolved(oid))
        if task.state == QUEUED:
            stored = [oid for oid, _ in task.payload.top_refs
                      if self.values.get(oid, (None,))[0] == STORED]
            if stored:   # it waits for a worker: have the node restore its arguments
                self.send(self.node_address, (P.PREFETCH, stored))

    def cancel(self, task_id: bytes, force: bool) -> str | None:
        """Cancel a task that has not finished; its name, or None."""
        t = self.tm.tasks.get(task_id)
        if t is None or t.cancelled:
            return None
        self.do(self.tm.cancel(task_id, force))
        return t.name

    def where_args_are(self, task) -> str | None:
        """Locality: the node holding the most bytes of ``task``'s stored arguments, if
        that is a good share of them."""
        if task is None or not task.resources:
            return None
        by_node: dict[str, int] = {}
        for oid, _owner in task.payload.top_refs:
            e = self.values.get(oid)
            if e is not None and e[0] == STORED:
                for node in (e[1], *sorted(self.copies.get(oid, ()))):
                    by_node[node] = by_node.get(node, 0) + e[3]
        if not by_node:
            return None
        node, size = max(by_node.items(), key=lambda kv: kv[1])
        return node if size >= LOCALITY_MIN else None

    # ----------------------------------------------------------- task-table actions
    def do(self, actions: list) -> None:
        """Carry out what the task manager decided."""
        for a in actions:
            cls = type(a)
            if cls is Push:
                self._push(a.lease, a.tasks)
            elif cls is Request:
                self.request_lease(a.req_id, a.resources, False,
                                   prefer=self.where_args_are(a.task))
            elif cls is Return:
                self.send(self.lease_nm.pop(a.lease_id, self.node_address),
                          (P.LEASE_RETURN, a.lease_id))
            elif cls is Fail:
                self.fail_task(a.task, a.error)
                ended(self.events, a.task, a.error)
            elif cls is Cancel:
                if a.force:
                    self.send(self.node_address,
                              (P.KILL_WORKER, a.worker, "cancelled with force=True"))
                else:
                    self.send(a.worker, (P.CANCEL_TASK, a.task.task_id))

    def _push(self, lease, batch: list) -> None:
        specs = []
        values = self.values
        for t in batch:
            missing = {oid for oid, _ in t.payload.top_refs if oid not in values}
            if missing:          # lost since it was queued: wait for it again
                self.tm.unpush(t, missing)
                for oid, owner in t.payload.top_refs:
                    if oid in missing and owner != self.me:
                        self.fetch(oid, owner)
                continue
            specs.append(self._wire_spec(t, lease.worker))
        if specs:
            self.send(lease.worker, (P.PUSH_TASKS, self.me, lease.lease_id, specs))

    def _wire_spec(self, task: Task, worker: str) -> tuple:
        fn_id, fn_blob, args_entry, top_refs = task.payload
        key = (worker, fn_id)
        if key in self.fn_sent:
            blob = None
        else:
            self.fn_sent.add(key)
            blob = fn_blob
        if args_entry[0] == "ref":
            args_entry = (self.values[args_entry[1]], args_entry[1])
        else:
            args_entry = (args_entry, None)
        resolved = [(oid, owner, self.values[oid]) for oid, owner in top_refs]
        return (task.task_id, fn_id, blob, args_entry, resolved, task.return_ids, task.name,
                task.attempts <= task.max_retries)

    def fail_task(self, task: Task, error: BaseException) -> None:
        """``task`` ends with ``error`` for each of its returns."""
        if task.task_id in self.stale:
            self._free_stale(task, {})
        entry = (ERROR, error)
        for oid in task.return_ids:
            self.set_value(oid, entry)
        fx = Effects()
        self.rt.remove_submitted(task.arg_refs, fx)
        for oid in task.return_ids:
            self.rt.release_if_unreferenced(oid, fx)
        self.apply(fx)

    def _free_stale(self, task: Task, keep: dict) -> None:
        """Outputs an attempt that died may have stored, on nodes other than where each
        final copy is (``keep``: oid -> node): nobody else knows about them.  Only the
        copy that dead worker wrote goes: the node may meanwhile hold another copy of
        the same object, pulled there for a reader of the final value."""
        for node, worker in sorted(self.stale.pop(task.task_id, ())):
            oids = [oid for oid in task.return_ids if keep.get(oid) != node]
            if oids and node not in self.dead_nodes:
                self.send(self.node_address, (P.FREE, oids, node, worker))

    # ------------------------------------------------------------- task replies
    def tasks_done(self, worker: str, results: list) -> None:
        """A worker finished tasks: ``(task_id, ok, payload, borrowed, seconds)`` each."""
        fx = Effects()
        for task_id, ok, payload, borrowed, seconds in results:
            task, actions = self.tm.done(task_id)
            self.do(actions)
            if task is not None and task_id in self.stale:
                keep = {}
                if ok and task.resources:
                    for oid, ret in zip(task.return_ids, payload, strict=False):
                        if ret[0] == STORED:
                            keep[oid] = ret[1][0]
                self._free_stale(task, keep)
            if task is None:             # an actor call (most often), or its constructor
                task = self.actor_done(task_id) if self.actor_done is not None else None
                if task is None and self.actor_created is not None and \
                        self.actor_created(task_id, ok, payload, worker, borrowed, fx):
                    continue
                if task is None:         # cancelled, or a duplicate after a retry
                    if ok and type(payload) is not int:   # (not a constructor's pid)
                        self._discard_returns(task_id, payload, fx)
                    self.rt.task_borrowed(borrowed, worker, [], fx)
                    continue
            else:
                fn_id = task.payload.fn_id
                prev = self.fn_time.get(fn_id)
                self.fn_time[fn_id] = seconds if prev is None else 0.7 * prev + 0.3 * seconds
            if not ok and self._failed(task, payload, worker, borrowed, fx):
                continue
            if ok:
                for oid, (kind, data, nested) in zip(task.return_ids, payload, strict=True):
                    self.rt.task_returned(oid, nested, task.arg_refs, fx)
                    entry = (INLINE, data[0], data[1]) if kind == INLINE else (STORED, *data)
                    self.lineage.rebuilt(oid, entry)
                    self.set_value(oid, entry)
                    if kind == STORED and data[0] in self.dead_nodes:
                        self.lineage.lost(oid, f"was stored on node {data[0]}, which died")
            ended(self.events, task, None if ok else payload)   # a task or an actor call
            self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
            if ok:             # keep its lineage (an actor call: with max_task_retries)
                self.lineage.keep(task)
            self.rt.remove_submitted(task.arg_refs, fx)
            for oid in task.return_ids:
                self.rt.release_if_unreferenced(oid, fx)
        self.apply(fx)

    def _failed(self, task: Task, error, worker: str, borrowed, fx: Effects) -> bool:
        """A task raised.  True if it runs again (its reply is then done with); else
        its returns become the error."""
        cause = getattr(error, "cause_cls", None)
        lost_arg = bool(task.resources) and isinstance(cause, type) and \
            issubclass(cause, ObjectLostError)      # (an actor call has no resources)
        mine = [oid for oid, o in task.payload.top_refs if o == self.me] if lost_arg else []
        if lost_arg and any(oid not in self.values for oid in mine):
            # an argument was lost while the task ran: rebuild it, run again
            self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
            self.lineage.rebuild(task, "lost an argument while running", retry=True)
            self.rt.remove_submitted(task.arg_refs, fx)
            return True
        if lost_arg and task._rebuilds < max(3, task.max_retries) and any(
                self.values.get(oid, (None,))[0] == STORED
                and self.values[oid][1] != self.node_id for oid in mine):
            # the worker saw a node die before we did: run it again a little later,
            # when its arguments have been marked lost (and are rebuilt)
            task._rebuilds += 1
            self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
            retried(self.events, task, "an argument's node died")
            self.tm.run_later(task, 0.3)
            return True
        if self.tm.should_retry_exception(task, cause):
            self.rt.task_borrowed(borrowed, worker, task.arg_refs, fx)
            retried(self.events, task, f"it raised {error_name(error)}")
            self.do(self.tm.retry(task))
            return True
        for oid in task.return_ids:
            self.set_value(oid, (ERROR, error))
        return False

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
                self.put_value(oid, (STORED, *data))
            self.rt.release_if_unreferenced(oid, fx)

    # ------------------------------------------------------------------- leases
    def request_lease(self, req_id: int, resources: dict, dedicated: bool,
                      nm: str | None = None, prefer: str | None = None) -> None:
        """Ask a node manager (ours unless told otherwise) for a worker, preferably on
        node ``prefer`` (where the task's arguments are)."""
        nm = nm or self.node_address
        self.lease_reqs[req_id] = (resources, dedicated, nm, prefer)
        self.send(nm, (P.LEASE_REQUEST, self.me, req_id, resources, dedicated, prefer))

    def lease_granted(self, req_id: int, lease_id, worker: str, nm: str) -> bool:
        """A node manager answered a lease request (``lease_id`` None: no node can run
        it, and ``worker`` says why).  False if the request was an actor's (the caller
        hands it on)."""
        if lease_id is not None and node_of(worker) in self.dead_nodes:
            req = self.lease_reqs.get(req_id)   # a node already written off: ask again
            if req is not None:
                self.request_lease(req_id, req[0], req[1])
            return True
        req = self.lease_reqs.pop(req_id, None)
        if lease_id is not None:
            self.lease_nm[lease_id] = nm
        if req is not None and req[1]:          # dedicated: an actor's worker
            return False
        if lease_id is None:
            self.do(self.tm.lease_rejected(req_id, worker))
        else:
            self.do(self.tm.lease_granted(req_id, lease_id, worker))
        return True

    def spillback(self, req_id: int, nm: str, prefer: bool = True) -> None:
        """A node manager says another node should run it (``prefer`` False: and the
        node where its arguments are need not: it is busy)."""
        req = self.lease_reqs.get(req_id)
        if req is not None:
            if node_of(nm) in self.dead_nodes:
                nm = None                        # stale advice: ask our own node again
            self.request_lease(req_id, req[0], req[1], nm, req[3] if prefer else None)
