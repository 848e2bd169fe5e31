"""The node manager process: worker pool, leases, the object store, memory monitor.

One runs per host.  It starts and watches the workers, grants leases on them (or
sends a request on to a node that can run it, by its latest view of the cluster),
serves the object store (``data.storeserver``), kills the newest retriable task when
memory runs out, and fails what depended on a process or a node that died.  The node
manager started first is the head as well (``head.Head``, a role in this process);
every other one registers with it, sends it heartbeats and keeps the view it answers.

Process tree and lifetimes.  The driver starts this process.  Before it creates any
thread or socket, it forks a *zygote*: a copy with every module imported, which forks
workers on request in about a millisecond.  Each process watches the one it depends on
through a pidfd (the node manager watches the driver, workers watch the node manager)
and exits when it dies, so a SIGKILL anywhere leaves no process behind.  The arena is a
memfd, so no shared-memory name can leak either; the session directory (sockets, logs)
is removed by whoever exits last: the node manager on its way out, or the driver.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time

import zmq

from ..data.arena import Arena
from ..data.storeserver import StoreServer
from ..protocol import messages as P
from ..protocol.events import recording
from ..protocol.leases import LeaseScheduler, fits
from ..protocol.membership import place_lease
from ..wire.transport import MAX_DRAIN, Transport
from .guard import Guard
from .head import Head, HeadLink
from .launch import read_secret_fd
from .monitor import MemoryMonitor, TaskInfo
from .zygote import Zygote

log = logging.getLogger("refbook.node")


class NodeManager:
    """One host's node manager: its workers, their leases, its store, and the fate of
    what depended on a process or node that died.  ``head`` is set on the head node,
    ``link`` (to the head) on every other one."""

    def __init__(self, cfg: dict, secret: bytes, arena: Arena, zygote: Zygote):
        self.driver_pid = cfg.get("driver_pid")        # the driver that started this node
        # "refbook start", "init", "testing.Cluster" or "driver" (a joining driver's own
        # node): the state API's teaching controls act on local clusters only
        self.started_by = cfg.get("started_by") or (
            "driver" if self.driver_pid else "refbook start")
        self.node_id = cfg["node_id"]
        self.address = cfg["node_address"]
        self.sock_dir = cfg["sock_dir"]
        self.arena = arena
        self.zygote = zygote
        self.bind_host = cfg.get("bind_host")          # None: one host, ipc sockets
        aliases = ()
        if self.bind_host and cfg.get("head_address") is None:
            from ..wire.transport import endpoint
            aliases = (endpoint(self.address),)         # how other hosts first reach us
        self.transport = Transport(self.address, secret, os.urandom(8), aliases=aliases)
        self.transport.serve_rpc()
        num_cpus = cfg["num_cpus"]
        resources = {"CPU": float(num_cpus), **cfg.get("resources", {})}
        hard = int(os.environ.get("REFBOOK_MAX_WORKERS", 0)) or max(64, 16 * num_cpus)
        self.sched = LeaseScheduler(resources, max_workers=max(4 * num_cpus, num_cpus + 8),
                                    pool_size=num_cpus, hard_max=hard,
                                    hard_max_name="REFBOOK_MAX_WORKERS",
                                    lease_base=int.from_bytes(os.urandom(3), "big") << 32)
        self.store = StoreServer(self.transport, arena, self.node_id, cfg["spill_dir"],
                                 address_of=lambda n: self.node_address_of(n))
        self.monitor = MemoryMonitor(cfg.get("memory_threshold", 0.95))
        self.oom_kills: dict[str, str] = {}        # worker -> why the monitor killed it
        self.procs: dict[str, dict] = {}          # registered processes
        self.worker_pids: dict[str, int] = {}
        # membership: this node is the head (``head``), or linked to it (``link``)
        self.head_address = cfg.get("head_address")     # None: this node is the head
        self.heartbeat_s = cfg.get("heartbeat_s", 0.5)
        self._respill_at = 0.0             # when queued requests were last looked at
        timeout = cfg.get("heartbeat_timeout_s", 3.0)
        self.dead_nodes: set[str] = set()               # whose death this node handled
        self.dead_procs: dict[str, None] = {}           # recent deaths, told to new processes
        self.head: Head | None = None
        self.link: HeadLink | None = None
        if self.head_address is None:
            self.head = Head(self.transport, self.node_id, timeout, self.node_view,
                             self._node_died, self.worker_pids.get, self.store.events)
        else:
            self.link = HeadLink(self.transport, self.head_address, self.node_id,
                                 self.heartbeat_s, timeout, this_node=self.node_view,
                                 node_died=self._node_died)
        self.pidfds: dict[int, str] = {}
        self.parked: list = []          # lease requests no node can run yet (see above)
        self.poller = zmq.Poller()
        self.guard = Guard(log)       # an error in one handler is logged and survived
        self.workers_started = 0
        self.running = True
        self._handlers = {
            P.REGISTER: self._on_register,
            P.LEASE_REQUEST: self._on_lease_request,
            P.LEASE_RETURN: lambda m: self._do(self.sched.release(m[1])),
            P.SEAL: self.store.on_seal,
            P.FREE: self._on_free,
            P.UNPIN: lambda m: self.store.on_unpin(*m[1:]),
            P.PREFETCH: lambda m: self.store.on_prefetch(m[1]),
            P.TASK_INFO: self._on_task_info,
            P.BLOCKED: lambda m: self._do(self.sched.worker_blocked(m[1])),
            P.UNBLOCKED: lambda m: self._do(self.sched.worker_unblocked(m[1])),
            P.KILL_WORKER: lambda m: self._kill(m[1]),
            P.STATE_QUERY: self._on_state_query,
            P.SHUTDOWN: lambda m: setattr(self, "running", False),
            P.NODE_DIED: self._on_node_died,
            P.PROCESS_DIED: lambda m: self._process_died(
                m[1], m[2], local=m[1] in self.procs, oom_flag=m[3]),
        }
        self._handlers.update(self.store.handlers())
        self._handlers.update((self.head or self.link).handlers())

    # -- workers -------------------------------------------------------------------------
    def start_worker(self) -> None:
        self.workers_started += 1
        name = f"w-{self.workers_started}-{os.urandom(6).hex()}"     # "worker 3" in the notebook
        if self.bind_host:
            from ..wire.transport import free_port
            port = free_port(self.bind_host)
            addr = f"tcp://{self.bind_host}:{port}/n-{self.node_id}/{name}"
        else:
            addr = f"ipc://{self.sock_dir}/{name}"
        self.zygote.spawn(addr)

    def _on_spawned(self) -> None:
        for addr, pid in self.zygote.read_reports():
            self.worker_pids[addr] = pid
            self.store.events.add("worker_started", addr, pid)
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._process_died(addr, "it exited during start-up")
                continue
            self.pidfds[fd] = addr
            self.poller.register(fd, zmq.POLLIN)

    def _on_pidfd(self, fd: int) -> None:
        addr = self.pidfds.pop(fd)
        self.poller.unregister(fd)
        os.close(fd)
        pid = self.worker_pids.pop(addr, None)
        what = "worker" if pid is not None else "driver"
        if pid is None:
            pid = self.procs.get(addr, {}).get("pid")
        self._process_died(addr, f"{what} process {pid} exited")

    def _process_died(self, addr: str, reason: str, local: bool = True,
                      oom_flag: bool = False) -> None:
        """A process died: here (``local``), or on another node, which told us so that
        what it owned here goes too (fate sharing) and our processes learn of it."""
        was_worker = local and (addr in self.sched.workers or
                                addr.rsplit("/", 1)[-1].startswith("w-"))
        pid = self.procs.pop(addr, {}).get("pid")
        self.dead_procs[addr] = None
        if len(self.dead_procs) > 2_000:
            del self.dead_procs[next(iter(self.dead_procs))]
        for lease in list(self.sched.leases.values()):
            if lease.owner == addr:   # its workers ran tasks for a dead owner
                self._kill(lease.worker)
        actions = self.sched.worker_died(addr) if was_worker else []
        actions += self.sched.owner_died(addr)
        self.store.process_died(addr)
        self._do(actions)
        oom = self.oom_kills.pop(addr, None)
        if oom is not None:
            reason = oom
        oom = oom is not None or oom_flag
        if was_worker:
            self.store.events.add("worker_died", addr, pid, reason, oom)
        if local:
            for n in self.cluster_view():
                if n["alive"] and n["node_id"] != self.node_id:
                    self.transport.send(n["address"], (P.PROCESS_DIED, addr, reason, oom))
        for p in self.procs:
            self.transport.send(p, (P.PROCESS_DIED, addr, reason, oom))
        self.transport.disconnect(addr)
        if self.head is not None:
            self.head.process_died(addr)

    def _kill(self, addr: str) -> None:
        pid = self.worker_pids.get(addr)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- messages --------------------------------------------------------------------------
    def _on_register(self, m):
        _, addr, kind, pid, req = m
        self.procs[addr] = {"kind": kind, "pid": pid}
        if kind == "driver" and pid != self.driver_pid:
            try:                      # a driver that joined: its death frees what it owned
                fd = os.pidfd_open(pid)
                self.pidfds[fd] = addr
                self.poller.register(fd, zmq.POLLIN)
            except OSError:
                pass
        self.transport.send(addr, (P.REGISTERED, req, self.info()))
        if kind == "worker":
            self._do(self.sched.worker_registered(addr))

    def _on_lease_request(self, m):
        _, owner, req_id, resources, dedicated, prefer = m
        view = self.cluster_view()
        where, detail = place_lease(view, resources, self.node_id, prefer,
                                    fits(resources, self.sched.total),
                                    not fits(resources, self.sched.available)
                                    and bool(self.sched.queue), self.head_address)
        if where == "here":
            self._do(self.sched.request(owner, req_id, resources, dedicated))
        elif where == "reject" and self.head is not None and \
                not any(n["alive"] and n["resources"].get("CPU") for n in view):
            # no CPU in the whole cluster (a driver-only init(num_cpus=0), before other
            # nodes join): wait for a node that can run it, as Ray does
            self.parked.append(m)
        elif where == "reject":
            self._do([("reject", owner, req_id, detail)])
        else:                                       # ("spill" | "spill_away", address)
            self.transport.send(owner, (P.LEASE_SPILLBACK, req_id, detail,
                                        where == "spill"))

    # -- the other nodes (membership itself: head.py) -----------------------------------------
    def cluster_view(self) -> list[dict]:
        if self.head is not None:
            return self.head.cluster_view()
        return self.link.cluster_view(self.dead_nodes)

    def node_address_of(self, node_id: str) -> str | None:
        for n in self.cluster_view():
            if n["node_id"] == node_id and n["alive"]:
                return n["address"]
        return None

    def _on_node_died(self, m):
        self._node_died(m[1], m[2])

    def _node_died(self, node_id: str, reason: str) -> None:
        if node_id == self.node_id:
            log.error("the head declared this node dead (%s); shutting down", reason)
            self.running = False
            return
        if node_id in self.dead_nodes:
            return
        self.dead_nodes.add(node_id)
        log.warning("node %s died: %s", node_id, reason)
        if self.head is not None:     # (the head alone says so: one event per death)
            self.store.events.add("node_died", node_id, reason)
        for p in self.procs:          # owners first: they rebuild what was lost there
            self.transport.send(p, (P.NODE_DIED, node_id, reason))
        self.store.node_died(node_id)
        marker = f"/n-{node_id}/"      # fate sharing for every process it had
        gone = {lease.owner for lease in self.sched.leases.values() if marker in lease.owner}
        gone |= {q[0] for q in self.sched.queue if marker in q[0]}
        gone |= {o.owner for o in self.store.table.objects.values() if marker in o.owner}
        for addr in gone:
            self._process_died(addr, f"its node {node_id} died", local=False)
        if self.head is not None:
            self.head.announce_death(node_id, reason)

    def _membership_tick(self, now: float) -> None:
        if self.sched.queue and now - self._respill_at >= self.heartbeat_s:
            self._respill_at = now      # actors queued beside an idle node go there
            for owner, req_id, addr in self.sched.respill(self.cluster_view(), self.node_id):
                self.transport.send(owner, (P.LEASE_SPILLBACK, req_id, addr, False))
        if self.head is not None:
            self.head.tick(now)
            parked, self.parked = self.parked, []
            for m in parked:           # a node that can run them may have joined
                if m[1] not in self.dead_procs:
                    self._on_lease_request(m)
            return
        self.link.tick(now)
        if self.link.head_silent(now):
            log.error("lost contact with the head at %s; shutting down", self.head_address)
            self.running = False

    # -- the memory monitor -------------------------------------------------------------------
    def _memory_tick(self, now: float) -> None:
        import psutil
        if self.monitor.should_check(now):
            vm = psutil.virtual_memory()
            used = (vm.total - vm.available) / vm.total
            busy = [w.addr for w in self.sched.workers.values() if w.lease is not None]
            for worker, qid in self.monitor.check(now, used, busy):
                self.transport.send(worker, (P.TASK_QUERY, qid))
            self._mem_used = (vm.total - vm.available, vm.total)
        victim = self.monitor.decide(now)
        if victim is not None:
            used, total = self._mem_used
            why = self.monitor.kill_reason(victim, used, total)
            self.oom_kills[victim.worker] = why
            self.store.events.note("oom_kill", task_id=victim.task_id.hex(), task=victim.name,
                                   worker=victim.worker, rss=victim.rss, used=used,
                                   total=total, retriable=victim.retriable)
            log.warning(why)
            self._kill(victim.worker)

    def _on_task_info(self, m):
        _, worker, qid, info = m
        if info is not None:
            info = TaskInfo(worker, *info)
        self.monitor.on_info(worker, qid, info)

    def _on_rpc(self) -> None:
        for _ in range(MAX_DRAIN):
            if not self.transport.rpc.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            got = self.transport.recv_rpc()
            if got is not None:
                self.guard("a store request", self.store.on_request, *got)

    def _on_free(self, m):
        """FREE from an owner here, possibly for objects on another node: pass it on.
        With a creator, only the copies that process wrote go (see core._free_stale)."""
        node = m[2] if len(m) > 2 else self.node_id
        creator = m[3] if len(m) > 3 else None
        if node == self.node_id:
            self.store.on_free(m[1], creator)
        else:
            addr = self.node_address_of(node)
            if addr is not None:
                self.transport.send(addr, (P.FREE, m[1], node, creator))

    def _on_state_query(self, m):
        _, requester, req, what = m
        self.transport.send(requester, (P.STATE_REPLY, req, state_answer(self, what)))

    def _do(self, actions):
        for a in actions:
            kind = a[0]
            if kind == "grant":
                _, owner, req_id, lease_id, worker = a
                self.transport.send(owner, (P.LEASE_GRANTED, req_id, lease_id, worker,
                                            self.address))
            elif kind == "reject":
                _, owner, req_id, message = a
                self.transport.send(owner, (P.LEASE_GRANTED, req_id, None, message,
                                            self.address))
            elif kind == "start_worker":
                self.start_worker()
            elif kind == "reclaim":
                self.transport.send(a[1], (P.LEASE_RECLAIM,))

    # -- views -----------------------------------------------------------------------------
    def info(self) -> dict:
        return {"node_id": self.node_id, "address": self.address,
                "capacity": self.arena.capacity, "head": self.head_address or self.address,
                "dead": list(self.dead_procs), "dead_nodes": sorted(self.dead_nodes)}

    def node_view(self) -> dict:
        s = self.sched.snapshot()
        return {"node_id": self.node_id, "address": self.address, "alive": True,
                "resources": s["total"], "available": s["available"],
                "store": self.store.table.stats(), "workers": s["workers"],
                "pid": os.getpid(), "arena_fd": self.arena.fd,
                "is_head": self.head is not None, "started_by": self.started_by}

    # -- loop ------------------------------------------------------------------------------
    def run(self, parent_fd: int, ready_fd: int) -> None:
        inbox = self.transport.inbox
        self.poller.register(inbox, zmq.POLLIN)
        self.poller.register(self.transport.rpc, zmq.POLLIN)
        self.poller.register(self.store.io.fd, zmq.POLLIN)
        self.poller.register(parent_fd, zmq.POLLIN)
        self.poller.register(self.zygote.report_fd, zmq.POLLIN)
        for _ in range(self.sched.pool_size):
            self.sched.worker_starting()
            self.start_worker()
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
        last_tick = 0.0
        if self.link is not None:
            self.link.register()
        tick = min(0.1, self.heartbeat_s / 2)
        guard = self.guard
        while self.running:
            events = dict(self.poller.poll(int(tick * 1000)))
            now = time.monotonic()
            if now - last_tick >= tick:
                last_tick = now
                guard("the store's timers", self.store.tick)
                guard("the transport's timers", self.transport.tick, now)
                guard("the memory monitor", self._memory_tick, now)
                guard("membership", self._membership_tick, now)
            elif self.monitor.query is not None:
                guard("the memory monitor", self._memory_tick, now)
            if self.store.io.fd in events:
                guard("spill I/O completions", self.store.on_io)
            if parent_fd in events:
                log.info("driver exited; shutting down")
                break
            if self.zygote.report_fd in events:
                guard("worker start-ups", self._on_spawned)
            for fd in [fd for fd in events if fd in self.pidfds]:
                guard("a process exit", self._on_pidfd, fd)
            if inbox in events:     # a bounded turn: requests and ticks come next
                for _ in range(MAX_DRAIN):
                    if not inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        break
                    m = self.transport.recv(zmq.NOBLOCK)
                    if m is None:
                        continue
                    h = self._handlers.get(m[0])
                    if h is None:
                        log.warning("unexpected message type %r", m[0])
                        continue
                    guard(f"message type {m[0]!r}", h, m)
            # requests after the inbox: a FREE sent just before an ALLOC is applied first
            if self.transport.rpc in events or \
                    self.transport.rpc.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._on_rpc()

    def close(self) -> None:
        """Every exit path ends here, and it never blocks for long: workers are killed,
        and every socket is closed with linger 0 before the context ends."""
        self.running = False
        self.guard("stopping the spill threads", self.store.stop)
        for addr in list(self.worker_pids):
            self._kill(addr)
        # wait while the zygote still reaps them: once it is gone they would linger as
        # zombies of whatever adopts them, for as long as that takes to reap
        deadline = time.monotonic() + 2
        for pid in list(self.worker_pids.values()):
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.001)
        self.zygote.close()
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001
            pass


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False



def state_answer(nm: NodeManager, what):
    """A node manager's answer to STATE_QUERY ``what`` (the state API, the command line,
    the teaching controls, the events bench's switch); None for a question it does not
    know."""
    if what == "nodes":
        data = nm.cluster_view()
    elif what == "processes":
        data = list(nm.procs)
    elif what == "process_info":   # address -> {"kind", "pid"}
        data = dict(nm.procs)
    elif what == "workers":        # the teaching controls pick a busy one
        data = [{"address": w.addr, "pid": nm.worker_pids.get(w.addr),
                 "busy": w.lease is not None, "actor": w.dedicated}
                for w in nm.sched.workers.values()]
    elif isinstance(what, tuple) and what[0] == "events":     # ("events", since)
        data = nm.store.events_since(what[1], processes=list(nm.procs))
    elif isinstance(what, tuple) and what[0] == "record":     # recording on or off
        nm.store.events = recording(nm.store.events, bool(what[1]))
        data = True
    elif what == "object_states":
        data = nm.store.states()
    elif what == "spill_io":
        data = nm.store.io_stats()
    elif what == "actors":         # the actor directory is the head's
        data = nm.head.actor_records() if nm.head is not None else []
    elif isinstance(what, tuple) and what[0] == "actor_named":
        data = nm.head.named_actor(what[1]) if nm.head is not None else None
    else:
        data = None
    return data


def main() -> None:
    cfg = json.loads(sys.argv[1])
    secret = read_secret_fd(cfg.pop("secret_fd"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s node %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.get("driver_pid"):
        try:
            parent_fd = os.pidfd_open(cfg["driver_pid"])
            gone = os.getppid() != cfg["driver_pid"]
        except ProcessLookupError:
            gone = True
        if gone:              # nobody will clean up after us: do it now
            if cfg.get("owns_session"):
                shutil.rmtree(cfg["session_dir"], ignore_errors=True)
            sys.exit("refbook node: the driver exited before the node started")
    else:                  # started by `refbook start`: it runs until `refbook stop`
        parent_fd, never = os.pipe()
    if cfg.get("arena_fd") is None:      # a node of a cluster makes its own arena
        arena = Arena.create(cfg["capacity"])
        cfg["arena_fd"] = arena.fd
    else:
        arena = Arena(cfg["arena_fd"], cfg["capacity"])
    # import everything a worker needs before forking the zygote, so workers start warm
    from . import worker  # noqa: F401
    zygote = Zygote(cfg, secret, arena)
    nm = NodeManager(cfg, secret, arena, zygote)
    signal.signal(signal.SIGTERM, lambda *a: setattr(nm, "running", False))
    code = 0
    try:
        nm.run(parent_fd, cfg["ready_fd"])
    except BaseException:  # noqa: BLE001 - logged; the clean-up below runs regardless
        log.exception("node manager failed")
        code = 1
    finally:
        nm.close()
        if cfg.get("owns_session"):
            shutil.rmtree(cfg["session_dir"], ignore_errors=True)
    # Everything is released: skip the interpreter's teardown (tens of milliseconds of
    # module and ZeroMQ clean-up) that a waiting shutdown() would otherwise pay for.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
