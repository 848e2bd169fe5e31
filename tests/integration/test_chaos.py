"""Chaos: workers are killed at random while a DAG of 500 tasks runs.  The result must
be exact, and nothing may be left behind afterwards."""

import os
import random
import signal
import threading
import time

import numpy as np
import psutil

import refbook
from tests.integration.helpers import all_gone, session_pids, wait_for


@refbook.remote(max_retries=20)
def leaf(i):
    time.sleep(0.02)
    return np.full(1000, float(i))


@refbook.remote(max_retries=20)
def combine(a, b):
    time.sleep(0.02)
    return a + b


@refbook.remote(max_retries=20)
def total(*parts):
    return float(sum(p.sum() for p in parts))


def workers_of(node_pid: int) -> list[int]:
    out = []
    for c in psutil.Process(node_pid).children(recursive=True):
        try:
            if c.ppid() != node_pid:          # not the zygote
                out.append(c.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_random_worker_kills_during_a_500_task_dag(tmp_path):
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=128 << 20, spill_dir=str(tmp_path))
    node_pid = refbook.nodes()[0]["pid"]
    rng = random.Random(20261121)
    stop = threading.Event()
    killed = []

    def chaos():
        while not stop.wait(0.5):
            pids = workers_of(node_pid)
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                except ProcessLookupError:
                    pass

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    try:
        layer = [leaf.remote(i) for i in range(250)]           # 250 tasks
        while len(layer) > 1:                                   # 249 more
            nxt = [combine.remote(layer[i], layer[i + 1]) for i in range(0, len(layer) - 1, 2)]
            if len(layer) % 2:
                nxt.append(layer[-1])
            layer = nxt
        result = refbook.get(total.remote(layer[0]), timeout=300)   # and one more
    finally:
        stop.set()
        t.join()
    assert result == 1000.0 * sum(range(250))
    assert len(killed) >= 5, f"the chaos thread killed only {len(killed)} workers"
    del layer, nxt
    assert wait_for(lambda: refbook.objects() == [], timeout=20), refbook.objects()
    assert wait_for(lambda: refbook.nodes()[0]["store"]["used"] == 0)
    assert refbook.nodes()[0]["store"]["spill_files"] == 0
    pids = session_pids(ctx)
    refbook.shutdown()
    assert all_gone(pids)
    assert not os.listdir(tmp_path)
