"""What every group of ``refbook bench`` shares: the backend interface that lets
``benchmarks/compare.py`` run the same workloads on Ray and Dask, medians, the table."""

from __future__ import annotations

import os
import platform
import statistics
import time

MB = 1 << 20


class RefbookBackend:
    name = "refbook"

    def __init__(self, num_cpus: int = 2, store: int = 2 << 30):
        import refbook
        self.rb = refbook
        self.num_cpus = num_cpus
        self.store = store

    def init(self):
        self.rb.init(num_cpus=self.num_cpus, object_store_memory=self.store)
        if os.environ.get("REFBOOK_BENCH_SUBSCRIBE"):     # the cost of one subscriber
            from refbook import state
            state.subscribe(lambda evs: None)

    def shutdown(self):
        self.rb.shutdown()

    def remote(self, fn):
        return self.rb.remote(fn)

    def call(self, rf, *args):
        return rf.remote(*args)

    def put(self, v):
        return self.rb.put(v)

    def get(self, r):
        return self.rb.get(r)

    def init_snippet(self) -> str:
        return (f"import refbook as rb\n"
                f"def start(): rb.init(num_cpus={self.num_cpus})\n"
                f"def first():\n"
                f"    @rb.remote\n"
                f"    def one(): return 1\n"
                f"    return rb.get(one.remote())\n"
                f"def stop(): rb.shutdown()\n")

    def make_actor(self, cls, *args):
        return self.rb.remote(cls).remote(*args)

    def actor_call(self, handle, method, *args):
        return getattr(handle, method).remote(*args)

    def nested_fn(self, inner):
        rb = self.rb

        def nested(n):
            return sum(rb.get([inner.remote(i) for i in range(n)]))
        return nested


def median_time(fn, repeat: int, warmup: int = 1) -> float:
    """The median of ``repeat`` timed calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)



def fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def table(results: dict, targets: dict) -> str:
    lines = [f"{'workload':<30}{'median':>14}  {'unit':<8}{'target':>12}  ok"]
    for k, (v, unit) in results.items():
        op, tv = targets.get(k, ("", None))
        ok = "" if tv is None else ("yes" if (v <= tv if op == "<=" else v >= tv) else "NO")
        tgt = f"{op} {fmt(tv)}" if tv else ""
        lines.append(f"{k:<30}{fmt(v):>14}  {unit:<8}{tgt:>12}  {ok}")
    return "\n".join(lines)


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
