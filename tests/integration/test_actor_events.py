"""Actors in the state API on real clusters: the actor events (actor_created,
actor_restarted, actor_died with its reason), the task events of actor calls, and where
``state.actors()`` says an actor runs on a cluster of several nodes (API.md §3)."""

import os
import signal
import time

import pytest

import refbook
from refbook import state
from refbook.exceptions import ActorError
from tests.integration.helpers import alive, wait_for

ACTOR_KINDS = ["actor_created", "actor_restarted", "actor_died"]


@pytest.fixture
def cluster():
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        yield ctx
    finally:
        refbook.shutdown()


@pytest.fixture
def three_nodes():
    refbook.shutdown()
    ctx = refbook.init(num_nodes=3, num_cpus=1, object_store_memory=64 << 20)
    try:
        yield ctx
    finally:
        refbook.shutdown()


@refbook.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()

    def where(self):
        from refbook.runtime.processes import core
        return core.current().node_id, os.getpid()

    def fail(self):
        raise ValueError("method failed")

    def slow(self, s):
        time.sleep(s)
        return s


@refbook.remote
class Broken:
    def __init__(self):
        raise RuntimeError("cannot construct")

    def ping(self):
        return 1


_held = []


@refbook.remote
def make_and_keep_an_actor():
    """This worker owns an actor (kept in a global) and says its pid and the actor's."""
    c = Counter.remote(0)
    _held.append(c)
    return os.getpid(), c.hex(), refbook.get(c.pid.remote())


def last_seq() -> int:
    evs = state.events()
    return evs[-1]["seq"] if evs else 0


def events_of(since, pred, kinds=None, timeout=20.0) -> list:
    """The events after ``since`` once ``pred(events)`` holds."""
    out = []

    def ok():
        out[:] = state.events(since=since, kinds=kinds)
        return pred(out)
    assert wait_for(ok, timeout=timeout), [(e["seq"], e["kind"]) for e in out]
    return out


def of_actor(evs, handle) -> list:
    return [e for e in evs if e["kind"] in ACTOR_KINDS and e["actor_id"] == handle.hex()]


def kinds_of(evs) -> list:
    return [e["kind"] for e in evs]


def record(handle) -> dict:
    return next(a for a in state.actors() if a["actor_id"] == handle.hex())


def test_a_killed_actor_is_created_then_dies_killed_once(cluster):
    base = last_seq()
    c = Counter.options(name="ev-killed").remote(0)
    pid = refbook.get(c.pid.remote(), timeout=30)
    refbook.kill(c)
    evs = events_of(base, lambda evs: "actor_died" in kinds_of(of_actor(evs, c)),
                    kinds=ACTOR_KINDS)
    time.sleep(0.5)                 # (a second actor_died would come in this time)
    evs = of_actor(state.events(since=base, kinds=ACTOR_KINDS), c)
    assert kinds_of(evs) == ["actor_created", "actor_died"]
    created, died = evs
    for e in evs:
        assert (e["class_name"], e["name"], e["pid"], e["node_id"]) == \
            ("Counter", "ev-killed", pid, cluster.node_id)
    assert created["owner"] == created["process"]       # recorded by its owner, here
    assert died["reason"] == "killed" and "killed" in died["detail"]
    assert record(c)["state"] == "dead"


def test_a_restarted_actor_says_so_then_dies_with_its_restarts_exhausted(cluster):
    base = last_seq()
    c = Counter.options(max_restarts=1).remote(5)
    pid = refbook.get(c.pid.remote(), timeout=30)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: record(c)["restarts"] == 1, timeout=20)
    assert refbook.get(c.incr.remote(), timeout=30) == 6        # the calls succeed
    pid2 = refbook.get(c.pid.remote(), timeout=30)
    assert pid2 != pid
    evs = events_of(base, lambda evs: "actor_restarted" in kinds_of(of_actor(evs, c)),
                    kinds=ACTOR_KINDS)
    evs = of_actor(evs, c)
    assert kinds_of(evs) == ["actor_created", "actor_restarted"]
    assert evs[0]["pid"] == pid
    r = evs[1]
    assert (r["attempt"], r["pid"], r["node_id"]) == (1, pid2, cluster.node_id)
    assert str(pid) in r["reason"]                 # why its process went
    rec = record(c)
    assert (rec["state"], rec["pid"], rec["restarts"]) == ("alive", pid2, 1)

    os.kill(pid2, signal.SIGKILL)                  # no restarts left
    evs = events_of(base, lambda evs: "actor_died" in kinds_of(of_actor(evs, c)),
                    kinds=ACTOR_KINDS)
    died = of_actor(evs, c)[-1]
    assert (died["reason"], died["pid"], died["restarts"]) == ("restarts_exhausted", pid2, 1)
    with pytest.raises(ActorError, match="max_restarts=1"):
        refbook.get(c.incr.remote(), timeout=30)


def test_an_actor_dies_when_its_last_handle_goes_or_its_constructor_raises(cluster):
    base = last_seq()
    c = Counter.remote(0)
    aid = c.hex()
    pid = refbook.get(c.pid.remote(), timeout=30)
    del c
    assert wait_for(lambda: not alive(pid), timeout=20)
    b = Broken.remote()
    with pytest.raises(ActorError, match="cannot construct"):
        refbook.get(b.ping.remote(), timeout=30)

    def both(evs):
        return {(e["actor_id"], e["kind"]) for e in evs} >= {
            (aid, "actor_died"), (b.hex(), "actor_died")}
    evs = events_of(base, both, kinds=ACTOR_KINDS)
    mine = [e for e in evs if e["actor_id"] == aid]
    assert kinds_of(mine) == ["actor_created", "actor_died"]
    assert mine[1]["reason"] == "out_of_scope" and mine[1]["pid"] == pid
    broken = of_actor(evs, b)
    assert kinds_of(broken) == ["actor_died"]      # it never was created
    assert broken[0]["reason"] == "constructor_failed"
    assert "cannot construct" in broken[0]["detail"]


def test_the_head_reports_an_actor_whose_owner_died(cluster):
    base = last_seq()
    owner_pid, aid, actor_pid = refbook.get(make_and_keep_an_actor.remote(), timeout=30)
    os.kill(owner_pid, signal.SIGKILL)
    events_of(base, lambda evs: any(e["actor_id"] == aid for e in evs),
              kinds=["actor_died"])
    time.sleep(0.5)
    died = [e for e in state.events(since=base, kinds=["actor_died"])
            if e["actor_id"] == aid]
    assert len(died) == 1
    assert (died[0]["reason"], died[0]["class_name"], died[0]["pid"]) == \
        ("owner_died", "Counter", actor_pid)
    rec = next(a for a in state.actors() if a["actor_id"] == aid)
    assert (rec["state"], rec["pid"]) == ("dead", None)
    assert wait_for(lambda: not alive(actor_pid), timeout=20)


def test_actor_calls_have_task_events_in_order(cluster):
    c = Counter.options(name="ev-calls").remote(0)
    refbook.get(c.pid.remote(), timeout=30)
    base = last_seq()
    refs = [c.incr.remote(1) for _ in range(5)]
    bad = c.fail.remote()
    assert refbook.get(refs) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        refbook.get(bad)
    tids = [r.hex()[:32] for r in refs]
    bad_tid = bad.hex()[:32]
    task_kinds = ["task_submitted", "task_started", "task_finished", "task_failed"]

    def ended(evs):
        done = {e["task_id"] for e in evs if e["kind"] in ("task_finished", "task_failed")}
        started = {e["task_id"] for e in evs if e["kind"] == "task_started"}
        return {*tids, bad_tid} <= done and {*tids, bad_tid} <= started
    evs = events_of(base, ended, kinds=task_kinds)
    for tid in tids:
        mine = [e for e in evs if e["task_id"] == tid]
        assert kinds_of(mine) == ["task_submitted", "task_started", "task_finished"]
        assert {e["name"] for e in mine} == {"Counter.incr"}
        assert {e["actor_id"] for e in mine} == {c.hex()}
        assert mine[1]["owner"] == mine[0]["process"]    # started in the actor, for us
    failed = [e for e in evs if e["task_id"] == bad_tid]
    assert kinds_of(failed) == ["task_submitted", "task_started", "task_failed"]
    assert failed[-1]["error"] == "ValueError" and failed[-1]["name"] == "Counter.fail"
    # the calls of one caller start in the order they were submitted
    starts = [e["task_id"] for e in evs if e["kind"] == "task_started"]
    assert [t for t in starts if t in tids] == tids

    # pending calls are in state.tasks(), named Class.method
    slow = c.slow.remote(1.5)
    queued = c.incr.remote(1)

    def listed():
        rows = {t["task_id"]: t for t in state.tasks()}
        s, q = rows.get(slow.hex()[:32]), rows.get(queued.hex()[:32])
        return s is not None and q is not None and s["state"] == "running" and \
            s["name"] == "Counter.slow" and q["name"] == "Counter.incr"
    assert wait_for(listed, timeout=10)
    assert refbook.get([slow, queued], timeout=30) == [1.5, 6]


def test_a_call_retried_after_a_restart_says_so(cluster):
    c = Counter.options(max_restarts=1, max_task_retries=1).remote(0)
    pid = refbook.get(c.pid.remote(), timeout=30)
    base = last_seq()
    call = c.slow.remote(2.0)
    tid = call.hex()[:32]
    # its first start is read from the actor's ring before the actor dies
    events_of(base, lambda evs: any(e["task_id"] == tid for e in evs),
              kinds=["task_started"])
    os.kill(pid, signal.SIGKILL)
    assert refbook.get(call, timeout=30) == 2.0
    evs = events_of(base, lambda evs: any(e["kind"] == "task_finished" and
                                          e.get("task_id") == tid for e in evs))
    mine = [e for e in evs if e.get("task_id") == tid]
    assert kinds_of(mine) == ["task_submitted", "task_started", "task_retried",
                              "task_started", "task_finished"]
    assert str(pid) in mine[2]["reason"] and mine[2]["actor_id"] == c.hex()
    assert mine[-1]["attempt"] == 2
    restarted = [e for e in evs if e["kind"] == "actor_restarted"]
    assert len(restarted) == 1 and restarted[0]["actor_id"] == c.hex()


def test_actors_show_the_node_and_pid_they_run_at_on_three_nodes(three_nodes):
    drv = three_nodes.node_id
    base = last_seq()
    # one CPU a node: the two actors go to two nodes, the third node stays free
    actors = [Counter.options(num_cpus=1, max_restarts=1).remote(0) for _ in range(2)]
    where = [refbook.get(a.where.remote(), timeout=60) for a in actors]
    assert len({n for n, _ in where}) == 2
    assert any(n != drv for n, _ in where)
    for a, (node, pid) in zip(actors, where, strict=True):
        rec = record(a)
        assert (rec["state"], rec["node_id"], rec["pid"]) == ("alive", node, pid)
    evs = events_of(base, lambda evs: len([e for e in evs if e["kind"] == "actor_created"])
                    >= 2, kinds=ACTOR_KINDS)
    for a, (node, pid) in zip(actors, where, strict=True):
        created = of_actor(evs, a)[0]
        assert (created["node_id"], created["pid"]) == (node, pid)

    # its node dies: it restarts on the free node, and says where
    i = next(i for i, (n, _) in enumerate(where) if n != drv)
    moved, (old_node, old_pid) = actors[i], where[i]
    state.kill_node(old_node)
    node, pid = refbook.get(moved.where.remote(), timeout=60)
    assert node not in (old_node, drv) and pid != old_pid
    rec = record(moved)
    assert (rec["state"], rec["node_id"], rec["pid"], rec["restarts"]) == \
        ("alive", node, pid, 1)
    evs = events_of(base, lambda evs: "actor_restarted" in kinds_of(of_actor(evs, moved)),
                    kinds=ACTOR_KINDS)
    r = of_actor(evs, moved)[-1]
    assert (r["kind"], r["node_id"], r["pid"], r["attempt"]) == \
        ("actor_restarted", node, pid, 1)
    assert old_node in r["reason"]


def test_actors_whose_owner_was_on_a_dead_node_die_once(three_nodes):
    base = last_seq()
    blockers = [Counter.options(num_cpus=1).remote(0) for _ in range(3)]   # every CPU
    refbook.get([b.pid.remote() for b in blockers], timeout=120)
    new = state.add_node(num_cpus=1)           # the only free CPU: the task runs there
    _owner_pid, aid, actor_pid = refbook.get(make_and_keep_an_actor.remote(), timeout=60)
    node = next(a for a in state.actors() if a["actor_id"] == aid)["node_id"]
    assert node == new
    state.kill_node(new)
    events_of(base, lambda evs: any(e["actor_id"] == aid for e in evs),
              kinds=["actor_died"], timeout=30)
    time.sleep(0.5)
    died = [e for e in state.events(since=base, kinds=["actor_died"])
            if e["actor_id"] == aid]
    assert [(e["reason"], e["pid"], e["node_id"]) for e in died] == \
        [("owner_died", actor_pid, new)]
    assert next(a for a in state.actors() if a["actor_id"] == aid)["state"] == "dead"
