"""A worker process: runs tasks pushed by owners that hold a lease on it.

The I/O thread (in :class:`CoreWorker`) queues incoming task specs; the main thread runs
them one at a time, in arrival order, and sends results back to each task's owner,
batched when more tasks are already waiting.  Everything a task prints goes to its
owner.  The worker exits on its own when its node manager dies.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import time
import traceback
from queue import Empty, SimpleQueue

import cloudpickle

from ... import exceptions as exc
from ..data.serialization import deserialize, serialize
from ..protocol import messages as P
from ..protocol.entries import INLINE
from ..protocol.ids import task_of
from . import core as core_mod
from . import waiting
from .core import CoreWorker
from .writing import INLINE_MAX, _TopArg

log = logging.getLogger("refbook.worker")

FLUSH_BATCH = 64          # results sent in one message at most
FLUSH_AFTER = 0.002       # seconds a result may wait for others to batch with
SHORT_TASK = 0.0005       # functions quicker than this (on average) may batch


class TaskStream:
    """``sys.stdout``/``sys.stderr`` of a worker: text written while a task runs goes to
    the task's owner, line by line; anything else goes to the worker's log."""

    def __init__(self, runtime: WorkerRuntime, name: str, fallback):
        self._rt = runtime
        self._name = name
        self._fallback = fallback
        self._buf: list[str] = []

    def write(self, text: str) -> int:
        if self._rt.current is None:
            return self._fallback.write(text)
        self._buf.append(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        cur = self._rt.current
        if self._buf and cur is not None:
            text = "".join(self._buf)
            self._buf.clear()
            owner, task_id = cur
            self._rt.core.transport.send(
                owner, (P.OUTPUT, self._rt.core.me, task_id, self._name, text))
        elif self._buf:
            self._fallback.write("".join(self._buf))
            self._buf.clear()
        self._fallback.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fallback.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"


class WorkerRuntime:
    def __init__(self, core: CoreWorker):
        self.core = core
        self.queue: SimpleQueue = SimpleQueue()
        self.functions: dict[bytes, object] = {}
        self.current: tuple | None = None
        self.cancel_target: bytes | None = None
        self.results: dict[str, list] = {}
        self.nresults = 0
        self.first_result_at = 0.0
        self.durations: dict[bytes, float] = {}
        self.current_info: tuple | None = None
        self.actor = None                 # the instance, once this worker is an actor
        self.actor_error: BaseException | None = None
        self.actor_name = ""
        self.pool = None                  # threads, for actors with max_concurrency > 1
        self.actor_id: bytes | None = None
        core.task_info = self.task_info
        core.pending_calls = lambda: self.queue.qsize() + (self.current is not None)
        core.on_push = self.push
        core._handlers.update({
            P.CREATE_ACTOR: self._on_create_actor,
            P.ACTOR_CALLS: self._on_actor_calls,
            P.ACTOR_EXIT: self._on_actor_exit,
        })
        core.on_block = self.hand_back
        core.check_get = self.check_get
        core.on_cancel = self.cancel

    # -- called from the I/O thread -------------------------------------------------
    def _on_create_actor(self, msg) -> None:
        m = P.CreateActor._make(msg)
        self.queue.put(("create", m.owner, m.spec))

    def _on_actor_calls(self, msg) -> None:
        _, caller, specs = msg          # P.ActorCalls; unpacked, as on the per-call path
        for spec in specs:
            self.queue.put(("call", caller, spec))

    def _on_actor_exit(self, msg) -> None:
        self.queue.put(("exit", None, None))

    def push(self, owner: str, specs: list) -> None:
        for spec in specs:
            self.queue.put(("task", owner, spec))

    def cancel(self, task_id: bytes) -> None:
        cur = self.current
        if cur is not None and cur[1] == task_id:
            self.cancel_target = task_id
            os.kill(os.getpid(), signal.SIGINT)

    def on_sigint(self, signum, frame) -> None:
        """Raise in the task only if it is the one being cancelled (a late signal must
        not hit the next task, or the worker's own loop)."""
        cur = self.current
        if cur is not None and self.cancel_target == cur[1]:
            self.cancel_target = None
            raise KeyboardInterrupt

    def check_get(self, ids: list) -> None:
        """Called before a ``get`` in the running task waits: raise DeadlockError at
        once if it could never return (Ray waits for ever in both cases):
        - the task asks for one of its own results, which exist only once it returns;
        - an actor with ``max_concurrency=1`` asks for the result of a call to itself,
          which can only start after the running call returns."""
        cur = self.current
        if cur is None or self.pool is not None:   # threaded actors may wait on each other
            return
        core = self.core
        for oid in ids:
            if oid in core.values:
                continue
            tid = task_of(oid)
            if tid == cur[1]:
                name = self.current_info[1] if self.current_info else "?"
                raise exc.DeadlockError(
                    f"task {name} ({tid.hex()}) called get() on its own result "
                    f"{oid.hex()}, which exists only once the task returns: it would "
                    f"wait for ever")
            if self.actor_id is not None and core.actors.calls.get(tid) == self.actor_id:
                with core.lock:
                    q = core.actors.queues.get(self.actor_id)
                    calls = list(q.pending) + list(q.inflight.values()) if q else []
                name = next((t.name for t in calls if t.task_id == tid), "a method")
                raise exc.DeadlockError(
                    f"actor {self.actor_name} ({self.actor_id.hex()}) called get() on its "
                    f"own call {name} ({tid.hex()}): with max_concurrency=1 that call "
                    f"starts only after the running one returns, so it would wait for "
                    f"ever; call the method directly (self.{name.rsplit('.', 1)[-1]}(...)) "
                    f"or give the actor max_concurrency > 1")

    def task_info(self):
        """For the memory monitor: what this worker runs, and its memory use."""
        cur = self.current_info
        if cur is None:
            return None
        import psutil
        return (*cur, psutil.Process().memory_info().rss)

    # -- called from the main thread --------------------------------------------------
    def hand_back(self) -> None:
        """We are about to block in ``get``: return tasks we have not started, so their
        owners can run them elsewhere, and flush finished results first."""
        self.flush()
        if self.actor is not None or self.actor_error is not None:
            return        # an actor's calls can run nowhere else
        back: dict[str, list] = {}
        while True:
            try:
                _kind, owner, spec = self.queue.get_nowait()
            except Empty:
                break
            back.setdefault(owner, []).append(spec[0])
        for owner, ids in back.items():
            self.core.transport.send(owner, (P.TASKS_RETURNED, self.core.me, ids))

    def run(self) -> None:
        """Run tasks in arrival order.  Results are batched only across tasks whose
        function has been quick so far (< SHORT_TASK s): a result never waits behind a
        task that may be long.

        While idle, this thread polls the inbox itself (no hand-off from the I/O thread
        when a task arrives), and it keeps polling through quick tasks; before anything
        that may take long it hands the inbox back to the I/O thread, which serves this
        process's duties as an owner while user code runs."""
        core = self.core
        while True:
            try:
                item = self.queue.get_nowait()
            except Empty:
                self.flush()
                if self.pool is None and core.take_poller():
                    try:
                        while self.queue.empty():
                            core.poll_once(1000)
                    finally:
                        # lazily: if the task is quick we poll again without a hand-off;
                        # if it is not, the I/O thread takes the inbox back within LAZY_S
                        core.give_poller()
                item = self.queue.get()
            if item is None:
                self.flush()
                return
            kind, owner, spec = item
            key = spec[1] if kind in ("task", "call") else None
            quick = key is not None and self.durations.get(key, 1.0) <= SHORT_TASK
            if kind != "task":
                self.flush()
                t0 = time.monotonic()
                self._actor_item(kind, owner, spec)
                if key is not None:
                    self._record(key, time.monotonic() - t0)
                continue
            if self.nresults and (not quick or self.nresults >= FLUSH_BATCH
                                  or time.monotonic() - self.first_result_at > FLUSH_AFTER):
                self.flush()
            t0 = time.monotonic()
            result = self.execute(owner, spec, t0)
            t1 = time.monotonic()
            self._record(key, t1 - t0)
            if not self.nresults:
                self.first_result_at = t1
            self.results.setdefault(owner, []).append(result)
            self.nresults += 1

    def _record(self, key, seconds: float) -> None:
        prev = self.durations.get(key)
        self.durations[key] = seconds if prev is None else 0.5 * prev + 0.5 * seconds

    def flush(self) -> None:
        if not self.nresults:
            return
        for owner, batch in self.results.items():
            if batch:
                self.core.transport.send(owner, (P.TASKS_DONE, self.core.me, batch))
        self.results = {}
        self.nresults = 0

    def _function(self, fn_id: bytes, blob: bytes | None):
        fn = self.functions.get(fn_id)
        if fn is None:
            if blob is None:
                raise exc.RefbookError("worker was sent a task for a function it does not know")
            fn = self.functions[fn_id] = cloudpickle.loads(blob)
        return fn

    def execute(self, owner: str, spec: tuple, t0: float) -> tuple:
        task_id, fn_id, blob, args_pair, resolved, return_ids, name, retry = spec
        core = self.core
        with core.lock:               # (the I/O thread appends to this ring too)
            core.owner.events.add("task_started", task_id, name, owner)
        return self._run(owner, task_id, name, retry, args_pair, resolved, return_ids, t0,
                         lambda: self._function(fn_id, blob))

    def _run(self, owner, task_id, name, retry, args_pair, resolved, return_ids, t0,
             target) -> tuple:
        """Resolve the arguments, call ``target()(*args, **kwargs)``, and build the
        result message for ``owner``.  ``return_ids`` None: the value is not returned."""
        args_entry, blob_oid = args_pair
        core = self.core
        covered: set = set()
        self.current = (owner, task_id)
        self.current_info = (task_id, name, owner, retry, t0)
        self.cancel_target = None
        ok = True
        try:
            waiting._tls.covered = covered
            try:
                fn = target()
                reads = [(oid, entry) for oid, _o, entry in resolved]
                if blob_oid is not None:
                    reads.append((blob_oid, args_entry))
                core.pin_for_read(reads)     # waits until they are resident
                tops = []
                try:
                    for oid, o, entry in resolved:
                        tops.append(core.decode(oid, o, entry, cover=False))
                    if blob_oid is not None:
                        args, kwargs = core.decode(blob_oid, owner, args_entry, cover=False)
                        blob_oid = None
                    else:
                        args, kwargs = deserialize(args_entry[1], args_entry[2])
                except BaseException:
                    left = [oid for oid, _o, _e in resolved[len(tops) + 1:]]
                    if blob_oid is not None:
                        left.append(blob_oid)
                    core.unreserve(left, dict(reads))
                    raise
            finally:
                waiting._tls.covered = None
            args = [tops[a.i] if isinstance(a, _TopArg) else a for a in args]
            kwargs = {k: tops[v.i] if isinstance(v, _TopArg) else v for k, v in kwargs.items()}
            del tops
            value = fn(*args, **kwargs)
            del args, kwargs
            payload = (None if return_ids is None else
                       self._returns(owner, value, return_ids, name, covered))
            del value
        except KeyboardInterrupt:
            ok = False
            payload = exc.TaskCancelledError(f"task {name} ({task_id.hex()}) was cancelled")
        except BaseException as e:  # noqa: BLE001 - every task error goes to the owner
            ok = False
            payload = _task_error(name, e)
            del e
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            self.current = None
            self.current_info = None
        borrowed = core.end_task(covered)
        return (task_id, ok, payload, borrowed, time.monotonic() - t0)

    # -- actors -------------------------------------------------------------------------
    def _actor_item(self, kind: str, owner: str, spec) -> None:
        if kind == "exit":
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            self.flush()
            os._exit(0)
        if kind == "create":
            task_id, actor_id, class_id, blob, args_pair, resolved, name, conc = spec
            self.actor_name = name
            self.actor_id = actor_id
            holder = {}

            def construct():
                cls = self._function(class_id, blob)

                def make(*a, **k):
                    holder["instance"] = cls(*a, **k)
                return make

            result = self._run(owner, task_id, f"{name}.__init__", False, args_pair,
                               resolved, None, time.monotonic(), construct)
            if result[1]:
                result = (result[0], True, os.getpid(), *result[3:])   # its owner shows it
                self.actor = holder["instance"]
                if conc > 1:
                    from concurrent.futures import ThreadPoolExecutor
                    self.pool = ThreadPoolExecutor(conc, thread_name_prefix="actor")
            else:
                self.actor_error = result[2]
            self._send(owner, result)
            return
        # a method call
        if self.pool is not None:
            self.pool.submit(self._call, owner, spec)
        else:
            self._call(owner, spec)

    def _call(self, caller: str, spec) -> None:
        task_id, method, args_pair, resolved, return_ids, name, retry = spec
        core = self.core
        with core.lock:               # (the I/O thread appends to this ring too)
            core.owner.events.add("task_started", task_id, name, caller, self.actor_id)

        def target():
            if self.actor is None:
                raise exc.ActorError(f"actor {self.actor_name} is not available: "
                                     f"{self.actor_error}")
            return getattr(self.actor, method)

        self._send(caller, self._run(caller, task_id, name, retry, args_pair, resolved,
                                     return_ids, time.monotonic(), target))

    def _send(self, owner: str, result: tuple) -> None:
        self.core.transport.send(owner, (P.TASKS_DONE, self.core.me, [result]))

    def _returns(self, owner: str, value, return_ids: list, name: str,
                 covered: set) -> list:
        n = len(return_ids)
        if n == 1:
            values = [value]
        else:
            try:
                values = list(value)
            except TypeError:
                values = None
            if values is None or len(values) != n:
                raise ValueError(f"task {name} declared num_returns={n} but returned "
                                 f"{type(value).__name__} {value!r:.80}")
        core = self.core
        out = []
        for oid, v in zip(return_ids, values, strict=True):
            try:
                s = serialize(v)
            except Exception as e:
                raise TypeError(f"task {name} returned a value that cannot be pickled: "
                                f"{type(e).__name__}: {e}") from None
            nested = core.register_all_for(s.refs, owner, covered)
            if s.size <= INLINE_MAX:
                out.append((INLINE, (s.meta, [bytes(b) for b in s.buffers]), nested))
            else:
                entry = core.store(oid, s, owner)
                out.append((entry[0], entry[1:], nested))
        return out


def _task_error(name: str, e: BaseException) -> exc.TaskError:
    tb = e.__traceback__
    # drop the worker's own frame so the traceback starts in user code
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    # and frames that ask to be hidden (refbook's %%remote runner, as in pytest)
    while tb is not None and tb.tb_next is not None and \
            tb.tb_frame.f_locals.get("__tracebackhide__"):
        tb = tb.tb_next
    tb_str = "".join(traceback.format_exception(type(e), e, tb))
    cause_cls = type(e)
    try:
        pickle.loads(cloudpickle.dumps(cause_cls))
    except Exception:  # noqa: BLE001
        cause_cls = None
    cause = e
    try:     # it must load again on the other side, not only pickle here
        pickle.loads(cloudpickle.dumps(e))
    except Exception:  # noqa: BLE001
        cause = None
    e.__traceback__ = None     # frames hold the task's arguments; let them go
    if isinstance(e, exc.TaskError):   # a nested task's error: keep its cause class
        cause_cls = e.cause_cls
    return exc.TaskError(name, tb_str, f"{type(e).__name__}: {e}", cause_cls, cause)


def worker_main(cfg: dict, secret: bytes, address: str, arena, nm_pid: int) -> None:
    """Entry point of a worker, forked from the node's zygote."""
    import random

    import numpy as np
    random.seed()
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logfile = os.path.join(cfg["session_dir"], "logs", f"worker-{address.rsplit('-', 1)[-1]}.log")
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    out = os.fdopen(1, "w", buffering=1, closefd=False)
    err = os.fdopen(2, "w", buffering=1, closefd=False)
    logging.basicConfig(stream=err, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    core = CoreWorker(kind="worker", address=address, node_address=cfg["node_address"],
                      node_id=cfg["node_id"], secret=secret, arena=arena)
    core_mod.set_current(core)
    nm_fd = os.pidfd_open(nm_pid)
    core.add_fd(nm_fd, lambda: os._exit(0))   # the node manager is gone: so are we
    rt = WorkerRuntime(core)
    signal.signal(signal.SIGINT, rt.on_sigint)
    sys.stdout = TaskStream(rt, "out", out)
    sys.stderr = TaskStream(rt, "err", err)
    core.start()
    core.register()
    try:
        rt.run()
    finally:
        os._exit(0)


__all__ = ["WorkerRuntime", "worker_main"]
