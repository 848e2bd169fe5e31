"""Run refbook's core workloads on refbook, Ray and Dask in the same run, side by side.

    python benchmarks/compare.py [--quick] [--only refbook,ray,dask] [--json PATH]

Ray and Dask are used when they are importable (``pip install ray "dask[distributed]"``);
the workloads are the ones ``refbook bench`` runs (refbook/bench/), so every system
executes the same code.  Figures are medians; the table ends with the ratio of each
system's figure to refbook's, oriented so that a number above 1 means refbook is better.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from refbook.bench import (
    ACTOR_TARGETS,
    TARGETS,
    RefbookBackend,
    fmt,
    machine,
    run_actor_workloads,
    run_workloads,
)

LOWER_IS_BETTER = {k for k, (op, _) in {**TARGETS, **ACTOR_TARGETS}.items() if op == "<="}


class RayBackend:
    name = "ray"

    def __init__(self, num_cpus: int = 2, store: int = 2 << 30):
        import ray
        self.ray = ray
        self.num_cpus = num_cpus
        self.store = store

    def init(self):
        self.ray.init(num_cpus=self.num_cpus, object_store_memory=self.store,
                      include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    def shutdown(self):
        self.ray.shutdown()

    def remote(self, fn):
        return self.ray.remote(fn)

    def call(self, rf, *args):
        return rf.remote(*args)

    def put(self, v):
        return self.ray.put(v)

    def get(self, r):
        return self.ray.get(r)

    def init_snippet(self) -> str:
        return (f"import ray\n"
                f"def start(): ray.init(num_cpus={self.num_cpus}, include_dashboard=False,"
                f" logging_level='ERROR')\n"
                f"def first():\n"
                f"    @ray.remote\n"
                f"    def one(): return 1\n"
                f"    return ray.get(one.remote())\n"
                f"def stop(): ray.shutdown()\n")

    def make_actor(self, cls, *args):
        return self.ray.remote(cls).remote(*args)

    def actor_call(self, handle, method, *args):
        return getattr(handle, method).remote(*args)

    def nested_fn(self, inner):
        def nested(n):
            import ray
            return sum(ray.get([inner.remote(i) for i in range(n)]))
        return nested


class DaskBackend:
    name = "dask"

    def __init__(self, num_cpus: int = 2):
        self.num_cpus = num_cpus

    def init(self):
        from distributed import Client, LocalCluster
        self.cluster = LocalCluster(n_workers=self.num_cpus, threads_per_worker=1,
                                    processes=True, dashboard_address=None)
        self.client = Client(self.cluster)

    def shutdown(self):
        self.client.close()
        self.cluster.close()

    def remote(self, fn):
        return fn

    def call(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def put(self, v):
        return self.client.scatter(v)

    def get(self, r):
        if isinstance(r, list):
            if r and not hasattr(r[0], "key"):      # actor futures
                return [x.result() for x in r]
            return self.client.gather(r)
        return r.result()

    def make_actor(self, cls, *args):
        return self.client.submit(cls, *args, actor=True).result()

    def actor_call(self, handle, method, *args):
        return getattr(handle, method)(*args)

    def init_snippet(self) -> str:
        return (f"from distributed import Client, LocalCluster\n"
                f"state = {{}}\n"
                f"def start():\n"
                f"    state['cl'] = LocalCluster(n_workers={self.num_cpus}, threads_per_worker=1,"
                f" processes=True, dashboard_address=None)\n"
                f"    state['c'] = Client(state['cl'])\n"
                f"def first():\n"
                f"    return state['c'].submit(lambda: 1, pure=False).result()\n"
                f"def stop():\n"
                f"    state['c'].close(); state['cl'].close()\n")

    def nested_fn(self, inner):
        def nested(n):
            from distributed import worker_client
            with worker_client() as c:
                return sum(c.gather([c.submit(inner, i, pure=False) for i in range(n)]))
        return nested


def available(name: str) -> bool:
    try:
        __import__({"ray": "ray", "dask": "distributed"}[name])
        return True
    except ImportError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="refbook,ray,dask")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    systems = [s for s in args.only.split(",") if s]
    results: dict[str, dict] = {}
    for name in systems:
        if name != "refbook" and not available(name):
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        backend = {"refbook": RefbookBackend, "ray": RayBackend, "dask": DaskBackend}[name]()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = run_workloads(backend, quick=args.quick)
            results[name].update(run_actor_workloads(backend, quick=args.quick))
        except Exception as e:  # noqa: BLE001 - one system failing must not hide the rest
            print(f"{name} failed: {type(e).__name__}: {e}", file=sys.stderr)
    names = list(results)
    keys = list(next(iter(results.values())).keys()) if results else []
    head = f"{'workload':<22}{'unit':<9}" + "".join(f"{n:>12}" for n in names)
    others = [n for n in names if n != "refbook"]
    head += "".join(f"{'x vs ' + n:>12}" for n in others)
    print(head)
    for k in keys:
        unit = results[names[0]][k][1]
        row = f"{k:<22}{unit:<9}" + "".join(f"{fmt(results[n][k][0]):>12}" for n in names)
        if "refbook" in results:
            mine = results["refbook"][k][0]
            for n in others:
                theirs = results[n][k][0]
                ratio = theirs / mine if k in LOWER_IS_BETTER else mine / theirs
                row += f"{ratio:>11.1f}x"
        print(row)
    path = args.json or os.path.join("bench-results",
                                     f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine(),
                   "results": {n: {k: {"value": v, "unit": u} for k, (v, u) in r.items()}
                               for n, r in results.items()}}, f, indent=2)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
