"""Several node managers on one host: placement by resources, objects moving between
nodes, and what happens when a node dies."""

import hashlib
import os
import time

import numpy as np
import pytest

import refbook
from refbook.exceptions import ObjectLostError, OwnerDiedError
from refbook.testing import Cluster

from .helpers import alive, wait_for

MB = 1 << 20


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
    from refbook.runtime import core
    return core.current().node_id


@refbook.remote
def make(seed, mb):
    return np.random.default_rng(seed).integers(0, 255, mb * MB, dtype=np.uint8)


@refbook.remote
def digest(a):
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


def sha(a):
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


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
        from refbook.runtime import core
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


def test_an_object_only_on_a_dead_node_fails_fast(cluster3):
    c, a, b = cluster3
    x = make.options(resources={"a": 1}).remote(1, 5)
    refbook.wait([x])
    c.remove_node(a)
    t = time.monotonic()
    with pytest.raises(ObjectLostError):
        refbook.get(digest.options(resources={"b": 1}).remote(x), timeout=30)
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
