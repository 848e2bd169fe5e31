"""One node's shared-memory arena: a memfd mapped by every process on the node.

The arena is anonymous (``memfd_create``): it has no name in ``/dev/shm``, so it can
never leak; the kernel frees it when the last process that maps it exits.  Workers
inherit the descriptor; a driver that starts the node creates it.

Layout of one object at ``offset``::

    magic (4) | number of buffers n (4) | meta length (8) | n x buffer length (8)
    meta | padding to 64 | buffer 0 | padding to 64 | buffer 1 ...

:meth:`Arena.read` returns the value rebuilt over read-only views of the arena.  The
views keep a *holder* alive; when the last view dies, ``on_release`` runs, so the
process keeps holding the object exactly as long as the user can see its memory.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import weakref

import numpy as np

from ..protocol.objects import align_up
from .serialization import Serialized, deserialize

_MAGIC = 0x52424F31  # "RBO1"
_HEAD = struct.Struct("<IIQ")


def layout_size(s: Serialized) -> int:
    n = len(s.buffers)
    size = align_up(_HEAD.size + 8 * n + len(s.meta))
    for b in s.buffers:
        size = align_up(size + b.nbytes)
    return size


class Arena:
    def __init__(self, fd: int, capacity: int):
        self.fd = fd
        self.capacity = capacity
        self.mm = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.np = np.frombuffer(self.mm, dtype=np.uint8)
        self._live = 0               # values read from here whose buffers may live on
        self._live_lock = threading.Lock()

    @classmethod
    def create(cls, capacity: int) -> Arena:
        fd = os.memfd_create("refbook-arena", 0)
        os.ftruncate(fd, capacity)
        return cls(fd, capacity)

    def close(self) -> None:
        """Release this process's hold on the arena now: its descriptor and its mapping
        (``mmap`` keeps a descriptor of its own).  Idempotent.  Values read from it that
        are still alive (zero-copy views) keep the mapping until the last of them goes,
        since unmapping memory under them would crash the process; nothing else does."""
        self.np = None
        mm, self.mm = self.mm, None
        # numpy does not hold a buffer export on the mmap (mm.close() would succeed and
        # unmap memory under live arrays): the holders of read() say if values live on
        if mm is not None and not self._live:
            mm.close()
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def write(self, offset: int, s: Serialized) -> None:
        n = len(s.buffers)
        head = _HEAD.pack(_MAGIC, n, len(s.meta)) + struct.pack(
            f"<{n}Q", *(b.nbytes for b in s.buffers))
        dst = self.np
        pos = offset
        dst[pos:pos + len(head)] = np.frombuffer(head, np.uint8)
        pos += len(head)
        dst[pos:pos + len(s.meta)] = np.frombuffer(s.meta, np.uint8)
        pos = offset + align_up(pos - offset + len(s.meta))
        for b in s.buffers:
            dst[pos:pos + b.nbytes] = np.frombuffer(b, np.uint8)
            pos = offset + align_up(pos - offset + b.nbytes)

    def read(self, offset: int, size: int, on_release=None):
        """Rebuild the value stored at ``offset`` without copying its buffers."""
        holder = np.ndarray((size,), np.uint8, buffer=self.mm, offset=offset)
        return decode_object(holder, on_release, self)


def read_mapped(mapping, start: int, size: int, on_release=None):
    """Rebuild the value stored at ``start`` of ``mapping`` (a spill file's range, see
    ``spill.map_spilled``) without copying its buffers; the mapping goes with the last
    view of it."""
    holder = np.ndarray((size,), np.uint8, buffer=mapping, offset=start)
    return decode_object(holder, on_release)


def decode_object(holder, on_release=None, arena: Arena | None = None):
    """The value laid out in ``holder`` (bytes of the layout above), over read-only
    views of it.  When the last view goes, ``on_release()`` runs; until then
    ``arena`` (the one ``holder`` is in, if any) counts the value as live."""
    holder.flags.writeable = False
    magic, n, meta_len = _HEAD.unpack_from(holder, 0)
    if magic != _MAGIC:
        raise ValueError("no object at this offset")
    lens = struct.unpack_from(f"<{n}Q", holder, _HEAD.size)
    pos = _HEAD.size + 8 * n
    meta = holder[pos:pos + meta_len]
    pos = align_up(pos + meta_len)
    view = memoryview(holder)
    bufs = []
    for ln in lens:
        bufs.append(view[pos:pos + ln])
        pos = align_up(pos + ln)
    if n:
        if arena is not None:
            with arena._live_lock:
                arena._live += 1
        weakref.finalize(holder, _holder_gone, arena, on_release)
        return deserialize(meta, bufs)
    try:
        return deserialize(meta, bufs)
    finally:
        if on_release is not None:
            on_release()


def _holder_gone(arena, on_release) -> None:
    if arena is not None:
        with arena._live_lock:
            arena._live -= 1
    if on_release is not None:
        on_release()
