import random

import pytest

from refbook.runtime.store import ALIGN, Allocator, ObjectTable


def test_alloc_aligns_and_reuses_freed_space():
    a = Allocator(1 << 20)
    x = a.alloc(100)
    y = a.alloc(100)
    assert x == 0 and y == ALIGN * 2 and a.used == ALIGN * 4
    a.free(x)
    assert a.alloc(64) == 0
    a.check()


def test_free_merges_neighbours():
    a = Allocator(1024)
    blocks = [a.alloc(256) for _ in range(4)]
    assert a.alloc(1) is None
    for b in (blocks[1], blocks[3], blocks[2], blocks[0]):
        a.free(b)
        a.check()
    assert a.used == 0 and a.largest_free() == 1024


def test_randomized_alloc_free_keeps_the_arena_tiled():
    rng = random.Random(7)
    a = Allocator(1 << 16)
    live = []
    for _ in range(5000):
        if live and rng.random() < 0.45:
            a.free(live.pop(rng.randrange(len(live))))
        else:
            off = a.alloc(rng.randint(1, 4000))
            if off is not None:
                live.append(off)
        a.check()
    for off in live:
        a.free(off)
    a.check()
    assert a.used == 0


def test_object_table_full_messages_name_sizes_and_remedy():
    t = ObjectTable(1 << 20)
    status, msg = t.create(b"a" * 20, 2 << 20, "o", "o")
    assert status == "full" and "larger than the whole object store" in msg
    assert "object_store_memory" in msg
    assert t.create(b"b" * 20, 900 << 10, "o", "o")[0] == "ok"
    status, msg = t.create(b"c" * 20, 900 << 10, "o", "o")
    assert status == "full" and "free" in msg


def test_retried_task_finds_its_sealed_object():
    t = ObjectTable(1 << 20)
    status, off = t.create(b"a" * 20, 1000, "o", "w1")
    t.seal(b"a" * 20)
    assert t.create(b"a" * 20, 1000, "o", "w2") == ("exists", off)


@pytest.mark.parametrize("who", ["owner", "writer"])
def test_fate_sharing_frees_what_a_dead_process_owned_or_was_writing(who):
    t = ObjectTable(1 << 20)
    t.create(b"a" * 20, 1000, "o", "w")
    t.seal(b"a" * 20)
    t.create(b"b" * 20, 1000, "o", "w")          # never sealed
    gone = t.process_died("o" if who == "owner" else "w")
    assert (b"b" * 20) in gone
    assert ((b"a" * 20) in gone) == (who == "owner")
