"""The state API from one driver sees what another driver and the workers of every node
hold (API.md section 3), on a cluster of two nodes."""

import subprocess
import sys

import pytest

import refbook
from refbook import state
from refbook.runtime.api.frontend import driver
from refbook.testing import Cluster
from tests.integration.helpers import wait_for


@pytest.fixture
def cluster2():
    refbook.shutdown()
    c = Cluster()
    a = c.add_node(num_cpus=1, resources={"a": 1})
    b = c.add_node(num_cpus=1, resources={"b": 1})
    c.wait_for_nodes()
    refbook.init(address=c.address)
    yield c, a, b
    refbook.shutdown()
    c.shutdown()


OTHER_DRIVER = """
import sys, refbook
refbook.init(address=sys.argv[1], log_to_stderr=False)
@refbook.remote(resources={"b": 1})
def hold(x):
    import time
    time.sleep(60)
x = refbook.put("from the other driver")
r = hold.remote(x)
print(x.hex(), r.hex(), flush=True)
sys.stdin.readline()
"""


def test_objects_and_tasks_of_another_driver_on_another_node(cluster2):
    c, a, b = cluster2
    other = subprocess.Popen([sys.executable, "-c", OTHER_DRIVER, c.address],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        xid, rid = other.stdout.readline().split()
        objs = {o["object_id"]: o for o in state.objects()}
        x = objs[xid]
        assert x["made_by"] == "put" and x["call_site"] == "<string>:8"
        assert x["owner"] != driver().me
        tid = rid[:32]

        def running():
            return next((t for t in state.tasks() if t["task_id"] == tid
                         and t["state"] == "running"), None)
        assert wait_for(running, timeout=20)
        t = running()
        assert t["node_id"] == b.node_id and t["pid"] and t["args"] == [xid]
        assert t["owner"] == x["owner"] and t["call_site"] == "<string>:9"
        # why is x alive: the other driver's handle, and its pending task
        paths = state.why_alive(xid)
        assert sorted(p[0]["kind"] for p in paths) == ["ref", "task"]
        assert {p[0].get("task_id") for p in paths} >= {tid}
    finally:
        other.kill()
        other.wait()
    # the other driver left: what it owned goes with it
    assert wait_for(lambda: xid not in {o["object_id"] for o in state.objects()}, timeout=20)
