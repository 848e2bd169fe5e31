"""Recovery (``refbook bench --only recovery``): from a node's death to a rebuilt object."""

from __future__ import annotations

import statistics
import time

import numpy as np

from .common import MB

RECOVERY_TARGETS = {"recovery_after_node_death": ("<=", 1.6)}


def run_recovery_workloads(quick: bool = False) -> dict:
    """Time from a node's death to the first rebuilt object being available: one 100 MB
    object made by a 0.1 s task on the node that dies, then ``get`` on the driver."""
    import refbook

    from ..testing import Cluster
    timeout = 0.6
    ts = []
    for _ in range(2 if quick else 5):
        c = Cluster(heartbeat_s=0.1, heartbeat_timeout_s=timeout)
        try:
            a = c.add_node(num_cpus=1, resources={"any": 1}, object_store_memory=512 * MB)
            c.add_node(num_cpus=1, resources={"any": 1, "b": 1}, object_store_memory=512 * MB)
            c.wait_for_nodes()
            refbook.init(address=c.address, log_to_stderr=False)

            @refbook.remote(resources={"any": 1}, max_retries=3)
            def make():
                time.sleep(0.1)
                return np.ones(100 * MB // 8)

            @refbook.remote(resources={"b": 1})
            def hold(s):
                time.sleep(s)

            busy = hold.remote(0.6)          # b is busy, so the object is made on a
            time.sleep(0.1)
            ref = make.remote()
            refbook.wait([ref])
            refbook.get(busy)
            t = time.perf_counter()
            c.remove_node(a)
            out = refbook.get(ref, timeout=60)
            ts.append(time.perf_counter() - t)
            assert out.shape == (100 * MB // 8,)
            del out, ref
        finally:
            refbook.shutdown()
            c.shutdown()
    return {"recovery_after_node_death": (statistics.median(ts), "s"),
            "heartbeat_timeout": (timeout, "s")}
