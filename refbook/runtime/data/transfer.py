"""Objects moving between nodes' stores: both ends of a pull, owned by the store server.

The node that needs an object pulls it from the node that has it (PULL), learns its
size and owner (PULL_META), allocates room in its own arena, and asks for it in chunks
of ``CHUNK`` bytes (PULL_CHUNK) with at most ``WINDOW`` chunks in flight per transfer,
which bounds the bytes in flight.  Each CHUNK is written straight from the sender's
arena into the receiver's; PULL_DONE lets the sender unpin it, PULL_FAIL says it cannot
be had.  :class:`Incoming` is the receiving end on a node, :class:`Outgoing` the sending
end; the node's :class:`~refbook.runtime.data.storeserver.StoreServer` owns one of each
and hands them the transfer messages.

The copy a node pulls is secondary: the sender remembers who has one and frees it with
the primary copy, the owner hears of it (OBJECT_COPY) and points readers at it, and
under memory pressure it is dropped before anything is spilled.  If the node it came
from dies, the copy becomes the primary one: its owner reads and frees it here from then
on.  A transfer stops the moment its object leaves either store's table, so no chunk
lands in memory that another object now uses and nothing is sent from freed memory.

Not here: the store's accounting (``protocol.objects``), the requests that wait for room
or a restore, and spilling (the store server).
"""

from __future__ import annotations

from ..protocol import messages as P
from ..protocol.objects import RESIDENT

CHUNK = 4 << 20        # bytes per transfer message between nodes (fits in cache)
WINDOW = 16            # chunks in flight per transfer
TRANSFER = "pull:"     # pins held for a transfer out are held by "pull:<requester>"


class Incoming:
    """The objects this node pulls from others for its readers, and the secondary
    copies it keeps of them.  ``store`` is the StoreServer that owns it: its table,
    arena and transport, and its ``progress``/``make_room`` once room is needed or
    made."""

    def __init__(self, store):
        self.store = store
        self.t = store.t
        self.table = store.table
        self.arena = store.arena
        self.pulls: dict[bytes, dict] = {}          # oid -> a transfer into this node
        self.failed: dict[bytes, tuple] = {}        # oid -> (PIN_REPLY status, why)
        self.pulled_from: dict[bytes, tuple] = {}   # our secondary copies: oid ->
        #                                             (source node, owner)

    def start(self, oid: bytes, node: str) -> None:
        """A reader here needs ``oid``, stored on ``node``: pull it (once)."""
        if oid in self.pulls:
            return
        src = self.store.address_of(node)
        if src is None:
            self.failed[oid] = ("error", f"object {oid.hex()} was on node {node}, which is "
                                f"no longer part of the cluster")
            return
        self.failed.pop(oid, None)
        self.pulls[oid] = {"src": src, "node": node, "size": None, "offset": None,
                           "next": 0, "received": 0, "since": self.store.clock()}
        self.t.send(src, (P.PULL, oid, self.t.address, self.store.node_id))

    def arriving(self, oid: bytes) -> bool:
        return oid in self.pulls

    def on_pull_meta(self, m) -> None:
        _, oid, size, owner = m
        p = self.pulls.get(oid)
        if p is None:
            return
        p["size"], p["owner"] = size, owner
        self._allocate(oid)

    def _allocate(self, oid: bytes) -> None:
        """Room for ``oid`` in the arena, then the first WINDOW chunk requests; or it
        waits for room (``waiting_space``), which the store makes."""
        p = self.pulls[oid]
        status, off = self.table.create(oid, p["size"], p["owner"], self.t.address)
        self.store.close_files(self.table.take_closed())
        if status == "wait":
            p["waiting_space"] = True
            self.store.make_room(p["size"])
            return
        if status == "full":          # larger than this whole store: nothing was lost
            self.fail(oid, off, "full")
            return
        p["waiting_space"] = False
        if status == "exists":
            del self.pulls[oid]
            self.t.send(p["src"], (P.PULL_DONE, oid, self.t.address))
            return
        p["offset"] = off
        for _ in range(WINDOW):
            self._request_chunk(oid)

    def waiting_for_space(self) -> bool:
        return any(p.get("waiting_space") for p in self.pulls.values())

    def retry_allocations(self) -> None:
        for oid, p in list(self.pulls.items()):
            if p.get("waiting_space"):
                self._allocate(oid)

    def _request_chunk(self, oid: bytes) -> None:
        p = self.pulls[oid]
        if p["next"] >= p["size"]:
            return
        n = min(CHUNK, p["size"] - p["next"])
        self.t.send(p["src"], (P.PULL_CHUNK, oid, self.t.address, p["next"], n))
        p["next"] += n

    def on_chunk(self, m) -> None:
        _, oid, offset, data = m
        p = self.pulls.get(oid)
        if p is None or p["offset"] is None or not 0 <= offset <= offset + len(data) <= p["size"]:
            return
        start = p["offset"] + offset
        self.arena.mm[start:start + len(data)] = data
        p["received"] += len(data)
        if p["received"] >= p["size"]:
            del self.pulls[oid]
            self.table.seal(oid)
            self.pulled_from[oid] = (p["node"], p["owner"])
            self.t.send(p["src"], (P.PULL_DONE, oid, self.t.address))
            self.t.send(p["owner"], (P.OBJECT_COPY, oid, self.store.node_id, True))
            self.store.events.add("object_transferred", oid, p["size"], p["size"], p["node"],
                                  self.store.clock() - p["since"])
            self.store.progress()
        else:
            self._request_chunk(oid)

    def on_pull_fail(self, m) -> None:
        self.fail(m[1], m[2])

    def fail(self, oid: bytes, message: str, status: str = "error") -> None:
        """The pull of ``oid`` stops; readers waiting for it get ``(status, message)``."""
        p = self.pulls.pop(oid, None)
        if p is not None and p.get("offset") is not None:
            self.store.close_files(self.table.delete(oid))
        self.failed[oid] = (status, message)
        self.store.progress()

    def forget(self, oid: bytes, why: str) -> None:
        """``oid`` left the table: its pull stops, and it is no copy of ours any more."""
        if oid in self.pulls:
            self.fail(oid, why)
        self.pulled_from.pop(oid, None)

    def expire(self, now: float, limit: float) -> None:
        """Pulls that have taken more than ``limit`` seconds fail."""
        for oid, p in list(self.pulls.items()):
            if now - p["since"] > limit:
                self.fail(oid, f"the transfer of object {oid.hex()} from node "
                               f"{p['node']} did not finish in {limit:.0f} s")

    def node_died(self, node_id: str) -> None:
        """Pulls from ``node_id`` fail; the copies pulled from it are primary now."""
        for oid, p in list(self.pulls.items()):
            if p["node"] == node_id:
                self.fail(oid, f"object {oid.hex()} was on node {node_id}, which died "
                               f"during the transfer")
        for oid, (src, owner) in list(self.pulled_from.items()):
            if src == node_id:        # ours is the primary copy now: say so to its owner
                del self.pulled_from[oid]
                self.t.send(owner, (P.OBJECT_COPY, oid, self.store.node_id, True))

    def evict_copies(self, need: int, keep: set) -> bool:
        """Drop unused secondary copies (not pinned, not in ``keep``), least recently
        used first, until the store is under its high-water mark and ``need`` bytes
        fit: they cost nothing to lose.  Whether any was dropped."""
        t = self.table
        evicted = False
        unused = sorted((t.objects[oid] for oid in self.pulled_from
                         if oid in t.objects and not t.objects[oid].pins
                         and t.objects[oid].state == RESIDENT and oid not in keep),
                        key=lambda o: o.last_use)
        for o in unused:
            if not t.over_high_water() and (not need or t.alloc.largest_free() >= need):
                break
            _src, owner = self.pulled_from.pop(o.oid)
            self.store.close_files(t.delete(o.oid))
            self.t.send(owner, (P.OBJECT_COPY, o.oid, self.store.node_id, False))
            self.store.events.add("object_evicted", o.oid, o.size)
            evicted = True
        return evicted


class Outgoing:
    """The objects this node sends to others, and which nodes hold a copy of what is
    stored here.  ``store`` is the StoreServer that owns it: its table, arena and
    transport, and its waiting requests (an object on disk is restored, then sent)."""

    def __init__(self, store):
        self.store = store
        self.t = store.t
        self.table = store.table
        self.arena = store.arena
        self.sending: dict[tuple, int] = {}     # (oid, requester) -> arena offset,
        #                                         pinned by TRANSFER + requester till done
        self.copies: dict[bytes, set] = {}      # oid -> nodes that pulled a copy from us
        self.requester_node: dict[str, str] = {}    # node manager address -> node id

    def on_pull(self, m) -> None:
        _, oid, requester, requester_node = m
        self.requester_node[requester] = requester_node
        self.store.pin_to_send(oid, requester)      # then start() or refuse()

    def start(self, oid: bytes, requester: str) -> None:
        """``oid`` is pinned for ``requester``: send its size and owner; chunks follow
        as the requester asks for them."""
        o = self.table.objects[oid]
        self.sending[(oid, requester)] = o.offset
        self.t.send(requester, (P.PULL_META, oid, o.size, o.owner))

    def refuse(self, oid: bytes, requester: str, why: str) -> None:
        self.t.send(requester, (P.PULL_FAIL, oid, why))

    def on_pull_chunk(self, m) -> None:
        _, oid, requester, offset, n = m
        base = self.sending.get((oid, requester))
        o = self.table.objects.get(oid)
        if base is None or o is None or not 0 <= offset <= offset + n <= o.size:
            return
        # straight from the arena: the object stays pinned until the requester has it all
        self.t.send(requester, (P.CHUNK, oid, offset),
                    data=memoryview(self.arena.mm)[base + offset:base + offset + n])

    def on_pull_done(self, m) -> None:
        _, oid, requester = m
        if self.sending.pop((oid, requester), None) is not None:
            self.table.unpin(TRANSFER + requester, [oid])
            node = self.requester_node.get(requester)
            if node is not None:
                self.copies.setdefault(oid, set()).add(node)
        self.store.progress()

    def forget(self, oid: bytes, why: str) -> None:
        """``oid`` left the table: every send of it stops now (its arena range may
        already hold another object)."""
        for key in [k for k in self.sending if k[0] == oid]:
            del self.sending[key]
            self.refuse(oid, key[1], why)

    def free_copies(self, oid: bytes) -> None:
        """The owner freed ``oid``: the copies other nodes pulled from here go too."""
        for node in self.copies.pop(oid, ()):
            addr = self.store.address_of(node)
            if addr is not None:
                self.t.send(addr, (P.FREE, [oid]))

    def forget_copies(self, oid: bytes) -> None:
        """``oid``'s owner died: the copies elsewhere go with it there (fate sharing)."""
        self.copies.pop(oid, None)

    def node_died(self, node_id: str) -> None:
        """Copies ``node_id`` held are forgotten; sends to it will never finish."""
        for nodes in self.copies.values():
            nodes.discard(node_id)
        for (oid, requester), _off in list(self.sending.items()):
            if self.requester_node.get(requester) == node_id:
                del self.sending[(oid, requester)]
                self.table.unpin(TRANSFER + requester, [oid])
