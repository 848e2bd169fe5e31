"""Store accounting for one node's shared-memory arena, without I/O.

:class:`Allocator` hands out 64-byte aligned ranges of the arena (first fit over a
free list kept sorted by offset, with neighbours merged on free).  :class:`ObjectTable`
records every object on the node: where it is (arena, spill file, or both), who owns
it, who created it, and which processes *pin* it.

Pins.  A process that maps an object into its address space pins it first (and keeps
the pin cached while it may map it again); the node never moves or spills a pinned
object.  When the node needs memory and only pinned objects are left, it asks the
pinning processes to drop the pins they are not using (``ask_unpin``).

Object states::

    RESIDENT  --plan_spill-->  SPILLING  --spill_done-->  SPILLED
        ^                         |  (pinned meanwhile: stays RESIDENT)   |
        +-------- restore_done <-- RESTORING <------- pin_many -----------+

A spilled object keeps its place in its spill file after a restore, so spilling it
again costs nothing; a spill file is released when no object in it is alive.  A reader
that can map spill files (``pin_many(..., in_place=True)``) reads a spilled object
where it lies when restoring it would take room the arena does not have free: it pins
the object SPILLED, and nothing waits, is copied or is spilled for it.
The node manager drives all of this from messages and I/O completions.
"""

from __future__ import annotations

import bisect
import itertools

ALIGN = 64
RESIDENT, SPILLING, SPILLED, RESTORING = "resident", "spilling", "spilled", "restoring"


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) & ~(a - 1)


class Allocator:
    def __init__(self, capacity: int):
        self.capacity = capacity - capacity % ALIGN
        self._offsets: list[int] = [0]                 # free block starts, sorted
        self._free: dict[int, int] = {0: self.capacity}  # start -> size
        self._used: dict[int, int] = {}                 # start -> size
        self.used = 0

    def alloc(self, size: int) -> int | None:
        size = align_up(max(size, 1))
        for off in self._offsets:
            blk = self._free[off]
            if blk >= size:
                i = bisect.bisect_left(self._offsets, off)
                del self._offsets[i]
                del self._free[off]
                if blk > size:
                    rest = off + size
                    self._offsets.insert(i, rest)
                    self._free[rest] = blk - size
                self._used[off] = size
                self.used += size
                return off
        return None

    def free(self, off: int) -> None:
        size = self._used.pop(off)
        self.used -= size
        i = bisect.bisect_left(self._offsets, off)
        # merge with the following block
        if i < len(self._offsets) and self._offsets[i] == off + size:
            nxt = self._offsets.pop(i)
            size += self._free.pop(nxt)
        # merge with the preceding block
        if i > 0:
            prev = self._offsets[i - 1]
            if prev + self._free[prev] == off:
                self._free[prev] += size
                return
        self._offsets.insert(i, off)
        self._free[off] = size

    def largest_free(self) -> int:
        return max(self._free.values(), default=0)

    def check(self) -> None:
        """Invariant check for tests: free and used ranges tile the arena exactly."""
        spans = sorted([(o, s) for o, s in self._free.items()] + list(self._used.items()))
        pos = 0
        for o, s in spans:
            assert o == pos, f"gap or overlap at {pos}/{o}"
            pos = o + s
        assert pos == self.capacity
        assert self._offsets == sorted(self._free)
        for a, b in zip(self._offsets, self._offsets[1:], strict=False):
            assert a + self._free[a] < b, "adjacent free blocks not merged"


class StoredObject:
    __slots__ = ("oid", "offset", "size", "owner", "creator", "sealed", "state", "pins",
                 "spill", "last_use", "wanted")

    def __init__(self, oid: bytes, offset: int | None, size: int, owner: str, creator: str):
        self.oid = oid
        self.offset = offset            # arena offset, None while only on disk
        self.size = size
        self.owner = owner
        self.creator = creator
        self.sealed = False
        self.state = RESIDENT
        self.pins: set[str] = set()     # processes that may have it mapped
        self.spill: tuple | None = None  # (file id, offset in file) once written out
        self.last_use = 0
        # A pin request that waits (for restores, room or a seal) needs it: spilling
        # it to stay under the high-water mark would undo that request's restores,
        # again and again.  Only a waiting allocation may take it.
        self.wanted = False


class SpillFile:
    __slots__ = ("file_id", "size", "live")

    def __init__(self, file_id: int, size: int, live: set):
        self.file_id = file_id
        self.size = size
        self.live = live                # oids whose bytes in this file are still needed


class ObjectTable:
    """Objects on one node.  Methods return what the caller must do next."""

    def __init__(self, capacity: int, high_water: float = 0.8, low_water: float = 0.6):
        self.alloc = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}
        self.files: dict[int, SpillFile] = {}
        self.high_water = high_water    # start spilling above this fraction in use
        self.low_water = low_water      # and spill down to this one
        self._clock = itertools.count(1)
        self._file_ids = itertools.count(1)
        self.spilled_bytes = 0          # now on disk only
        self.spilled_objects = 0
        self.spilled_total = 0          # bytes written, ever
        self.restored_bytes = 0         # bytes read back, ever (copied or mapped)
        self.mapped_bytes = 0           # of those, read in place from spill files
        self.spilling_bytes = 0         # being written now
        self._doomed: dict[bytes, int] = {}   # freed while a restore writes its range
        self._closed: list[int] = []    # spill files emptied inside create(): take_closed()

    @property
    def capacity(self) -> int:
        return self.alloc.capacity

    # -- creation -----------------------------------------------------------------------
    def create(self, oid: bytes, size: int, owner: str, creator: str):
        """Reserve arena space.  Returns ``("ok", offset)``; ``("exists", offset)`` when
        a sealed copy is already resident (a retried task); ``("wait", None)`` when the
        space must first be made by spilling; or ``("full", message)``."""
        if size > self.capacity:
            return ("full", self.full_message(oid, size))
        o = self.objects.get(oid)
        if o is not None:
            if o.sealed and o.size == size and o.state == RESIDENT:
                return ("exists", o.offset)
            # an earlier attempt died before sealing, or a stale copy (maybe on disk)
            self._closed += self.delete(oid)
        off = self.alloc.alloc(size)
        if off is None:
            return ("wait", None)
        o = self.objects[oid] = StoredObject(oid, off, size, owner, creator)
        o.last_use = next(self._clock)
        return ("ok", off)

    def take_closed(self) -> list[int]:
        """Ids of spill files that ``create`` emptied by replacing a stale copy: the
        caller closes them, as it does those ``delete`` returns."""
        closed, self._closed = self._closed, []
        return closed

    def full_message(self, oid: bytes, size: int, detail: str = "") -> str:
        cap = self.capacity
        if size > cap:
            return (f"object {oid.hex()} is {size:,} bytes, larger than the whole object "
                    f"store ({cap:,} bytes). Pass a larger object_store_memory= to "
                    f"refbook.init(), or split the value into smaller objects.")
        return (f"object {oid.hex()} needs {size:,} bytes but the object store "
                f"({cap:,} bytes) could not free that much{detail}: "
                f"{self.pinned_bytes():,} bytes are in use by running tasks or live "
                f"arrays. Drop refs and arrays you no longer need, or pass a larger "
                f"object_store_memory= to refbook.init().")

    def seal(self, oid: bytes, pin_for: str | None = None) -> StoredObject | None:
        o = self.objects.get(oid)
        if o is not None:
            o.sealed = True
            if pin_for:
                o.pins.add(pin_for)
        return o

    # -- pins ---------------------------------------------------------------------------
    def pin_many(self, proc: str, oids: list, in_place: bool = False):
        """Pin every object in ``oids`` for ``proc``, all or nothing.  Returns
        ``("ok", {oid: (offset, size)})``; ``("wait", restores)`` where ``restores``
        lists ``(oid, file_id, file_offset, arena_offset, size)`` reads to start now
        (retry when they finish, memory frees up, or a missing seal arrives);
        ``("full", message)`` when they can never fit at once; or ``("error",
        message)``.  The caller must start every read it gets: the objects are
        RESTORING from now on, and nothing else reads them back.  ``in_place``: a
        spilled object with no free room to come back to is pinned where it lies, its
        offset ``("file", file_id, file_offset)``."""
        unsealed = False
        for oid in oids:
            o = self.objects.get(oid)
            if o is None:
                return ("error", f"object {oid.hex()} is not in the object store of this "
                                 f"node (it was freed, or its node was lost)")
            # Being written: its creator's SEAL is on its way.  The reader heard of the
            # object from its owner, over another connection, and may be here first.
            unsealed = unsealed or not o.sealed
        mapped = self._read_in_place(oids) if in_place else set()
        total = sum(self.objects[oid].size for oid in set(oids) - mapped)
        if total > self.capacity:         # nothing is lost: they can never fit at once
            if len(oids) == 1:
                return ("full", self.full_message(oids[0], total))
            return ("full", f"the {len(oids)} objects needed at once take {total:,} "
                            f"bytes, more than the whole object store ({self.capacity:,} "
                            f"bytes), so they cannot all be in memory together. Get them "
                            f"(or pass them to a task) a few at a time, or pass a larger "
                            f"object_store_memory= to refbook.init().")
        restores = []
        waiting = False
        for oid in oids:
            o = self.objects[oid]
            if o.state == SPILLED and oid not in mapped:
                r = self._start_restore(o)
                if r is None:
                    waiting = True
                else:
                    restores.append(r)
            elif o.state == RESTORING:
                waiting = True
        if restores or waiting or unsealed:
            for oid in oids:
                self.objects[oid].wanted = True
            return ("wait", restores)
        out = {}
        for oid in oids:
            o = self.objects[oid]
            o.wanted = False
            o.pins.add(proc)
            o.last_use = next(self._clock)
            if oid in mapped:
                out[oid] = (("file", *o.spill), o.size)
                self.restored_bytes += o.size
                self.mapped_bytes += o.size
            else:
                out[oid] = (o.offset, o.size)
        return ("ok", out)

    def _read_in_place(self, oids) -> set:
        """The spilled objects among ``oids`` that are read in place: those that would
        not come back under the high-water mark without spilling something."""
        room = int(self.high_water * self.capacity) - self.alloc.used
        mapped = set()
        for oid in dict.fromkeys(oids):
            o = self.objects[oid]
            if o.state != SPILLED:
                continue
            if o.size <= room and self.alloc.largest_free() >= o.size:
                room -= o.size
            else:
                mapped.add(oid)
        return mapped

    def _start_restore(self, o: StoredObject):
        off = self.alloc.alloc(o.size)
        if off is None:
            return None
        o.offset = off
        o.state = RESTORING
        self.spilled_bytes -= o.size
        self.spilled_objects -= 1
        return (o.oid, o.spill[0], o.spill[1], off, o.size)

    def prefetch(self, oid: bytes):
        """Start reading a spilled object back if there is room now (nothing is spilled
        for it, and it is not pinned).  Returns the read to start, or None."""
        o = self.objects.get(oid)
        if o is None or o.state != SPILLED:
            return None
        if self.alloc.used + o.size > self.high_water * self.capacity:
            return None
        return self._start_restore(o)

    def unpin(self, proc: str, oids) -> None:
        for oid in oids:
            o = self.objects.get(oid)
            if o is not None:
                o.pins.discard(proc)

    def pinned_bytes(self) -> int:
        return sum(o.size for o in self.objects.values()
                   if o.offset is not None and (o.pins or not o.sealed))

    # -- spilling -----------------------------------------------------------------------
    def over_high_water(self) -> bool:
        return self.alloc.used - self.spilling_bytes > self.high_water * self.capacity

    def plan_spill(self, need: int = 0, alloc_need: int | None = None, keep=()):
        """Choose primary copies to write out: unpinned, sealed, resident objects, least
        recently used first.  Over the high-water mark, spill down to the low-water
        mark; with ``need`` (a waiting request), free at least that much.  Returns
        ``(entries, ask_unpin)``: ``entries`` are ``(oid, arena_offset, size,
        already_on_disk)``, now SPILLING; ``ask_unpin`` maps processes to oids whose
        cached pins stand in the way (only when unpinned objects were not enough).

        Objects a waiting pin request wants (restored for it) go last.  Those in
        ``keep`` (the oldest waiting pin's) go only for ``alloc_need``, what waiting
        allocations need (default: all of ``need``): a pin that took them, or the
        pin itself, would restore them again, and two pins taking each other's
        restores would never end (1 GB sorted through 128 MB restored 596 GB)."""
        used = self.alloc.used - self.spilling_bytes          # after the writes in flight
        free_soon = self.capacity - used
        want = used - int(self.low_water * self.capacity) if self.over_high_water() else 0
        want_need = self._short_of(need, free_soon)
        want_alloc = want_need if alloc_need is None else self._short_of(alloc_need, free_soon)
        want = max(want, want_need)
        if want <= 0:
            return [], {}
        cands = sorted((o for o in self.objects.values()
                        if o.state == RESIDENT and o.sealed),
                       key=lambda o: (o.wanted, o.last_use))
        entries, freed = [], 0
        ask: dict[str, list] = {}
        for o in cands:
            if freed >= want:
                break
            if o.wanted and freed >= (want_alloc if o.oid in keep else want_need):
                continue
            if o.pins:
                for p in o.pins:
                    ask.setdefault(p, []).append(o.oid)
                continue
            o.state = SPILLING
            self.spilling_bytes += o.size
            entries.append((o.oid, o.offset, o.size, o.spill is not None))
            freed += o.size
        return entries, (ask if freed < want else {})

    def _short_of(self, need: int, free_soon: int) -> int:
        """How much must be spilled for ``need`` bytes to fit."""
        if not need:
            return 0
        short = need - free_soon
        if short <= 0 and self.alloc.largest_free() < need and not self.spilling_bytes:
            short = need         # enough in total, but fragmented
        return short

    def new_file_id(self) -> int:
        return next(self._file_ids)

    def spill_done(self, file_id: int | None, written: dict, file_size: int,
                   reused: list) -> list[int]:
        """The writes for a spill batch finished.  ``written`` maps oid to its offset in
        file ``file_id``; ``reused`` lists oids that already had a copy on disk.  Frees
        their arena memory unless they were pinned or freed meanwhile.  Returns ids of
        files that hold nothing alive (to close)."""
        live = set()
        for oid in list(written) + list(reused):
            o = self.objects.get(oid)
            if o is None or o.state != SPILLING:
                continue
            self.spilling_bytes -= o.size
            if oid in written:
                o.spill = (file_id, written[oid])
                live.add(oid)
                self.spilled_total += o.size
            if o.pins:
                o.state = RESIDENT       # someone mapped it while we wrote: keep it
                continue
            self.alloc.free(o.offset)
            o.offset = None
            o.state = SPILLED
            self.spilled_bytes += o.size
            self.spilled_objects += 1
        closed = []
        if file_id is not None:
            if live:
                self.files[file_id] = SpillFile(file_id, file_size, live)
            else:
                closed.append(file_id)
        return closed

    def spill_failed(self, oids) -> None:
        for oid in oids:
            o = self.objects.get(oid)
            if o is not None and o.state == SPILLING:
                self.spilling_bytes -= o.size
                o.state = RESIDENT

    def restore_done(self, oid: bytes, ok: bool) -> None:
        doomed = self._doomed.pop(oid, None)
        if doomed is not None:
            self.alloc.free(doomed)
            return
        o = self.objects.get(oid)
        if o is None or o.state != RESTORING:
            return
        if ok:
            o.state = RESIDENT
            self.restored_bytes += o.size
        else:
            self.alloc.free(o.offset)
            o.offset = None
            o.state = SPILLED
            self.spilled_bytes += o.size
            self.spilled_objects += 1

    # -- deletion -----------------------------------------------------------------------
    def delete(self, oid: bytes) -> list[int]:
        """Free an object wherever it is.  Returns ids of spill files now empty."""
        o = self.objects.pop(oid, None)
        if o is None:
            return []
        if o.state == SPILLING:
            self.spilling_bytes -= o.size
        if o.state == RESTORING:
            self._doomed[oid] = o.offset       # the read still writes there: free later
        elif o.offset is not None:
            self.alloc.free(o.offset)
        if o.state == SPILLED:
            self.spilled_bytes -= o.size
            self.spilled_objects -= 1
        closed = []
        if o.spill is not None:
            f = self.files.get(o.spill[0])
            if f is not None:
                f.live.discard(oid)
                if not f.live:
                    del self.files[f.file_id]
                    closed.append(f.file_id)
        return closed

    def process_died(self, addr: str) -> tuple[list[bytes], list[int]]:
        """Fate sharing: free what ``addr`` owned, and what it was writing; drop its
        pins.  Returns the freed oids and the spill files to close."""
        gone = [oid for oid, o in self.objects.items()
                if o.owner == addr or (not o.sealed and o.creator == addr)]
        closed = []
        for oid in gone:
            closed += self.delete(oid)
        for o in self.objects.values():
            o.pins.discard(addr)
        return gone, closed

    # -- views --------------------------------------------------------------------------
    def state_of(self, oid: bytes) -> str | None:
        o = self.objects.get(oid)
        return None if o is None else o.state

    def stats(self) -> dict:
        return {"capacity": self.capacity, "used": self.alloc.used,
                "num_objects": len(self.objects), "spilled_bytes": self.spilled_bytes,
                "spilled_objects": self.spilled_objects,
                "restored_bytes": self.restored_bytes,
                "read_in_place_bytes": self.mapped_bytes,
                "spilled_total_bytes": self.spilled_total, "spill_files": len(self.files),
                "pinned": self.pinned_bytes(), "spill_threshold": self.high_water}
