"""Spill files read in place: a real arena, real spill threads and real files."""

import time

import numpy as np
import pytest

from refbook.runtime.data.arena import Arena, layout_size, read_mapped
from refbook.runtime.data.serialization import serialize
from refbook.runtime.data.spill import HEADER, SpillIO, map_spilled


def _done(io, kind):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        io.drain_signal()
        if io.done:
            r = io.done.popleft()
            assert r[0] == kind, r
            return r
        time.sleep(0.01)
    raise AssertionError(f"no {kind} completion")


@pytest.fixture
def spilled(tmp_path):
    """Two arrays written to the arena and spilled to one file: (io, where of each)."""
    arena = Arena.create(8 << 20)
    io = SpillIO(str(tmp_path), arena.mm)
    values = [np.arange(100_000, dtype=np.int64), np.full(50_000, 7, dtype=np.uint8)]
    entries, off = [], 0
    for i, v in enumerate(values):
        s = serialize(v)
        arena.write(off, s)
        entries.append((bytes([i]) * 20, off, layout_size(s), False))
        off += layout_size(s)
    io.spill(1, entries)
    _, fid, written, size, _ = _done(io, "spilled")
    assert fid == 1 and written[entries[0][0]] == HEADER
    where = [(io.where(1, written[e[0]]), e[2]) for e in entries]
    try:
        yield io, where, values
    finally:
        io.stop()
        io.mv.release()         # the spill threads' view of the arena
        arena.close()


def test_a_spilled_object_maps_from_its_file_without_the_arena(spilled):
    io, where, values = spilled
    for ((path, foff, header), size), want in zip(where, values, strict=True):
        assert path.startswith("/proc/") and foff % 64 == 0
        got = read_mapped(*map_spilled(path, foff, size, header), size)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert not got.flags.writeable


def test_a_mapping_outlives_its_file_being_closed(spilled):
    io, where, values = spilled
    (path, foff, header), size = where[0]
    got = read_mapped(*map_spilled(path, foff, size, header), size)
    io.close_file(1)
    deadline = time.monotonic() + 10
    while 1 in io.fds and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 1 not in io.fds
    assert int(got.sum()) == int(values[0].sum())       # still the object's bytes
    with pytest.raises(OSError):                        # but nobody maps it again
        map_spilled(path, foff, size, header)


def test_a_file_that_is_not_the_one_named_is_refused(spilled):
    io, where, _ = spilled
    (path, foff, header), size = where[1]
    wrong = header[:8] + (99).to_bytes(8, "little") + header[16:]
    with pytest.raises(OSError, match="not the spill file"):
        map_spilled(path, foff, size, wrong)


def test_nothing_but_a_node_managers_descriptor_is_opened(spilled):
    _, where, _ = spilled
    (_path, foff, header), size = where[0]
    for path in ("/etc/passwd", "/proc/1/fd/0/../../environ", "/proc/self/fd/0"):
        with pytest.raises(OSError, match="does not name a spill file"):
            map_spilled(path, foff, size, header)
