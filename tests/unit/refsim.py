"""A seeded, in-memory model of several processes running the real
:class:`ReferenceTable` protocol code over FIFO channels delivered in random order.

It performs exactly the calls the core makes (put, submit, task arguments, task
results, nested refs found by ``get``, drops) and checks the two safety properties of
distributed reference counting after every step:

* nothing is freed while reachable: no user handle, task argument in flight, running
  task, reply in flight, or live object that contains it;
* nothing is left at the end: when every handle is dropped and every message
  delivered, every table is empty.
"""

from __future__ import annotations

import random
from collections import Counter, deque

from refbook.runtime.protocol import messages as P
from refbook.runtime.protocol.refcount import Effects, ReferenceTable


class SafetyViolation(AssertionError):
    pass


class Proc:
    def __init__(self, addr: str):
        self.addr = addr
        self.rt = ReferenceTable(addr)
        self.handles: Counter = Counter()          # user-visible refs
        self.calls: dict[int, dict] = {}            # tasks we submitted, pending
        self.running: dict[int, dict] = {}          # tasks we execute


class World:
    def __init__(self, seed: int, nprocs: int = 4):
        self.rng = random.Random(seed)
        self.seed = seed
        self.procs = {f"p{i}": Proc(f"p{i}") for i in range(nprocs)}
        self.channels: dict[tuple, deque] = {}
        self.contents: dict[bytes, tuple] = {}      # oid -> nested (ref, owner)
        self.owner: dict[bytes, str] = {}
        self.freed: set[bytes] = set()
        self._n = 0
        self.log: list[str] = []

    # -- plumbing -------------------------------------------------------------------
    def new_oid(self) -> bytes:
        self._n += 1
        return self._n.to_bytes(20, "big")

    def send(self, src: str, dst: str, msg: tuple) -> None:
        self.channels.setdefault((src, dst), deque()).append(msg)

    def apply(self, p: Proc, fx: Effects) -> None:
        for oid in fx.free:
            self.check_free(oid)
            self.freed.add(oid)
        for addr, msg in fx.send:
            self.send(p.addr, addr, msg)
        fx.free.clear()
        fx.send.clear()
        fx.dropped.clear()

    def in_flight_refs(self) -> Counter:
        c: Counter = Counter()
        for q in self.channels.values():
            for msg in q:
                if msg[0] == "task":
                    c.update(x for x, _ in msg[3])
                elif msg[0] == "reply":
                    for _oid, nested in msg[2]:
                        c.update(x for x, _, _ in nested)
                    c.update(x for x, _ in msg[3])
        return c

    def check_free(self, oid: bytes) -> None:
        why = []
        for p in self.procs.values():
            if p.handles[oid] > 0:
                why.append(f"{p.addr} has a handle")
            for t in p.running.values():
                if any(x == oid for x, _ in t["args"]):
                    why.append(f"{p.addr} runs a task with it")
        if self.in_flight_refs()[oid]:
            why.append("a message in flight carries it")
        for y, nested in self.contents.items():
            if y not in self.freed and y != oid and any(x == oid for x, _ in nested):
                if y in self.owner and self.owner[y] in self.procs and \
                        y in self.procs[self.owner[y]].rt:
                    why.append(f"live object {int.from_bytes(y, 'big')} contains it")
        if why:
            raise SafetyViolation(
                f"seed {self.seed}: object {int.from_bytes(oid, 'big')} freed while "
                f"reachable: {'; '.join(why)}\n" + "\n".join(self.log[-30:]))

    # -- user actions -----------------------------------------------------------------
    def held_refs(self, p: Proc) -> list:
        return [(oid, self.owner[oid]) for oid, n in p.handles.items() if n > 0]

    def put(self, p: Proc) -> None:
        held = self.held_refs(p)
        nested = tuple(self.rng.sample(held, min(len(held), self.rng.randint(0, 2))))
        oid = self.new_oid()
        self.contents[oid] = nested
        self.owner[oid] = p.addr
        p.rt.own(oid, nested)
        p.rt.add_local(oid, p.addr)
        p.handles[oid] += 1
        self.log.append(f"{p.addr} put {int.from_bytes(oid, 'big')} nesting "
                        f"{[int.from_bytes(x, 'big') for x, _ in nested]}")

    def closure(self, oid: bytes) -> set:
        seen, todo = {oid}, [oid]
        while todo:
            for x, _ in self.contents.get(todo.pop(), ()):
                if x not in seen:
                    seen.add(x)
                    todo.append(x)
        return seen

    def drop(self, p: Proc, oid: bytes) -> None:
        p.handles[oid] -= 1
        fx = Effects()
        p.rt.remove_local(oid, fx)
        self.log.append(f"{p.addr} drop {int.from_bytes(oid, 'big')}")
        self.apply(p, fx)

    def call(self, p: Proc, q: Proc) -> None:
        held = self.held_refs(p)
        args = self.rng.sample(held, min(len(held), self.rng.randint(0, 2)))
        ret = self.new_oid()
        self.owner[ret] = p.addr
        p.rt.add_submitted(args)
        p.rt.own(ret)
        p.rt.add_local(ret, p.addr)
        p.handles[ret] += 1
        self._n += 1
        tid = self._n
        p.calls[tid] = {"args": args, "ret": ret, "callee": q.addr}
        self.send(p.addr, q.addr, ("task", tid, p.addr, args))
        self.log.append(f"{p.addr} call {tid} on {q.addr} args "
                        f"{[int.from_bytes(x, 'big') for x, _ in args]}")

    def get_nested(self, p: Proc, y: bytes) -> None:
        fx = Effects()
        for x, o in self.contents.get(y, ()):
            p.rt.deserialized(x, o, None, (y, self.owner[y]), fx)
            p.handles[x] += 1
        self.log.append(f"{p.addr} get {int.from_bytes(y, 'big')}")
        self.apply(p, fx)

    def finish(self, q: Proc, tid: int) -> None:
        t = q.running.pop(tid)
        caller = t["caller"]
        fx = Effects()
        # the task drops some argument handles and keeps others (a global)
        for x, _o in t["args"]:
            if q.handles[x] > 0 and self.rng.random() < 0.6:
                q.handles[x] -= 1
                q.rt.remove_local(x, fx)
        # a value may not (transitively) contain its own ref: such a cycle would leak in
        # any reference-counting system, Ray's included, so applications cannot make one
        held = [(x, o) for x, o in self.held_refs(q) if t["ret"] not in self.closure(x)]
        ret_nested = self.rng.sample(held, min(len(held), self.rng.randint(0, 2)))
        nested = [(x, o, q.rt.register_for(x, o, caller, fx, t["covered"]))
                  for x, o in ret_nested]
        borrowed = q.rt.report_borrowed(t["covered"])
        self.contents[t["ret"]] = tuple(ret_nested)   # the value is fixed from here on
        self.apply(q, fx)
        self.send(q.addr, caller, ("reply", tid, [(t["ret"], nested)], borrowed))
        self.log.append(f"{q.addr} finish {tid} returning "
                        f"{[int.from_bytes(x, 'big') for x, _, _ in nested]} borrowed "
                        f"{[int.from_bytes(x, 'big') for x, _ in borrowed]}")

    # -- delivery -----------------------------------------------------------------------
    def deliver(self, key: tuple) -> None:
        src, dst = key
        msg = self.channels[key].popleft()
        if not self.channels[key]:
            del self.channels[key]
        p = self.procs[dst]
        fx = Effects()
        kind = msg[0]
        if kind == "task":
            _, tid, caller, args = msg
            covered: set = set()
            for x, o in args:
                p.rt.deserialized(x, o, covered, None, fx)
                p.handles[x] += 1
            p.running[tid] = {"caller": caller, "args": args, "covered": covered,
                              "ret": self.procs[caller].calls[tid]["ret"]}
        elif kind == "reply":
            _, tid, returns, borrowed = msg
            call = p.calls.pop(tid)
            for oid, nested in returns:
                p.rt.task_returned(oid, nested, call["args"], fx)
            p.rt.task_borrowed(borrowed, src, call["args"], fx)
            p.rt.remove_submitted(call["args"], fx)
            for oid, _ in returns:
                p.rt.release_if_unreferenced(oid, fx)
        elif msg[0] == P.INC_REF:
            _, sender, oid, for_addr, ack = msg
            assert oid in p.rt, (f"seed {self.seed}: INC for unknown object "
                                 f"{int.from_bytes(oid, 'big')}\n" + "\n".join(self.log[-30:]))
            p.rt.handle_inc(sender, oid, for_addr, ack, fx)
        elif msg[0] == P.INC_ACK:
            p.rt.on_ack(msg[1], fx)
        elif msg[0] == P.DEC_REF:
            _, sender, oid, n = msg
            p.rt.on_dec(oid, sender, n, fx)
        self.log.append(f"deliver {src}->{dst} {_describe(msg)}")
        self.apply(p, fx)

    # -- the run --------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        procs = list(self.procs.values())
        p = rng.choice(procs)
        r = rng.random()
        if r < 0.15:
            self.put(p)
        elif r < 0.30 and self.held_refs(p):
            self.drop(p, rng.choice(self.held_refs(p))[0])
        elif r < 0.45:
            self.call(p, rng.choice([q for q in procs if q is not p]))
        elif r < 0.55 and self.held_refs(p):
            self.get_nested(p, rng.choice(self.held_refs(p))[0])
        elif r < 0.65 and p.running:
            self.finish(p, rng.choice(list(p.running)))
        elif self.channels:
            self.deliver(rng.choice(list(self.channels)))

    def drain(self) -> None:
        """Drop everything and run until quiet."""
        for _ in range(100_000):
            progressed = False
            for p in self.procs.values():
                for tid in list(p.running):
                    self.finish(p, tid)
                    progressed = True
                for oid, n in list(p.handles.items()):
                    for _ in range(n):
                        self.drop(p, oid)
                        progressed = True
            if self.channels:
                self.deliver(self.rng.choice(list(self.channels)))
                progressed = True
            if not progressed:
                return
        raise AssertionError(f"seed {self.seed}: did not quiesce")

    def check_empty(self) -> None:
        for p in self.procs.values():
            if p.rt.refs or p.rt.acks:
                left = {int.from_bytes(k, "big"): (r.owner, r.local, r.submitted,
                                                   r.contained, r.pinned, r.borrowers,
                                                   r.registered)
                        for k, r in p.rt.refs.items()}
                raise AssertionError(f"seed {self.seed}: {p.addr} still holds {left} "
                                     f"acks {p.rt.acks}\n" + "\n".join(self.log[-40:]))


def run(seed: int, steps: int = 300, nprocs: int = 4) -> World:
    w = World(seed, nprocs)
    for _ in range(steps):
        w.step()
    w.drain()
    w.check_empty()
    return w


def _ints(v):
    if isinstance(v, bytes):
        return int.from_bytes(v, "big")
    if isinstance(v, (list, tuple)):
        return type(v)(_ints(x) for x in v)
    return v


def _describe(msg: tuple) -> str:
    names = {P.INC_REF: "INC", P.INC_ACK: "ACK", P.DEC_REF: "DEC"}
    return f"{names.get(msg[0], msg[0])}{_ints(tuple(msg[1:]))}"
