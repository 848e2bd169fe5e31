"""A deterministic simulator of the object store service across nodes, under pressure.

Each node runs the real :class:`~refbook.runtime.data.storeserver.StoreServer` (and with it
the real :class:`~refbook.runtime.protocol.objects.ObjectTable` and both ends of its
transfers, ``refbook.runtime.data.transfer``) over a small arena (a bytearray),
with its spill I/O and its clock replaced by the simulator's: spill writes, restores
and file closes complete when the seeded schedule says so, in each I/O thread's order.
Processes on the nodes put objects (ALLOC, write, then SEAL over another connection
than the one their readers hear about the object on), read objects from any node (PIN,
which pulls them over first), keep views of them for a while (holders fill a store
with pinned memory), answer UNPIN_REQUEST as ``processes/reading.py`` does, and free what nobody
reads.  Every message travels over a FIFO channel per pair of endpoints (a request
socket is an endpoint of its own), and the schedule delivers them in a random order.

Checked after every step: each arena is tiled exactly by free and used ranges, and
every view a process holds still shows the bytes its object was written with.  Checked
at the end, once every view was dropped and every message and I/O delivered: every
request was answered, and answered "ok" (the stores are never too small for one read);
nothing is left restoring or spilling; and once every object is freed, nothing is left
anywhere (objects, arena bytes, spill files, transfers, waiting requests).

``python -m refbook.testing.storesim 0 500`` runs seeds 0..499; a failing seed raises
:class:`StoreSimFailure` with its last events and replays exactly.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import deque
from types import SimpleNamespace

from ..runtime.data.storeserver import StoreServer
from ..runtime.protocol import messages as P
from . import seeds

KB = 1 << 10


class StoreSimFailure(AssertionError):
    pass


class SimTransport:
    """What a StoreServer sends goes into the world's channels (data is copied now, as
    it must stay unchanged until sent)."""

    def __init__(self, world: StoreWorld, address: str):
        self.world = world
        self.address = address

    def send(self, addr: str, msg: tuple, data=None) -> bool:
        if data is not None:
            msg = msg + (bytes(data),)
        self.world.send(self.address, addr, msg)
        return True

    def reply_rpc(self, ident, reply_to: str, msg: tuple) -> None:
        self.world.send(self.address + "-rpc", reply_to, msg)


class SimSpillIO:
    """SpillIO's interface; jobs wait in two FIFO queues (the writer and the reader
    thread) until the schedule runs them.  Files are bytearrays, which no reader can map:
    every spilled object comes back by a restore."""

    mappable = False

    def __init__(self, arena_mm: bytearray):
        self.mv = memoryview(arena_mm)
        self.files: dict[int, bytearray] = {}
        self.done: deque = deque()
        self.queues = (deque(), deque())           # writes; reads and closes
        self.fd = -1
        self.write_bytes = self.read_bytes = 0
        self.write_seconds = self.read_seconds = 0.0

    def spill(self, file_id, entries) -> None:
        self.queues[0].append(("spill", file_id, entries))

    def restore(self, oid, file_id, foff, arena_off, size) -> None:
        self.queues[1].append(("restore", oid, file_id, foff, arena_off, size))

    def close_file(self, file_id) -> None:
        self.queues[1].append(("close", file_id))

    def drain_signal(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def busy(self) -> bool:
        return bool(self.queues[0] or self.queues[1])

    def run(self, q: int) -> None:
        job = self.queues[q].popleft()
        if job[0] == "spill":
            _, file_id, entries = job
            todo = [e for e in entries if not e[3]]
            written, data = {}, bytearray()
            for oid, off, n, _ in todo:
                written[oid] = len(data)
                data += self.mv[off:off + n]
            if todo:
                self.files[file_id] = data
            self.done.append(("spilled", file_id if todo else None, written, len(data),
                              [e[0] for e in entries if e[3]]))
        elif job[0] == "restore":
            _, oid, file_id, foff, arena_off, size = job
            self.mv[arena_off:arena_off + size] = self.files[file_id][foff:foff + size]
            self.done.append(("restored", oid, None))
        else:
            self.files.pop(job[1], None)


class SimNode:
    def __init__(self, world: StoreWorld, nid: str, capacity: int):
        self.nid = nid
        self.addr = f"nm@{nid}"
        self.mm = bytearray(capacity)
        self.io = SimSpillIO(self.mm)
        arena = SimpleNamespace(capacity=capacity, mm=self.mm)
        self.srv = StoreServer(SimTransport(world, self.addr), arena, nid, "<sim>",
                               address_of=world.address_of, io=self.io,
                               clock=lambda: world.now)
        self.handlers = dict(self.srv.handlers())
        self.handlers.update({
            P.SEAL: self.srv.on_seal,
            P.FREE: lambda m: self.srv.on_free(m[1]),
            P.UNPIN: lambda m: self.srv.on_unpin(*m[1:]),
            P.OBJECT_COPY: lambda m: None,
        })


class SimProc:
    """A worker or driver on a node: its cached pins (oid -> live views), as
    ``processes/reading.py`` keeps them, and its requests in flight."""

    def __init__(self, name: str, node: SimNode):
        self.name = name
        self.node = node
        self.pins: dict[bytes, int] = {}
        self.views: list[bytes] = []
        self.pending: dict[bytes, tuple] = {}      # oid -> ("alloc" | "pin", size)
        self.unpins = 0                            # UNPINs sent (reading.send_unpin)


class StoreWorld:
    def __init__(self, seed: int, nodes: int = 3, capacity: int = 160 * KB):
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.channels: dict[tuple, deque] = {}
        self.log: list[str] = []
        self.nodes = {f"n{i}": SimNode(self, f"n{i}", capacity) for i in range(nodes)}
        self.procs = {f"p{j}@{n.nid}": SimProc(f"p{j}@{n.nid}", n)
                      for n in self.nodes.values() for j in range(2)}
        self.objects: dict[bytes, dict] = {}      # oid -> node, size, owner, bytes
        self.answers: list[tuple] = []            # (proc, kind, status, detail)
        self._n = 0

    # -- plumbing ---------------------------------------------------------------------------
    def address_of(self, nid: str) -> str | None:
        return self.nodes[nid].addr if nid in self.nodes else None

    def send(self, src: str, dst: str, msg: tuple) -> None:
        self.channels.setdefault((src, dst), deque()).append(msg)

    def fail(self, what: str) -> None:
        raise StoreSimFailure(f"store sim seed {self.seed}: {what}\n" +
                              "\n".join(self.log[-40:]))

    def deliver(self, key: tuple) -> None:
        src, dst = key
        msg = self.channels[key].popleft()
        if not self.channels[key]:
            del self.channels[key]
        self.log.append(f"{src} -> {dst}: {_KINDS.get(msg[0], msg[0])} "
                        f"{' '.join(_short(x) for x in msg[1:3] if isinstance(x, bytes))}")
        if dst.endswith("-rpc"):
            node = self.nodes[dst[3:-4]]
            node.srv.on_request(src, msg)
        elif dst.startswith("nm@"):
            node = self.nodes[dst[3:]]
            node.handlers[msg[0]](msg)
        else:
            self.proc_receives(self.procs[dst], msg)

    def proc_receives(self, p: SimProc, msg: tuple) -> None:
        kind = msg[0]
        if kind == P.ALLOC_REPLY:
            _, status, detail = msg
            oid = next(o for o, (k, _s) in p.pending.items() if k == "alloc")
            _k, size = p.pending.pop(oid)
            self.answers.append((p.name, "alloc", status, detail))
            if status != "ok":
                return
            data = _pattern(oid, size)
            p.node.mm[detail:detail + size] = data
            keep = self.rng.random() < 0.5        # the writer keeps a pin (it may read)
            if keep:
                p.pins[oid] = 0
            self.objects[oid] = {"node": p.node.nid, "size": size, "owner": p.name,
                                 "data": data}
            # the SEAL goes to the node's inbox; readers may hear of the object first
            self.send(p.name, p.node.addr, (P.SEAL, oid, detail, size, p.name,
                                            p.name if keep else None))
        elif kind == P.PIN_REPLY:
            _, status, detail = msg
            oid = next(o for o, (k, _s) in p.pending.items() if k == "pin")
            del p.pending[oid]
            self.answers.append((p.name, "pin", status, detail))
            if status != "ok":
                return
            off, size = detail[oid]
            if bytes(p.node.mm[off:off + size]) != self.objects[oid]["data"]:
                self.fail(f"{p.name} read wrong bytes for {_short(oid)}")
            p.pins[oid] = p.pins.get(oid, 0) + 1
            p.views.append(oid)
        elif kind == P.UNPIN_REQUEST:
            released = [o for o in msg[1] if p.pins.get(o) == 0]
            in_use = [o for o in msg[1] if p.pins.get(o, 0) > 0]
            for o in released:
                del p.pins[o]
            if released or in_use:
                p.unpins += 1
                self.send(p.name, p.node.addr, (P.UNPIN, p.name, released, in_use, False,
                                                "worker", p.unpins))
        elif kind == P.OBJECT_COPY:           # as the owner (protocol/deaths.py) does
            _, oid, nid, present = msg
            obj = self.objects.get(oid)
            if obj is None or obj["owner"] != p.name:
                self.fail(f"{p.name} heard of a copy of {_short(oid)}, not its object")
            if not present:
                obj.setdefault("copies", set()).discard(nid)
            elif obj.get("freed"):            # freed meanwhile: nobody else frees it
                self.send(p.name, self.nodes[nid].addr, (P.FREE, [oid]))
            else:
                obj.setdefault("copies", set()).add(nid)
        else:
            self.fail(f"{p.name} got an unexpected message {msg!r}")

    # -- what the processes do ----------------------------------------------------------------
    def put(self, p: SimProc) -> None:
        if p.pending:
            return
        self._n += 1
        oid = self._n.to_bytes(4, "big") + bytes(16)
        size = self.rng.choice((8, 16, 24, 40)) * KB
        p.pending[oid] = ("alloc", size)
        self.log.append(f"{p.name} put {_short(oid)} {size // KB} KiB")
        self.send(p.name, p.node.addr + "-rpc", (P.ALLOC, p.name, p.name, oid, size, p.name))

    def read(self, p: SimProc) -> None:
        readable = [o for o in self.objects if not self.objects[o].get("freed")]
        if p.pending or not readable:
            return
        oid = self.rng.choice(readable)
        self.log.append(f"{p.name} reads {_short(oid)}")
        if oid in p.pins:                       # a cached pin: no message
            p.pins[oid] += 1
            p.views.append(oid)
            return
        home = self.objects[oid]["node"]
        where = {oid: home} if home != p.node.nid else {}
        p.pending[oid] = ("pin", self.objects[oid]["size"])
        self.send(p.name, p.node.addr + "-rpc", (P.PIN, p.name, p.name, [oid], where,
                                                 p.unpins))

    def drop_view(self, p: SimProc) -> None:
        if p.views:
            oid = p.views.pop(self.rng.randrange(len(p.views)))
            p.pins[oid] -= 1
            self.log.append(f"{p.name} drops a view of {_short(oid)}")

    def free(self) -> None:
        """The owner frees an object nobody reads now (as refcounting would)."""
        busy = {o for p in self.procs.values() for o in list(p.views) + list(p.pending)}
        free = [o for o, v in self.objects.items() if not v.get("freed") and o not in busy]
        if not free:
            return
        oid = self.rng.choice(free)
        self.objects[oid]["freed"] = True
        for p in self.procs.values():           # readers drop their cached pins with it
            p.pins.pop(oid, None)
        owner = self.procs[self.objects[oid]["owner"]]
        self.log.append(f"free {_short(oid)}")
        for nid in {self.objects[oid]["node"], *self.objects[oid].pop("copies", ())}:
            self.send(owner.name, self.nodes[nid].addr, (P.FREE, [oid]))

    def run_io(self) -> bool:
        busy = [(n, q) for n in self.nodes.values() for q in (0, 1) if n.io.queues[q]]
        if not busy:
            return False
        node, q = self.rng.choice(busy)
        self.log.append(f"{node.nid} I/O {node.io.queues[q][0][0]}")
        node.io.run(q)
        node.srv.on_io()
        return True

    def tick(self, dt: float) -> None:
        self.now += dt
        for n in self.nodes.values():
            n.srv.tick()

    # -- the run ---------------------------------------------------------------------------------
    def step(self) -> None:
        r = self.rng.random()
        procs = list(self.procs.values())
        p = self.rng.choice(procs)
        if r < 0.14:
            self.put(p)
        elif r < 0.26:
            self.read(p)
        elif r < 0.34:
            self.drop_view(p)
        elif r < 0.38:
            self.free()
        elif r < 0.42:
            self.tick(0.05)
        elif r < 0.62 and self.run_io():
            pass
        elif self.channels:
            self.deliver(self.rng.choice(sorted(self.channels)))
        self.check_step()

    def settle(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if self.channels:
                self.deliver(self.rng.choice(sorted(self.channels)))
            elif not self.run_io():
                self.tick(0.25)
                if not self.channels and not any(n.io.busy() for n in self.nodes.values()):
                    return
            self.check_step()
        self.fail("the stores did not settle")

    def check_step(self) -> None:
        for n in self.nodes.values():
            n.srv.table.alloc.check()
        for p in self.procs.values():
            for oid in set(p.views):
                o = p.node.srv.table.objects.get(oid)
                if o is None or o.offset is None:
                    self.fail(f"{p.name} holds a view of {_short(oid)}, which is no longer "
                              f"in the arena of {p.node.nid}")
                if bytes(p.node.mm[o.offset:o.offset + o.size]) != self.objects[oid]["data"]:
                    self.fail(f"the bytes under {p.name}'s view of {_short(oid)} changed")

    def check_answers(self) -> None:
        for p in self.procs.values():
            if p.pending:
                self.fail(f"{p.name} never got an answer for "
                          f"{[(_short(o), k) for o, (k, _s) in p.pending.items()]} (a hang); "
                          f"states: {self.states()}")
        for name, kind, status, detail in self.answers:
            if status != "ok":
                self.fail(f"{name}'s {kind} was answered {status!r}: {detail}")
        for n in self.nodes.values():
            if n.srv.waiting or n.srv.incoming.pulls or n.srv.outgoing.sending:
                self.fail(f"{n.nid} still has waiting requests or transfers")
            for oid, o in n.srv.table.objects.items():
                if o.state not in ("resident", "spilled"):
                    self.fail(f"{_short(oid)} is left {o.state} on {n.nid}")

    def check_empty(self) -> None:
        for n in self.nodes.values():
            t = n.srv.table
            if t.objects or t.alloc.used or t.files or n.io.files or \
                    n.srv.incoming.pulled_from:
                self.fail(f"left on {n.nid}: objects {[_short(o) for o in t.objects]}, "
                          f"{t.alloc.used} arena bytes, files {sorted(n.io.files)}")

    def states(self) -> dict:
        return {n.nid: {_short(oid): o.state for oid, o in n.srv.table.objects.items()
                        if o.state != "resident"} for n in self.nodes.values()}


_KINDS = {v: k for k, v in vars(P).items() if k.isupper() and isinstance(v, int)}


def _pattern(oid: bytes, size: int) -> bytes:
    block = hashlib.blake2b(oid).digest()
    return (block * (size // len(block) + 1))[:size]


def _short(oid: bytes) -> str:
    return f"o{int.from_bytes(oid[:4], 'big')}" if len(oid) == 20 else oid.hex()[:8]


def run(seed: int, steps: int = 400) -> StoreWorld:
    w = StoreWorld(seed)
    for _ in range(steps):
        w.step()
    while True:                  # every reader lets go (of what arrives meanwhile too)
        for p in w.procs.values():
            while p.views:
                w.drop_view(p)
        w.settle()
        if not any(p.views for p in w.procs.values()):
            break
    w.check_answers()
    for _ in range(len(w.objects)):
        w.free()
    w.settle()
    w.check_empty()
    return w


def main(argv=None) -> int:
    return seeds.main(run, 500, argv)


if __name__ == "__main__":
    sys.exit(main())
