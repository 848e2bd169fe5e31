"""The node manager's object store service: allocation and pin requests, spilling and
restoring under memory pressure, and the events the state API shows.

Requests that cannot be served yet (no room for a new object, or arguments that are on
disk) wait here rather than fail: the service spills least-recently-used primary copies
to make room, and serves whatever waiting request fits first.  A request fails with a
clear message only when it can never fit, the disk is full, or it waited too long.

Not here: the accounting of the arena and the spill files (``protocol.objects``), the
spill threads (``spill``), and transfers between nodes (``transfer``: the server owns
both ends, and serves a transfer's pin like a request).
"""

from __future__ import annotations

import logging
import os
import time

from ..protocol import messages as P
from ..protocol.events import make_ring
from ..protocol.objects import SPILLED, ObjectTable
from .spill import SpillIO
from .transfer import CHUNK as CHUNK  # re-exported: tests size their objects by it
from .transfer import TRANSFER, Incoming, Outgoing

log = logging.getLogger("refbook.store")

WAIT_LIMIT = 120.0     # seconds a request (or a transfer) may wait before it fails


class Waiting:
    __slots__ = ("kind", "ident", "reply_to", "proc", "args", "size", "since", "after",
                 "in_place")

    def __init__(self, kind, ident, reply_to, proc, args, size, since: float):
        self.kind = kind          # "alloc", "pin", or "send" (a transfer out)
        self.ident = ident
        self.reply_to = reply_to
        self.proc = proc
        self.args = args          # alloc: (oid, size, owner); pin, send: oids
        self.size = size
        self.since = since
        self.after = 0            # pin: serve only once this UNPIN of proc's has come
        self.in_place = False     # pin: the reader can map spill files (see ObjectTable)


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
        self._progressing = False                     # progress() is running
        self._again = False                           # ...and should run another round
        self.table = ObjectTable(arena.capacity)
        self.incoming = Incoming(self)                # transfers into this node
        self.outgoing = Outgoing(self)                # transfers out of it
        self.spill_dir = spill_dir
        if io is None:
            os.makedirs(spill_dir, mode=0o700, exist_ok=True)
            io = SpillIO(spill_dir, arena.mm)
        self.io = io
        self.waiting: list[Waiting] = []
        # this node's events (the state API's); REFBOOK_EVENTS=0: none, to measure
        self.events = make_ring(os.environ.get("REFBOOK_EVENTS", "1") != "0", clock=time.time)
        self.disk_error: str | None = None
        self._asked: dict[tuple, float] = {}
        # proc -> (oids its live values use, its kind, when it said so): it answered an
        # UNPIN_REQUEST while blocked in get()/wait()
        self._stuck: dict[str, tuple] = {}
        self._unpins: dict[str, int] = {}       # proc -> number of its last UNPIN here

    def events_since(self, seq: int, **more) -> dict:
        """This node's events after its local ``seq`` (the state API's pull)."""
        evs, dropped, last = self.events.since(seq)
        return {"events": evs, "dropped": dropped, "last": last, "node_id": self.node_id,
                "process": self.t.address, **more}

    # -- requests (ROUTER socket) -------------------------------------------------------------
    def on_request(self, ident: bytes, m: tuple) -> None:
        if m[0] == P.ALLOC:
            _, proc, reply_to, oid, size, owner = m
            w = Waiting("alloc", ident, reply_to, proc, (oid, size, owner), size,
                        self.clock())
        elif m[0] == P.PIN:
            _, proc, reply_to, oids, where, *more = m
            w = Waiting("pin", ident, reply_to, proc, oids, 0, self.clock())
            w.after = more[0] if more else 0
            w.in_place = len(more) > 1 and more[1] is True and self.io.mappable
            for oid, node in where.items():       # stored on another node: fetch it
                if node != self.node_id and oid not in self.table.objects:
                    self.incoming.start(oid, node)
        else:
            log.warning("unexpected request type %r", m[0])
            return
        if not self._serve(w):
            self.waiting.append(w)
            self.make_room(w.size)

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
                self.outgoing.start(w.args[0], w.reply_to)
            else:
                self.outgoing.refuse(w.args[0], w.reply_to, detail)
            return True
        if w.kind == "alloc":
            oid, size, owner = w.args
            status, detail = self.table.create(oid, size, owner, w.proc)
            self.close_files(self.table.take_closed())
            if status == "wait":
                return False
            self._reply(w, (P.ALLOC_REPLY, status, detail))
            return True
        if self._unpins.get(w.proc, 0) < w.after:
            return False        # an UNPIN it sent first is still on its way: not yet
        for oid in w.args:
            if self.incoming.arriving(oid):
                return False                   # still arriving from another node
            err = self.incoming.failed.get(oid)
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
        no room to come back: what ``make_room`` must free for it.  Objects read in
        place get, for an offset, where the reader maps them (``SpillIO.where``)."""
        status, detail = self.table.pin_many(w.proc, w.args, w.in_place)
        if status == "wait":
            for r in detail:
                self.io.restore(*r)
            w.size = sum(self.table.objects[o].size for o in w.args
                         if self.table.state_of(o) == SPILLED)
        elif status == "ok":
            for oid, (off, size) in detail.items():
                if type(off) is tuple:
                    detail[oid] = (self.io.where(off[1], off[2]), size)
                    self.events.add("object_restored", oid, size, size, True)
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
            self.close_files(self.table.delete(oid))
            self._forget(oid, f"object {oid.hex()} was freed by its owner")
            self.incoming.failed.pop(oid, None)
            self.outgoing.free_copies(oid)             # secondary copies go too
        self.progress()

    def _forget(self, oid: bytes, why: str) -> None:
        """``oid`` left the table: a transfer of it, in or out, must stop now (its arena
        range may already hold another object)."""
        self.incoming.forget(oid, why)
        self.outgoing.forget(oid, why)

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

    # -- transfers between nodes (transfer.py) -------------------------------------------------
    def handlers(self) -> dict:
        return {P.PULL: self.outgoing.on_pull, P.PULL_META: self.incoming.on_pull_meta,
                P.PULL_CHUNK: self.outgoing.on_pull_chunk, P.CHUNK: self.incoming.on_chunk,
                P.PULL_DONE: self.outgoing.on_pull_done,
                P.PULL_FAIL: self.incoming.on_pull_fail}

    def pin_to_send(self, oid: bytes, requester: str) -> None:
        """Pin ``oid`` for a transfer to ``requester``, then start it; if it is on disk
        here, it waits like a request (restored, then sent)."""
        w = Waiting("send", None, requester, TRANSFER + requester, [oid], 0, self.clock())
        if not self._serve(w):
            self.waiting.append(w)
            self.make_room(w.size)

    def node_died(self, node_id: str) -> None:
        """Transfers from a dead node fail; copies it held are forgotten."""
        self.incoming.node_died(node_id)
        self.outgoing.node_died(node_id)

    # The transfers' state and handlers under their former names, for
    # tests/unit/test_transfer.py, which drives them message by message.
    pulls = property(lambda self: self.incoming.pulls)
    copies = property(lambda self: self.outgoing.copies)
    _on_pull = property(lambda self: self.outgoing.on_pull)
    _on_pull_chunk = property(lambda self: self.outgoing.on_pull_chunk)
    _on_pull_done = property(lambda self: self.outgoing.on_pull_done)
    _on_pull_meta = property(lambda self: self.incoming.on_pull_meta)
    _on_chunk = property(lambda self: self.incoming.on_chunk)

    # -- I/O completions ------------------------------------------------------------------------
    def on_io(self) -> None:
        self.io.drain_signal()
        while self.io.done:
            r = self.io.done.popleft()
            if r[0] == "spilled":
                _, fid, written, size, reused = r
                self.close_files(self.table.spill_done(fid, written, size, reused))
                objects = self.table.objects
                for oid in [*written, *reused]:
                    n = objects[oid].size if oid in objects else 0
                    self.events.add("object_spilled", oid, n, n, fid)
            elif r[0] == "restored":
                _, oid, err = r
                self.table.restore_done(oid, err is None)
                o = self.table.objects.get(oid)
                if err is None:
                    n = o.size if o else 0
                    self.events.add("object_restored", oid, n, n, False)
                else:
                    log.error("restore of %s failed: %s", oid.hex(), err)
            elif r[0] == "spill_failed":
                _, oids, err = r
                self.table.spill_failed(oids)
                self.disk_error = f"spilling to {self.spill_dir} failed: {err}"
                self.events.note("spill_failed", object_ids=[o.hex() for o in oids],
                                 error=str(err))
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
                self.incoming.retry_allocations()
                if self.waiting:
                    still = []
                    for w in self.waiting:
                        if not self._serve(w):
                            still.append(w)
                    self.waiting = still
                need = max((w.size for w in self.waiting), default=0)
                if need or self.table.over_high_water():
                    self.make_room(need)
                if not self._again:
                    return
        finally:
            self._progressing = False

    def make_room(self, need: int) -> None:
        """Free ``need`` bytes (and get under the high-water mark): drop unused
        secondary copies first, then spill, and ask holders to let go of their pins."""
        wanted = {oid for w in self.waiting if w.kind == "pin" for oid in w.args}
        if self.incoming.evict_copies(need, keep=wanted):
            self._again = True       # serve what fits now; it comes back here if need be
            self.progress()
            return
        pins = [w for w in self.waiting if w.kind != "alloc"]
        allocs = [w.size for w in self.waiting if w.kind == "alloc"]
        if self.incoming.waiting_for_space() or not pins:
            allocs.append(need)                  # a transfer's allocation, or unknown
        entries, ask = self.table.plan_spill(need, max(allocs, default=0),
                                             keep=set(pins[0].args) if pins else ())
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
        self.incoming.expire(now, WAIT_LIMIT)
        self._fail_waiting(lambda w: now - w.since > WAIT_LIMIT,
                           f" after waiting {WAIT_LIMIT:.0f} s")
        if len(self._asked) > 10_000:
            self._asked.clear()
        if self.waiting or self.incoming.waiting_for_space():
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
                self.outgoing.refuse(w.args[0], w.reply_to, "could not restore the object "
                                     "to send it" + detail)
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

    def close_files(self, file_ids) -> None:
        """Close the spill files the table no longer needs (in the I/O thread's order)."""
        for fid in file_ids:
            self.io.close_file(fid)

    # -- failures and views ---------------------------------------------------------------------
    def process_died(self, addr: str) -> None:
        gone, closed = self.table.process_died(addr)
        self.close_files(closed)
        for oid in gone:
            self._forget(oid, f"object {oid.hex()} went with its owner {addr}, which died")
            self.outgoing.forget_copies(oid)
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
