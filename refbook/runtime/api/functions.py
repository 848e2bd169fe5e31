"""The public runtime API (API.md section 1): init, shutdown, put, get, wait, cancel,
and the introspection calls.  Mirrors Ray's for the common subset."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time

from ... import exceptions as exc
from ...units import fmt_bytes
from ..data.arena import Arena
from ..processes import context
from ..processes import core as core_mod
from ..processes.core import CoreWorker
from ..processes.launch import advertise, spawn_node, wait_ready
from ..processes.object_ref import ObjectRef
from ..processes.probe import Probe
from ..protocol import messages as P
from .localnodes import LocalNodes

_lock = threading.RLock()
_session: Session | None = None


class RuntimeContext:
    """What ``init()`` returns: where the cluster is and what this node has."""

    def __init__(self, session: Session):
        self.session_dir = session.dir
        self.node_id = session.node_id
        self.address = session.node_address
        self.driver_address = session.core.me
        self.num_cpus = session.num_cpus
        self.object_store_memory = session.capacity
        self.spill_dir = session.spill_dir

    def __repr__(self) -> str:
        return (f"RuntimeContext(node_id={self.node_id!r}, num_cpus={self.num_cpus}, "
                f"object_store_memory={self.object_store_memory})")


class Session:
    """One embedded cluster started by ``init()``: a node process and this driver."""

    def __init__(self, num_cpus: int, capacity: int, resources: dict,
                 spill_dir: str | None, memory_threshold: float, num_nodes: int = 1):
        self.num_cpus = num_cpus
        self.capacity = capacity
        self.resources = resources
        self.memory_threshold = memory_threshold
        self.num_nodes = num_nodes
        self.dir = tempfile.mkdtemp(prefix="refbook-")
        self.spill_dir = spill_dir or os.path.join(self.dir, "spill")
        self.node_id = os.urandom(4).hex()
        sock_dir = os.path.join(self.dir, f"n-{self.node_id}")
        os.mkdir(sock_dir, 0o700)
        os.mkdir(os.path.join(self.dir, "logs"), 0o700)
        self.node_address = f"ipc://{sock_dir}/nm"
        secret = os.urandom(32)
        self.arena = Arena.create(capacity)
        cfg = {
            "session_dir": self.dir, "sock_dir": sock_dir, "node_id": self.node_id,
            "node_address": self.node_address, "num_cpus": num_cpus,
            "resources": resources, "capacity": capacity, "arena_fd": self.arena.fd,
            "driver_pid": os.getpid(), "owns_session": True,
            "spill_dir": self.spill_dir, "memory_threshold": memory_threshold,
            "started_by": "init",
        }
        self.log_path = os.path.join(self.dir, "logs", "node.log")
        self.proc, ready_r = spawn_node(cfg, secret, self.log_path, (self.arena.fd,))
        try:
            # the driver's side starts while the node process imports
            self.core = CoreWorker(kind="driver", address=f"ipc://{sock_dir}/d-{os.urandom(6).hex()}",
                                   node_address=self.node_address, node_id=self.node_id,
                                   secret=secret, arena=self.arena)
            wait_ready(self.proc, ready_r, self.log_path)
            ready_r = None
            node_fd = self.node_fd = os.pidfd_open(self.proc.pid)
            self.core.add_fd(node_fd, lambda: self.core.node_died(
                f"process {self.proc.pid} exited; see {self.log_path}"))
            self.core.start()
            self.core.register()
            advertise(self.dir, self.node_address, secret)     # for `refbook memory`
            # the other nodes of this host's cluster: num_nodes, state.add_node()
            self.local_nodes = LocalNodes(self.core, self.dir, self.node_address, secret,
                                          self.spill_dir, memory_threshold)
            if num_nodes > 1:
                self.local_nodes.start([(num_cpus, capacity, resources)] * (num_nodes - 1))
        except BaseException:
            if ready_r is not None:
                os.close(ready_r)
            self.close()
            raise

    def close(self) -> None:
        core = getattr(self, "core", None)
        if getattr(self, "local_nodes", None) is not None:
            self.local_nodes.close()
        if core is not None:
            try:
                core.transport.send(self.node_address, (P.SHUTDOWN,))
            except Exception:  # noqa: BLE001
                pass
            core.stop()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        arena = getattr(self, "arena", None)
        if arena is not None:
            arena.close()     # its memory goes when nothing maps it: not on a GC's whim
        fd = getattr(self, "node_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class JoinedSession:
    """This process joins a cluster someone else started (``init(address=...)``): it
    attaches to a node on this host and leaves the cluster running when it exits."""

    def __init__(self, address: str, secret: bytes | None):
        from ..processes.launch import find_secret, local_ip_towards, parse_address
        from ..wire.transport import free_port
        if address.startswith("ipc://"):             # a refbook.testing.Cluster
            root = os.path.dirname(os.path.dirname(address[len("ipc://"):]))
            head, me_host = address, None
            if secret is None:
                secret = _read_secret(root)
            probe_addr = f"ipc://{root}/p-{os.urandom(4).hex()}"
        else:                                        # HOST:PORT of `refbook start --head`
            host, port = parse_address(address.removeprefix("tcp://"))
            root = None
            head = f"tcp://{host}:{port}"
            me_host = os.environ.get("REFBOOK_BIND") or local_ip_towards(host)
            if secret is None:
                secret = find_secret(host, port)
            probe_addr = f"tcp://{me_host}:{free_port(me_host)}/probe"
        with Probe(probe_addr, secret) as probe:
            try:
                view = probe.ask(head, "nodes", timeout=10)
            except TimeoutError:
                raise exc.RefbookError(
                    f"no answer from the cluster at {address}: it is not running, or it "
                    f"refused us because the secret does not match (REFBOOK_SECRET, "
                    f"--secret-file, or the file `refbook start --head` wrote)") from None
        alive = [n for n in view if n["alive"]]
        self.own_node = None
        if me_host is not None:     # only a node on this host can share its store with us
            local = [n for n in alive if n["address"].startswith(f"tcp://{me_host}:")]
            if not local:
                local = [self._start_own_node(me_host, head, secret, len(alive))]
            alive = local
        try:
            self._attach(alive, root, me_host, secret)
        except BaseException:
            self._stop_own_node()
            raise

    def _attach(self, alive: list, root, me_host, secret: bytes) -> None:
        from ..wire.transport import free_port
        node = next((n for n in alive if n.get("is_head")), None) or alive[0]
        self.dir = root
        self.node_id = node["node_id"]
        self.node_address = node["address"]
        self.num_cpus = int(sum(n["resources"].get("CPU", 0) for n in alive))
        self.capacity = node["store"]["capacity"]
        self.spill_dir = None
        fd = os.open(f"/proc/{node['pid']}/fd/{node['arena_fd']}", os.O_RDWR)
        self.arena = Arena(fd, self.capacity)
        if me_host is None:
            me = f"ipc://{root}/n-{self.node_id}/d-{os.urandom(6).hex()}"
        else:
            me = f"tcp://{me_host}:{free_port(me_host)}/n-{self.node_id}/d-{os.urandom(6).hex()}"
        self.core = CoreWorker(kind="driver", address=me,
                               node_address=self.node_address, node_id=self.node_id,
                               secret=secret, arena=self.arena)
        node_fd = self.node_fd = os.pidfd_open(node["pid"])
        self.core.add_fd(node_fd, lambda: self.core.node_died(
            f"node manager {node['pid']} of node {self.node_id} exited"))
        self.core.start()
        self.core.register()

    def _start_own_node(self, host: str, head: str, secret: bytes, others: int) -> dict:
        """No node runs on this host: start one that belongs to this process (no
        workers unless REFBOOK_NUM_CPUS says so; it holds what this process puts and
        gets) and goes when it does.  Returns its view, as the head would list it."""
        from ..processes.launch import node_config, spawn_node, wait_ready
        from ..wire.transport import free_port
        cfg = node_config(host=host, port=free_port(host), head=head,
                          num_cpus=int(os.environ.get("REFBOOK_NUM_CPUS", 0)),
                          capacity=_default_store_memory(), resources={},
                          driver_pid=os.getpid())
        log_path = os.path.join(cfg["session_dir"], "logs", "node.log")
        proc, ready_r = spawn_node(cfg, secret, log_path)
        wait_ready(proc, ready_r, log_path)
        self.own_node = proc
        mine = None
        # until it has the head's view of the cluster, so the caller has it too
        with Probe(f"tcp://{host}:{free_port(host)}/probe", secret) as probe:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    view = probe.ask(cfg["node_address"], "nodes",
                                     max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                mine = next((n for n in view if n["node_id"] == cfg["node_id"]), None)
                if mine is not None and len([n for n in view if n["alive"]]) > others:
                    return mine
                time.sleep(0.02)
        if mine is not None:
            return mine
        self._stop_own_node()
        raise exc.RefbookError(f"the node started for this process did not answer; see "
                               f"{log_path}")

    def _stop_own_node(self, timeout: float = 5.0) -> None:
        proc, self.own_node = self.own_node, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()           # SIGTERM: it stops cleanly and removes its files
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        core = self.core      # we leave: the node frees what we owned, as if we died
        core.transport.send(self.node_address, (P.PROCESS_DIED, core.me, "driver left", False))
        if self.own_node is not None:
            time.sleep(0.05)  # let it pass that on to the other nodes before it stops
        self._stop_own_node()
        core.stop()
        self.arena.close()
        try:
            os.close(self.node_fd)
        except OSError:
            pass


def _read_secret(root: str) -> bytes:
    env = os.environ.get("REFBOOK_SECRET")
    if env:
        return bytes.fromhex(env)
    path = os.path.join(root, "secret")
    try:
        with open(path) as f:
            return bytes.fromhex(f.read().strip())
    except OSError as e:
        raise exc.RefbookError(
            f"cannot join the cluster: its secret is not readable at {path} ({e}); set "
            f"REFBOOK_SECRET") from None


def _default_store_memory() -> int:
    import psutil
    return int(psutil.virtual_memory().total * 0.3)


def init(num_cpus: int | None = None, object_store_memory: int | None = None,
         spill_dir: str | None = None, address: str | None = None,
         resources: dict | None = None, memory_monitor_threshold: float | None = None,
         log_to_stderr: bool = True, num_nodes: int = 1, **kwargs) -> RuntimeContext:
    """Start an embedded cluster (a node manager with one worker per CPU) and connect
    this process as its driver.  Calling it again while initialized returns the same
    context and changes nothing.

    ``object_store_memory`` bounds the node's shared-memory store (default: 30% of
    this machine's memory); objects beyond it are spilled to files under ``spill_dir``
    (default: a fresh directory under the system temp dir).  When the machine's memory
    use passes ``memory_monitor_threshold`` (default 0.95, or ``REFBOOK_MEMORY_THRESHOLD``)
    the newest retriable task's worker is killed and the task retried.

    ``num_nodes`` > 1 starts that many node managers on this host (to teach recovery
    without a second machine); ``num_cpus`` and ``object_store_memory`` are then per
    node (default: this machine's CPUs and 30% of its memory, shared out)."""
    global _session
    with _lock:
        if _session is not None:
            from ..processes.reinit import warn_ignored
            warn_ignored(_session, num_cpus=num_cpus, object_store_memory=object_store_memory,
                          spill_dir=spill_dir, address=address, resources=resources,
                          memory_monitor_threshold=memory_monitor_threshold,
                          num_nodes=None if num_nodes == 1 else num_nodes)
            return RuntimeContext(_session)
        unknown = set(kwargs) - {"ignore_reinit_error", "include_dashboard",
                                 "logging_level", "log_to_driver", "namespace"}
        if unknown:
            raise TypeError(f"init() got unexpected argument(s): {', '.join(sorted(unknown))}")
        address = address or os.environ.get("REFBOOK_ADDRESS")
        if address:
            _session = JoinedSession(address, None)
            _session.joined = address
            core_mod.set_current(_session.core)
            return RuntimeContext(_session)
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, not {num_nodes!r}")
        if num_cpus is None:
            num_cpus = max(1, (os.cpu_count() or 1) // num_nodes)
        if not isinstance(num_cpus, int) or isinstance(num_cpus, bool) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a non-negative integer (0: a node that runs "
                             f"no tasks, whose tasks wait for a node that can), not "
                             f"{num_cpus!r}")
        if object_store_memory is None:
            object_store_memory = _default_store_memory() // num_nodes
        if not isinstance(object_store_memory, int) or object_store_memory < (1 << 20):
            raise ValueError("object_store_memory must be an integer number of bytes, at "
                             f"least 1 MiB; got {object_store_memory!r}")
        if memory_monitor_threshold is None:
            memory_monitor_threshold = float(os.environ.get("REFBOOK_MEMORY_THRESHOLD", 0.95))
        if not 0 < memory_monitor_threshold <= 1:
            raise ValueError("memory_monitor_threshold must be a fraction in (0, 1], not "
                             f"{memory_monitor_threshold!r}")
        if spill_dir is not None:
            spill_dir = os.path.abspath(os.path.expanduser(spill_dir))
            try:
                os.makedirs(spill_dir, exist_ok=True)
            except OSError as e:
                raise ValueError(f"spill_dir {spill_dir!r} cannot be used: {e}") from None
            if not os.access(spill_dir, os.W_OK):
                raise ValueError(f"spill_dir {spill_dir!r} is not writable")
        resources = dict(resources or {})
        for k, v in resources.items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"resources must map names to non-negative numbers; "
                                 f"got {k!r}: {v!r}")
        _session = Session(num_cpus, object_store_memory, resources, spill_dir,
                           memory_monitor_threshold, num_nodes)
        core_mod.set_current(_session.core)
        if log_to_stderr and not os.environ.get("REFBOOK_QUIET"):
            # stdout: information, not an error (Jupyter shows stderr in a pink box)
            nodes_ = f"of {num_nodes} nodes, each " if num_nodes > 1 else ""
            print(f"refbook: local cluster {nodes_}with {num_cpus} CPU(s), object store "
                  f"{fmt_bytes(object_store_memory)}, spilling to {_session.spill_dir}")
        return RuntimeContext(_session)


def shutdown() -> None:
    """Stop every process ``init()`` started and remove its files.  Idempotent."""
    global _session
    with _lock:
        s, _session = _session, None
        if s is None:
            return
        core_mod.set_current(None)
        s.close()


atexit.register(shutdown)


def is_initialized() -> bool:
    return _session is not None


def _core() -> CoreWorker:
    return context.core()


def _start() -> CoreWorker:
    """The first use of the API without ``init()`` starts a local cluster."""
    with _lock:
        if context.current() is None:
            init()
        return context.current()


context.set_starter(_start)


def _check_refs(refs, what: str) -> list:
    if isinstance(refs, ObjectRef):
        refs.check_live()
        return [refs]
    if not isinstance(refs, (list, tuple)):
        raise TypeError(f"{what}() takes an ObjectRef or a list of them, not {type(refs).__name__}")
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"{what}() takes ObjectRefs; got {type(r).__name__} in the list")
        r.check_live()
    return list(refs)


def put(value) -> ObjectRef:
    """Store ``value`` (immutable from now on) and return a ref owned by this process."""
    return _core().put(value)


def get(refs, timeout: float | None = None):
    """The value of a ref, or a list of values.  Raises the task's error (a
    ``TaskError`` that is also the original exception's class), or
    ``GetTimeoutError`` after ``timeout`` seconds."""
    lst = _check_refs(refs, "get")
    core = _core()
    if len(lst) >= PROGRESS_MIN:
        start = time.monotonic()
        ids = {r._id for r in lst}
        ready = _wait_with_progress(core, lst, len(ids), timeout, "get", fail_fast=True)
        if len(ready) < len(ids) and core.first_error(lst, ready) is not None:
            core.get(lst, 0)        # one failed: this raises its error at once, as Ray's
        if len(ready) < len(ids):
            raise exc.GetTimeoutError(f"get() timed out after {timeout} s; "
                                      f"{len(ids) - len(ready)} of {len(ids)} ref(s) not ready")
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - start))
    values = core.get(lst, timeout)
    return values[0] if isinstance(refs, ObjectRef) else values


# A get or wait on at least PROGRESS_MIN refs that is still blocked after a moment
# shows its progress (the notebook sets ``progress_factory`` to show a bar).
PROGRESS_MIN = 8
progress_factory = None


def _wait_with_progress(core, refs: list, num: int, timeout, what: str,
                        fail_fast: bool = False) -> set:
    from .progress import wait_with_progress
    return wait_with_progress(core, refs, num, timeout, what, progress_factory, fail_fast)


def wait(refs, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list, list]:
    """Wait until ``num_returns`` of ``refs`` are ready; returns ``(ready, not_ready)``
    in the order of ``refs``.  ``fetch_local`` is accepted for Ray's sake: a ready
    object is read where it is, when it is read."""
    lst = _check_refs(refs, "wait")
    if isinstance(refs, ObjectRef):
        raise TypeError("wait() takes a list of ObjectRefs")
    if len(set(lst)) != len(lst):
        raise ValueError("wait() got the same ObjectRef more than once")
    if not 0 <= num_returns <= len(lst):
        raise ValueError(f"num_returns={num_returns} but {len(lst)} ref(s) were given")
    core = _core()
    if len(lst) >= PROGRESS_MIN:
        ready_ids = _wait_with_progress(core, lst, num_returns, timeout, "wait")
    else:
        ready_ids = core.wait_ready(lst, num_returns, timeout)
    ready, not_ready = [], []
    for r in lst:
        (ready if r._id in ready_ids and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def cancel(ref: ObjectRef, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``ref``: a queued task never runs; a running one is
    interrupted (``KeyboardInterrupt`` inside it), or its worker is killed with
    ``force=True``.  ``get`` then raises ``TaskCancelledError``.

    ``recursive`` is accepted for Ray's sake and ignored: what happens to the tasks
    the cancelled task already submitted depends on ``force`` alone.  Their owner is
    the worker that ran it.  With ``force=True`` that worker is killed, and what it
    owned dies with it (fate sharing): its tasks running anywhere are killed, its
    queued ones never start, its actors die.  Without ``force`` the worker lives on,
    so those tasks run to the end (their results are freed once nothing holds them),
    even if the cancelled task was waiting for them in ``get``."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, not {type(ref).__name__}")
    ref.check_live()
    _core().cancel(ref, force)


def release_lineage(ref: ObjectRef) -> bool:
    """Stop keeping what is needed to rebuild ``ref`` if it is lost: the finished task
    that made it, and the ``put()`` values that task read (kept because a put value
    cannot be rebuilt; ``objects()`` lists them under ``lineage``).  Frees those values
    unless something else holds them.  ``ref`` stays valid; if it is lost later,
    ``get`` raises ``ObjectReconstructionFailedError``.  Returns False if nothing was
    kept (a put, an actor call, ``max_retries=0``).  Tasks that should never keep
    lineage: ``f.options(max_retries=0)``."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"release_lineage() takes an ObjectRef, not {type(ref).__name__}")
    ref.check_live()
    core = _core()
    if ref._owner != core.me:
        raise ValueError(f"{ref!r} is owned by another process ({ref._owner}); only its "
                         f"owner keeps its lineage")
    from ..protocol.ids import task_of
    with core.lock:
        return core.recovery.release(task_of(ref._id))


def _query(addr: str, what: str, timeout: float = 5.0):
    return _core().query(addr, what, timeout)


def nodes() -> list[dict]:
    """One dict per node: id, address, liveness, resources and store usage (it only
    looks: it starts no cluster)."""
    return _query(context.running().node_address, "nodes")


def events(kinds=None) -> list[dict]:
    """What the cluster did under pressure, oldest first: ``spill``, ``restore``,
    ``transfer``, ``evict``, ``reconstruct``, ``oom_kill``, ``spill_failed``... (each a
    dict with ``time``, ``kind``, ``node_id`` and details such as ``object_ids`` and
    ``bytes``).  Every event, under its own name: ``refbook.state.events``."""
    from .events import legacy_events
    return legacy_events(kinds)


def _sum_over_nodes(field: str) -> dict:
    total: dict = {}
    for n in nodes():
        if n["alive"]:
            for k, v in n[field].items():
                total[k] = total.get(k, 0) + max(v, 0)
    return total


def cluster_resources() -> dict:
    """Every resource of every live node, summed."""
    return _sum_over_nodes("resources")


def available_resources() -> dict:
    """What is free right now on the live nodes, summed."""
    return _sum_over_nodes("available")



def get_actor(name: str):
    """A handle to the live actor created with ``.options(name=name)``."""
    from .actor import ActorHandle
    if not isinstance(name, str):
        raise TypeError(f"get_actor() takes a name, not {type(name).__name__}")
    core = _core()
    rec = _query(core.head_address, ("actor_named", name))
    if rec is None:
        raise ValueError(f"no live actor is named {name!r}")
    actor_id = bytes.fromhex(rec["actor_id"])
    core.register_deserialized(actor_id, rec["owner"])
    return ActorHandle(actor_id, rec["owner"], rec["meta"], core)


def kill(actor, no_restart: bool = True) -> None:
    """End an actor now: its process is killed, calls in flight fail with
    ``ActorError``; with ``no_restart=False`` it may restart (``max_restarts``)."""
    from .actor import ActorHandle
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, not {type(actor).__name__}")
    core = _core()
    with core.lock:
        core.actors.kill(actor._id, actor._owner, no_restart)


def actors() -> list[dict]:
    """One dict per actor the cluster knows (see API.md; it starts no cluster)."""
    core = context.running()
    out = []
    for rec in _query(core.head_address, "actors") or []:
        pending = 0
        if rec["state"] == "alive" and rec.get("address"):
            try:
                pending = _query(rec["address"], "pending", timeout=2.0) or 0
            except exc.RefbookError:
                pending = 0
        out.append({"actor_id": rec["actor_id"], "name": rec.get("name"),
                    "class_name": rec["class_name"], "state": rec["state"],
                    "node_id": rec["node_id"], "pid": rec.get("pid"),
                    "restarts": rec["restarts"], "pending_calls": pending})
    return out
