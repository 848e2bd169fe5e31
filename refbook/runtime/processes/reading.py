"""How a process reads objects (part of :class:`~refbook.runtime.processes.core.CoreWorker`):
asking owners where a value is, waiting for values, pinning stored values in the node's
arena, and decoding them."""

from __future__ import annotations

import os
import time

from ... import exceptions as exc
from ..data.arena import read_mapped
from ..data.serialization import deserialize
from ..data.spill import map_spilled
from ..protocol import messages as P
from ..protocol.entries import ERROR, INLINE, STORED
from ..protocol.refcount import Effects
from .object_ref import ObjectRef
from .waiting import _Countdown, _fresh, _tls

BLOCK_AFTER = 0.1    # s: a worker waiting longer in get()/wait() lends its CPU back


class ObjectReading:
    """Mixed into CoreWorker; uses its ``lock``, ``values``, ``pins``, ``rt`` and
    ``transport``."""

    # A worker sets this: called with the ids of a ``get`` that is about to wait, it
    # raises if that wait could never end (see Worker.check_get).
    check_get = None

    # --------------------------------------------------------------------- fetch
    def _on_get_object(self, msg):
        _, requester, req, oid = msg
        self.owner.get_object(requester, req, oid)
        self._flush()

    def _on_object_reply(self, msg):
        _, _req, oid, entry = msg
        if not self.owner.object_reply(oid, entry):
            # the owner has not heard of that node's death yet: ask again shortly
            self._refetch.append((time.monotonic() + 0.2, oid, self.rt.get(oid).owner))
        self._flush()

    # ----------------------------------------------------------------------- get
    def on_ready(self, ref: ObjectRef, callback) -> None:
        """Run ``callback()`` (in some thread) once ``ref``'s value is known here."""
        with self.lock:
            if ref._id in self.values:
                ready = True
            else:
                ready = False
                self.waiters.setdefault(ref._id, []).append(callback)
                if ref._owner != self.me:
                    self._fetch(ref._id, ref._owner)
        if ready:
            callback()

    def wait_ready(self, refs: list, num: int, timeout: float | None,
                   fail_fast: bool = False) -> set:
        """Block until at least ``num`` of ``refs`` have values here (or timeout).
        Returns the set of ready object ids.  ``fail_fast``: also return as soon as one
        of them holds an error (as Ray's ``get`` of a list raises the first error at
        once, however long the others take)."""
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)
            values = self.values
            ready = {r._id for r in refs if r._id in values}
            if len(ready) >= num or (fail_fast and self._holds_error(ready)):
                return ready
            missing = {}
            for r in refs:
                if r._id not in ready:
                    missing[r._id] = r._owner
            countdown = _Countdown(num - len(ready))
            self._countdowns.add(countdown)
            hits = {}
            for oid, owner in missing.items():
                hits[oid] = self._error_hit(oid, countdown) if fail_fast else countdown.hit
                self.waiters.setdefault(oid, []).append(hits[oid])
                if owner != self.me:
                    self._fetch(oid, owner)
        blocked = False
        try:
            if self.kind == "worker":
                # Values that exist arrive within a round trip: only a wait longer than
                # BLOCK_AFTER gives the task's CPU back (a worker that gives it back for
                # every get makes the node start more workers than it has CPUs, as
                # Ray's does not for objects already available)
                first = BLOCK_AFTER if timeout is None else min(timeout, BLOCK_AFTER)
                if not self._wait_event(countdown.ev, first) and \
                        (timeout is None or timeout > first):
                    blocked = True
                    self._block()
                    self._wait_event(countdown.ev, None if timeout is None
                                     else timeout - first)
            else:
                self._wait_event(countdown.ev, timeout)
        finally:
            self._countdowns.discard(countdown)
            with self.lock:            # a timed-out wait leaves no callbacks behind
                for oid in missing:
                    ws = self.waiters.get(oid)
                    if ws and hits[oid] in ws:
                        ws.remove(hits[oid])
                        if not ws:
                            del self.waiters[oid]
            if blocked:
                self.transport.send(self.node_address, (P.UNBLOCKED, self.me))
        if not self.alive:
            raise exc.RefbookError("refbook was shut down while waiting")
        with self.lock:
            values = self.values
            ready.update(oid for oid in missing if oid in values)
        return ready

    def _holds_error(self, oids) -> bool:
        """Whether any of ``oids`` has a value here that is an error (lock held)."""
        values = self.values
        return any(values.get(oid, (None,))[0] == ERROR for oid in oids)

    def _error_hit(self, oid: bytes, countdown: _Countdown):
        """A waiter for ``oid`` that ends the whole wait if its value is an error."""
        def hit():
            if self.values.get(oid, (None,))[0] == ERROR:
                countdown.ev.set()
            else:
                countdown.hit()
        return hit

    def first_error(self, refs: list, ready) -> BaseException | None:
        """The error held by the first of ``refs`` in ``ready`` that holds one, or None."""
        with self.lock:
            values = self.values
            for r in refs:
                e = values.get(r._id) if r._id in ready else None
                if e is not None and e[0] == ERROR:
                    return e[1]
        return None

    def _block(self) -> None:
        self.transport.send(self.node_address, (P.BLOCKED, self.me))
        if self.on_block is not None:
            self.on_block()

    def get(self, refs: list, timeout: float | None):
        ids = [r._id for r in refs]
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(20):
            if not all(oid in self.values for oid in ids):
                if self.check_get is not None:     # a worker: would this wait for ever?
                    self.check_get(ids)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = self.wait_ready(refs, len(set(ids)), left, fail_fast=True)
                if len(ready) < len(set(ids)):
                    err = self.first_error(refs, ready)
                    if err is not None:      # one failed: raise it, do not wait on
                        raise _fresh(err)
                    pending = [r.hex() for r in refs if r._id not in ready]
                    raise exc.GetTimeoutError(
                        f"get() timed out after {timeout} s; {len(pending)} of {len(refs)} "
                        f"ref(s) not ready: {', '.join(pending[:5])}"
                        f"{' ...' if len(pending) > 5 else ''}")
            values = self.values
            entries = [(r._id, values[r._id]) for r in refs]
            try:
                self.pin_for_read(entries)
                break
            except exc.ObjectLostError:
                # The copy we were pointed at is gone.  If its node died, the owner is
                # rebuilding it (or will tell us it cannot): wait for the new value.
                if attempt == 19 or not self._lost_in_flight(entries):
                    raise
        out = []
        try:
            for r in refs:
                out.append(self.decode(r._id, r._owner, values[r._id], cover=True))
        except BaseException:
            self.unreserve([r._id for r in refs[len(out) + 1:]], values)
            raise
        return out

    def _lost_in_flight(self, entries) -> bool:
        """After a failed pin: did any of these values change or go away (its node was
        declared dead, so its owner rebuilds it)?  Waits up to a few heartbeats."""
        for _ in range(50):
            with self.lock:
                for oid, e in entries:     # borrowed copies on a dead node: ask again
                    if e[0] == STORED and e[1] in self.dead_nodes and \
                            self.values.get(oid) is e and not self.rt.owns(oid):
                        del self.values[oid]
                        r = self.rt.get(oid)
                        if r is not None:
                            self._fetch(oid, r.owner)
                if any(self.values.get(oid) is not entry for oid, entry in entries):
                    return True
                if any(e[0] == STORED and e[1] in self.dead_nodes for _oid, e in entries):
                    return True
            time.sleep(0.05)
        return False

    # --------------------------------------------------------------- releases
    def release_soon(self, oid: bytes) -> None:
        """Called from ``ObjectRef.__del__`` and view finalizers, in any thread.  The
        next API call in this process, or the I/O thread within ``TICK`` seconds,
        carries it out; waking the I/O thread for every dropped ref would cost more
        than it saves on the per-task path."""
        if self.alive:
            self._releases.append(oid)

    def _view_gone(self, oid: bytes) -> None:
        """The last view of ``oid`` made by one read died (any thread)."""
        if self.alive:
            self._view_releases.append(oid)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _drain_releases(self, fx: Effects) -> None:
        rel = self._releases
        rt = self.rt
        while rel:
            rt.remove_local(rel.popleft(), fx)
        views = self._view_releases
        while views:
            oid = views.popleft()
            p = self.pins.get(oid)
            if p is not None:
                p[2] -= 1
            rt.remove_local(oid, fx)

    # ------------------------------------------------------------------- pins
    def pin_for_read(self, items) -> None:
        """Make sure every stored object in ``items`` (``(oid, entry)`` pairs) is
        resident and pinned for this process, and reserve one view of it per item.
        Cached pins need no message; the rest are pinned in one request, which the node
        may answer only once it has restored them from disk (admission control)."""
        stored = [oid for oid, e in items if e[0] == STORED]
        if not stored:
            return
        missing = []
        with self.lock:
            after = self._unpin_seq           # served after the UNPINs sent up to now
            pins = self.pins
            for oid in stored:
                p = pins.get(oid)
                if p is None:
                    missing.append(oid)
                else:
                    p[2] += 1
        if not missing:
            return
        where = {}
        entries = dict(items)
        for oid in missing:
            node = entries[oid][1]
            if node != self.node_id:
                where[oid] = node          # the node pulls it over first
        want = list(dict.fromkeys(missing))
        status, detail = self._pin_request(want, where, after)
        if status != "ok":
            self.unreserve([o for o in stored if o not in missing], self.values)
            if status == "full":
                raise exc.ObjectStoreFullError(detail)
            raise exc.ObjectLostError(detail)
        with self.lock:
            for oid in missing:
                p = self.pins.get(oid)
                if p is None:
                    off, size = detail[oid]
                    self.pins[oid] = [off, size, 1]
                else:
                    p[2] += 1

    # whether this process may read spilled objects where they lie (it stops trying
    # after a spill file it was pointed at could not be mapped: the node then restores)
    map_spill_files = True

    def _pin_request(self, want: list, where: dict, after: int):
        """Ask the node to pin ``want``: ``(status, detail)`` of its PIN_REPLY, with
        every object it lets us read from its spill file already mapped (the offset
        is then ``(mapping, start)``)."""
        in_place = self.map_spill_files
        for _ in range(2):
            try:
                _, status, detail = self.transport.request(
                    self.node_address,
                    lambda reply_to, in_place=in_place: (P.PIN, self.me, reply_to, want,
                                                         where, after, in_place), 300)
            except TimeoutError:
                return "full", "the node did not make the objects resident in 300 s"
            if status != "ok":
                return status, detail
            try:
                for oid, (off, size) in detail.items():
                    if type(off) is tuple:
                        path, file_offset, header = off
                        detail[oid] = (map_spilled(path, file_offset, size, header), size)
                return status, detail
            except OSError as e:
                # The object went meanwhile, or (not allowed) the node manager is
                # another user's: ask again for copies in the arena, and after a
                # refusal, always (the pins taken stay, as for any pin)
                in_place = False
                if isinstance(e, PermissionError):
                    self.map_spill_files = False
        return status, detail

    def unreserve(self, oids, values) -> None:
        with self.lock:
            for oid in oids:
                p = self.pins.get(oid)
                if p is not None and values.get(oid, (None,))[0] == STORED:
                    p[2] -= 1

    def _on_unpin_request(self, msg):
        self._release_pins(msg[1], asked=True)

    def _release_pins(self, oids, asked: bool = False) -> None:
        """Give up this process's cached pins on ``oids`` that no live value uses.
        ``asked``: the node needs room; also say which pins live values still use, and
        whether this process is blocked in get()/wait() now: if it is waiting for the
        very task that needs the room, only its user can help, and the node says so at
        once instead of letting the task wait."""
        released, in_use = [], []
        for oid in oids:
            p = self.pins.get(oid)
            if p is None:
                continue
            if p[2] <= 0:
                del self.pins[oid]
                released.append(oid)
            elif asked:
                in_use.append(oid)
        if released or in_use:
            self.send_unpin(released, in_use, asked and bool(self._countdowns))

    def send_unpin(self, oids, in_use=(), waiting: bool = False) -> None:
        """Tell the node we dropped our cached pins of ``oids`` (caller holds the lock,
        and removed them from ``self.pins``).  UNPINs are numbered: a PIN we send later
        goes over another connection and may overtake this one, so it carries the number
        of the last UNPIN, and the node serves it only after that UNPIN (else the late
        UNPIN would drop the new pin and leave a live view unpinned)."""
        self._unpin_seq += 1
        self.transport.send(self.node_address, (P.UNPIN, self.me, oids, in_use, waiting,
                                                self.kind, self._unpin_seq))

    def decode(self, oid: bytes, owner: str, entry: tuple, cover: bool):
        """Rebuild a value from its entry.  Stored values become read-only views of
        the arena; while any view lives this process holds ``oid``."""
        kind = entry[0]
        if kind == ERROR:
            # Raise a copy: a raised exception's traceback references this frame and
            # its refs, and the stored one must not keep them alive.
            raise _fresh(entry[1])
        prev = getattr(_tls, "cover", None)
        _tls.cover = (oid, owner) if cover else None
        try:
            if kind == INLINE:
                return deserialize(entry[1], entry[2])
            with self.lock:
                offset, size, _views = self.pins[oid]    # reserved by pin_for_read
                self.rt.add_local(oid, owner)
                covered = getattr(_tls, "covered", None)
                if covered is not None:
                    covered.add(oid)
            if type(offset) is int:
                return self.arena.read(offset, size, lambda: self._view_gone(oid))
            return read_mapped(*offset, size, lambda: self._view_gone(oid))
        finally:
            _tls.cover = prev

    def deserialized_ref(self, oid: bytes, owner: str) -> ObjectRef:
        """A ref came out of a value we unpickled (see ReferenceTable.deserialized)."""
        self.register_deserialized(oid, owner)
        return ObjectRef(oid, owner, self)

    def register_deserialized(self, oid: bytes, owner: str) -> None:
        """Count one new local handle of ``oid`` (an ObjectRef or an ActorHandle about
        to be made) and get ourselves registered with its owner if needed."""
        with self.lock:
            fx = Effects()
            self.rt.deserialized(oid, owner, getattr(_tls, "covered", None),
                                 getattr(_tls, "cover", None), fx)
            self._apply(fx)
