"""The core workloads (``refbook bench --only core``): start-up and shutdown, a task's
round trip, throughput, chains, nested tasks, put and get of small and large values."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

from .common import MB, median_time

TARGETS = {
    "init_to_first_result": ("<=", 0.3),
    "shutdown": ("<=", 50),
    "script_init_task_exit": ("<=", 0.6),
    "task_round_trip": ("<=", 250),
    "async_throughput": (">=", 12000),
    "chain_200": ("<=", 50),
    "nested_100": ("<=", 15),
    "put_1MB": ("<=", 0.3),
    "put_100MB": ("<=", 12),
    "get_100MB": ("<=", 0.1),
    "task_100MB_arg": ("<=", 1),
    "put_1KiB": (">=", 50000),
    "get_1KiB": (">=", 50000),
}


def run_workloads(b, quick: bool = False, init_runs: int = 5) -> dict:
    """Run every workload on backend ``b``; returns ``{name: (value, unit)}``."""
    r: dict = {}
    r.update(_lifecycle_times(b, 2 if quick else init_runs))
    b.init()
    try:
        def noop(x=None):
            return x

        f = b.remote(noop)
        b.get(b.call(f, 0))

        n = 300 if quick else 2000
        r["task_round_trip"] = (median_time(lambda: b.get(b.call(f, 1)), n, 50) * 1e6, "us")

        ntasks = 5000

        def burst():
            refs = [b.call(f, i) for i in range(ntasks)]
            b.get(refs)
        r["async_throughput"] = (ntasks / median_time(burst, 3 if quick else 7), "tasks/s")

        def chain():
            x = b.call(f, 0)
            for _ in range(199):
                x = b.call(f, x)
            b.get(x)
        r["chain_200"] = (median_time(chain, 5 if quick else 15) * 1e3, "ms")

        inner = b.remote(noop)
        outer = b.remote(b.nested_fn(inner))
        b.get(b.call(outer, 10))
        r["nested_100"] = (median_time(lambda: b.get(b.call(outer, 100)),
                                        5 if quick else 20) * 1e3, "ms")

        a1 = np.random.rand(MB // 8)
        a100 = np.random.rand(100 * MB // 8)
        r["put_1MB"] = (median_time(lambda: b.put(a1), 50 if quick else 300, 5) * 1e3, "ms")
        r["put_100MB"] = (median_time(lambda: b.put(a100), 5 if quick else 15, 2) * 1e3, "ms")
        ref100 = b.put(a100)
        r["get_100MB"] = (median_time(lambda: b.get(ref100), 20 if quick else 200, 3) * 1e3,
                          "ms")

        def shape(a):
            return a.shape

        g = b.remote(shape)
        b.get(b.call(g, ref100))
        r["task_100MB_arg"] = (median_time(lambda: b.get(b.call(g, ref100)),
                                            20 if quick else 100, 3) * 1e3, "ms")


        small = os.urandom(1024)
        nput = 1000
        rates_put, rates_get = [], []
        for _ in range(3 if quick else 7):
            t = time.perf_counter()
            refs = [b.put(small) for _ in range(nput)]
            t1 = time.perf_counter()
            for x in refs:
                b.get(x)
            t2 = time.perf_counter()
            rates_put.append(nput / (t1 - t))
            rates_get.append(nput / (t2 - t1))
            del refs
        r["put_1KiB"] = (statistics.median(rates_put), "ops/s")
        r["get_1KiB"] = (statistics.median(rates_get), "ops/s")
    finally:
        b.shutdown()
    return r


def _lifecycle_times(b, runs: int) -> dict:
    """Each run in a fresh interpreter: ``init()`` to the first task result, then
    ``shutdown()``, and the whole script (interpreter start, import, init, one task,
    shutdown, exit) as a user times it."""
    code = b.init_snippet() + textwrap.dedent("""
        import time
        t = time.perf_counter()
        start()
        first()
        t1 = time.perf_counter()
        stop()
        print(t1 - t, time.perf_counter() - t1, flush=True)
    """)
    firsts, stops, wholes = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
        wholes.append(time.perf_counter() - t)
        try:
            first, stop = map(float, out.stdout.strip().splitlines()[-1].split())
        except (ValueError, IndexError):
            raise RuntimeError(f"{b.name} init run failed:\n{out.stderr[-2000:]}") from None
        firsts.append(first)
        stops.append(stop)
    return {"init_to_first_result": (statistics.median(firsts), "s"),
            "shutdown": (statistics.median(stops) * 1e3, "ms"),
            "script_init_task_exit": (statistics.median(wholes), "s")}
