"""Several node managers on one host: placement by resources, objects moving between
nodes, and what happens when a node dies."""

import os
import time

import numpy as np
import pytest

import refbook
from refbook.exceptions import (
    ObjectLostError,
    ObjectReconstructionFailedError,
    OwnerDiedError,
)
from refbook.testing import Cluster
from tests.integration.helpers import MB, alive, digest, make, sha, wait_for


@pytest.fixture
def cluster3():
    refbook.shutdown()
    c = Cluster()
    a = c.add_node(num_cpus=1, resources={"a": 1, "any": 1})
    b = c.add_node(num_cpus=1, resources={"b": 1, "any": 1})
    c.wait_for_nodes()
    refbook.init(address=c.address)
    yield c, a, b
    refbook.shutdown()
    c.shutdown()


@refbook.remote
def where():
    from refbook.runtime.processes import core
    return core.current().node_id




def test_nodes_join_and_tasks_go_where_their_resources_are(cluster3):
    c, a, b = cluster3
    nodes = {n["node_id"]: n for n in refbook.nodes()}
    assert {a.node_id, b.node_id} <= set(nodes) and all(n["alive"] for n in nodes.values())
    assert refbook.cluster_resources()["CPU"] == 2
    assert refbook.get(where.options(resources={"a": 1}).remote()) == a.node_id
    assert refbook.get(where.options(resources={"b": 1}).remote()) == b.node_id
    with pytest.raises(refbook.exceptions.RefbookError, match="no node can ever"):
        refbook.get(where.options(resources={"c": 1}).remote(), timeout=10)


def test_objects_move_between_nodes_byte_exact(cluster3):
    c, a, b = cluster3
    x = make.options(resources={"a": 1}).remote(7, 20)
    want = sha(np.random.default_rng(7).integers(0, 255, 20 * MB, dtype=np.uint8))
    assert refbook.get(digest.options(resources={"b": 1}).remote(x)) == want
    assert sha(refbook.get(x)) == want                 # and to the driver's node
    kinds = [e for e in refbook.events("transfer")]
    assert len(kinds) >= 2 and all(e["bytes"] >= 20 * MB for e in kinds)


def test_a_task_on_a_dead_node_is_retried_elsewhere(cluster3):
    c, a, b = cluster3

    @refbook.remote(max_retries=2)
    def slow_where(s):
        time.sleep(s)
        from refbook.runtime.processes import core
        return core.current().node_id

    blocker = slow_where.options(resources={"b": 1}).remote(2)    # node b is busy
    time.sleep(0.3)
    first = slow_where.options(resources={"any": 1}).remote(3)   # so this runs on a
    time.sleep(0.5)
    c.remove_node(a)
    assert wait_for(lambda: not any(n["node_id"] == a.node_id and n["alive"]
                                    for n in refbook.nodes()), timeout=5)
    assert refbook.get(first, timeout=30) == b.node_id           # retried on b
    assert refbook.get(blocker) == b.node_id


def test_objects_lost_with_their_node_are_rebuilt_from_lineage(cluster3):
    c, a, b = cluster3
    xs = [make.options(resources={"any": 1}).remote(i, 5) for i in range(4)]
    refbook.wait(xs, num_returns=4)
    on_a = [x for x in xs if next(o for o in refbook.objects()
                                  if o["object_id"] == x.hex())["nodes"] == [a.node_id]]
    c.remove_node(a)
    sums = refbook.get([digest.options(resources={"b": 1}).remote(x) for x in xs], timeout=60)
    assert sums == [sha(np.random.default_rng(i).integers(0, 255, 5 * MB, dtype=np.uint8))
                    for i in range(4)]
    rebuilt = {e["object_ids"][0] for e in refbook.events("reconstruct")}
    assert {x.hex() for x in on_a} <= rebuilt


def test_a_chain_whose_intermediates_were_all_on_the_lost_node(cluster3):
    c, a, b = cluster3

    @refbook.remote(resources={"any": 1})
    def step(prev, i):
        from refbook.runtime.processes import core
        return np.asarray(prev) + i, core.current().node_id

    @refbook.remote(resources={"b": 1})
    def hold_b(s):
        time.sleep(s)
        return True

    blocker = hold_b.remote(3)                 # node b is busy: the chain runs on a
    time.sleep(0.3)
    cur = refbook.put(np.zeros(200_000))
    nodes = []
    for i in range(20):
        cur, node = step.options(num_returns=2).remote(cur, i)
        nodes.append(node)
    assert set(refbook.get(nodes)) == {a.node_id}
    refbook.get(blocker)
    c.remove_node(a)

    @refbook.remote(resources={"b": 1})
    def total(arr):
        return float(arr.sum())

    assert refbook.get(total.remote(cur), timeout=60) == 200_000 * sum(range(20))
    assert len(refbook.events("reconstruct")) >= 20


def test_a_rebuild_waits_for_a_node_that_can_run_it_then_fails_with_a_current_message(
        monkeypatch):
    import threading
    refbook.shutdown()
    monkeypatch.setenv("REFBOOK_REBUILD_WAIT_S", "3")
    with Cluster() as c:
        a = c.add_node(num_cpus=1, resources={"a": 1})
        b = c.add_node(num_cpus=1, resources={"b": 1})
        c.wait_for_nodes()
        refbook.init(address=c.address)
        try:
            on_a = make.options(resources={"a": 1})
            lost = on_a.remote(1, 2)
            refbook.wait([lost])
            c.remove_node(a)                       # no node left can run make on "a"
            with pytest.raises(ObjectReconstructionFailedError) as ei:
                refbook.get(digest.options(resources={"b": 1}).remote(lost), timeout=30)
            msg = str(ei.value)
            assert "make" in msg and b.node_id in msg and a.node_id not in msg, msg

            a2 = c.add_node(num_cpus=1, resources={"a": 1})
            c.wait_for_nodes()
            kept = on_a.remote(2, 2)
            refbook.wait([kept])
            c.remove_node(a2)
            joiner = threading.Timer(1.0, c.add_node, kwargs={"resources": {"a": 1}})
            joiner.start()                         # joins while the rebuild waits
            try:
                got = refbook.get(digest.options(resources={"b": 1}).remote(kept), timeout=30)
            finally:
                joiner.join()
            want = np.random.default_rng(2).integers(0, 255, 2 * MB, dtype=np.uint8)
            assert got == sha(want)
        finally:
            refbook.shutdown()


def test_release_lineage_frees_the_put_values_it_kept_and_a_rebuild_then_fails(cluster3):
    c, a, b = cluster3
    data = refbook.put(np.ones(4 * MB, dtype=np.uint8))     # on the driver's node

    @refbook.remote(resources={"a": 1})
    def plus(x):
        return x + 1

    out = plus.remote(data)
    refbook.wait([out])
    data_id = data.hex()
    del data
    obj = next(o for o in refbook.objects() if o["object_id"] == data_id)
    assert [t["name"].rsplit(".", 1)[-1] for t in obj["lineage"]] == ["plus"]
    assert obj["submitted_refs"] == 0
    assert obj["lineage"][0]["returns"] == [out.hex()]
    assert refbook.release_lineage(out) is True
    assert wait_for(lambda: data_id not in {o["object_id"] for o in refbook.objects()})
    assert refbook.release_lineage(out) is False
    c.remove_node(a)
    with pytest.raises(ObjectReconstructionFailedError, match="release_lineage"):
        refbook.get(out, timeout=30)


def test_a_put_object_on_a_lost_node_cannot_be_rebuilt(cluster3):
    c, a, b = cluster3

    @refbook.remote(resources={"a": 1})
    def put_there():
        return refbook.put(np.ones(MB))          # owned by a worker on a

    inner = refbook.get(put_there.remote())
    c.remove_node(a)
    t = time.monotonic()
    with pytest.raises(ObjectLostError):
        refbook.get(inner, timeout=30)
    assert time.monotonic() - t < 10


def test_refs_owned_by_a_worker_on_a_dead_node_raise_owner_died(cluster3):
    c, a, b = cluster3

    @refbook.remote(resources={"a": 1})
    def owner_of_a_put():
        return [refbook.put(np.ones(2 * MB))]

    inner = refbook.get(owner_of_a_put.remote())[0]
    c.remove_node(a)
    with pytest.raises(OwnerDiedError):
        refbook.get(inner, timeout=30)


def test_removed_node_leaves_no_process(cluster3):
    c, a, b = cluster3
    import psutil
    kids = [p.pid for p in psutil.Process(a.pid).children(recursive=True)]
    assert kids
    c.remove_node(a)
    assert wait_for(lambda: not any(alive(p) for p in kids + [a.pid]), timeout=10)
    assert refbook.get(where.options(resources={"b": 1}).remote()) == b.node_id
    assert os.path.exists(c.dir)


def test_a_dead_workers_objects_on_other_nodes_go_with_it(cluster3):
    c, a, b = cluster3

    @refbook.remote(resources={"a": 1})
    def owner_task():
        import os
        ref = refbook.put(np.ones(2 * MB))             # stored on node a, owned here
        return [ref], os.getpid()

    @refbook.remote(resources={"b": 1})
    def copy_to_b(lst):
        return float(refbook.get(lst[0]).sum())         # b pulls a copy

    lst, pid = refbook.get(owner_task.remote())
    assert refbook.get(copy_to_b.remote(lst)) == 2 * MB
    import os
    import signal
    os.kill(pid, signal.SIGKILL)                        # the owner dies; node a lives
    with pytest.raises(OwnerDiedError):
        refbook.get(lst[0], timeout=30)

    def store_objects(node_id):
        return next(n for n in refbook.nodes() if n["node_id"] == node_id)["store"]
    assert wait_for(lambda: store_objects(a.node_id)["num_objects"] == 0, timeout=10)
    assert wait_for(lambda: store_objects(b.node_id)["num_objects"] == 0, timeout=10), \
        (a.node_id, b.node_id, [(e["kind"], e["node_id"], e.get("source"),
                                 e.get("object_ids")) for e in refbook.events()],
         [(n["node_id"], n["alive"], n["store"]["num_objects"]) for n in refbook.nodes()])


def test_tasks_go_to_the_node_that_holds_their_data(cluster3):
    c, a, b = cluster3

    @refbook.remote(resources={"any": 1})
    def node_of(arr):
        from refbook.runtime.processes import core
        return core.current().node_id

    for node, res in ((a, {"a": 1}), (b, {"b": 1})):
        x = make.options(resources=res).remote(3, 20)
        refbook.wait([x])
        # one at a time: each finds the data's node free and waits for its worker there
        assert [refbook.get(node_of.remote(x)) for _ in range(4)] == [node.node_id] * 4


def test_tasks_queued_where_their_data_is_spill_over_to_an_idle_node(cluster3):
    """Locality yields to parallelism: when requests already wait on the data's node
    and another node is idle, moving the argument beats waiting (Ray's spillback)."""
    c, a, b = cluster3

    @refbook.remote(resources={"any": 1})
    def where_slowly(arr):
        from refbook.runtime.processes import core
        time.sleep(1.0)
        return core.current().node_id

    x = make.options(resources={"a": 1}).remote(4, 5)
    refbook.wait([x])
    t = time.monotonic()
    ran = refbook.get([where_slowly.remote(x) for _ in range(4)], timeout=60)
    assert set(ran) == {a.node_id, b.node_id}, ran
    assert time.monotonic() - t < 3.9          # not one after the other on one node


def _nodes_of(xid):
    return next(o for o in refbook.objects() if o["object_id"] == xid)["nodes"]


def test_the_owner_knows_every_copy_and_a_surviving_copy_outlives_its_node(cluster3):
    c, a, b = cluster3
    x = make.options(resources={"a": 1}).remote(11, 20)
    xid = x.hex()
    want = sha(np.random.default_rng(11).integers(0, 255, 20 * MB, dtype=np.uint8))
    assert refbook.get(digest.options(resources={"b": 1}).remote(x)) == want
    assert wait_for(lambda: _nodes_of(xid) == [a.node_id, b.node_id], timeout=5)
    c.remove_node(a)
    assert wait_for(lambda: _nodes_of(xid) == [b.node_id], timeout=10)
    # the copy on b serves readers there and here; nothing had to run again
    assert refbook.get(digest.options(resources={"b": 1}).remote(x), timeout=30) == want
    assert sha(refbook.get(x, timeout=30)) == want
    assert x.hex() not in {e["object_ids"][0] for e in refbook.events("reconstruct")}
    del x
    assert wait_for(lambda: next(n for n in refbook.nodes() if n["node_id"] == b.node_id)
                    ["store"]["num_objects"] == 0, timeout=10)


def test_secondary_copies_are_dropped_before_anything_is_spilled():
    refbook.shutdown()
    c = Cluster()
    try:
        a = c.add_node(num_cpus=1, resources={"a": 1})
        b = c.add_node(num_cpus=1, object_store_memory=64 * MB, resources={"b": 1})
        c.wait_for_nodes()
        refbook.init(address=c.address)
        x = make.options(resources={"a": 1}).remote(1, 24)
        xid = x.hex()
        refbook.get(digest.options(resources={"b": 1}).remote(x))
        assert wait_for(lambda: _nodes_of(xid) == [a.node_id, b.node_id], timeout=5)
        ys = [make.options(resources={"b": 1}).remote(i, 20) for i in range(2)]
        refbook.wait(ys, num_returns=2)            # 24 + 40 MiB do not fit under 64 MiB
        assert wait_for(lambda: _nodes_of(xid) == [a.node_id], timeout=5)
        evicted = [e for e in refbook.events("evict") if e["node_id"] == b.node_id]
        assert [e["object_ids"] for e in evicted] == [[x.hex()]]
        assert not [e for e in refbook.events("spill") if e["node_id"] == b.node_id]
        assert sha(refbook.get(x)) == sha(np.random.default_rng(1).integers(
            0, 255, 24 * MB, dtype=np.uint8))
        del x, ys
    finally:
        refbook.shutdown()
        c.shutdown()
