"""Disk I/O for spilling, in background threads of the node manager.

Spill files are anonymous (``O_TMPFILE``): they never have a name in ``spill_dir``, so
nothing can be left behind by a crash; the kernel reclaims a file when the node manager
closes it (every object in it was freed) or exits.  Writes and reads go straight
between the shared-memory arena and the file: one copy each way.

Two threads: one writes spill batches, one reads restores (and closes files, after the
reads queued before the close).  Completions are queued and signalled through a pipe
the node manager polls.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque

log = logging.getLogger("refbook.spill")
CHUNK = 64 << 20      # bytes per write or read call


class SpillIO:
    def __init__(self, spill_dir: str, arena_mm):
        self.dir = spill_dir
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
                pos = 0
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
