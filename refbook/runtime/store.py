"""Store accounting for one node's shared-memory arena, without I/O.

:class:`Allocator` hands out 64-byte aligned ranges of the arena (first fit over a
free list kept sorted by offset, with neighbours merged on free).  :class:`ObjectTable`
records which object lives where, who created it, who owns it, and whether it is
sealed.  The node manager drives both from messages; nothing here touches memory.
"""

from __future__ import annotations

import bisect

ALIGN = 64


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
    __slots__ = ("offset", "size", "owner", "creator", "sealed")

    def __init__(self, offset: int, size: int, owner: str, creator: str):
        self.offset = offset
        self.size = size
        self.owner = owner
        self.creator = creator
        self.sealed = False


class ObjectTable:
    """Objects resident in one node's arena."""

    def __init__(self, capacity: int):
        self.alloc = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}

    def create(self, oid: bytes, size: int, owner: str, creator: str):
        """Reserve space.  Returns ``("ok", offset)``, ``("exists", offset)`` when a
        sealed copy is already there (a retried task), or ``("full", message)``."""
        o = self.objects.get(oid)
        if o is not None:
            if o.sealed and o.size == size:
                return ("exists", o.offset)
            if not o.sealed:
                self.delete(oid)     # an earlier attempt died before sealing
            else:
                self.delete(oid)
        off = self.alloc.alloc(size)
        if off is None:
            return ("full", self._full_message(oid, size))
        self.objects[oid] = StoredObject(off, size, owner, creator)
        return ("ok", off)

    def _full_message(self, oid: bytes, size: int) -> str:
        cap = self.alloc.capacity
        if size > cap:
            return (f"object {oid.hex()} is {size:,} bytes, larger than the whole object "
                    f"store ({cap:,} bytes). Pass a larger object_store_memory= to "
                    f"refbook.init(), or split the value into smaller objects.")
        return (f"object {oid.hex()} needs {size:,} bytes but the object store has only "
                f"{cap - self.alloc.used:,} of {cap:,} bytes free (largest free range "
                f"{self.alloc.largest_free():,}). Drop refs you no longer need, or pass a "
                f"larger object_store_memory= to refbook.init().")

    def seal(self, oid: bytes) -> StoredObject | None:
        o = self.objects.get(oid)
        if o is not None:
            o.sealed = True
        return o

    def delete(self, oid: bytes) -> bool:
        o = self.objects.pop(oid, None)
        if o is None:
            return False
        self.alloc.free(o.offset)
        return True

    def process_died(self, addr: str) -> list[bytes]:
        """Fate sharing: free what ``addr`` owned, and what it was writing."""
        gone = [oid for oid, o in self.objects.items()
                if o.owner == addr or (not o.sealed and o.creator == addr)]
        for oid in gone:
            self.delete(oid)
        return gone

    def stats(self) -> dict:
        return {"capacity": self.alloc.capacity, "used": self.alloc.used,
                "num_objects": len(self.objects), "spilled_bytes": 0,
                "spilled_objects": 0, "restored_bytes": 0}
