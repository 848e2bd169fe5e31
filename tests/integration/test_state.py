"""API.md section 3, snapshots and queries (``refbook.state``), against a real cluster."""

import os
import sys
import time

import psutil
import pytest

import refbook
from refbook import state
from refbook.runtime.api.frontend import set_names_provider

from .helpers import wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture
def names():
    """``names[hex] = [...]``: what the notebook's names provider says."""
    table: dict = {}
    set_names_provider(lambda: dict(table))
    yield table
    set_names_provider(None)


def here() -> int:
    return sys._getframe(1).f_lineno


@refbook.remote
def add(x, y=1):
    return x + y


@refbook.remote
def sleep_then(x, s):
    time.sleep(s)
    return x


@refbook.remote
def put_inside():
    inner, line = refbook.put("inner value"), sys._getframe().f_lineno
    return [inner], line


@refbook.remote
def nest3():
    a, line = refbook.put("deep"), sys._getframe().f_lineno
    b = refbook.put([a])
    c = refbook.put([b])
    return [c], a.hex(), line


def _by_id(objs) -> dict:
    return {o["object_id"]: o for o in objs}


def _steps(path) -> list:
    """A path without the details: ``(kind, name or process or id)`` per step."""
    key = {"variable": "name", "ref": "process", "borrower": "process", "task": "task_id",
           "lineage": "task_id", "object": "object_id"}
    return [(s["kind"], s[key[s["kind"]]]) for s in path]


def test_objects_lists_an_object_a_worker_put_and_where_each_was_made(cluster):
    outer, line = put_inside.remote(), here()
    _inner, inner_line = refbook.get(outer)
    inner_id = _inner[0].hex()
    del _inner
    objs = _by_id(state.objects())
    o = objs[outer.hex()]
    assert o["made_by"] == "put_inside"
    assert o["call_site"] == f"test_state.py:{line}"
    assert o["owner"] == cluster.driver_address
    i = objs[inner_id]
    assert i["owner"] != o["owner"]                  # a worker owns it
    assert i["made_by"] == "put"
    assert i["call_site"] == f"test_state.py:{inner_line}"
    assert i["contained_in"] == [outer.hex()]
    assert i["names"] == []
    # refbook.objects() lists the same objects
    assert {outer.hex(), inner_id} <= {x["object_id"] for x in refbook.objects()}


def test_objects_names_the_variables_that_hold_each(names):
    x, line = refbook.put(41), here()
    names[x.hex()] = ["x", "y"]
    o = _by_id(state.objects())[x.hex()]
    assert o["names"] == ["x", "y"]
    assert (o["made_by"], o["call_site"]) == ("put", f"test_state.py:{line}")


def test_why_alive_names_the_variable_and_the_containing_object(names):
    x = refbook.put(1)
    box = refbook.put([x])
    xid, bid = x.hex(), box.hex()
    del x
    names[bid] = ["box"]
    assert wait_for(lambda: [_steps(p) for p in state.why_alive(xid)] ==
                    [[("variable", "box"), ("object", bid)]]), state.why_alive(xid)
    assert [_steps(p) for p in state.why_alive(box)] == [[("variable", "box")]]
    del box
    assert wait_for(lambda: state.why_alive(xid) == [])


def test_why_alive_names_the_pending_task():
    y = refbook.put("arg")
    r = sleep_then.remote(y, 1.5)
    yid, tid = y.hex(), r.hex()[:32]
    del y
    assert wait_for(lambda: [_steps(p) for p in state.why_alive(yid)] == [[("task", tid)]]), \
        state.why_alive(yid)
    refbook.get(r)


def test_why_alive_names_kept_lineage():
    x = refbook.put(5)
    r = add.remote(x)
    assert refbook.get(r) == 6
    xid, tid = x.hex(), r.hex()[:32]
    del x            # a put value a finished task read: kept so that it can run again
    assert wait_for(lambda: [_steps(p) for p in state.why_alive(xid)] ==
                    [[("lineage", tid)]]), state.why_alive(xid)
    assert refbook.release_lineage(r)
    assert wait_for(lambda: state.why_alive(xid) == [])


def test_why_alive_through_three_levels_across_a_worker(names, cluster):
    outer = nest3.remote()
    me = cluster.driver_address
    names[outer.hex()] = ["outer"]
    (c,), aid, _line = refbook.get(outer)
    cid = c.hex()
    del c
    objs = _by_id(state.objects())
    bid = objs[aid]["contained_in"][0]
    assert objs[bid]["contained_in"] == [cid]
    assert objs[cid]["contained_in"] == [outer.hex()]
    want = [("variable", "outer"), ("object", outer.hex()), ("borrower", me),
            ("object", cid), ("object", bid)]
    assert wait_for(lambda: [_steps(p) for p in state.why_alive(aid)] == [want]), \
        state.why_alive(aid)
    t = time.perf_counter()
    state.why_alive(aid)
    assert time.perf_counter() - t < 0.1


def test_lineage_of_a_chain():
    a = add.remote(1)
    b = add.remote(a)
    c = add.remote(b)
    assert refbook.get(c) == 4
    g = state.lineage(c)
    nodes = {n["id"]: n for n in g["nodes"]}
    edges = {(e["src"], e["dst"], e["kind"]) for e in g["edges"]}
    ta, tb, tc = (x.hex()[:32] for x in (a, b, c))
    assert {ta, tb, tc} <= {h for h, n in nodes.items() if n["kind"] == "task"}
    assert all(nodes[t]["state"] == "done" and nodes[t]["name"] == "add" for t in (ta, tb, tc))
    assert {(ta, a.hex(), "return"), (a.hex(), tb, "arg"), (tb, b.hex(), "return"),
            (b.hex(), tc, "arg"), (tc, c.hex(), "return")} <= edges
    assert nodes[c.hex()]["state"] == "ready" and nodes[c.hex()]["kind"] == "object"
    one = state.lineage(c.hex(), depth=1)
    ids = {n["id"] for n in one["nodes"]}
    assert {tc, b.hex(), c.hex()} <= ids and tb not in ids


def test_lineage_follows_an_object_owned_by_a_worker():
    outer = put_inside.remote()
    (inner,), _ = refbook.get(outer)
    g = state.lineage(outer)
    nodes = {n["id"]: n for n in g["nodes"]}
    assert (outer.hex(), inner.hex(), "contains") in \
        {(e["src"], e["dst"], e["kind"]) for e in g["edges"]}
    assert nodes[inner.hex()]["made_by"] == "put"
    assert nodes[inner.hex()]["owner"] != nodes[outer.hex()]["owner"]


def test_tasks_shows_a_running_task_with_its_node_and_pid(cluster):
    r, line = sleep_then.remote(1, 3), here()
    tid = r.hex()[:32]

    def running():
        return next((t for t in state.tasks() if t["task_id"] == tid
                     and t["state"] == "running"), None)
    assert wait_for(lambda: running() is not None)
    t = running()
    assert t["name"] == "sleep_then"
    assert t["node_id"] == cluster.node_id
    assert t["pid"] != os.getpid() and psutil.pid_exists(t["pid"])
    assert t["owner"] == cluster.driver_address
    assert t["call_site"] == f"test_state.py:{line}"
    assert t["returns"] == [r.hex()] and t["attempt"] == 1
    assert t["submitted_at"] <= t["started_at"] <= time.time()
    assert t["finished_at"] is None
    refbook.get(r)
    done = next(t for t in state.tasks() if t["task_id"] == tid)   # kept as lineage
    assert done["state"] == "done" and done["finished_at"] >= done["started_at"]


def test_tasks_lists_waiting_and_failed_tasks():
    blocker = sleep_then.remote(1, 2.0)
    waiting = add.remote(blocker)

    @refbook.remote(max_retries=0)
    def boom():
        raise ValueError("no")
    bad = boom.remote()
    with pytest.raises(ValueError):
        refbook.get(bad)
    by_id = {t["task_id"]: t for t in state.tasks()}
    assert by_id[waiting.hex()[:32]]["state"] == "waiting"
    assert by_id[waiting.hex()[:32]]["args"] == [blocker.hex()]
    assert by_id[bad.hex()[:32]]["state"] == "failed"
    refbook.get(waiting)


def test_nodes_and_actors_are_refbook_s():
    assert [n["node_id"] for n in state.nodes()] == [n["node_id"] for n in refbook.nodes()]
    assert state.actors is refbook.actors


def test_bad_arguments():
    with pytest.raises(TypeError):
        state.why_alive(3)
    with pytest.raises(ValueError):
        state.lineage("not hex")
    assert state.why_alive("00" * 20) == []
