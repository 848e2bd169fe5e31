"""``import refbook as ray``: an actor call's outputs are rebuilt when lost, by running
the method again on the restarted actor (``max_task_retries``), as Ray does; without
retries they fail with an error that says why (issue 19)."""

import numpy as np
import pytest

import refbook as ray
from refbook import state
from refbook.testing import Cluster


@pytest.fixture
def two_nodes():
    ray.shutdown()
    c = Cluster()
    nodes = [c.add_node(num_cpus=1, resources={"x": 1}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


@ray.remote
class Maker:
    def __init__(self):
        self.calls = 0

    def block(self, v):
        self.calls += 1
        return np.full(1_000_000, v)          # stored on the actor's node

    def where(self):
        from refbook.runtime.processes import core
        return core.current().node_id, self.calls


def kill_actor_node(c, nodes, actor) -> str:
    node_id, _ = ray.get(actor.where.remote())
    c.remove_node(next(n for n in nodes if n.node_id == node_id))
    return node_id


def test_actor_call_outputs_are_rebuilt_on_the_restarted_actor(two_nodes):
    c, nodes = two_nodes
    m = Maker.options(resources={"x": 1}, max_restarts=1, max_task_retries=1).remote()
    out = m.block.remote(3.0)
    ray.wait([out])
    dead = kill_actor_node(c, nodes, m)
    value = ray.get(out, timeout=30)
    assert value.shape == (1_000_000,) and value[0] == 3.0
    node_id, calls = ray.get(m.where.remote(), timeout=30)
    assert node_id != dead and calls == 1, "the method ran again on the restarted actor"
    kinds = [e["kind"] for e in state.events(kinds=["object_reconstructing",
                                                     "object_reconstructed"])
             if e.get("object_id") == out.hex()]
    assert kinds == ["object_reconstructing", "object_reconstructed"], kinds


def test_without_task_retries_a_lost_output_says_why(two_nodes):
    c, nodes = two_nodes
    m = Maker.options(resources={"x": 1}, max_restarts=1).remote()
    out = m.block.remote(1.0)
    ray.wait([out])
    kill_actor_node(c, nodes, m)
    with pytest.raises(ray.exceptions.ObjectReconstructionFailedError,
                       match=r"actor method Maker\.block.*max_task_retries"):
        ray.get(out, timeout=30)
    assert ray.get(m.where.remote(), timeout=30)[1] == 0     # restarted, not re-run
