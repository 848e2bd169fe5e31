"""Distributed reference counting by owners (NSDI'21 "Ownership"), without I/O.

Each process keeps one :class:`ReferenceTable`.  The owner of an object (the process
that created it by ``put`` or by submitting the task that returns it) decides when it
is freed; other processes that hold the ref are *borrowers*.

A process *holds* a ref while it has any of:
  ``local``      ObjectRef handles and zero-copy views of the value in this process;
  ``submitted``  tasks this process owns, not yet finished, whose arguments contain it;
  ``contained``  objects this process owns, still alive, whose value contains it;
  ``pinned``     temporary holds that cover a registration in flight (see below);
  ``kept``       holds for lineage: a ``put()`` value read by a finished task kept to
                 be run again, the constructor arguments of an actor that may restart
                 (Ray's ``lineage_ref_count``; apart from ``submitted``, which counts
                 pending and running tasks only).

The owner also keeps ``borrowers``: per process, the number of registrations made for
it.  An owned object is freed when it is not held and ``borrowers`` is empty.

Registration protocol.  Channels between two processes are FIFO.  A process F becomes
a registered borrower of X when some process S that holds X sends ``INC_REF(X, F)`` to
X's owner.  S must keep its own hold until the owner has processed that INC: either
the INC travels ahead of S's own DEC on the S->owner channel (S is registered or is
the owner), or S pins its hold until the owner acknowledges.  F repays all its
registrations with one ``DEC_REF(X, n)`` when its hold reaches zero.  F's DEC may reach
the owner before the INC made for F; the entry then goes negative for a moment, and
the object is not freed while any entry is non-zero.  That, and the rule for S, are the
whole safety argument: nothing is freed while a registration for it is in flight.

A ref that arrives in a task's arguments is *covered* by the caller's ``submitted``
count while the task runs, so the executing worker does not register it.  When the
task ends, every covered ref the worker still holds is reported in the reply and the
caller registers the worker (``report_borrowed``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .messages import DEC_REF, INC_ACK, INC_REF


class Ref:
    __slots__ = ("owner", "local", "submitted", "contained", "pinned", "kept",
                 "borrowers", "registered", "nested", "owner_dead", "lineage", "freed",
                 "site")

    def __init__(self, owner: str):
        self.owner = owner              # address of the owning process
        self.local = 0                  # handles and views in this process
        self.submitted = 0              # our pending tasks that carry it
        self.contained = 0              # our live objects whose value contains it
        self.pinned = 0                 # holds covering registrations in flight
        self.kept = 0                   # holds for lineage (finished tasks, actor restarts)
        self.borrowers: dict[str, int] | None = None   # owner only
        self.registered = 0             # borrower only: registrations to repay
        self.nested: tuple = ()         # owner only: (oid, owner) pairs inside the value
        self.owner_dead = False         # borrower only: the owner died (fate sharing)
        self.lineage = 0                # owner only: kept tasks that take it as an argument
        self.freed = False              # owner only: value gone, entry kept for lineage
        self.site = None                # owner only: (made_by, filename, line) where user
                                        # code put it or submitted its task (state API)

    def lineage_refs(self, put: bool) -> int:
        """Ray's ``lineage_ref_count`` of an object: the finished tasks kept to be run
        again, and the actors that may restart, that take it as an argument."""
        return self.kept + (0 if put else max(self.lineage, 0))

    def held(self) -> bool:
        return bool(self.local or self.submitted or self.contained or self.pinned or
                    self.kept)


@dataclass
class Effects:
    """What the caller must do after an event: free owned objects (store memory,
    inline values, lineage) and send messages ``(address, message tuple)``."""

    free: list = field(default_factory=list)      # owned oids whose value goes, everywhere
    send: list = field(default_factory=list)      # (address, message) to send
    dropped: list = field(default_factory=list)   # borrowed oids no longer held here
    released: list = field(default_factory=list)  # owned oids forgotten entirely

    def __bool__(self) -> bool:
        return bool(self.free or self.send or self.dropped or self.released)


class ReferenceTable:
    def __init__(self, self_address: str):
        self.me = self_address
        self.refs: dict[bytes, Ref] = {}
        self.dead: set[str] = set()
        self.acks: dict[int, tuple] = {}    # ack id -> (owner asked, refs pinned until
                                            # its INC_ACK)
        self._ack_ids = itertools.count(1)

    # -- queries -----------------------------------------------------------------
    def __contains__(self, oid: bytes) -> bool:
        return oid in self.refs

    def get(self, oid: bytes) -> Ref | None:
        return self.refs.get(oid)

    def owns(self, oid: bytes) -> bool:
        r = self.refs.get(oid)
        return r is not None and r.owner == self.me

    # -- creation ----------------------------------------------------------------
    def own(self, oid: bytes, nested: tuple = ()) -> Ref:
        """Record a new object owned here.  ``nested`` lists the ``(oid, owner)`` refs
        its value contains; this process holds each of them while the object lives."""
        r = self.refs.get(oid)
        if r is None:
            r = self.refs[oid] = Ref(self.me)
        r.freed = False               # (again) a value: a rebuilt object comes back here
        if nested:
            r.nested = tuple(nested)
            for x, owner in nested:
                self._entry(x, owner).contained += 1
        return r

    def _entry(self, oid: bytes, owner: str) -> Ref:
        r = self.refs.get(oid)
        if r is None:
            r = self.refs[oid] = Ref(owner)
            if owner in self.dead:
                r.owner_dead = True
        return r

    # -- holds -------------------------------------------------------------------
    def add_local(self, oid: bytes, owner: str) -> Ref:
        r = self._entry(oid, owner)
        r.local += 1
        return r

    def remove_local(self, oid: bytes, fx: Effects) -> None:
        r = self.refs.get(oid)
        if r is not None:
            r.local -= 1
            self._release_if_unheld(oid, r, fx)

    def add_submitted(self, refs) -> None:
        for oid, owner in refs:
            self._entry(oid, owner).submitted += 1

    def remove_submitted(self, refs, fx: Effects) -> None:
        for oid, _owner in refs:
            r = self.refs.get(oid)
            if r is not None:
                r.submitted -= 1
                self._release_if_unheld(oid, r, fx)

    def add_kept(self, refs) -> None:
        for oid, owner in refs:
            self._entry(oid, owner).kept += 1

    def remove_kept(self, refs, fx: Effects) -> None:
        for oid, _owner in refs:
            r = self.refs.get(oid)
            if r is not None:
                r.kept -= 1
                self._release_if_unheld(oid, r, fx)

    def pin(self, refs) -> None:
        for oid, owner in refs:
            self._entry(oid, owner).pinned += 1

    def unpin(self, refs, fx: Effects) -> None:
        for oid, _owner in refs:
            r = self.refs.get(oid)
            if r is not None:
                r.pinned -= 1
                self._release_if_unheld(oid, r, fx)

    def mark_registered(self, oid: bytes, owner: str, n: int = 1) -> None:
        """Someone has sent (or will send ahead of its own DEC) ``n`` INCs for us."""
        r = self._entry(oid, owner)
        if r.owner != self.me:
            r.registered += n

    def release_if_unreferenced(self, oid: bytes, fx: Effects) -> None:
        r = self.refs.get(oid)
        if r is not None:
            self._release_if_unheld(oid, r, fx)

    def _release_if_unheld(self, oid: bytes, r: Ref, fx: Effects) -> None:
        if r.held():
            return
        if r.owner == self.me:
            if r.borrowers:
                return
            if not r.freed:
                r.freed = True
                fx.free.append(oid)
                nested, r.nested = r.nested, ()
                for x, _owner in nested:
                    xr = self.refs.get(x)
                    if xr is not None:
                        xr.contained -= 1
                        self._release_if_unheld(x, xr, fx)
            if r.lineage <= 0:
                del self.refs[oid]
                fx.released.append(oid)
        else:
            del self.refs[oid]
            fx.dropped.append(oid)
            if r.registered and not r.owner_dead:
                fx.send.append((r.owner, (DEC_REF, self.me, oid, r.registered)))

    # -- lineage ----------------------------------------------------------------
    # A task we own is kept (its lineage) while one of its outputs may be needed, so a
    # lost output can be rebuilt by running it again.  Its arguments that we own keep an
    # entry (not their value) while such a task needs them: ``lineage`` counts those
    # tasks; a freed value's entry stays until it reaches zero.

    def add_lineage(self, oids) -> None:
        for oid in oids:
            r = self.refs.get(oid)
            if r is not None and r.owner == self.me:
                r.lineage += 1

    def remove_lineage(self, oids, fx: Effects) -> None:
        for oid in oids:
            r = self.refs.get(oid)
            if r is not None and r.owner == self.me:
                r.lineage -= 1
                self._release_if_unheld(oid, r, fx)

    def clear_nested(self, oid: bytes, fx: Effects) -> None:
        """An object is about to be rebuilt: the refs its old value held go."""
        r = self.refs.get(oid)
        if r is None:
            return
        nested, r.nested = r.nested, ()
        for x, _owner in nested:
            xr = self.refs.get(x)
            if xr is not None:
                xr.contained -= 1
                self._release_if_unheld(x, xr, fx)

    # -- owner side of the registration protocol --------------------------------
    def on_inc(self, oid: bytes, for_addr: str) -> bool:
        """An INC_REF reached us, the owner.  Returns False if the object is unknown
        (a protocol violation worth logging) or the borrower is already dead."""
        r = self.refs.get(oid)
        if r is None or r.owner != self.me:
            return False
        if for_addr in self.dead:
            return True
        b = r.borrowers
        if b is None:
            b = r.borrowers = {}
        n = b.get(for_addr, 0) + 1
        if n:
            b[for_addr] = n
        else:
            del b[for_addr]
        return True

    def on_dec(self, oid: bytes, from_addr: str, n: int, fx: Effects) -> None:
        r = self.refs.get(oid)
        if r is None or r.owner != self.me:
            return
        b = r.borrowers
        if b is None:
            b = r.borrowers = {}
        left = b.get(from_addr, 0) - n
        if left:
            b[from_addr] = left
        else:
            b.pop(from_addr, None)
        self._release_if_unheld(oid, r, fx)

    def on_ack(self, ack: int, fx: Effects) -> None:
        waiting = self.acks.pop(ack, None)
        if waiting:
            self.unpin(waiting[1], fx)

    def handle_inc(self, sender: str, oid: bytes, for_addr: str, ack: int,
                   fx: Effects) -> bool:
        """An INC_REF message reached us: count it and acknowledge if asked."""
        ok = self.on_inc(oid, for_addr)
        if ack:
            fx.send.append((sender, (INC_ACK, ack)))
        return ok

    # -- registering holders -------------------------------------------------------
    def deserialized(self, oid: bytes, owner: str, covered: set | None,
                     cover: tuple | None, fx: Effects) -> None:
        """A ref came out of a value we unpickled.  Hold it, and get ourselves counted
        by its owner unless something already covers us:
          - we own it: nothing to do;
          - it arrived in the arguments of the task we are running (``covered``): the
            caller's submitted count covers us; we report it when the task ends;
          - we are already registered: nothing to do;
          - it was nested in an object ``cover`` that we hold: register ourselves and
            pin ``cover`` until the owner acknowledges."""
        r = self.add_local(oid, owner)
        if owner == self.me:
            return
        if covered is not None:
            covered.add(oid)
            return
        if r.registered:
            return
        ack = self._pin_until_ack([cover], owner) if cover is not None else 0
        r.registered += 1
        fx.send.append((owner, (INC_REF, self.me, oid, self.me, ack)))

    def register_for(self, oid: bytes, owner: str, target: str, fx: Effects,
                     covered=()) -> bool:
        """We are sending ``oid`` to ``target`` inside a task result: make sure
        ``target`` will be counted by the owner.  Returns True if we registered it
        (the caller then knows its hold is counted); False if nothing is needed or
        ``target`` registers itself under the cover of the task's arguments.

        ``covered`` is the set of refs that came in the arguments of the task whose
        result this is: the caller's submitted count keeps those alive until it has
        processed the result."""
        if owner == self.me:
            if target != owner:
                self.on_inc(oid, target)
                return True
            return False
        r = self.refs.get(oid)
        registered = r is not None and r.registered > 0
        if target == owner and (registered or oid in covered):
            # The result travels to the owner on our channel to it, ahead of our own
            # DEC; or the owner's submitted count covers it until the result arrives.
            return False
        if target != owner and registered:
            # our own registration travels ahead of our future DEC: no ack needed
            fx.send.append((owner, (INC_REF, self.me, oid, target, 0)))
            return True
        if target != owner and oid in covered:
            return False
        # We hold it only under the cover of another task still running here; that
        # cover may lapse before the result is processed, so count the receiver now
        # and pin our own hold until the owner acknowledges.
        ack = self._pin_until_ack([(oid, owner)], owner)
        fx.send.append((owner, (INC_REF, self.me, oid, target, ack)))
        return True

    def register_covered(self, oid: bytes, owner: str, target: str, cover: list,
                         fx: Effects) -> None:
        """Register ``target`` for ``oid`` while ``cover`` (refs we hold that keep
        ``oid`` alive: a task's arguments) stays pinned until the owner acknowledges."""
        if owner == self.me:
            if target != self.me:
                self.on_inc(oid, target)
            return
        if target == owner:
            return
        ack = self._pin_until_ack(cover, owner)
        fx.send.append((owner, (INC_REF, self.me, oid, target, ack)))

    def _pin_until_ack(self, cover, owner: str) -> int:
        """Pin ``cover`` until ``owner`` acknowledges the INC_REF numbered by the result
        (or dies: then nothing is left to register with)."""
        if owner in self.dead:
            return 0
        ack = next(self._ack_ids)
        cover = list(cover)
        self.pin(cover)
        self.acks[ack] = (owner, cover)
        return ack

    def task_returned(self, oid: bytes, nested: list, cover: list, fx: Effects) -> None:
        """We own the task that made ``oid``; its value contains ``nested`` =
        ``[(ref, owner, registered_for_us)]``.  We hold each nested ref while ``oid``
        lives; the worker registered us for some, we register ourselves for the rest
        under the cover of the task's arguments."""
        self.own(oid, [(x, o) for x, o, _ in nested])
        for x, o, reg in nested:
            if o == self.me:
                if reg:   # counted for us until now: ``contained`` takes over
                    self.on_dec(x, self.me, 1, fx)
                continue
            if reg:
                self.mark_registered(x, o)
            elif self.refs[x].registered == 0:
                self.mark_registered(x, o)
                self.register_covered(x, o, self.me, cover, fx)

    def task_borrowed(self, borrowed: list, worker: str, cover: list, fx: Effects) -> None:
        """The worker still holds these refs from the task's arguments: register it."""
        for x, o in borrowed:
            self.register_covered(x, o, worker, cover, fx)

    # -- failures ----------------------------------------------------------------
    def on_process_died(self, addr: str, fx: Effects) -> list[bytes]:
        """Forget a dead process: drop its borrower entries on objects we own, and
        mark refs it owned as lost (fate sharing).  Returns the oids of refs we hold
        that were owned by ``addr``."""
        self.dead.add(addr)
        for ack, (to, cover) in list(self.acks.items()):
            if to == addr:       # no INC_ACK will come: the cover has nothing to wait for
                del self.acks[ack]
                self.unpin(cover, fx)
        orphaned = []
        for oid, r in list(self.refs.items()):
            if r.owner == self.me:
                if r.borrowers and addr in r.borrowers:
                    del r.borrowers[addr]
                    self._release_if_unheld(oid, r, fx)
            elif r.owner == addr:
                r.owner_dead = True
                orphaned.append(oid)
        return orphaned

    # -- task boundaries ---------------------------------------------------------
    def report_borrowed(self, covered) -> list[tuple[bytes, str]]:
        """At the end of a task: the covered refs this worker still holds.  The caller
        registers us for each under the cover of the task's arguments.

        We report even if we are already registered: a registration still in flight
        may itself rest on a cover that depends on us (A lends x to B's task, B lends
        it back to A's task, ...), and only the caller of *this* task is sure to hold
        x until its INC is acknowledged.  Each report costs one more unit in our
        final DEC."""
        out = []
        for oid in sorted(covered):
            r = self.refs.get(oid)
            if r is not None and r.owner != self.me and r.held():
                r.registered += 1
                out.append((oid, r.owner))
        return out
