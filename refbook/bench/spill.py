"""Spilling workloads (``refbook bench --only spill``), against the disk's own speed."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .common import MB

SPILL_TARGETS = {"spill_vs_disk": (">=", 70), "restore_vs_disk": (">=", 70),
                 "through_vs_disk_rw": ("<=", 2)}
# (read_in_place_vs_disk has no target: it is the reader's own speed over the page
# cache, get() and all, against one large read call)


def disk_speed(directory: str, nbytes: int) -> tuple[float, float]:
    """Sequential write and read speed (bytes/s) of a file in ``directory``, written and
    read the way spilling does: large pwrite/preadv calls, no fsync (page cache)."""
    buf = np.random.default_rng(0).integers(0, 255, 64 * MB, dtype=np.uint8)
    mv = memoryview(buf)
    fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        t = time.perf_counter()
        pos = 0
        while pos < nbytes:
            pos += os.pwrite(fd, mv, pos)
        tw = time.perf_counter() - t
        out = np.empty(64 * MB, dtype=np.uint8)
        omv = memoryview(out)
        t = time.perf_counter()
        pos = 0
        while pos < nbytes:
            pos += os.preadv(fd, [omv], pos)
        tr = time.perf_counter() - t
    finally:
        os.close(fd)
    return nbytes / tw, nbytes / tr


def run_spill_workloads(quick: bool = False) -> dict:
    """Spilling and restoring against the disk, reading spilled objects in place, and
    a workload 8x the store's size.

    Page-cache writeback makes a disk's speed vary a lot from one second to the next, so
    each spill measurement is paired with raw measurements in the same directory just
    before and after it (the faster of the two counts), and the medians of the paired
    ratios are reported.  Restores are measured with reading in place switched off
    (``REFBOOK_READ_IN_PLACE=0``): otherwise most spilled objects are mapped, not
    restored."""
    import tempfile

    import refbook

    from ..runtime.api.functions import _core, _query
    r: dict = {}
    total = (512 if quick else 2048) * MB
    chunk = 32 * MB
    n = total // chunk
    spill_ratio, restore_ratio, spill_speed, restore_speed, disk_w, disk_r = ([] for _ in range(6))
    through, through_ratio, in_place = [], [], []
    with tempfile.TemporaryDirectory(prefix="refbook-bench-") as d:
        for _ in range(1 if quick else 3):
            w0, rd0 = disk_speed(d, total)
            os.environ["REFBOOK_READ_IN_PLACE"] = "0"       # the node reads it at start
            try:
                refbook.init(num_cpus=2, object_store_memory=256 * MB, spill_dir=d,
                             log_to_stderr=False)
            finally:
                del os.environ["REFBOOK_READ_IN_PLACE"]
            try:
                refs = [refbook.put(np.full(chunk // 8, float(i))) for i in range(n)]
                for i, ref in enumerate(refs):
                    assert refbook.get(ref)[-1] == float(i)
                io = _query(_core().node_address, "spill_io")
                del refs
            finally:
                refbook.shutdown()
            in_place.append(_read_in_place(d, n, chunk))
            w, rd = disk_speed(d, max(io["write_bytes"], 64 * MB))
            w, rd = max(w, w0), max(rd, rd0)     # the disk at its best: the harder target
            sp = io["write_bytes"] / max(io["write_seconds"], 1e-9)
            rs = io["read_bytes"] / max(io["read_seconds"], 1e-9)
            spill_speed.append(sp)
            restore_speed.append(rs)
            disk_w.append(w)
            disk_r.append(rd)
            spill_ratio.append(100 * sp / w)
            restore_ratio.append(100 * rs / rd)

            refbook.init(num_cpus=2, object_store_memory=256 * MB, spill_dir=d,
                         log_to_stderr=False)
            try:
                @refbook.remote
                def produce(i):
                    return np.full(chunk // 8, float(i))

                @refbook.remote
                def total_of(a):
                    return float(a.sum())

                t = time.perf_counter()
                outs = [produce.remote(i) for i in range(n)]
                sums = refbook.get([total_of.remote(o) for o in outs])
                elapsed = time.perf_counter() - t
                assert sums == [float(i) * (chunk // 8) for i in range(n)]
                del outs
            finally:
                refbook.shutdown()
            w2, rd2 = disk_speed(d, total)
            through.append(elapsed)
            through_ratio.append(elapsed / (total / w2 + total / rd2))
    med = statistics.median
    r["disk_write"] = (med(disk_w) / 1e9, "GB/s")
    r["spill"] = (med(spill_speed) / 1e9, "GB/s")
    r["spill_vs_disk"] = (med(spill_ratio), "%")
    r["disk_read"] = (med(disk_r) / 1e9, "GB/s")
    r["restore"] = (med(restore_speed) / 1e9, "GB/s")
    r["restore_vs_disk"] = (med(restore_ratio), "%")
    r["read_in_place"] = (med(in_place) / 1e9, "GB/s")
    r["read_in_place_vs_disk"] = (100 * med(in_place) / med(disk_r), "%")
    r[f"{total >> 20}MB_through_256MB"] = (med(through), "s")
    r["through_vs_disk_rw"] = (med(through_ratio), "x")
    return r


def _read_in_place(d: str, n: int, chunk: int) -> float:
    """Bytes/s of get() and a full read of ``n`` spilled objects, mapped in place."""
    import refbook
    refbook.init(num_cpus=2, object_store_memory=256 * MB, spill_dir=d, log_to_stderr=False)
    try:
        refs = [refbook.put(np.full(chunk // 8, float(i))) for i in range(n)]
        t = time.perf_counter()
        for i, ref in enumerate(refs):
            assert refbook.get(ref).sum() == float(i) * (chunk // 8)
        elapsed = time.perf_counter() - t
        mapped = refbook.nodes()[0]["store"]["read_in_place_bytes"]
        assert mapped > 0, "nothing was read in place"
        del refs
    finally:
        refbook.shutdown()
    return n * chunk / elapsed
