"""Actor workloads (``refbook bench --only actors``)."""

from __future__ import annotations

import statistics
import time

from .common import median_time

ACTOR_TARGETS = {"actor_call_sync": ("<=", 200), "actor_calls_async": (">=", 15000),
                 "actor_create_to_first": ("<=", 50)}


class _Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def run_actor_workloads(b, quick: bool = False) -> dict:
    """One actor: a synchronous call's round trip, pipelined calls from one caller, and
    the time from creating an actor to its first result (workers are pre-started)."""
    r: dict = {}
    b.init()
    try:
        a = b.make_actor(_Counter)
        b.get(b.actor_call(a, "incr"))
        n = 300 if quick else 2000
        r["actor_call_sync"] = (median_time(lambda: b.get(b.actor_call(a, "incr")), n, 50)
                                * 1e6, "us")
        ncalls = 5000

        def burst():
            b.get([b.actor_call(a, "incr") for _ in range(ncalls)])
        r["actor_calls_async"] = (ncalls / median_time(burst, 3 if quick else 7), "calls/s")
        ts = []
        for _ in range(5 if quick else 15):
            t = time.perf_counter()
            h = b.make_actor(_Counter)
            b.get(b.actor_call(h, "incr"))
            ts.append(time.perf_counter() - t)
            del h
            time.sleep(0.05)     # let the pool refill, as a notebook user would
        r["actor_create_to_first"] = (statistics.median(ts) * 1e3, "ms")
    finally:
        b.shutdown()
    return r
