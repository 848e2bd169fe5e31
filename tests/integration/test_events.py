"""The state API's events on a real cluster: every process records what it does in its
ring, and a driver pulls, merges and numbers them (API.md §3)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import refbook
from refbook import state
from tests.integration.helpers import wait_for

MB = 1 << 20


@pytest.fixture
def cluster(tmp_path):
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=100 * MB,
                       spill_dir=str(tmp_path / "spill"))
    yield ctx
    refbook.shutdown()


@refbook.remote
def add(x, i):
    return x + i


@refbook.remote
def nbytes(a):
    return int(a.nbytes)


@refbook.remote
def pause(s):
    time.sleep(s)


@refbook.remote(max_retries=2)
def die_once(path):
    """The first attempt writes its pid and waits to be killed; the retry returns."""
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        time.sleep(60)
    return "ok"


def last_seq() -> int:
    evs = state.events()
    return evs[-1]["seq"] if evs else 0


def task_id(ref) -> str:
    return ref.hex()[:32]


def seen(since, pred, kinds=None, timeout=10.0) -> list:
    """The events after ``since`` once ``pred(events)`` holds."""
    out = []

    def ok():
        out[:] = state.events(since=since, kinds=kinds)
        return pred(out)
    assert wait_for(ok, timeout=timeout), [(e["seq"], e["kind"]) for e in out]
    return out


def test_task_events_of_a_chain_come_in_order(cluster):
    base = last_seq()
    cur = refbook.put(0)
    refs = []
    for i in range(5):
        cur = add.remote(cur, i)
        refs.append(cur)
    assert refbook.get(cur) == 10
    tids = [task_id(r) for r in refs]

    def finished(evs):
        done = {e["task_id"] for e in evs if e["kind"] == "task_finished"}
        started = {e["task_id"] for e in evs if e["kind"] == "task_started"}
        return set(tids) <= done and set(tids) <= started
    evs = seen(base, finished)
    assert [e["seq"] for e in evs] == list(range(base + 1, base + 1 + len(evs)))
    assert all(a["time"] <= b["time"] for a, b in zip(evs, evs[1:], strict=False))
    at = {(e["kind"], e.get("task_id") or e.get("object_id")): e["seq"] for e in evs}
    for i, (tid, r) in enumerate(zip(tids, refs, strict=True)):
        assert at[("task_submitted", tid)] < at[("task_started", tid)] < \
            at[("object_created", r.hex())] < at[("task_finished", tid)]
        if i:
            assert at[("task_finished", tids[i - 1])] < at[("task_started", tid)]
    sub = next(e for e in evs if e["kind"] == "task_submitted" and e["task_id"] == tids[0])
    assert sub["name"].endswith("add") and sub["node_id"] == cluster.node_id
    # since= resumes; kinds= filters
    assert state.events(since=evs[-1]["seq"], kinds="task_finished") == []
    del cur, refs, r
    seen(base, lambda evs: {r for r in tids} <= {
        e["object_id"][:32] for e in evs if e["kind"] == "object_freed"}, kinds="object_freed")


def test_a_spill_shows_object_spilled_then_object_restored(cluster):
    base = last_seq()
    refs = [refbook.put(np.full(20 * MB, i, dtype=np.uint8)) for i in range(8)]
    evs = seen(base, lambda evs: any(e["kind"] == "object_spilled" for e in evs),
               kinds=["object_spilled", "object_restored"])
    spilled = {e["object_id"]: e for e in evs if e["kind"] == "object_spilled"}
    assert all(e["bytes"] == e["size"] >= 20 * MB for e in spilled.values())
    first = next(r for r in refs if r.hex() in spilled)
    assert refbook.get(nbytes.remote(first)) == 20 * MB            # read back: restored
    evs = seen(base, lambda evs: any(e["kind"] == "object_restored" and
                                     e["object_id"] == first.hex() for e in evs),
               kinds=["object_spilled", "object_restored"])
    seqs = {(e["kind"], e["object_id"]): e["seq"] for e in evs}
    assert seqs[("object_spilled", first.hex())] < seqs[("object_restored", first.hex())]
    # refbook.events() still shows them under their earlier names
    assert {"spill", "restore"} <= {e["kind"] for e in refbook.events()}
    del refs


def test_a_subscription_sees_every_event_in_order_with_no_gap(cluster):
    got: list = []
    batches = []
    lock = threading.Lock()

    def on_events(evs):
        with lock:
            got.extend(evs)
            batches.append(len(evs))

    sub = state.subscribe(on_events)
    try:
        refs = [add.remote(i, 1) for i in range(40)]
        assert refbook.get(refs) == list(range(1, 41))
        tids = {task_id(r) for r in refs}
        del refs

        def complete():
            with lock:
                done = {e["task_id"] for e in got if e["kind"] == "task_finished"}
                freed = {e["object_id"][:32] for e in got if e["kind"] == "object_freed"}
            return tids <= done and tids <= freed
        assert wait_for(complete, timeout=10)
    finally:
        sub.close()
    n = len(got)
    time.sleep(0.2)
    assert len(got) == n, "a callback came after close()"
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(a["time"] <= b["time"] for a, b in zip(got, got[1:], strict=False))
    assert len(batches) < len(got)                    # batched
    order = {(e["kind"], e.get("task_id")): e["seq"] for e in got}
    for tid in tids:
        assert order[("task_submitted", tid)] < order[("task_finished", tid)]
    # the same events, read again from this driver's log
    again = state.events(since=seqs[0] - 1)
    assert [e["seq"] for e in again[:n]] == seqs


def test_a_subscription_filters_kinds_and_resumes_since(cluster):
    base = last_seq()
    got: list = []
    sub = state.subscribe(got.extend, kinds=["task_finished"], since=base)
    try:
        r = add.remote(1, 2)
        assert refbook.get(r) == 3
        assert wait_for(lambda: any(e["task_id"] == task_id(r) for e in got), timeout=10)
    finally:
        sub.close()
    assert {e["kind"] for e in got} == {"task_finished"}


def test_killing_a_worker_gives_worker_died_and_task_retried(cluster, tmp_path):
    base = last_seq()
    flag = str(tmp_path / "pid")
    r = die_once.remote(flag)
    assert wait_for(lambda: os.path.exists(flag), timeout=20)
    pid = int(open(flag).read())
    os.kill(pid, signal.SIGKILL)
    assert refbook.get(r, timeout=30) == "ok"
    tid = task_id(r)

    def complete(evs):
        return any(e["kind"] == "task_finished" and e["task_id"] == tid for e in evs) and \
            any(e["kind"] == "worker_died" and e["pid"] == pid for e in evs)
    evs = seen(base, complete)
    died = next(e for e in evs if e["kind"] == "worker_died" and e["pid"] == pid)
    retried = next(e for e in evs if e["kind"] == "task_retried" and e["task_id"] == tid)
    finished = next(e for e in evs if e["kind"] == "task_finished" and e["task_id"] == tid)
    assert died["seq"] < retried["seq"] < finished["seq"]
    assert died["node_id"] == cluster.node_id and not died["oom"]
    assert retried["name"].endswith("die_once") and retried["attempt"] == 1
    assert finished["attempt"] == 2
    assert not any(e["kind"] in ("task_failed", "task_cancelled") and e.get("task_id") == tid
                   for e in evs)
    # a new worker took its place
    seen(base, lambda evs: any(e["kind"] == "worker_started" for e in evs))


def test_a_node_that_dies_gives_node_died_then_its_objects_are_rebuilt(tmp_path):
    from refbook.testing import Cluster
    from tests.integration.helpers import digest, make, sha
    refbook.shutdown()
    c = Cluster()
    try:
        a = c.add_node(num_cpus=1, resources={"a": 1})
        b = c.add_node(num_cpus=1, resources={"b": 1})
        c.wait_for_nodes()
        refbook.init(address=c.address)
        base = seen(0, lambda evs: {a.node_id, b.node_id} <= {
            e["node"] for e in evs if e["kind"] == "node_added"})[-1]["seq"]
        x = make.options(resources={"a": 1}).remote(3, 5)
        refbook.wait([x])
        c.remove_node(a)
        c.add_node(num_cpus=1, resources={"a": 1})      # where it can be made again
        want = sha(np.random.default_rng(3).integers(0, 255, 5 * MB, dtype=np.uint8))
        assert refbook.get(digest.options(resources={"b": 1}).remote(x), timeout=60) == want
        oid = x.hex()

        def rebuilt(evs):
            return any(e["kind"] == "object_reconstructed" and e["object_id"] == oid
                       for e in evs)
        evs = seen(base, rebuilt, timeout=20)
        at = {}
        for e in evs:
            if e.get("object_id") == oid or (e["kind"] == "node_died"
                                             and e["node"] == a.node_id):
                at.setdefault(e["kind"], e["seq"])
        assert at["node_died"] < at["object_lost"] < at["object_reconstructing"] < \
            at["object_reconstructed"], at
        died = next(e for e in evs if e["kind"] == "node_died")
        assert died["node"] == a.node_id and died["node_id"] != a.node_id
        del x
    finally:
        refbook.shutdown()
        c.shutdown()


def test_a_subscription_reads_at_the_pace_it_asks_for(cluster):
    from refbook.runtime.api import events as ev
    c = ev.collector()
    rounds = []
    real = c.poll
    c.poll = lambda: rounds.append(time.monotonic()) or real()
    try:
        with pytest.raises(ValueError, match="period"):
            state.subscribe(lambda evs: None, period=0)
        got = []
        with state.subscribe(got.extend, kinds="object_created", period=0.2):
            time.sleep(0.3)
            ref = refbook.put(np.ones(10))
            assert wait_for(lambda: any(e["object_id"] == ref.hex() for e in got), 5)
            rounds.clear()
            time.sleep(2.0)
            slow = len(rounds)
            with state.subscribe(lambda evs: None, period=0.025):   # the quickest rules
                rounds.clear()
                time.sleep(1.0)
                quick = len(rounds)
        assert 6 <= slow <= 12, slow              # about 10 in 2 s
        assert quick >= 20, quick                 # about 40 in 1 s
    finally:
        c.poll = real


def test_recording_switched_off_and_on_in_every_process_keeps_the_numbering(cluster):
    """The events bench's switch (``set_recording``): while off, no process records,
    so tasks and objects leave no events; back on, every process records again, and a
    subscription across the switch still numbers without a gap or a repeat."""
    from refbook.runtime.api.events import set_recording
    # both workers started (a process started after the switch records as usual)
    refbook.get([pause.remote(0.3) for _ in range(2)])
    got: list = []
    sub = state.subscribe(got.extend)
    try:
        before = last_seq()
        assert set_recording(False) == 4       # the driver, the node, two workers
        off = [add.remote(i, 1) for i in range(20)]
        assert refbook.get(off) == list(range(1, 21))
        off_ids = {task_id(r) for r in off}
        del off
        time.sleep(0.3)
        assert not [e for e in state.events(since=before)
                    if e.get("task_id") in off_ids], "recorded while switched off"
        assert set_recording(True) == 4
        on = [add.remote(i, 2) for i in range(20)]
        assert refbook.get(on) == list(range(2, 22))
        on_ids = {task_id(r) for r in on}
        evs = seen(before, lambda es: on_ids <= {e.get("task_id") for e in es
                                                 if e["kind"] == "task_started"})
        assert on_ids <= {e.get("task_id") for e in evs if e["kind"] == "task_finished"}
        assert not [e for e in evs if e.get("task_id") in off_ids]
        assert wait_for(lambda: got and got[-1]["seq"] >= evs[-1]["seq"], timeout=5)
    finally:
        sub.close()
        set_recording(True)
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not [e for e in got if e["kind"] == "events_dropped"]
