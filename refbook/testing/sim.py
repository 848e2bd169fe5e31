"""A deterministic simulator of refbook's protocol core under faults.

It runs the real classes and only those: every process is a real
:class:`~refbook.runtime.protocol.owner.Owner` (with its ``ReferenceTable``,
``TaskManager`` and ``Lineage``), every node a real ``LeaseScheduler`` and
``ObjectTable``, placement is the real ``choose_node``, and the messages are the real
ones (``messages.py``) that the owner puts in its outbox.  What stands in for the rest
of a process is glue that does what ``processes/core.py``, ``worker.py`` and
``node.py`` do around those classes: deliver a message, run a task's body, store a
result.  A seeded scheduler delivers messages over per-pair FIFO channels in random
order, crashes workers and nodes (dropping what was in flight to and from them) and
moves a simulated clock.

The program: a driver puts values and submits tasks whose arguments are refs, some
passed at top level (resolved to values) and some nested inside the arguments
(borrowed by the worker).  A task's body sums its arguments; it may return a ref it
borrowed, or a new object it puts (so a worker owns it, and the driver borrows it),
nested in its result.  The driver reads nested refs out of results and passes them on.

After every step the simulator checks that nothing reachable is freed (a handle in any
process, a pending or running task's argument, a message in flight, a live object
containing it).  At the end, with faults off and every message delivered: every ref
the driver holds has resolved to the right value or to a documented error (only after
a crash that explains it); and once every handle is dropped, nothing is left: no table
entry, task, lineage, lease or stored object anywhere.

A failing seed raises :class:`SimFailure` with the seed and the last events; the same
seed replays exactly.  ``python -m refbook.testing.sim 0 2000`` runs seeds 0..1999.
"""

from __future__ import annotations

import random
import sys
from collections import Counter, deque

from .. import exceptions as exc
from ..runtime.protocol import messages as P
from ..runtime.protocol.entries import ERROR, INLINE, STORED
from ..runtime.protocol.ids import IdGenerator, object_id
from ..runtime.protocol.objects import ObjectTable
from ..runtime.protocol.refcount import Effects
from ..runtime.protocol.tasks import Task, TaskPayload
from . import seeds
from .simevents import check_events
from .simprocs import Node, Proc, _name, _short, addr

DOCUMENTED = (exc.WorkerCrashedError, exc.ObjectLostError, exc.TaskError,
              exc.OwnerDiedError)


class SimFailure(AssertionError):
    pass


class World:
    def __init__(self, seed: int, nodes: int = 3, crash_rate: float = 0.03):
        self.seed = seed
        self.rng = random.Random(seed)
        self.crash_rate = crash_rate
        self.now = 0.0
        self.channels: dict[tuple, deque] = {}
        self.log: list[str] = []
        self.procs: dict[str, Proc] = {}
        self.dead_procs: set[str] = set()         # what a node manager tells a new process
        self.dead_nodes: set[str] = set()
        self.driver = Proc(self, "n0", "driver")
        self.procs[self.driver.addr] = self.driver
        self.nodes = {f"n{i}": Node(self, f"n{i}", 2) for i in range(nodes)}
        self.ids = IdGenerator(b"simdrivr")
        self.value: dict[bytes, int] = {}         # the value each object must have
        self.nested: dict[bytes, tuple] = {}      # oid -> refs its value contains
        self.crashed = False                      # some crash happened (explains errors)
        self.faults = True

    # -- plumbing --------------------------------------------------------------------
    def send(self, src: str, dst: str, msg: tuple) -> None:
        self.channels.setdefault((src, dst), deque()).append(msg)

    def fail(self, what: str) -> None:
        raise SimFailure(f"seed {self.seed}: {what}\n" + "\n".join(self.log[-40:]))

    def node_of(self, address: str) -> Node:
        return self.nodes[address.split("/n-", 1)[1].split("/", 1)[0]]

    def refs_in_flight(self) -> Counter:
        c: Counter = Counter()
        for (_src, dst), q in self.channels.items():
            p = self.procs.get(dst)
            if p is None or not p.alive:
                continue                          # lost with the process it goes to
            for msg in q:
                if msg[0] == P.PUSH_TASKS:
                    for spec in msg[3]:
                        c.update(oid for oid, _o, _e in spec[4])
                        c.update(x for x, _o in spec[3][0][1][4])
                elif msg[0] == P.TASKS_DONE:
                    for _tid, ok, payload, _b, _s in msg[2]:
                        if ok:
                            for _k, _d, nested in payload:
                                c.update(x for x, _o, _r in nested)
        return c

    def check_free(self, oid: bytes, by: Proc) -> None:
        """``by``'s owner freed ``oid``: nothing may still reach it."""
        why = []
        for p in self.procs.values():
            if not p.alive:
                continue
            if p.handles[oid] > 0:
                why.append(f"{p.addr} holds a ref")
            for t in p.owner.tm.tasks.values():
                if any(x == oid for x, _ in t.arg_refs):
                    why.append(f"{p.addr}'s task {t.name} needs it")
            for r in p.running.values():
                if any(x == oid for x, _ in r["refs"]):
                    why.append(f"{p.addr} runs a task with it")
        if self.refs_in_flight()[oid]:
            why.append("a message in flight carries it")
        if why:
            self.fail(f"object {_short(oid)} freed by {by.addr} while reachable: "
                      f"{'; '.join(why)}")

    # -- the driver's program -----------------------------------------------------------
    def held(self) -> list:
        d = self.driver
        return [oid for oid, n in d.handles.items() if n > 0]

    def submit(self) -> None:
        d, o = self.driver, self.driver.owner
        held = self.held()
        args = self.rng.sample(held, min(len(held), self.rng.randint(0, 2)))
        rest = [x for x in held if x not in args]
        nested = self.rng.sample(rest, min(len(rest), self.rng.randint(0, 1)))
        const = self.rng.randint(1, 9)
        stored = self.rng.random() < 0.5
        ret = self.rng.choice(("none", "none", "borrowed", "put", "child"))
        tid = self.ids.task_id()
        rid = object_id(tid, 0)
        top = [(a, self.ref_owner(a)) for a in args]
        nest = [(x, self.ref_owner(x)) for x in nested]
        o.now = self.now
        args_entry, arg_refs, unresolved = o.hold_args(
            (INLINE, ("args", const, stored, ret, nest), []), top, nest, None)
        o.rt.own(rid)
        o.rt.add_local(rid, o.me)
        d.handles[rid] += 1
        if all(a in self.value for a in args):
            self.value[rid] = sum(self.value[a] for a in args) + const
        task = Task(tid, f"t{tid[-2:].hex()}", {"CPU": 1.0}, [rid], arg_refs,
                    TaskPayload(b"fn", ("body",), args_entry, top),
                    max_retries=self.rng.randint(0, 3))
        self.log.append(f"submit {task.name} args {[_short(a) for a in args]} nested "
                        f"{[_short(x) for x in nested]} -> {_short(rid)} ({ret}) "
                        f"retries={task.max_retries}")
        d.event(o.submit, task, unresolved)

    def ref_owner(self, oid: bytes) -> str:
        return self.driver.owner.rt.get(oid).owner

    def put(self) -> None:
        d, o = self.driver, self.driver.owner
        oid = self.ids.put_id()
        v = self.rng.randint(0, 100)
        o.rt.own(oid)
        o.rt.add_local(oid, o.me)
        d.handles[oid] += 1
        self.value[oid] = v
        n0 = self.nodes["n0"]
        if self.rng.random() < 0.5 and n0.alive:
            n0.table.create(oid, 64, o.me, o.me)
            n0.table.seal(oid)
            o.put_value(oid, (STORED, "n0", None, 64))
        else:
            o.put_value(oid, (INLINE, v, []))
        self.log.append(f"put {_short(oid)} = {v}")

    def drop(self, p: Proc, oid: bytes) -> None:
        p.handles[oid] -= 1
        fx = Effects()
        p.owner.rt.remove_local(oid, fx)
        self.log.append(f"{p.addr} drops {_short(oid)}")
        p.apply(fx)

    def read_nested(self) -> None:
        """The driver reads a result and gets the refs nested in it."""
        d = self.driver
        cands = [oid for oid in self.held() if self.nested.get(oid)
                 and d.owner.values.get(oid, (ERROR,))[0] != ERROR]
        if not cands:
            return
        y = self.rng.choice(cands)
        fx = Effects()
        for x, o in self.nested[y]:
            d.owner.rt.deserialized(x, o, None, (y, d.owner.rt.get(y).owner), fx)
            d.handles[x] += 1
        self.log.append(f"driver reads {_short(y)}: refs {[_short(x) for x, _ in self.nested[y]]}")
        d.apply(fx)

    # -- workers ------------------------------------------------------------------------
    # -- node managers -------------------------------------------------------------------
    # -- delivery ------------------------------------------------------------------------
    def deliver(self, key: tuple) -> None:
        src, dst = key
        msg = self.channels[key].popleft()
        if not self.channels[key]:
            del self.channels[key]
        self.log.append(f"{_name(src)} -> {_name(dst)}: {_describe(msg)}")
        if dst.endswith("/nm"):
            node = self.node_of(dst)
            if node.alive:
                node.receive(src, msg)
            return
        p = self.procs.get(dst)
        if p is None or not p.alive:
            return
        o = p.owner
        kind = msg[0]
        if kind == P.PUSH_TASKS or kind == P.CANCEL_TASK:
            p.receive(msg)
        elif kind == P.TASKS_DONE:
            p.event(o.tasks_done, msg[1], msg[2])
        elif kind == P.LEASE_GRANTED:
            p.event(o.lease_granted, *msg[1:])
        elif kind == P.LEASE_SPILLBACK:
            p.event(o.spillback, *msg[1:])
        elif kind == P.LEASE_RECLAIM:
            p.event(lambda: o.do(o.tm.reclaim()))
        elif kind == P.PROCESS_DIED:
            p.event(o.deaths.process_died, *msg[1:])
        elif kind == P.NODE_DIED:
            nid = msg[1]
            for a in o.deaths.node_died(nid, set()):
                p.event(o.deaths.process_died, a, f"its node {nid} died", False)
            p.event(o.deaths.node_objects_lost, nid)
        elif kind == P.GET_OBJECT:
            p.event(o.get_object, *msg[1:])
        elif kind == P.OBJECT_REPLY:
            _, _req, oid, entry = msg
            if not o.object_reply(oid, entry):     # a dead node's copy: ask again later
                o.fetching.discard(oid)
                self.send(p.addr, p.addr, ("refetch", oid))
            p.flush()
        elif kind == "refetch":
            r = o.rt.get(msg[1])
            if r is not None and msg[1] not in o.values:
                p.event(o.fetch, msg[1], r.owner)
        elif kind in {P.INC_REF, P.INC_ACK, P.DEC_REF}:
            fx = Effects()
            if kind == P.INC_REF:
                _, sender, oid, for_addr, ack = msg
                o.rt.handle_inc(sender, oid, for_addr, ack, fx)
            elif kind == P.INC_ACK:
                o.rt.on_ack(msg[1], fx)
            else:
                _, sender, oid, n = msg
                o.rt.on_dec(oid, sender, n, fx)
            p.apply(fx)
        else:
            self.fail(f"{dst} got an unexpected message {msg!r}")

    # -- faults ----------------------------------------------------------------------------
    def crash_worker(self, w: Proc | None = None) -> None:
        if w is None:
            live = [p for p in self.procs.values() if p.alive and p is not self.driver
                    and self.node_of(p.addr).alive]
            if not live:
                return
            w = self.rng.choice(live)
        node = self.node_of(w.addr)
        w.alive = False
        w.running.clear()
        self.dead_procs.add(w.addr)
        self.crashed = True
        self.log.append(f"CRASH worker {w.addr}")
        for key in [k for k in self.channels if w.addr in k]:
            del self.channels[key]               # in flight to or from it: lost
        node.table.process_died(w.addr)
        node.do(node.sched.worker_died(w.addr))
        self.owner_gone(w.addr)
        for p in self.procs.values():            # every process hears of it
            if p.alive and p is not w:
                self.send(node.addr, p.addr, (P.PROCESS_DIED, w.addr, "killed", False))

    def owner_gone(self, address: str) -> None:
        """Every node manager hears that a process died and ends the leases it held."""
        for node in self.nodes.values():
            if node.alive:
                node.do(node.sched.owner_died(address))

    def crash_node(self) -> None:
        live = [n for n in self.nodes.values() if n.alive and n.nid != "n0"]
        if not live:
            return
        node = self.rng.choice(live)
        node.alive = False
        self.dead_nodes.add(node.nid)
        self.crashed = True
        self.log.append(f"CRASH node {node.nid}")
        for w in node.workers.values():
            w.alive = False
            w.running.clear()
            self.dead_procs.add(w.addr)
        for key in [k for k in self.channels if any(f"/n-{node.nid}/" in x for x in k)]:
            del self.channels[key]
        node.table = ObjectTable(1 << 30)
        for w in node.workers.values():
            self.owner_gone(w.addr)
        for p in self.procs.values():
            if p.alive:
                self.send(addr("n0", "nm"), p.addr, (P.NODE_DIED, node.nid, "crashed"))

    # -- the run -----------------------------------------------------------------------------
    def running(self) -> list:
        return [(p, tid) for p in self.procs.values() if p.alive for tid in p.running]

    def tick(self) -> None:
        for p in self.procs.values():
            if p.alive:
                p.event(lambda p=p: p.owner.do(p.owner.tm.tick()))

    def step(self) -> None:
        self.now += 0.01
        r = self.rng.random()
        held = self.held()
        if self.faults and r < self.crash_rate:
            self.crash_worker()
        elif self.faults and r < self.crash_rate * 1.2:
            self.crash_node()
        elif r < 0.22:
            self.submit()
        elif r < 0.28:
            self.put()
        elif r < 0.36 and held:
            self.drop(self.driver, self.rng.choice(held))
        elif r < 0.40:
            self.read_nested()
        elif r < 0.55 and self.running():
            p, tid = self.rng.choice(self.running())
            p.finish_task(tid)
        elif self.channels:
            self.deliver(self.rng.choice(sorted(self.channels)))
        if self.rng.random() < 0.1:
            self.tick()

    def settle(self, limit: int = 200_000) -> None:
        for _ in range(limit):
            if self.running():
                p, tid = self.rng.choice(self.running())
                p.finish_task(tid)
                continue
            if self.channels:
                self.deliver(self.rng.choice(sorted(self.channels)))
                continue
            self.now += 0.5
            self.tick()
            if not self.channels:
                return
        self.fail("the system did not settle")

    def check_results(self) -> None:
        o = self.driver.owner
        for oid in self.held():
            if not o.rt.owns(oid):
                continue                          # borrowed: its owner answers for it
            entry = o.values.get(oid)
            if entry is None:
                self.fail(f"ref {_short(oid)} never resolved (a hang)")
            if entry[0] == ERROR:
                if not isinstance(entry[1], DOCUMENTED):
                    self.fail(f"ref {_short(oid)} failed with {entry[1]!r}")
                if not self.crashed:
                    self.fail(f"ref {_short(oid)} failed without a crash: {entry[1]!r}")
            elif entry[0] == INLINE and oid in self.value and entry[1] != self.value[oid]:
                self.fail(f"ref {_short(oid)} = {entry[1]}, expected {self.value[oid]}")

    def drop_everything(self) -> None:
        for p in self.procs.values():
            if p.alive:
                for oid, n in list(p.handles.items()):
                    for _ in range(max(n, 0)):
                        self.drop(p, oid)

    def check_empty(self) -> None:
        for p in self.procs.values():
            if not p.alive:
                continue
            o = p.owner
            if o.rt.refs:
                self.fail(f"{p.addr}: table not empty: {[_short(k) for k in o.rt.refs]}")
            if o.tm.tasks:
                self.fail(f"{p.addr}: tasks left: {[t.name for t in o.tm.tasks.values()]}")
            if o.lineage.tasks:
                self.fail(f"{p.addr}: lineage left: {len(o.lineage.tasks)}")
        for node in self.nodes.values():
            if node.alive and node.table.objects:
                self.fail(f"objects left on {node.nid}: "
                          f"{[_short(k) for k in node.table.objects]}")


def _describe(msg: tuple) -> str:
    names = {v: k for k, v in vars(P).items() if k.isupper() and isinstance(v, int)}
    parts = [_short(x) if isinstance(x, bytes) and len(x) >= 16 else
             (x.split("/n-")[-1] if isinstance(x, str) else type(x).__name__)
             for x in msg[1:4]]
    return f"{names.get(msg[0], msg[0])} {' '.join(parts)}"


def run(seed: int, steps: int = 200, crash_rate: float = 0.03) -> World:
    w = World(seed, crash_rate=crash_rate)
    for _ in range(steps):
        w.step()
    w.faults = False
    w.settle()
    w.check_results()
    check_events(w)
    w.drop_everything()
    w.settle()
    w.check_empty()
    check_events(w, at_end=True)
    return w


def main(argv=None) -> int:
    return seeds.main(run, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
