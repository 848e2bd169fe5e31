"""A deterministic simulator of refbook's protocol core under faults.

The real protocol classes run here: the owner's :class:`ReferenceTable`,
:class:`TaskManager` and :class:`Recovery`; each node's :class:`LeaseScheduler` and
:class:`ObjectTable`; placement by :func:`choose_node`.  A thin glue layer stands in
for the processes (it does what ``core.py``, ``worker.py`` and ``node.py`` do with those
classes), and a seeded scheduler delivers messages over per-pair FIFO channels in a
random order, crashes workers and nodes (dropping what was in flight to and from
them) and moves a simulated clock.  After every step it checks:

* nothing the driver can reach (a held ref, a pending task's argument) is freed;
and at the end, once faults stop and every message is delivered:
* every ref the driver holds has resolved, to the right value or to a documented
  error (only after a crash that explains it);
* when every ref is dropped, nothing is left: no table entry, task, lease or stored
  object anywhere.

A failing seed raises :class:`SimFailure` with the seed and the last events; the same
seed replays exactly.  ``python -m refbook.testing.sim 0 2000`` runs seeds 0..1999.
"""

from __future__ import annotations

import random
import sys
from collections import deque

from .. import exceptions as exc
from ..runtime.protocol.ids import IdGenerator, object_id, task_of
from ..runtime.protocol.leases import LeaseScheduler
from ..runtime.protocol.lineage import Recovery
from ..runtime.protocol.membership import choose_node
from ..runtime.protocol.objects import ObjectTable
from ..runtime.protocol.refcount import Effects, ReferenceTable
from ..runtime.protocol.tasks import Task, TaskManager
from . import seeds

INLINE, STORED, ERROR = 0, 1, 2
DOCUMENTED = (exc.WorkerCrashedError, exc.ObjectLostError, exc.TaskError)


class SimFailure(AssertionError):
    pass


class SimNode:
    def __init__(self, world: World, nid: str, cpus: int):
        self.world = world
        self.nid = nid
        self.addr = f"nm@{nid}"
        # lease ids must differ across nodes, as node.py makes them
        self.sched = LeaseScheduler({"CPU": float(cpus)}, max_workers=8, pool_size=cpus,
                                    lease_base=(int(nid[1:]) + 1) << 32)
        self.table = ObjectTable(1 << 30)
        self.alive = True
        self.workers: dict[str, dict] = {}
        self._n = 0
        for _ in range(cpus):
            self.sched.worker_starting()
            self.start_worker()

    def start_worker(self) -> None:
        self._n += 1
        addr = f"w{self._n}@{self.nid}"
        self.workers[addr] = {"alive": True}
        self.world.do_nm(self, self.sched.worker_registered(addr))

    def view(self) -> dict:
        s = self.sched.snapshot()
        return {"node_id": self.nid, "address": self.addr, "alive": self.alive,
                "resources": s["total"], "available": s["available"]}


class SimOwner:
    """The driver: the subset of CoreWorker that Recovery uses, over the real classes."""

    def __init__(self, world: World):
        self.world = world
        self.me = "driver@n0"
        self.node_id = "n0"
        self.rt = ReferenceTable(self.me)
        self.tm = TaskManager(depth=2, idle_timeout=0.2)
        self.values: dict[bytes, tuple] = {}
        self.pins: dict = {}
        self.lease_nm: dict[int, str] = {}
        self.recovery = Recovery(self, max_bytes=1 << 30)

    def _set_value(self, oid: bytes, entry: tuple) -> list:
        self.values[oid] = entry
        if entry[0] == ERROR:
            return self.tm.dependency_failed(oid, entry[1])
        return self.tm.resolved(oid)

    def _fetch(self, oid: bytes, owner: str) -> None:      # no borrowed refs here
        raise SimFailure(f"seed {self.world.seed}: unexpected fetch of {oid.hex()}")

    def _apply(self, fx: Effects) -> None:
        w = self.world
        for oid in fx.free:
            w.check_free(oid)
            entry = self.values.pop(oid, None)
            if entry is not None and entry[0] == STORED:
                w.send(self.me, f"nm@{entry[1]}", ("free", oid))
        fx.free.clear()
        fx.dropped.clear()
        fx.send.clear()
        while fx.released:
            released, fx.released = fx.released, []
            for oid in released:
                self.recovery.released(oid, fx)
            self._apply(fx)

    def do(self, actions: list) -> None:
        w = self.world
        for a in actions:
            if a[0] == "push":
                lease, batch = a[1], a[2]
                for t in batch:
                    missing = {o for o, _ in t.payload[3] if o not in self.values}
                    if missing:
                        self.tm.unpush(t, missing)
                        continue
                    args = [self.values[o] for o, _ in t.payload[3]]
                    w.send(self.me, lease.worker,
                           ("task", t.task_id, t.return_ids, args, t.payload[1]))
            elif a[0] == "request":
                w.send(self.me, "nm@n0", ("lease", a[1], a[2]))
            elif a[0] == "return":
                w.send(self.me, self.lease_nm.pop(a[1], "nm@n0"), ("return", a[1]))
            elif a[0] == "fail":
                task, err = a[1], a[2]
                for nid in w.stale.pop(task.task_id, ()):   # copies a crashed attempt left
                    w.send(self.me, f"nm@{nid}", ("free", task.return_ids[0]))
                follow = []
                for oid in task.return_ids:
                    follow += self._set_value(oid, (ERROR, err))
                fx = Effects()
                self.rt.remove_submitted(task.arg_refs, fx)
                for oid in task.return_ids:
                    self.rt.release_if_unreferenced(oid, fx)
                self._apply(fx)
                self.do(follow)
            elif a[0] == "cancel":
                pass


class World:
    def __init__(self, seed: int, nodes: int = 3, crash_rate: float = 0.03):
        self.seed = seed
        self.rng = random.Random(seed)
        self.crash_rate = crash_rate
        self.now = 0.0
        self.channels: dict[tuple, deque] = {}
        self.log: list[str] = []
        self.owner = SimOwner(self)
        self.ids = IdGenerator(b"simowner")
        self.nodes = {f"n{i}": SimNode(self, f"n{i}", 2) for i in range(nodes)}
        self.held: dict[bytes, int] = {}          # refs the driver program holds
        self.expect: dict[bytes, int] = {}        # the value each object must have
        self.crashed = False                      # some crash happened (explains errors)
        self.stale: dict[bytes, set] = {}         # task id -> nodes of crashed attempts
        self.faults = True

    # -- plumbing -----------------------------------------------------------------------
    def send(self, src: str, dst: str, msg: tuple) -> None:
        self.channels.setdefault((src, dst), deque()).append(msg)

    def fail(self, what: str) -> None:
        raise SimFailure(f"seed {self.seed}: {what}\n" + "\n".join(self.log[-40:]))

    def node_of(self, addr: str) -> SimNode:
        return self.nodes[addr.split("@", 1)[1]]

    def check_free(self, oid: bytes) -> None:
        if self.held.get(oid, 0) > 0:
            self.fail(f"object {oid.hex()} freed while the driver holds a ref to it")
        for t in self.owner.tm.tasks.values():
            if any(o == oid for o, _ in t.arg_refs):
                self.fail(f"object {oid.hex()} freed while task {t.name} needs it")

    def do_nm(self, node: SimNode, actions: list) -> None:
        for a in actions:
            if a[0] == "grant":
                _, owner, req_id, lease_id, worker = a
                self.send(node.addr, owner, ("granted", req_id, lease_id, worker, node.addr))
            elif a[0] == "reject":
                self.send(node.addr, a[1], ("granted", a[2], None, a[3], node.addr))
            elif a[0] == "start_worker":
                node.start_worker()
            elif a[0] == "reclaim":
                self.send(node.addr, a[1], ("reclaim",))

    # -- the driver program ---------------------------------------------------------------
    def submit(self) -> None:
        o = self.owner
        held = [oid for oid, n in self.held.items() if n > 0]
        args = self.rng.sample(held, min(len(held), self.rng.randint(0, 2)))
        const = self.rng.randint(1, 9)
        stored = self.rng.random() < 0.5
        tid = self.ids.task_id()
        rid = object_id(tid, 0)
        arg_refs = [(a, o.me) for a in args]
        o.rt.add_submitted(arg_refs)
        o.rt.own(rid)
        o.rt.add_local(rid, o.me)
        self.held[rid] = self.held.get(rid, 0) + 1
        if all(a in self.expect for a in args):
            self.expect[rid] = sum(self.expect[a] for a in args) + const
        task = Task(tid, f"t{tid[-2:].hex()}", {"CPU": 1.0}, [rid], arg_refs,
                    (b"fn", (const, stored), ("inline", b"", []), arg_refs),
                    max_retries=self.rng.randint(0, 3))
        unresolved = {a for a in args if a not in o.values}
        self.log.append(f"submit {task.name} args {[_short(a) for a in args]} -> "
                        f"{_short(rid)} retries={task.max_retries}")
        o.do(o.tm.submit(task, unresolved))

    def put(self) -> None:
        o = self.owner
        oid = self.ids.put_id()
        value = self.rng.randint(0, 100)
        o.rt.own(oid)
        o.rt.add_local(oid, o.me)
        self.held[oid] = self.held.get(oid, 0) + 1
        self.expect[oid] = value
        n0 = self.nodes["n0"]
        if self.rng.random() < 0.5 and n0.alive:
            n0.table.create(oid, 64, o.me, o.me)
            n0.table.seal(oid)
            o.values[oid] = (STORED, "n0", value)
        else:
            o.values[oid] = (INLINE, value)
        self.log.append(f"put {_short(oid)} = {value}")

    def drop(self, oid: bytes) -> None:
        self.held[oid] -= 1
        fx = Effects()
        self.owner.rt.remove_local(oid, fx)
        self.log.append(f"drop {_short(oid)}")
        self.owner._apply(fx)

    # -- processes ------------------------------------------------------------------------------
    def deliver(self, key: tuple) -> None:
        src, dst = key
        msg = self.channels[key].popleft()
        if not self.channels[key]:
            del self.channels[key]
        self.log.append(f"{src} -> {dst}: {msg[0]} "
                        f"{' '.join(_short(x) for x in msg[1:2] if isinstance(x, bytes))}"
                        f"{' ' + repr(msg[3])[:40] if msg[0] == 'done' else ''}")
        if dst == self.owner.me:
            self.owner_receives(src, msg)
        elif dst.startswith("nm@"):
            node = self.nodes[dst[3:]]
            if node.alive:
                self.nm_receives(node, msg)
        else:
            node = self.node_of(dst)
            if node.alive and node.workers.get(dst, {}).get("alive"):
                self.worker_receives(node, dst, msg)

    def worker_receives(self, node: SimNode, addr: str, msg: tuple) -> None:
        _, tid, rids, args, (const, stored) = msg
        total = const
        for entry in args:
            if entry[0] == ERROR:
                self.send(addr, self.owner.me, ("done", tid, False, entry[1]))
                return
            if entry[0] == STORED:
                src = self.nodes[entry[1]]
                if not src.alive or entry and src.table.state_of(task_of(b"") + b"") == 1:
                    pass
                if not src.alive:
                    self.send(addr, self.owner.me, ("done", tid, False, exc.TaskError(
                        "sim", "", "lost", exc.ObjectLostError, None)))
                    return
            total += entry[-1]
        rid = rids[0]
        if stored:
            status, _ = node.table.create(rid, 64, self.owner.me, addr)
            node.table.seal(rid)
            result = (STORED, node.nid, total)
        else:
            result = (INLINE, total)
        self.send(addr, self.owner.me, ("done", tid, True, result))

    def nm_receives(self, node: SimNode, msg: tuple) -> None:
        kind = msg[0]
        if kind == "lease":
            _, req_id, res = msg
            view = [n.view() for n in self.nodes.values()]
            target, feasible = choose_node(view, res, node.nid)
            if target is not None:
                self.send(node.addr, self.owner.me, ("spillback", req_id, f"nm@{target}", res))
            else:
                self.do_nm(node, node.sched.request(self.owner.me, req_id, res))
        elif kind == "return":
            self.do_nm(node, node.sched.release(msg[1]))
        elif kind == "free":
            node.table.delete(msg[1])

    def owner_receives(self, src: str, msg: tuple) -> None:
        o = self.owner
        o.tm.now = self.now
        kind = msg[0]
        if kind == "granted":
            _, req_id, lease_id, worker, nm = msg
            if lease_id is None:
                o.do(o.tm.lease_rejected(req_id, worker))
                return
            o.lease_nm[lease_id] = nm
            node = self.nodes[nm[3:]]
            if not node.alive or not node.workers.get(worker, {}).get("alive"):
                o.do(o.tm.lease_granted(req_id, lease_id, worker))
                o.do(o.tm.worker_died(worker, "died before the grant arrived"))
                return
            o.do(o.tm.lease_granted(req_id, lease_id, worker))
        elif kind == "spillback":
            _, req_id, nm, res = msg
            self.send(o.me, nm if self.nodes[nm[3:]].alive else "nm@n0", ("lease", req_id, res))
        elif kind == "reclaim":
            o.do(o.tm.reclaim())
        elif kind == "done":
            _, tid, ok, payload = msg
            task, actions = o.tm.done(tid)
            follow = list(actions)
            fx = Effects()
            if task is None:
                if ok and payload[0] == STORED:
                    node = self.nodes[payload[1]]
                    if node.alive:
                        node.table.delete(object_id(tid, 0))
                o.do(follow)
                return
            for nid in self.stale.pop(tid, ()):     # copies an earlier attempt left
                if ok and payload[0] == STORED and payload[1] == nid:
                    continue
                self.send(o.me, f"nm@{nid}", ("free", task.return_ids[0]))
            if ok:
                rid = task.return_ids[0]
                o.rt.task_returned(rid, [], task.arg_refs, fx)
                o.recovery.rebuilt(rid)
                follow += o._set_value(rid, payload)
                o.recovery.keep(task)
            else:
                cause = getattr(payload, "cause_cls", None)
                if cause is not None and issubclass(cause, exc.ObjectLostError) and \
                        any(a not in o.values for a, _ in task.payload[3]):
                    follow += o.recovery.rebuild(task, "lost an argument while running")
                else:
                    for rid in task.return_ids:
                        follow += o._set_value(rid, (ERROR, payload))
            o.rt.remove_submitted(task.arg_refs, fx)
            for rid in task.return_ids:
                o.rt.release_if_unreferenced(rid, fx)
            o._apply(fx)
            o.do(follow)
        elif kind == "died":                 # a worker process
            for t in o.tm.inflight_on(msg[1]):
                self.stale.setdefault(t.task_id, set()).add(msg[1].split("@")[1])
            o.do(o.tm.worker_died(msg[1], "killed by the simulator"))
        elif kind == "node_died":
            nid = msg[1]
            for lease in list(o.tm.leases.values()):
                if lease.worker.endswith("@" + nid):
                    o.do(o.tm.worker_died(lease.worker, "its node died"))
            follow = []
            for oid, entry in list(o.values.items()):
                if entry[0] == STORED and entry[1] == nid and oid in o.rt:
                    follow += o.recovery.lost(oid, f"was on node {nid}, which died")
            o.do(follow)
            for req_id in list(o.tm.requests):     # requests to the dead node: ask again
                self.send(o.me, "nm@n0", ("lease", req_id, {"CPU": 1.0}))

    # -- faults -------------------------------------------------------------------------------
    def crash_worker(self) -> None:
        live = [(n, a) for n in self.nodes.values() if n.alive
                for a, w in n.workers.items() if w["alive"]]
        if not live:
            return
        node, addr = self.rng.choice(live)
        node.workers[addr]["alive"] = False
        self.crashed = True
        self.log.append(f"CRASH worker {addr}")
        for key in [k for k in self.channels if addr in k]:
            del self.channels[key]               # in flight to or from it: lost
        node.table.process_died(addr)
        self.do_nm(node, node.sched.worker_died(addr))
        self.send(node.addr, self.owner.me, ("died", addr))

    def crash_node(self) -> None:
        live = [n for n in self.nodes.values() if n.alive and n.nid != "n0"]
        if not live:
            return
        node = self.rng.choice(live)
        node.alive = False
        self.crashed = True
        self.log.append(f"CRASH node {node.nid}")
        for key in [k for k in self.channels if any(x.endswith("@" + node.nid) for x in k)]:
            del self.channels[key]
        node.table = ObjectTable(1 << 30)
        self.send("nm@n0", self.owner.me, ("node_died", node.nid))

    # -- the run ---------------------------------------------------------------------------------
    def step(self) -> None:
        self.now += 0.01
        r = self.rng.random()
        held = [oid for oid, n in self.held.items() if n > 0]
        if self.faults and r < self.crash_rate:
            self.crash_worker()
        elif self.faults and r < self.crash_rate * 1.2:
            self.crash_node()
        elif r < 0.25:
            self.submit()
        elif r < 0.32:
            self.put()
        elif r < 0.42 and held:
            self.drop(self.rng.choice(held))
        elif self.channels:
            self.deliver(self.rng.choice(sorted(self.channels)))
        if self.rng.random() < 0.1:
            self.owner.tm.now = self.now
            self.owner.do(self.owner.tm.tick())

    def settle(self, limit: int = 200_000) -> None:
        for _ in range(limit):
            if self.channels:
                self.deliver(self.rng.choice(sorted(self.channels)))
                continue
            self.now += 0.5
            self.owner.tm.now = self.now
            self.owner.do(self.owner.tm.tick())
            if not self.channels:
                return
        self.fail("the system did not settle")

    def check_results(self) -> None:
        o = self.owner
        for oid, n in self.held.items():
            if n <= 0:
                continue
            entry = o.values.get(oid)
            if entry is None:
                self.fail(f"ref {oid.hex()} never resolved (a hang)")
            if entry[0] == ERROR:
                if not isinstance(entry[1], DOCUMENTED):
                    self.fail(f"ref {oid.hex()} failed with {entry[1]!r}")
                if not self.crashed and not isinstance(entry[1], exc.TaskError):
                    self.fail(f"ref {oid.hex()} failed without a crash: {entry[1]!r}")
            elif oid in self.expect and entry[-1] != self.expect[oid]:
                self.fail(f"ref {oid.hex()} = {entry[-1]}, expected {self.expect[oid]}")

    def check_empty(self) -> None:
        o = self.owner
        if o.rt.refs:
            self.fail(f"driver table not empty: {[k.hex() for k in o.rt.refs]}")
        if o.tm.tasks:
            self.fail(f"tasks left: {[t.name for t in o.tm.tasks.values()]}")
        if o.recovery.tasks:
            self.fail(f"lineage left: {len(o.recovery.tasks)}")
        for node in self.nodes.values():
            if node.alive and node.table.objects:
                self.fail(f"objects left on {node.nid}: "
                          f"{[k.hex() for k in node.table.objects]}")


def _short(oid: bytes) -> str:
    """``t0021`` for the task 0x21, ``t0021.0`` for its first output, ``p0021`` a put."""
    n = int.from_bytes(oid[8:16], "big")
    if len(oid) == 16:
        return f"t{n:04x}"
    if oid[16:] == b"\xff\xff\xff\xff":
        return f"p{n:04x}"
    return f"t{n:04x}.{int.from_bytes(oid[16:], 'big')}"


def run(seed: int, steps: int = 200) -> World:
    w = World(seed)
    for _ in range(steps):
        w.step()
    w.faults = False
    w.settle()
    w.check_results()
    for oid, n in list(w.held.items()):
        for _ in range(n):
            w.drop(oid)
    w.settle()
    w.check_empty()
    return w


def main(argv=None) -> int:
    return seeds.main(run, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
