"""The store server's transfers between nodes, driven message by message: a transfer
stops the moment its object leaves the table, so no chunk lands in memory that another
object now uses, and nothing is sent from memory that was freed."""

import os

import pytest

from refbook.runtime.data.arena import Arena
from refbook.runtime.data.storeserver import CHUNK, StoreServer
from refbook.runtime.protocol import messages as P

MB = 1 << 20


class Recorder:
    """The server's transport: what it sent, to whom (nothing leaves the process)."""

    address = "nm-here"

    def __init__(self):
        self.sent = []

    def send(self, addr, msg, data=None):
        self.sent.append((addr, msg, None if data is None else bytes(data)))
        return True

    def of(self, kind):
        return [(a, m, d) for a, m, d in self.sent if m[0] == kind]


@pytest.fixture
def server(tmp_path):
    arena = Arena.create(64 * MB)
    t = Recorder()
    srv = StoreServer(t, arena, "here", str(tmp_path / "spill"),
                      address_of=lambda node: f"nm-{node}")
    yield srv, t, arena
    srv.stop()
    os.close(arena.fd)


def oid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def test_an_object_freed_while_arriving_gets_no_more_chunks(server):
    srv, t, arena = server
    x, size = oid(1), 3 * CHUNK
    srv.on_request(None, (P.PIN, "reader", "reader-rpc", [x], {x: "there"}))
    assert t.of(P.PULL) == [("nm-there", (P.PULL, x, t.address, "here"), None)]
    srv._on_pull_meta((P.PULL_META, x, size, "owner"))
    assert len(t.of(P.PULL_CHUNK)) == 3
    srv._on_chunk((P.CHUNK, x, 0, b"a" * CHUNK))
    srv.on_free([x])                              # the owner freed it mid-transfer
    assert x not in srv.pulls and x not in srv.table.objects
    status, off = srv.table.create(oid(2), size, "owner2", "writer")
    assert status == "ok"
    arena.mm[off:off + size] = b"z" * size        # another object in the same memory
    srv._on_chunk((P.CHUNK, x, CHUNK, b"b" * CHUNK))      # late chunks of the old one
    srv._on_chunk((P.CHUNK, x, 2 * CHUNK, b"c" * CHUNK))
    assert arena.mm[off:off + size] == b"z" * size
    assert not t.of(P.OBJECT_COPY) and not t.of(P.PULL_DONE)


def test_an_object_whose_owner_died_is_no_longer_sent(server):
    srv, t, arena = server
    x, size = oid(3), 2 * CHUNK
    status, off = srv.table.create(x, size, "owner", "owner")
    arena.mm[off:off + size] = b"x" * size
    srv.table.seal(x)
    srv._on_pull((P.PULL, x, "nm-far", "far"))
    assert t.of(P.PULL_META) == [("nm-far", (P.PULL_META, x, size, "owner"), None)]
    srv._on_pull_chunk((P.PULL_CHUNK, x, "nm-far", 0, CHUNK))
    assert len(t.of(P.CHUNK)) == 1
    srv.process_died("owner")                    # fate sharing frees it here
    assert t.of(P.PULL_FAIL) and t.of(P.PULL_FAIL)[0][0] == "nm-far"
    srv._on_pull_chunk((P.PULL_CHUNK, x, "nm-far", CHUNK, CHUNK))
    assert len(t.of(P.CHUNK)) == 1               # nothing sent from freed memory
    srv._on_pull_done((P.PULL_DONE, x, "nm-far"))
    assert x not in srv.copies


def test_chunk_requests_and_chunks_outside_the_object_are_ignored(server):
    srv, t, arena = server
    x, size = oid(4), CHUNK
    srv.table.create(x, size, "owner", "owner")
    srv.table.seal(x)
    srv._on_pull((P.PULL, x, "nm-far", "far"))
    srv._on_pull_chunk((P.PULL_CHUNK, x, "nm-far", size - 10, 100))   # past its end
    srv._on_pull_chunk((P.PULL_CHUNK, x, "nm-far", -5, 10))
    assert not t.of(P.CHUNK)
    y = oid(5)
    srv.on_request(None, (P.PIN, "reader", "reader-rpc", [y], {y: "there"}))
    srv._on_pull_meta((P.PULL_META, y, 100, "owner"))
    before = bytes(arena.mm[:4 * CHUNK])
    srv._on_chunk((P.CHUNK, y, 50, b"q" * 100))   # would run past the object
    assert bytes(arena.mm[:4 * CHUNK]) == before


def test_a_pull_that_arrives_before_the_seal_is_sent_once_sealed(server):
    srv, t, arena = server
    x = oid(6)
    srv.table.create(x, CHUNK, "owner", "writer")      # the SEAL is still on its way
    srv._on_pull((P.PULL, x, "nm-far", "far"))
    assert not t.of(P.PULL_FAIL) and not t.of(P.PULL_META)
    srv.on_seal((P.SEAL, x, 0, CHUNK, "owner", None))
    assert t.of(P.PULL_META) == [("nm-far", (P.PULL_META, x, CHUNK, "owner"), None)]


def test_a_spilled_object_pulled_while_the_store_is_full_is_restored_and_sent(server):
    """Issue 12 §1, message by message: the restore booked for a waiting transfer must
    be started, or the object stays RESTORING for ever."""
    srv, t, arena = server
    x, y = oid(7), oid(8)
    srv.table.create(x, 8 * MB, "owner", "owner")
    arena.mm[0:8 * MB] = b"x" * (8 * MB)
    srv.table.seal(x)
    srv.table.plan_spill(64 * MB)                   # spill everything unpinned: x
    srv.io.spill(1, [(x, 0, 8 * MB, False)])
    wait_io(srv, lambda: srv.table.state_of(x) == "spilled")
    status, off = srv.table.create(y, 60 * MB, "owner", "holder")   # the store is full
    srv.table.seal(y, "holder")
    srv._on_pull((P.PULL, x, "nm-far", "far"))
    assert not t.of(P.PULL_META) and srv.table.state_of(x) == "spilled"
    srv.on_free([y])                                 # room at last
    wait_io(srv, lambda: srv.table.state_of(x) == "resident")
    assert t.of(P.PULL_META) == [("nm-far", (P.PULL_META, x, 8 * MB, "owner"), None)]
    srv._on_pull_chunk((P.PULL_CHUNK, x, "nm-far", 0, CHUNK))
    assert t.of(P.CHUNK)[0][2] == b"x" * CHUNK


def wait_io(srv, pred, timeout=10.0):
    """Let the server's spill threads finish, handling their completions as the node
    manager's loop would."""
    import time
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, srv.table.state_of
        time.sleep(0.005)
        srv.on_io()


def test_freeing_a_dead_attempts_copy_spares_a_copy_being_pulled_for_a_reader(server):
    """A task's first attempt died on this node; its retry ran elsewhere, and a reader
    here now pulls that final value.  The owner's FREE of the dead attempt's copy (with
    the dead worker as creator) must not stop the pull: it did, as "freed by its
    owner", about one soak run in ten with worker kills."""
    srv, t, arena = server
    x, size = oid(5), 2 * CHUNK
    srv.on_request(None, (P.PIN, "reader", "reader-rpc", [x], {x: "there"}))
    srv._on_pull_meta((P.PULL_META, x, size, "owner"))
    srv.on_free([x], creator="ipc://dead-worker")          # the stale copy's FREE
    assert x in srv.pulls and x in srv.table.objects
    assert not t.of(P.PULL_FAIL)
    srv.on_free([x])                                         # a real free still works
    assert x not in srv.pulls and x not in srv.table.objects
