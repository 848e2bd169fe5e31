"""The processes of the simulator (``sim.py``): glue around the real protocol classes.

A :class:`Proc` is a driver or worker process: a real
:class:`~refbook.runtime.protocol.owner.Owner`, what its user code holds, and, for a
worker, the tasks it runs (their bodies sum their arguments, may return a borrowed ref,
a value they put, or the ref of a task they submit).  A :class:`Node` is a node manager:
the real ``LeaseScheduler`` and ``ObjectTable``, and placement by the real
``choose_node``.  They send the real messages (``messages.py``) through the world's
channels; what they decide comes from those classes alone.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from .. import exceptions as exc
from ..runtime.protocol import messages as P
from ..runtime.protocol.entries import ERROR, INLINE, STORED
from ..runtime.protocol.ids import IdGenerator, object_id
from ..runtime.protocol.leases import LeaseScheduler
from ..runtime.protocol.membership import choose_node
from ..runtime.protocol.objects import ObjectTable
from ..runtime.protocol.owner import Owner
from ..runtime.protocol.refcount import Effects
from ..runtime.protocol.tasks import Task, TaskPayload

if TYPE_CHECKING:
    from .sim import World


def _name(a: str) -> str:
    return a.split("/n-", 1)[-1]


def _short(oid: bytes) -> str:
    """``t0021`` for the task 0x21, ``t0021.0`` for its first output, ``p0021`` a put."""
    n = int.from_bytes(oid[8:16], "big")
    if len(oid) == 16:
        return f"t{n:04x}"
    if oid[16:] == b"\xff\xff\xff\xff":
        return f"p{n:04x}"
    return f"t{n:04x}.{int.from_bytes(oid[16:], 'big')}"


def addr(node: str, name: str) -> str:
    return f"sim/n-{node}/{name}"


class Proc:
    """A driver or worker process: a real Owner, and what its user code holds."""

    def __init__(self, world: World, node: str, name: str):
        self.world = world
        self.node = node
        self.addr = addr(node, name)
        self.owner = Owner(self.addr, node, addr(node, "nm"), depth=2, idle_timeout=0.2,
                           rebuild_wait=5.0, lineage_max_bytes=1 << 30)
        self.owner.clock = lambda: world.now
        self.handles: Counter = Counter()       # refs the user code holds
        self.alive = True
        self.running: dict[bytes, dict] = {}    # task id -> a task this worker runs
        self.ids = IdGenerator(f"{node}{name}".encode().ljust(8, b"_")[:8])

    def flush(self) -> None:
        """What CoreWorker._flush does, minus pins and waiters (nobody blocks here)."""
        out = self.owner.out
        w = self.world
        while out:
            sends, out.send = out.send, []
            for oid in out.freed:
                w.check_free(oid, self)
            out.ready.clear()
            out.gone.clear()
            out.lost.clear()
            out.freed.clear()
            for dst, msg in sends:
                w.send(self.addr, dst, msg)

    def event(self, fn, *args) -> None:
        """Hand an event to the owner and carry out its outbox."""
        self.owner.now = self.world.now
        fn(*args)
        self.flush()

    def apply(self, fx: Effects) -> None:
        self.owner.apply(fx)
        self.flush()

    # -- a worker running tasks -----------------------------------------------------
    def receive(self, msg: tuple) -> None:
        if msg[0] == P.PUSH_TASKS:
            _, owner, _lease, specs = msg
            for spec in specs:
                self.start_task(owner, spec)
        elif msg[0] == P.CANCEL_TASK:
            pass                                  # the driver never cancels

    def start_task(self, owner: str, spec: tuple) -> None:
        tid, _fn, _blob, (args_entry, _blob_oid), resolved, rids, name, _retry = spec
        fx = Effects()
        covered: set = set()
        _, body, _bufs = args_entry
        refs = []
        for x, o in body[4]:                  # refs nested in the arguments: borrowed
            self.owner.rt.deserialized(x, o, covered, None, fx)
            self.handles[x] += 1
            refs.append((x, o))
        self.running[tid] = {"owner": owner, "resolved": resolved, "rids": rids, "body": body,
                          "covered": covered, "refs": refs, "name": name}
        self.apply(fx)

    def finish_task(self, tid: bytes) -> None:
        world = self.world
        r = self.running.pop(tid)
        _, const, stored, ret, _nest = r["body"]
        node = world.nodes[self.node]
        total, error = const, None
        for oid, _o, entry in r["resolved"]:
            if entry[0] == ERROR:
                error = entry[1]
                break
            if entry[0] == STORED:
                src = world.nodes[entry[1]]
                if not src.alive or src.table.state_of(oid) is None:
                    error = exc.TaskError(r["name"], "", "lost", exc.ObjectLostError, None)
                    break
            total += world.value.get(oid, 0)
        fx = Effects()
        reply_nested = []
        if error is None:
            if ret == "borrowed" and r["refs"]:
                x, o = r["refs"][0]
                reply_nested = [(x, o, self.owner.rt.register_for(x, o, r["owner"], fx,
                                                               r["covered"]))]
            elif ret == "put":                   # the body puts a value and returns it
                x = self.ids.put_id()
                self.owner.rt.own(x)
                self.owner.rt.add_local(x, self.addr)
                self.handles[x] += 1
                r["refs"].append((x, self.addr))
                self.owner.put_value(x, (INLINE, 7, []))
                world.value[x] = 7
                reply_nested = [(x, self.addr, self.owner.rt.register_for(x, self.addr, r["owner"],
                                                                     fx, r["covered"]))]
            elif ret == "child":                 # it submits a task and returns its ref
                reply_nested = [self.submit_child(r, fx)]
        for x, _o in r["refs"]:                     # the body drops what it borrowed
            self.handles[x] -= 1
            self.owner.rt.remove_local(x, fx)
        self.apply(fx)
        borrowed = self.owner.rt.report_borrowed(r["covered"])
        self.apply(Effects())
        if error is not None:
            result = (tid, False, error, borrowed, 0.001)
        else:
            rid = r["rids"][0]
            nested = [(x, o, reg) for x, o, reg in reply_nested]
            world.nested[rid] = tuple((x, o) for x, o, _ in nested)
            if stored:
                node.table.create(rid, 64, r["owner"], self.addr)
                node.table.seal(rid)
                result = (tid, True, [(STORED, (self.node, None, 64), nested)], borrowed, 0.001)
            else:
                result = (tid, True, [(INLINE, (total, []), nested)], borrowed, 0.001)
            world.value.setdefault(rid, total)
        world.log.append(f"{self.addr} finishes {r['name']} "
                        f"{'ok' if error is None else 'with ' + type(error).__name__}")
        world.send(self.addr, r["owner"], (P.TASKS_DONE, self.addr, [result]))

    def submit_child(self, r: dict, fx: Effects) -> tuple:
        world = self.world
        """A task's body submits a task of its own, lending it a ref it borrowed (so
        ``w`` owns the child's output, and the driver will borrow it)."""
        o = self.owner
        tid = self.ids.task_id()
        rid = object_id(tid, 0)
        top = [(x, own) for x, own in r["refs"][:1]]
        o.now = world.now
        args_entry, arg_refs, unresolved = o.hold_args(
            (INLINE, ("args", 1, False, "none", []), []), top, [], None)
        o.rt.own(rid)
        o.rt.add_local(rid, self.addr)
        self.handles[rid] += 1
        r["refs"].append((rid, self.addr))
        task = Task(tid, f"c{tid[-2:].hex()}", {"CPU": 1.0}, [rid], arg_refs,
                    TaskPayload(b"fn", ("body",), args_entry, top), max_retries=1)
        world.log.append(f"{_name(self.addr)} submits {task.name} args "
                        f"{[_short(a) for a, _ in top]} -> {_short(rid)}")
        self.event(o.submit, task, unresolved)
        return (rid, self.addr, o.rt.register_for(rid, self.addr, r["owner"], fx, r["covered"]))


class Node:
    def __init__(self, world: World, nid: str, cpus: int):
        self.world = world
        self.nid = nid
        self.addr = addr(nid, "nm")
        self.sched = LeaseScheduler({"CPU": float(cpus)}, max_workers=8, pool_size=cpus,
                                    lease_base=(int(nid[1:]) + 1) << 32)
        self.table = ObjectTable(1 << 30)
        self.alive = True
        self.workers: dict[str, Proc] = {}
        self._n = 0
        for _ in range(cpus):
            self.sched.worker_starting()
            self.start_worker()

    def start_worker(self) -> None:
        self._n += 1
        p = Proc(self.world, self.nid, f"w{self._n}")
        p.owner.deaths.known_dead(self.world.dead_procs, self.world.dead_nodes)
        self.workers[p.addr] = p
        self.world.procs[p.addr] = p
        self.do(self.sched.worker_registered(p.addr))

    def view(self) -> dict:
        s = self.sched.snapshot()
        return {"node_id": self.nid, "address": self.addr, "alive": self.alive,
                "resources": s["total"], "available": s["available"]}

    # -- its node manager ------------------------------------------------------------
    def do(self, actions: list) -> None:
        world = self.world
        for a in actions:
            if a[0] == "grant":
                _, owner, req_id, lease_id, worker = a
                world.send(self.addr, owner,
                          (P.LEASE_GRANTED, req_id, lease_id, worker, self.addr))
            elif a[0] == "reject":
                world.send(self.addr, a[1], (P.LEASE_GRANTED, a[2], None, a[3], self.addr))
            elif a[0] == "start_worker":
                self.start_worker()
            elif a[0] == "reclaim":
                world.send(self.addr, a[1], (P.LEASE_RECLAIM,))

    def receive(self, src: str, msg: tuple) -> None:
        world = self.world
        kind = msg[0]
        if kind == P.LEASE_REQUEST:
            _, owner, req_id, res, dedicated, _prefer = msg
            view = [n.view() for n in world.nodes.values()]
            target, _feasible = choose_node(view, res, self.nid)
            if target is not None:
                world.send(self.addr, owner, (P.LEASE_SPILLBACK, req_id, addr(target, "nm"),
                                                   True))
            else:
                self.do(self.sched.request(owner, req_id, res, dedicated))
        elif kind == P.LEASE_RETURN:
            self.do(self.sched.release(msg[1]))
        elif kind == P.FREE:
            oids, target = msg[1], msg[2]
            creator = msg[3] if len(msg) > 3 else None
            there = world.nodes[target]
            if there.alive:
                for oid in oids:
                    o = there.table.objects.get(oid)
                    if o is not None and (creator is None or o.creator == creator):
                        there.table.delete(oid)
        elif kind == P.KILL_WORKER:
            w = world.procs.get(msg[1])
            if w is not None and w.alive:
                world.crash_worker(w)
