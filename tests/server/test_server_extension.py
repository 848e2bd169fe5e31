"""The Jupyter server extension refbook.server: GET /refbook/api/clusters lists this
user's clusters on this host with their nodes, behind Jupyter's own authentication."""

import json

import pytest
import tornado

import refbook


@pytest.fixture
def cluster():
    refbook.shutdown()
    ctx = refbook.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        yield ctx
    finally:
        refbook.shutdown()


async def _clusters(jp_fetch) -> list:
    r = await jp_fetch("refbook", "api", "clusters")
    assert r.code == 200 and r.headers["Content-Type"] == "application/json"
    return json.loads(r.body)["clusters"]


async def test_lists_a_running_cluster_with_its_nodes(jp_fetch, cluster):
    found = [c for c in await _clusters(jp_fetch) if c["address"] == cluster.address]
    assert len(found) == 1, found
    c = found[0]
    assert c["kind"] == "embedded"
    (node,) = c["nodes"]
    assert node["node_id"] == cluster.node_id and node["alive"]
    assert node["resources"]["CPU"] == 1
    assert node["store"]["capacity"] == 64 << 20
    assert set(node) == {"node_id", "address", "alive", "resources", "available", "store"}


async def test_a_cluster_that_stopped_is_not_listed(jp_fetch):
    refbook.shutdown()
    ctx = refbook.init(num_cpus=1, object_store_memory=32 << 20)
    address = ctx.address
    refbook.shutdown()
    assert address not in [c["address"] for c in await _clusters(jp_fetch)]


async def test_it_needs_jupyters_authentication(jp_fetch, cluster):
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("refbook", "api", "clusters",
                       headers={"Authorization": "token not-the-token"})
    assert e.value.code == 403
