"""The event ring of the protocol core (protocol/events.py) and what the owner emits."""

import time

from refbook.runtime.protocol.events import FIELDS, EventRing, Unrecorded, to_dict


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


class _FakeCore:
    """What the collector needs of a driver: its own ring, a node manager's and a
    worker's, answered as STATE_QUERY would."""

    def __init__(self):
        self.me, self.node_address, self.alive = "drv", "nm", True
        self.rt = type("RT", (), {"dead": set()})()
        self.rings = {"drv": EventRing(maxlen=5), "nm": EventRing(maxlen=5),
                      "w1": EventRing(maxlen=5)}

    kind = "driver"

    def known_dead(self):
        return self.rt.dead

    def describe(self, what):
        return self.query(self.me, what)

    def query_many(self, asks, timeout=None, poll=True):
        return [self.query(a, w) for a, w in asks]

    def query(self, addr, what, timeout=None):
        if what == "nodes":
            return [{"address": "nm", "alive": True}]
        evs, dropped, last = self.rings[addr].since(what[1])
        rep = {"events": evs, "dropped": dropped, "last": last, "node_id": "n1",
               "process": addr}
        if addr == "nm":
            rep["processes"] = ["drv", "w1"]
        return rep


def test_the_collector_merges_in_time_order_numbers_without_gaps_and_reports_drops(
        monkeypatch):
    from refbook.runtime.api.events import Collector
    core = _FakeCore()
    t = [100.0]

    def clock():
        t[0] += 1
        return t[0]
    for r in core.rings.values():
        r.clock = clock
    c = Collector(core)
    core.rings["drv"].add("task_submitted", b"\x01" * 16, "f", None)
    core.rings["w1"].add("task_started", b"\x01" * 16, "f", "drv")
    core.rings["drv"].add("task_finished", b"\x01" * 16, "f", 1)
    core.rings["nm"].add("worker_started", "w2", 7)
    monkeypatch.setattr(time, "time", lambda: 1000.0)   # the round begins after them
    assert c.poll() == 4
    got = c.after(0)
    assert [(e["seq"], e["kind"]) for e in got] == [
        (1, "task_submitted"), (2, "task_started"), (3, "task_finished"),
        (4, "worker_started")]
    for _ in range(8):               # w1's ring (5) overflows before it is read
        core.rings["w1"].add("object_created", b"\x02" * 20, 1)
    assert c.poll() == 6
    got = c.after(4)
    assert [e["kind"] for e in got] == ["events_dropped"] + ["object_created"] * 5
    assert got[0]["count"] == 3 and got[0]["process"] == "w1"
    assert [e["seq"] for e in got] == list(range(5, 11))
    assert c.after(8) == got[4:]
    assert c.poll() == 0 and c.after(10) == []
    # a view of some kinds still hears of the drops
    assert [e["seq"] for e in c.after(0, {"task_finished"})] == [3, 5]


def test_a_full_log_numbers_its_newest_events_and_says_what_it_lost(monkeypatch):
    from refbook.runtime.api import events
    monkeypatch.setattr(events, "LOG_SIZE", 1000)
    c = events.Collector(_FakeCore())
    c.log = events.deque(maxlen=events.LOG_SIZE)
    where = ("n1", "w1")
    for i in range(1, 2501):             # 2,500 events through a log of 1,000
        c.log.append((float(i), (i, float(i), "worker_started", "w", i), where))
        c.seq = i
    got = c.after(2497)
    assert [(e["seq"], e["pid"]) for e in got] == [(2498, 2498), (2499, 2499), (2500, 2500)]
    old = c.after(1000)                  # 1,001..1,500 are gone: said once, then the rest
    assert old[0]["kind"] == "events_dropped" and old[0]["count"] == 500
    assert [e["seq"] for e in old[1:]] == list(range(1501, 2501))
    assert c.after(2500) == []


def test_actor_events_carry_the_actors_node_and_task_events_its_id():
    from refbook.runtime.protocol.actors import ActorQueue, OwnedActor
    from refbook.runtime.protocol.events import actor_event, ended, retried
    from refbook.runtime.protocol.tasks import Task
    r = EventRing()
    actor_event(r, "actor_died", b"\x0a" * 20, "C", None, "n-actor", 42, reason="killed")
    d = to_dict(r.since(0)[0][0], "n-owner", "p")
    assert (d["node_id"], d["process"], d["actor_id"], d["pid"], d["reason"]) == \
        ("n-actor", "p", "0a" * 20, 42, "killed")

    # a call in flight when the actor's process dies is retried, and says so
    q = ActorQueue(b"\x0a" * 20, "C", max_task_retries=1)
    t = Task(b"\x01" * 16, "C.f", {}, [], [], None, 1)
    t.actor_id = q.actor_id
    q.located("ipc:///s/n-x/w-1")
    assert q.submit(t)[0][0] == "send"
    assert q.lost("ipc:///s/n-x/w-1", "worker process 7 exited") == \
        [("retry", t, "worker process 7 exited")]
    retried(r, t, "worker process 7 exited")
    ended(r, t, None)
    evs = [to_dict(e, "n", "p") for e in r.since(1)[0]]
    assert [(e["kind"], e["actor_id"]) for e in evs] == [
        ("task_retried", "0a" * 20), ("task_finished", "0a" * 20)]

    # why an actor whose process died is dead
    a = OwnedActor(b"\x0b" * 20, "C", None, {"max_restarts": 1}, None)
    a.placed(1, "ipc:///s/n-y/w-2", b"t")
    a.created(True)
    assert a.node_id == "y" and a.view()["node_id"] == "y"
    assert a.died("gone") == "restarting" and a.node_id is None
    a.placed(2, "ipc:///s/n-z/w-3", b"t")
    a.created(True)
    assert a.died("gone again") == "dead" and a.death() == "restarts_exhausted"
    b = OwnedActor(b"\x0c" * 20, "C", None, {}, None)
    assert b.died("x") == "dead" and b.death() == "process_died"
    b.kill(True)
    assert b.death() == "killed"


def test_a_reader_beside_a_writer_thread_misses_nothing_and_counts_what_it_lost():
    """The state API reads a process's ring without its lock, while the task path
    appends.  Every event is then either read once, in order, or counted as dropped
    (the ring overflowed): never skipped in silence.  (Reporting the ring's latest seq
    as the cursor skipped whatever was appended after the copy was taken.)"""
    import sys
    import threading
    for maxlen in (100_000, 64):
        r = EventRing(maxlen=maxlen)
        n = 200_000
        done = threading.Event()

        def write(r=r, done=done, n=n):
            for i in range(n):
                r.add("object_freed", b"x", i)
            done.set()
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)          # switch threads as often as possible
        try:
            t = threading.Thread(target=write)
            t.start()
            seen, lost, cursor = [], 0, 0
            while True:
                finished = done.is_set()
                evs, dropped, cursor = r.since(cursor)
                seen += [e[0] for e in evs]
                lost += dropped
                if finished and not evs:
                    break
            t.join()
        finally:
            sys.setswitchinterval(old)
        assert seen == sorted(set(seen)), "out of order or read twice"
        assert len(seen) + lost == n and seen[-1] == n, (maxlen, len(seen), lost)
        if maxlen == 100_000:
            assert lost == 0 and seen == list(range(1, n + 1))


def test_a_paused_ring_records_nothing_and_reads_on_where_it_stopped():
    """The events bench switches recording off and on in a running cluster: what the
    ring held and nobody had read is still read once, nothing is recorded while
    paused, and the numbering goes on from where it stopped."""
    from refbook.runtime.protocol.events import recording
    ring = EventRing()
    ring.add("object_created", b"a", 1)
    ring.add("object_created", b"b", 2)
    evs, _, cursor = ring.since(0)
    ring.add("object_freed", b"a", 1)              # not read before the pause
    paused = recording(ring, False)
    assert recording(paused, False) is paused
    paused.add("object_created", b"c", 3)
    paused.note("oom_kill", pid=1)
    evs, dropped, cursor = paused.since(cursor)
    assert [e[2:4] for e in evs] == [("object_freed", b"a")] and dropped == 0
    assert paused.since(cursor) == ([], 0, cursor)
    back = recording(paused, True)
    assert back is ring
    back.add("object_freed", b"b", 2)
    evs, dropped, cursor = back.since(cursor)
    assert [(e[0], e[3]) for e in evs] == [(4, b"b")] and dropped == 0
    assert recording(recording(Unrecorded(), False), True).since(0)[0] == []
