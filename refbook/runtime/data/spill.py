"""Disk I/O for spilling, in background threads of the node manager.

Spill files are anonymous (``O_TMPFILE``): they never have a name in ``spill_dir``, so
nothing can be left behind by a crash; the kernel reclaims a file when the node manager
closes it (every object in it was freed) or exits.  Writes and reads go straight
between the shared-memory arena and the file: one copy each way.

Two threads: one writes spill batches, one reads restores (and closes files, after the
reads queued before the close).  Completions are queued and signalled through a pipe
the node manager polls.

A process on the same host may also read a spilled object where it lies, with no copy
into the arena: :meth:`SpillIO.where` names the file as ``/proc/<pid>/fd/<fd>`` of the
node manager, and :func:`map_spilled` maps the object's range of it.  Every file
begins with a header naming it (node and file id), which the reader checks: a file
closed meanwhile, and its descriptor reused, is never read as the object.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import re
import struct
import threading
import time
from collections import deque

log = logging.getLogger("refbook.spill")
CHUNK = 64 << 20      # bytes per write or read call
HEADER = 64           # bytes before a spill file's first object
_HEAD = struct.Struct("<8sQ16s")     # magic, file id, node token
_MAGIC = b"RBSPILL1"
_PROC_FD = re.compile(r"/proc/[0-9]+/fd/[0-9]+")


class SpillIO:
    def __init__(self, spill_dir: str, arena_mm):
        self.dir = spill_dir
        # readers may map spilled objects (REFBOOK_READ_IN_PLACE=0: always restore)
        self.mappable = os.environ.get("REFBOOK_READ_IN_PLACE", "1") != "0"
        self.token = os.urandom(16)
        self.pid = os.getpid()
        self.mv = memoryview(arena_mm)
        self.fds: dict[int, int] = {}
        self.done: deque = deque()
        # time spent in the system calls, for the benchmarks (each written by one thread)
        self.write_bytes = self.read_bytes = 0
        self.write_seconds = self.read_seconds = 0.0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, args=(q,), daemon=True,
                                          name=f"refbook-spill-{i}")
                         for i, q in enumerate((self._writes, self._reads))]
        for t in self._threads:
            t.start()

    @property
    def fd(self) -> int:
        """Readable when completions are waiting in ``done``."""
        return self._r

    def drain_signal(self) -> None:
        try:
            os.read(self._r, 65536)
        except BlockingIOError:
            pass

    # -- requests (from the node manager's thread) ----------------------------------------
    def spill(self, file_id: int | None, entries: list) -> None:
        """``entries``: ``(oid, arena_offset, size, already_on_disk)``."""
        self._writes.put(("spill", file_id, entries))

    def restore(self, oid: bytes, file_id: int, foff: int, arena_off: int, size: int) -> None:
        self._reads.put(("restore", oid, file_id, foff, arena_off, size))

    def where(self, file_id: int, file_offset: int) -> tuple:
        """``(path, file_offset, header)``: what :func:`map_spilled` needs to read the
        object at ``file_offset`` of file ``file_id`` (which must be open)."""
        return (f"/proc/{self.pid}/fd/{self.fds[file_id]}", file_offset,
                _HEAD.pack(_MAGIC, file_id, self.token))

    def close_file(self, file_id: int) -> None:
        self._reads.put(("close", file_id))

    def stop(self) -> None:
        for q in (self._writes, self._reads):
            q.put(None)
        for fd in list(self.fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    # -- the threads ------------------------------------------------------------------------
    def _loop(self, q) -> None:
        while True:
            job = q.get()
            if job is None:
                return
            try:
                result = getattr(self, "_" + job[0])(*job[1:])
            except Exception as e:  # noqa: BLE001 - reported to the node manager
                log.exception("spill I/O failed")
                result = ("error", job, e)
            if result is not None:
                self.done.append(result)
                os.write(self._w, b"x")

    def _open(self) -> int:
        try:
            return os.open(self.dir, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (OSError, AttributeError):     # a file system without O_TMPFILE
            import tempfile
            fd, path = tempfile.mkstemp(dir=self.dir, prefix="refbook-spill-")
            os.unlink(path)
            return fd

    def _spill(self, file_id, entries):
        todo = [e for e in entries if not e[3]]
        reused = [e[0] for e in entries if e[3]]
        written = {}
        size = 0
        if todo:
            t0 = time.perf_counter()
            try:
                fd = self._open()
                os.pwrite(fd, _HEAD.pack(_MAGIC, file_id, self.token).ljust(HEADER, b"\0"), 0)
                pos = HEADER
                for oid, off, n, _ in todo:
                    written[oid] = pos
                    done = 0
                    while done < n:
                        k = min(CHUNK, n - done)
                        w = os.pwrite(fd, self.mv[off + done:off + done + k], pos + done)
                        if w <= 0:
                            raise OSError("short write")
                        done += w
                    pos += n
                size = pos
                self.fds[file_id] = fd
                self.write_seconds += time.perf_counter() - t0
                self.write_bytes += size
            except OSError as e:
                try:
                    os.close(fd)
                except (OSError, UnboundLocalError):
                    pass
                return ("spill_failed", [e[0] for e in entries], e)
        return ("spilled", file_id if todo else None, written, size, reused)

    def _restore(self, oid, file_id, foff, arena_off, size):
        fd = self.fds[file_id]
        done = 0
        t0 = time.perf_counter()
        try:
            while done < size:
                k = min(CHUNK, size - done)
                r = os.preadv(fd, [self.mv[arena_off + done:arena_off + done + k]], foff + done)
                if r <= 0:
                    raise OSError("short read")
                done += r
        except OSError as e:
            return ("restored", oid, e)
        self.read_seconds += time.perf_counter() - t0
        self.read_bytes += size
        return ("restored", oid, None)

    def _close(self, file_id):
        fd = self.fds.pop(file_id, None)
        if fd is not None:
            os.close(fd)
        return None


def map_spilled(path: str, file_offset: int, size: int, header: bytes):
    """Map ``size`` bytes at ``file_offset`` of the spill file ``path`` read-only.
    Returns ``(mapping, start)``: the object begins at ``start`` in ``mapping``.  The
    mapping keeps the file alive (not its descriptor, closed here) until it goes.
    Raises OSError if the file cannot be opened or is not the one ``header`` names
    (and, whatever a node says, opens nothing but a node manager's descriptor)."""
    if not _PROC_FD.fullmatch(path):
        raise OSError(f"{path!r} does not name a spill file")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.pread(fd, len(header), 0) != header:
            raise OSError(f"{path} is not the spill file it was said to be")
        base = file_offset - file_offset % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, size + file_offset - base, flags=mmap.MAP_SHARED,
                      prot=mmap.PROT_READ, offset=base)
    finally:
        os.close(fd)
    return m, file_offset - base
