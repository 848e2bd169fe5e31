"""The node manager's object store service: allocation and pin requests, spilling and
restoring under memory pressure, and the events the state API shows.

Requests that cannot be served yet (no room for a new object, or arguments that are on
disk) wait here rather than fail: the service spills least-recently-used primary copies
to make room, and serves whatever waiting request fits first.  A request fails with a
clear message only when it can never fit, the disk is full, or it waited too long.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

from ..protocol import messages as P
from ..protocol.objects import RESIDENT, SPILLED, ObjectTable
from .spill import SpillIO

log = logging.getLogger("refbook.store")

WAIT_LIMIT = 120.0     # seconds a request may wait for memory before it fails
CHUNK = 4 << 20        # bytes per transfer message between nodes (fits in cache)
WINDOW = 16            # chunks in flight per transfer
TRANSFER = "pull:"     # pins held for a transfer out are held by "pull:<requester>"


class Waiting:
    __slots__ = ("kind", "ident", "reply_to", "proc", "args", "size", "since", "after")

    def __init__(self, kind, ident, reply_to, proc, args, size, since: float):
        self.kind = kind          # "alloc", "pin", or "send" (a transfer out)
        self.ident = ident
        self.reply_to = reply_to
        self.proc = proc
        self.args = args          # alloc: (oid, size, owner); pin, send: oids
        self.size = size
        self.since = since
        self.after = 0            # pin: serve only once this UNPIN of proc's has come


class StoreServer:
    """``io`` (default: a :class:`SpillIO` over ``spill_dir``) and ``clock`` are the
    simulator's way in (refbook.testing.storesim): the same server, with spill I/O and
    time under a seeded schedule."""

    def __init__(self, transport, arena, node_id: str, spill_dir: str, address_of=None,
                 io=None, clock=time.monotonic):
        self.t = transport
        self.clock = clock
        self.node_id = node_id
        self.arena = arena
        self.address_of = address_of or (lambda node_id: None)
        self.pulls: dict[bytes, dict] = {}      # oid -> transfer into this node
        self.sending: dict[tuple, int] = {}     # (oid, requester) -> pinned while we send
        self.copies: dict[bytes, set] = {}      # oid -> nodes that pulled a copy from us
        self.pull_errors: dict[bytes, tuple] = {}     # oid -> (PIN_REPLY status, why)
        self._requester_node: dict[str, str] = {}     # node manager address -> node id
        self._progressing = False                     # progress() is running
        self._again = False                           # ...and should run another round
        self.pulled_from: dict[bytes, tuple] = {}     # our secondary copies: oid ->
        #                                               (source node, owner)
        self.table = ObjectTable(arena.capacity)
        self.spill_dir = spill_dir
        if io is None:
            os.makedirs(spill_dir, mode=0o700, exist_ok=True)
            io = SpillIO(spill_dir, arena.mm)
        self.io = io
        self.waiting: list[Waiting] = []
        self.events: deque = deque(maxlen=10_000)
        self.disk_error: str | None = None
        self._asked: dict[tuple, float] = {}
        # proc -> (oids its live values use, its kind, when it said so): it answered an
        # UNPIN_REQUEST while blocked in get()/wait()
        self._stuck: dict[str, tuple] = {}
        self._unpins: dict[str, int] = {}       # proc -> number of its last UNPIN here

    def event(self, kind: str, **fields) -> None:
        self.events.append({"time": time.time(), "kind": kind, "node_id": self.node_id,
                            **fields})

    # -- requests (ROUTER socket) -------------------------------------------------------------
    def on_request(self, ident: bytes, m: tuple) -> None:
        if m[0] == P.ALLOC:
            _, proc, reply_to, oid, size, owner = m
            w = Waiting("alloc", ident, reply_to, proc, (oid, size, owner), size,
                        self.clock())
        elif m[0] == P.PIN:
            _, proc, reply_to, oids, where, *after = m
            w = Waiting("pin", ident, reply_to, proc, oids, 0, self.clock())
            w.after = after[0] if after else 0
            for oid, node in where.items():       # stored on another node: fetch it
                if node != self.node_id and oid not in self.table.objects:
                    self._start_pull(oid, node)
        else:
            log.warning("unexpected request type %r", m[0])
            return
        if not self._serve(w):
            self.waiting.append(w)
            self._make_room(w.size)

    def _reply(self, w: Waiting, msg: tuple) -> None:
        if w.ident is not None:
            self.t.reply_rpc(w.ident, w.reply_to, msg)

    def _serve(self, w: Waiting) -> bool:
        """Try to answer ``w`` now; False if it must wait."""
        if w.kind == "send":                 # a transfer out, waiting for a restore
            status, detail = self._pin(w)
            if status == "wait":
                return False
            if status == "ok":
                self._send_meta(w.args[0], w.reply_to)
            else:
                self.t.send(w.reply_to, (P.PULL_FAIL, w.args[0], detail))
            return True
        if w.kind == "alloc":
            oid, size, owner = w.args
            status, detail = self.table.create(oid, size, owner, w.proc)
            self._close(self.table.take_closed())
            if status == "wait":
                return False
            self._reply(w, (P.ALLOC_REPLY, status, detail))
            return True
        if self._unpins.get(w.proc, 0) < w.after:
            return False        # an UNPIN it sent first is still on its way: not yet
        for oid in w.args:
            if oid in self.pulls:
                return False                   # still arriving from another node
            err = self.pull_errors.get(oid)
            if err is not None and oid not in self.table.objects:
                self._reply(w, (P.PIN_REPLY, *err))
                return True
        status, detail = self._pin(w)
        if status == "wait":
            return False
        self._reply(w, (P.PIN_REPLY, status, detail))
        return True

    def _pin(self, w: Waiting):
        """``table.pin_many`` for ``w``, and every restore it books started at once: the
        table has already marked those objects RESTORING and given them their arena
        range, so a restore not started here would leave them RESTORING for ever (and
        every reader waiting).  While it waits, ``w.size`` is what is still on disk with
        no room to come back: what ``_make_room`` must free for it."""
        status, detail = self.table.pin_many(w.proc, w.args)
        if status == "wait":
            for r in detail:
                self.io.restore(*r)
            w.size = sum(self.table.objects[o].size for o in w.args
                         if self.table.state_of(o) == SPILLED)
        return status, detail

    # -- messages (inbox) -------------------------------------------------------------------
    def on_seal(self, m) -> None:
        _, oid, _off, _size, _owner, pin_for = m
        self.table.seal(oid, pin_for)
        self.progress()         # readers may be waiting for it; room is made there too

    def on_free(self, oids, creator: str | None = None) -> None:
        """The owner freed ``oids``: every copy goes.  With ``creator``, only a copy
        that process wrote goes (an attempt that died), not another one of the same id."""
        if creator is not None:
            oids = [o for o in oids if o in self.table.objects
                    and self.table.objects[o].creator == creator]
        for oid in oids:
            self._close(self.table.delete(oid))
            self._forget(oid, f"object {oid.hex()} was freed by its owner")
            self.pull_errors.pop(oid, None)
            for node in self.copies.pop(oid, ()):      # secondary copies go too
                addr = self.address_of(node)
                if addr is not None:
                    self.t.send(addr, (P.FREE, [oid]))
        self.progress()

    def _forget(self, oid: bytes, why: str) -> None:
        """``oid`` left the table: a transfer of it, in or out, must stop now (its arena
        range may already hold another object)."""
        if oid in self.pulls:
            self._pull_failed(oid, why)
        self.pulled_from.pop(oid, None)
        for key in [k for k in self.sending if k[0] == oid]:
            del self.sending[key]
            self.t.send(key[1], (P.PULL_FAIL, oid, why))

    # -- transfer between nodes ---------------------------------------------------------------
    # The node that needs an object pulls it from the node that has it, in chunks of
    # CHUNK bytes with at most WINDOW chunks in flight, straight into its own arena.  The
    # copy is secondary: the sender remembers it and frees it with the primary, the
    # owner hears of it (OBJECT_COPY) and points readers at it, and under memory
    # pressure it is dropped before anything is spilled.  If the node it came from dies,
    # the copy becomes the primary one: its owner reads and frees it here from then on.

    def handlers(self) -> dict:
        return {P.PULL: self._on_pull, P.PULL_META: self._on_pull_meta,
                P.PULL_CHUNK: self._on_pull_chunk, P.CHUNK: self._on_chunk,
                P.PULL_DONE: self._on_pull_done, P.PULL_FAIL: self._on_pull_fail}

    def _start_pull(self, oid: bytes, node: str) -> None:
        if oid in self.pulls:
            return
        src = self.address_of(node)
        if src is None:
            self.pull_errors[oid] = ("error", f"object {oid.hex()} was on node {node}, which is no "
                                     f"longer part of the cluster")
            return
        self.pull_errors.pop(oid, None)
        self.pulls[oid] = {"src": src, "node": node, "size": None, "offset": None,
                           "next": 0, "received": 0, "since": self.clock()}
        self.t.send(src, (P.PULL, oid, self.t.address, self.node_id))

    def _on_pull(self, m) -> None:
        _, oid, requester, requester_node = m
        self._requester_node[requester] = requester_node
        w = Waiting("send", None, requester, TRANSFER + requester, [oid], 0, self.clock())
        if not self._serve(w):            # on disk here: restore it, then send
            self.waiting.append(w)
            self._make_room(w.size)

    def _send_meta(self, oid: bytes, requester: str) -> None:
        o = self.table.objects[oid]
        self.sending[(oid, requester)] = o.offset
        self.t.send(requester, (P.PULL_META, oid, o.size, o.owner))

    def _on_pull_meta(self, m) -> None:
        _, oid, size, owner = m
        p = self.pulls.get(oid)
        if p is None:
            return
        p["size"], p["owner"] = size, owner
        self._alloc_pull(oid)

    def _alloc_pull(self, oid: bytes) -> bool:
        p = self.pulls[oid]
        status, off = self.table.create(oid, p["size"], p["owner"], self.t.address)
        self._close(self.table.take_closed())
        if status == "wait":
            p["waiting_space"] = True
            self._make_room(p["size"])
            return False
        if status == "full":          # larger than this whole store: nothing was lost
            self._pull_failed(oid, off, "full")
            return True
        p["waiting_space"] = False
        if status == "exists":
            del self.pulls[oid]
            self.t.send(p["src"], (P.PULL_DONE, oid, self.t.address))
            return True
        p["offset"] = off
        for _ in range(WINDOW):
            self._request_chunk(oid)
        return True

    def _request_chunk(self, oid: bytes) -> None:
        p = self.pulls[oid]
        if p["next"] >= p["size"]:
            return
        n = min(CHUNK, p["size"] - p["next"])
        self.t.send(p["src"], (P.PULL_CHUNK, oid, self.t.address, p["next"], n))
        p["next"] += n

    def _on_pull_chunk(self, m) -> None:
        _, oid, requester, offset, n = m
        base = self.sending.get((oid, requester))
        o = self.table.objects.get(oid)
        if base is None or o is None or not 0 <= offset <= offset + n <= o.size:
            return
        # straight from the arena: the object stays pinned until the requester has it all
        self.t.send(requester, (P.CHUNK, oid, offset),
                    data=memoryview(self.arena.mm)[base + offset:base + offset + n])

    def _on_chunk(self, m) -> None:
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
            self.t.send(p["owner"], (P.OBJECT_COPY, oid, self.node_id, True))
            self.event("transfer", object_ids=[oid.hex()], bytes=p["size"],
                       source=p["node"], seconds=self.clock() - p["since"])
            self.progress()
        else:
            self._request_chunk(oid)

    def _on_pull_done(self, m) -> None:
        _, oid, requester = m
        if self.sending.pop((oid, requester), None) is not None:
            self.table.unpin(TRANSFER + requester, [oid])
            node = self._requester_node.get(requester)
            if node is not None:
                self.copies.setdefault(oid, set()).add(node)
        self.progress()

    def _on_pull_fail(self, m) -> None:
        self._pull_failed(m[1], m[2])

    def _pull_failed(self, oid: bytes, message: str, status: str = "error") -> None:
        p = self.pulls.pop(oid, None)
        if p is not None and p.get("offset") is not None:
            self._close(self.table.delete(oid))
        self.pull_errors[oid] = (status, message)
        self.progress()

    def node_died(self, node_id: str) -> None:
        """Transfers from a dead node fail; copies it held are forgotten."""
        for oid, p in list(self.pulls.items()):
            if p["node"] == node_id:
                self._pull_failed(oid, f"object {oid.hex()} was on node {node_id}, which "
                                       f"died during the transfer")
        for nodes in self.copies.values():
            nodes.discard(node_id)
        for (oid, requester), _off in list(self.sending.items()):
            if self._requester_node.get(requester) == node_id:   # it will never finish
                del self.sending[(oid, requester)]
                self.table.unpin(TRANSFER + requester, [oid])
        for oid, (src, owner) in list(self.pulled_from.items()):
            if src == node_id:        # ours is the primary copy now: say so to its owner
                del self.pulled_from[oid]
                self.t.send(owner, (P.OBJECT_COPY, oid, self.node_id, True))

    def on_unpin(self, proc: str, oids, in_use=(), waiting: bool = False,
                 kind: str = "process", seq: int | None = None) -> None:
        self.table.unpin(proc, oids)
        if seq is not None:
            self._unpins[proc] = max(seq, self._unpins.get(proc, 0))
        if in_use and waiting:
            self._stuck[proc] = (set(in_use), kind, self.clock())
        else:
            self._stuck.pop(proc, None)
        self.progress()

    def on_prefetch(self, oids) -> None:
        """Restore spilled arguments of queued tasks while there is room, without
        spilling anything for them and without pinning them."""
        for oid in oids:
            r = self.table.prefetch(oid)
            if r is not None:
                self.io.restore(*r)

    # -- I/O completions ------------------------------------------------------------------------
    def on_io(self) -> None:
        self.io.drain_signal()
        while self.io.done:
            r = self.io.done.popleft()
            if r[0] == "spilled":
                _, fid, written, size, reused = r
                self._close(self.table.spill_done(fid, written, size, reused))
                self.event("spill", object_ids=[o.hex() for o in list(written) + reused],
                           bytes=sum(self.table.objects[o].size for o in
                                     list(written) + reused if o in self.table.objects),
                           file=fid)
            elif r[0] == "restored":
                _, oid, err = r
                self.table.restore_done(oid, err is None)
                o = self.table.objects.get(oid)
                if err is None:
                    self.event("restore", object_ids=[oid.hex()],
                               bytes=o.size if o else 0)
                else:
                    log.error("restore of %s failed: %s", oid.hex(), err)
            elif r[0] == "spill_failed":
                _, oids, err = r
                self.table.spill_failed(oids)
                self.disk_error = f"spilling to {self.spill_dir} failed: {err}"
                self.event("spill_failed", object_ids=[o.hex() for o in oids], error=str(err))
            else:
                log.error("spill I/O error: %r", r)
        self.progress()

    # -- the policy loop ----------------------------------------------------------------------
    def progress(self) -> None:
        """Serve what now fits (in arrival order, skipping what does not fit yet), then
        make room for the rest; again while that freed memory at once (dropped copies).
        Never re-entered: a call from inside just asks for another round."""
        if self._progressing:
            self._again = True
            return
        self._progressing = True
        try:
            while True:
                self._again = False
                for oid, p in list(self.pulls.items()):
                    if p.get("waiting_space"):
                        self._alloc_pull(oid)
                if self.waiting:
                    still = []
                    for w in self.waiting:
                        if not self._serve(w):
                            still.append(w)
                    self.waiting = still
                need = max((w.size for w in self.waiting), default=0)
                if need or self.table.over_high_water():
                    self._make_room(need)
                if not self._again:
                    return
        finally:
            self._progressing = False

    def _evict_copies(self, need: int) -> bool:
        """Drop unused secondary copies, least recently used first, until the store is
        under its high-water mark and ``need`` bytes fit: they cost nothing to lose."""
        t = self.table
        evicted = False
        wanted = {oid for w in self.waiting if w.kind == "pin" for oid in w.args}
        unused = sorted((t.objects[oid] for oid in self.pulled_from
                         if oid in t.objects and not t.objects[oid].pins
                         and t.objects[oid].state == RESIDENT and oid not in wanted),
                        key=lambda o: o.last_use)
        for o in unused:
            if not t.over_high_water() and (not need or t.alloc.largest_free() >= need):
                break
            _src, owner = self.pulled_from.pop(o.oid)
            self._close(t.delete(o.oid))
            self.t.send(owner, (P.OBJECT_COPY, o.oid, self.node_id, False))
            self.event("evict", object_ids=[o.oid.hex()], bytes=o.size)
            evicted = True
        return evicted

    def _make_room(self, need: int) -> None:
        if self._evict_copies(need):
            self._again = True       # serve what fits now; it comes back here if need be
            self.progress()
            return
        entries, ask = self.table.plan_spill(need)
        if entries:
            fid = self.table.new_file_id() if any(not e[3] for e in entries) else None
            self.io.spill(fid, entries)
        now = self.clock()
        for proc, oids in ask.items():
            if proc.startswith(TRANSFER):
                continue      # no process to ask: the pin goes when the transfer ends
            key = (proc, tuple(oids))
            if now - self._asked.get(key, 0) > 0.2:
                self._asked[key] = now
                self.t.send(proc, (P.UNPIN_REQUEST, oids))
        if not entries and self.disk_error and self.waiting:
            self._fail_waiting(lambda w: w.size > 0, self.disk_error + ". Free some disk "
                               "space or pass another spill_dir= to refbook.init().")
        elif ask and not entries and not self.table.spilling_bytes and self.waiting:
            self._fail_if_only_waiters_hold(ask, now)

    def _fail_if_only_waiters_hold(self, ask: dict, now: float) -> None:
        """Nothing is left to spill, and every pin in the way belongs to a process that
        uses it in live values while it is blocked in get()/wait(): most likely waiting
        for the very tasks that need the room.  Waiting would take WAIT_LIMIT and end
        the same way, so fail those requests now, naming the views in the way."""
        stuck = []
        for proc, oids in ask.items():
            s = self._stuck.get(proc)
            if proc.startswith(TRANSFER) or s is None or now - s[2] > 5.0 or \
                    not set(oids) <= s[0]:
                return
            stuck.append((proc, s[1], oids))
        blockers = {proc for proc, _k, _o in stuck}
        said = min(self._stuck[proc][2] for proc in blockers)   # requests older than
        #  that answer: the answer is about them, not about values dropped since
        held = "; ".join(
            f"the {kind} {proc} holds {len(oids)} object(s) of it "
            f"({sum(self.table.objects[o].size for o in oids if o in self.table.objects):,}"
            f" bytes: {', '.join(o.hex() for o in oids[:3])}{' ...' if len(oids) > 3 else ''})"
            for proc, kind, oids in stuck)
        self._fail_waiting(
            lambda w: w.size > 0 and w.kind != "send" and w.proc not in blockers
            and w.since <= said,
            f" because {held} in values it still uses (arrays from get() or put()) while it "
            f"waits in get() or wait(), so they cannot be spilled; delete those values "
            f"(or copy what you need out of them) before waiting")

    def tick(self) -> None:
        now = self.clock()
        for oid, p in list(self.pulls.items()):
            if now - p["since"] > WAIT_LIMIT:
                self._pull_failed(oid, f"the transfer of object {oid.hex()} from node "
                                       f"{p['node']} did not finish in {WAIT_LIMIT:.0f} s")
        self._fail_waiting(lambda w: now - w.since > WAIT_LIMIT,
                           f" after waiting {WAIT_LIMIT:.0f} s")
        if len(self._asked) > 10_000:
            self._asked.clear()
        if self.waiting or any(p.get("waiting_space") for p in self.pulls.values()):
            # ask again: a holder that still used its pins when asked may be done now,
            # and would not say so on its own (it keeps unused pins cached)
            self.progress()

    def _fail_waiting(self, pred, detail: str) -> None:
        keep = []
        for w in self.waiting:
            if not pred(w):
                keep.append(w)
                continue
            if w.kind == "send":
                self.t.send(w.reply_to, (P.PULL_FAIL, w.args[0], "could not restore the "
                                         "object to send it" + detail))
                continue
            if w.kind == "alloc":
                oid, size, _ = w.args
                msg = self.table.full_message(oid, size, detail if detail.startswith(" ")
                                              else "")
                if not detail.startswith(" "):
                    msg = f"{msg} {detail}"
                self._reply(w, (P.ALLOC_REPLY, "full", msg))
            else:
                self._reply(w, (P.PIN_REPLY, "full",
                                f"could not make {w.size:,} bytes of arguments resident"
                                f"{detail}; {self.table.pinned_bytes():,} bytes of the "
                                f"store are in use by running tasks or live arrays"))
        self.waiting = keep

    def _close(self, file_ids) -> None:
        for fid in file_ids:
            self.io.close_file(fid)

    # -- failures and views ---------------------------------------------------------------------
    def process_died(self, addr: str) -> None:
        gone, closed = self.table.process_died(addr)
        self._close(closed)
        for oid in gone:
            self._forget(oid, f"object {oid.hex()} went with its owner {addr}, which died")
            self.copies.pop(oid, None)
        self.waiting = [w for w in self.waiting if w.proc != addr]
        self._unpins.pop(addr, None)
        self._stuck.pop(addr, None)
        self.progress()

    def io_stats(self) -> dict:
        io = self.io
        return {"write_bytes": io.write_bytes, "write_seconds": io.write_seconds,
                "read_bytes": io.read_bytes, "read_seconds": io.read_seconds}

    def states(self) -> dict:
        """Object ids (hex) that are not simply resident, with their state."""
        return {oid.hex(): o.state for oid, o in self.table.objects.items()
                if o.state != "resident"}

    def stop(self) -> None:
        self.io.stop()
