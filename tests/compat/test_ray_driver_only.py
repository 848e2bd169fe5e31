"""``ray.init(num_cpus=0)``: a driver-only node; its tasks wait for a node that can run
them, as Ray's do (issue 19)."""

import pytest

import refbook as ray
from refbook import state


@pytest.fixture
def driver_only():
    ray.shutdown()
    ctx = ray.init(num_cpus=0, object_store_memory=64 << 20)
    yield ctx
    ray.shutdown()


@ray.remote
def where():
    import os
    return os.getpid()


@ray.remote(num_cpus=0)
def no_cpu():
    return "ran"


def test_tasks_wait_for_a_node_that_can_run_them(driver_only):
    assert ray.cluster_resources().get("CPU", 0) == 0
    assert ray.get(no_cpu.remote(), timeout=30) == "ran"    # needs no CPU: runs here
    ref = where.remote()
    ready, _ = ray.wait([ref], timeout=1.0)
    assert not ready, "a task needing a CPU ran on a node with none"
    assert [t["state"] for t in state.tasks() if t["name"] == "where"] != ["failed"]
    state.add_node(num_cpus=1)
    assert isinstance(ray.get(ref, timeout=30), int)
    assert ray.get(where.remote(), timeout=30) > 0


def test_num_cpus_must_be_a_non_negative_integer():
    ray.shutdown()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            ray.init(num_cpus=bad)
    assert not ray.is_initialized()
