"""The event ring of the protocol core (protocol/events.py) and what the owner emits."""

from refbook.runtime.protocol.events import FIELDS, EventRing, to_dict


def test_a_ring_numbers_its_events_and_reads_since_a_seq():
    r = EventRing(maxlen=10, clock=lambda: 5.0)
    r.add("task_submitted", b"\x01" * 16, "f", None)
    r.add("object_created", b"\x02" * 20, 123)
    evs, dropped, last = r.since(0)
    assert [e[0] for e in evs] == [1, 2] and dropped == 0 and last == 2
    evs, dropped, last = r.since(1)
    assert [e[0] for e in evs] == [2] and dropped == 0
    assert r.since(2) == ([], 0, 2)
    d = to_dict(evs[0], "n1", "ipc://x")
    assert d == {"seq": 2, "time": 5.0, "kind": "object_created", "node_id": "n1",
                 "process": "ipc://x", "object_id": "02" * 20, "size": 123}


def test_an_overflowed_ring_says_how_many_were_dropped():
    r = EventRing(maxlen=4)
    for i in range(10):
        r.add("object_freed", bytes([i]), i)
    evs, dropped, last = r.since(0)
    assert [e[0] for e in evs] == [7, 8, 9, 10] and dropped == 6 and last == 10
    evs, dropped, last = r.since(5)
    assert [e[0] for e in evs] == [7, 8, 9, 10] and dropped == 1
    evs, dropped, last = r.since(8)
    assert [e[0] for e in evs] == [9, 10] and dropped == 0
    empty = EventRing(maxlen=0)
    empty.add("object_freed", b"x", 1)
    assert empty.since(0) == ([], 1, 1)


def test_free_form_events_keep_their_fields():
    r = EventRing()
    r.note("oom_kill", task="f", rss=10)
    d = to_dict(r.since(0)[0][0], "n", "p")
    assert d["kind"] == "oom_kill" and d["task"] == "f" and d["rss"] == 10


def test_every_kind_of_the_api_has_fields():
    api = ["task_submitted", "task_started", "task_finished", "task_failed", "task_retried",
           "task_cancelled", "object_created", "object_freed", "object_spilled",
           "object_restored", "object_transferred", "object_lost",
           "object_reconstructing", "object_reconstructed", "worker_started",
           "worker_died", "node_added", "node_died"]
    for kind in api:
        names = FIELDS[kind]
        assert ("task_id" in names and "name" in names) if kind.startswith("task") else True
        assert ("object_id" in names and "size" in names) if kind.startswith("object") \
            else True
