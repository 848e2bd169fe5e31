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

from . import protocol as P
from .spill import SpillIO
from .store import SPILLED, ObjectTable

log = logging.getLogger("refbook.store")

WAIT_LIMIT = 120.0     # seconds a request may wait for memory before it fails


class Waiting:
    __slots__ = ("kind", "ident", "reply_to", "proc", "args", "size", "since")

    def __init__(self, kind, ident, reply_to, proc, args, size):
        self.kind = kind          # "alloc" or "pin"
        self.ident = ident
        self.reply_to = reply_to
        self.proc = proc
        self.args = args          # alloc: (oid, size, owner); pin: oids
        self.size = size
        self.since = time.monotonic()


class StoreServer:
    def __init__(self, transport, arena, node_id: str, spill_dir: str):
        self.t = transport
        self.node_id = node_id
        self.table = ObjectTable(arena.capacity)
        os.makedirs(spill_dir, mode=0o700, exist_ok=True)
        self.spill_dir = spill_dir
        self.io = SpillIO(spill_dir, arena.mm)
        self.waiting: list[Waiting] = []
        self.events: deque = deque(maxlen=10_000)
        self.disk_error: str | None = None
        self._asked: dict[tuple, float] = {}

    def event(self, kind: str, **fields) -> None:
        self.events.append({"time": time.time(), "kind": kind, "node_id": self.node_id,
                            **fields})

    # -- requests (ROUTER socket) -------------------------------------------------------------
    def on_request(self, ident: bytes, m: tuple) -> None:
        if m[0] == P.ALLOC:
            _, proc, reply_to, oid, size, owner = m
            w = Waiting("alloc", ident, reply_to, proc, (oid, size, owner), size)
        elif m[0] == P.PIN:
            _, proc, reply_to, oids = m
            w = Waiting("pin", ident, reply_to, proc, oids, 0)
        else:
            log.warning("unexpected request type %r", m[0])
            return
        if not self._serve(w):
            self.waiting.append(w)
            self._make_room(w.size)

    def _reply(self, w: Waiting, msg: tuple) -> None:
        self.t.reply_rpc(w.ident, w.reply_to, msg)

    def _serve(self, w: Waiting) -> bool:
        """Try to answer ``w`` now; False if it must wait."""
        if w.kind == "alloc":
            oid, size, owner = w.args
            status, detail = self.table.create(oid, size, owner, w.proc)
            if status == "wait":
                return False
            self._reply(w, (P.ALLOC_REPLY, status, detail))
            return True
        status, detail = self.table.pin_many(w.proc, w.args)
        if status == "wait":
            for oid, fid, foff, aoff, size in detail:
                self.io.restore(oid, fid, foff, aoff, size)
            w.size = sum(self.table.objects[o].size for o in w.args
                         if self.table.state_of(o) == SPILLED)
            return False
        self._reply(w, (P.PIN_REPLY, status, detail))
        return True

    # -- messages (inbox) -------------------------------------------------------------------
    def on_seal(self, m) -> None:
        _, oid, _off, _size, _owner, pin_for = m
        self.table.seal(oid, pin_for)
        if self.table.over_high_water():
            self._make_room(0)

    def on_free(self, oids) -> None:
        for oid in oids:
            self._close(self.table.delete(oid))
        self.progress()

    def on_unpin(self, proc: str, oids) -> None:
        self.table.unpin(proc, oids)
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
        make room for the rest."""
        if self.waiting:
            still = []
            for w in self.waiting:
                if not self._serve(w):
                    still.append(w)
            self.waiting = still
        need = max((w.size for w in self.waiting), default=0)
        if need or self.table.over_high_water():
            self._make_room(need)

    def _make_room(self, need: int) -> None:
        entries, ask = self.table.plan_spill(need)
        if entries:
            fid = self.table.new_file_id() if any(not e[3] for e in entries) else None
            self.io.spill(fid, entries)
        now = time.monotonic()
        for proc, oids in ask.items():
            key = (proc, tuple(oids))
            if now - self._asked.get(key, 0) > 0.2:
                self._asked[key] = now
                self.t.send(proc, (P.UNPIN_REQUEST, oids))
        if not entries and self.disk_error and self.waiting:
            self._fail_waiting(lambda w: w.size > 0, self.disk_error + ". Free some disk "
                               "space or pass another spill_dir= to refbook.init().")

    def tick(self) -> None:
        now = time.monotonic()
        self._fail_waiting(lambda w: now - w.since > WAIT_LIMIT,
                           f" after waiting {WAIT_LIMIT:.0f} s")
        if len(self._asked) > 10_000:
            self._asked.clear()

    def _fail_waiting(self, pred, detail: str) -> None:
        keep = []
        for w in self.waiting:
            if not pred(w):
                keep.append(w)
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
        _gone, closed = self.table.process_died(addr)
        self._close(closed)
        self.waiting = [w for w in self.waiting if w.proc != addr]
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
