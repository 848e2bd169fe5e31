"""The state API's snapshots and queries (``refbook bench --only snapshots``):
``state.objects()`` over 100,000 live objects, and ``why_alive`` on an object held
through 3 levels of nesting, within the driver (also with 100,000 other objects) and
across a worker."""

from __future__ import annotations

import statistics
import time

from .common import median_time

STATE_TARGETS = {"state_objects_100k": ("<=", 0.5), "why_alive_3_levels": ("<=", 10),
                 "why_alive_3_levels_100k": ("<=", 10), "why_alive_3_levels_remote": ("<=", 10)}


def _nest3():
    """In a worker: a value held through 3 levels (the driver's result holds ``c``,
    which holds ``b``, which holds ``a``); returns ``([c], a's id)``."""
    import refbook
    a = refbook.put("deep")
    b = refbook.put([a])
    c = refbook.put([b])
    return [c], a.hex()


def run_state_workloads(quick: bool = False, num_cpus: int = 2) -> dict:
    import refbook
    from refbook import state
    r: dict = {}
    n = 20_000 if quick else 100_000
    refbook.init(num_cpus=num_cpus, object_store_memory=512 << 20, log_to_stderr=False)
    try:
        refs = [refbook.put(i) for i in range(n)]
        got = state.objects()
        assert len(got) >= n, len(got)
        r["state_objects_100k"] = (median_time(state.objects, 3 if quick else 5) * n_scale(n),
                                   "s")
        del got

        a = refbook.put("deep")
        b = refbook.put([a])
        c = refbook.put([b])
        d = refbook.put([c])
        aid = a.hex()
        del a, b, c
        assert len(state.why_alive(aid)[0]) == 4
        # the owner looks for containing objects among all it owns: here 100,000 more
        r["why_alive_3_levels_100k"] = (median_time(lambda: state.why_alive(aid),
                                                    20 if quick else 50, 2) * 1e3, "ms")
        del refs
        r["why_alive_3_levels"] = (median_time(lambda: state.why_alive(aid),
                                               50 if quick else 300, 5) * 1e3, "ms")
        del d

        outer, deep = refbook.get(refbook.remote(_nest3).remote(), timeout=60)
        ts = []
        for _ in range(20 if quick else 100):
            t = time.perf_counter()
            paths = state.why_alive(deep)
            ts.append(time.perf_counter() - t)
        assert paths and len(paths[0]) >= 4, paths
        r["why_alive_3_levels_remote"] = (statistics.median(ts) * 1e3, "ms")
        del outer
    finally:
        refbook.shutdown()
    return r


def n_scale(n: int) -> float:
    """A quick run lists fewer objects: scale its time to 100,000 (linear)."""
    return 100_000 / n
