"""Sort benchmark (issue: Exoshuffle on refbook): the same sort, in one run, on refbook
with each strategy, on Ray and Dask with the same algorithm, on Dask with
``sort_values``, and as the floor (the same map and merge code in one process, no
runtime).  Prints medians and the ratio of each to the floor.

    python benchmarks/sort.py [--gb 1] [--blocks 16] [--repeat 3] [--data uint64,records]
                              [--only floor,refbook,ray,dask,dask_sort_values]
                              [--store-mb 0]
    python benchmarks/sort.py --kill-node [--gb 0.5]

Ray and Dask run when importable.  On Ray the library itself runs unchanged: the module
``refbook.shuffle`` is loaded a second time with ``refbook`` bound to ``ray`` (it uses
only the public API, which the two share).  ``--store-mb`` limits refbook's store (the
"more than the store holds" case) and then also times writing and reading the data
once through this disk, the disk-bound time.  ``--kill-node`` sorts on a testing
cluster of 3 nodes (1 CPU each), once as it is and once with a node (not the head)
killed when the first map task there has started, checks both results exactly and
prints the time lost.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import types

import numpy as np

from refbook.shuffle import blocks as B
from refbook.shuffle import gensort

HERE = os.path.dirname(os.path.abspath(__file__))


def make_block(kind: str, rows: int, seed: int, index: int):
    if kind == "records":
        return gensort(rows, seed, index)
    return np.random.default_rng([seed, index]).integers(0, 2**64 - 1, rows, dtype=np.uint64)


def rows_for(kind: str, gb: float, blocks: int) -> int:
    width = 100 if kind == "records" else 8
    return int(gb * 1e9 / width / blocks)


def key_of(kind: str):
    return "key" if kind == "records" else None


# -- the floor: the same code in one process --------------------------------------------
def floor(kind, gb, nblocks):
    data = [make_block(kind, rows_for(kind, gb, nblocks), 1, i) for i in range(nblocks)]
    key = key_of(kind)
    t = time.perf_counter()
    samples = [B.sample(b, 256, i, key) for i, b in enumerate(data)]
    bounds = B.boundaries(samples, nblocks)
    pieces = [B.split(B.sort_block(b, key), bounds, key) for b in data]
    del data
    out = [B.merge([ps[j] for ps in pieces], key) for j in range(nblocks)]
    dt = time.perf_counter() - t
    assert sum(map(B.num_rows, out)) == rows_for(kind, gb, nblocks) * nblocks
    return dt


# -- refbook and Ray: the library, as it is --------------------------------------------
def shuffle_on(api_module):
    """``refbook.shuffle`` loaded with ``refbook`` bound to ``api_module``."""
    import refbook.shuffle as ours
    if api_module.__name__ == "refbook":
        return ours
    path = os.path.dirname(ours.__file__)
    saved = sys.modules.get("refbook")
    shim = types.ModuleType("refbook")
    for name in ("remote", "get", "put", "wait", "ObjectRef"):
        setattr(shim, name, getattr(api_module, name))
    spec = importlib.util.spec_from_file_location(
        "shuffle_on_" + api_module.__name__, os.path.join(path, "__init__.py"),
        submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    sys.modules[spec.name + ".blocks"] = B       # no refbook in it: share ours
    sys.modules["refbook"] = shim
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules["refbook"] = saved
    # its workers cannot import this module: send its functions by value
    pickler = importlib.import_module(api_module.__name__ + ".cloudpickle")
    pickler.register_pickle_by_value(mod)
    return mod


def run_library(api, kind, gb, nblocks, strategy, repeat):
    lib = shuffle_on(api)
    make = api.remote(make_block)
    rows = rows_for(kind, gb, nblocks)
    times = []
    for r in range(repeat):
        data = [make.remote(kind, rows, 1, i) for i in range(nblocks)]
        api.wait(data, num_returns=len(data))
        t = time.perf_counter()
        out = lib.sort(data, key=key_of(kind), num_partitions=nblocks, strategy=strategy)
        api.wait(out, num_returns=len(out))
        times.append(time.perf_counter() - t)
        if r == 0:
            check = lib.check_sorted(out, key=key_of(kind))
            assert check["sorted"] and check["records"] == rows * nblocks, check
        del data, out
    return times


# -- Dask: the same algorithm with delayed, and sort_values -----------------------------
def run_dask(kind, gb, nblocks, repeat, sort_values=False):
    import dask
    from dask.distributed import Client, LocalCluster
    rows = rows_for(kind, gb, nblocks)
    key = key_of(kind)
    times = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        for _ in range(repeat):
            if sort_values:
                import dask.dataframe as dd
                dask.config.set({"dataframe.convert-string": False})
                df = dd.from_delayed([dask.delayed(_frame)(kind, rows, 1, i)
                                      for i in range(nblocks)],
                                     meta=_frame(kind, 0, 1, 0)).persist()
                dask.distributed.wait(df)
                t = time.perf_counter()
                dask.distributed.wait(df.sort_values("k").persist())
                times.append(time.perf_counter() - t)
                del df
                continue
            data = [client.submit(make_block, kind, rows, 1, i, pure=False)
                    for i in range(nblocks)]
            dask.distributed.wait(data)
            t = time.perf_counter()
            samples = client.gather([client.submit(B.sample, b, 256, i, key)
                                     for i, b in enumerate(data)])
            bounds = B.boundaries(samples, nblocks)
            maps = [client.submit(_map, b, bounds, key) for b in data]
            pieces = [[client.submit(_nth, m, j) for j in range(nblocks)] for m in maps]
            out = [client.submit(B.merge, [ps[j] for ps in pieces], key)
                   for j in range(nblocks)]
            dask.distributed.wait(out)
            times.append(time.perf_counter() - t)
            del data, maps, pieces, out
    return times


def _map(block, bounds, key):
    return B.split(B.sort_block(block, key), bounds, key)


def _nth(xs, j):
    return xs[j]


def _frame(kind, rows, seed, index):
    import pandas as pd
    block = make_block(kind, rows, seed, index)
    if kind == "records":
        # the 10-byte keys as Python bytes (Dask would make text of them), the 90-byte
        # values as one fixed-width column
        return pd.DataFrame({"k": pd.Series(block["key"].tolist(), dtype=object),
                             "v": pd.Series(list(block["value"]), dtype=object)})
    return pd.DataFrame({"k": block})


def disk_bound(gb: float, directory: str) -> float:
    """Seconds to write ``gb`` to this disk and read it back (fsynced)."""
    chunk = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    n = max(1, int(gb * 1e9) // len(chunk))
    path = os.path.join(directory, "refbook-disk-bound")
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(n):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.posix_fadvise(os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    dt = time.perf_counter() - t
    os.unlink(path)
    return dt


def kill_node_run(kind: str, gb: float, nblocks: int, strategy: str) -> tuple:
    """``(seconds without, seconds with a node killed mid-sort)`` on 3 nodes."""
    import threading

    import refbook
    from refbook import shuffle, state
    ctx = refbook.init(num_nodes=3, num_cpus=1, log_to_stderr=False)
    try:
        rows = rows_for(kind, gb, nblocks)
        make = refbook.remote(make_block)

        def once(kill_after: float | None) -> float:
            data = [make.remote(kind, rows, 1, i) for i in range(nblocks)]
            refbook.wait(data, num_returns=len(data))
            killer = None
            if kill_after is not None:
                # the node (not the head) holding the most input blocks, a third of the
                # way into the sort: its blocks, and what it made of them, are lost
                where = [n for o in state.objects(ids=data) for n in o["nodes"]
                         if n != ctx.node_id]
                victim = max(set(where), key=where.count) if where else next(
                    n["node_id"] for n in refbook.nodes() if n["node_id"] != ctx.node_id)
                killed: list = []
                killer = threading.Timer(kill_after, lambda: (
                    killed.append(time.perf_counter()), state.kill_node(victim)))
                killer.start()
            t = time.perf_counter()
            out = shuffle.sort(data, key=key_of(kind), num_partitions=nblocks,
                               strategy=strategy)
            refbook.wait(out, num_returns=len(out))
            dt = time.perf_counter() - t
            if killer:
                killer.join()
                assert killed and killed[0] < t + dt, "the sort ended before the kill"
                assert not any(n["node_id"] == victim and n["alive"]
                               for n in refbook.nodes()), "the node was not killed"
            got = shuffle.check_sorted(out, key=key_of(kind))
            assert got["sorted"] and got["records"] == rows * nblocks, got
            return dt
        as_is = once(None)
        return as_is, once(as_is / 3)
    finally:
        refbook.shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="uint64,records")
    ap.add_argument("--only", default="floor,refbook,ray,dask,dask_sort_values")
    ap.add_argument("--store-mb", type=int, default=0)
    ap.add_argument("--kill-node", action="store_true")
    args = ap.parse_args(argv)
    if args.kill_node:
        print(f"{'data':<9}{'strategy':<10}{'as is s':>9}{'killed s':>10}{'lost s':>8}")
        for kind in args.data.split(","):
            for s in ("simple", "merge", "push"):
                a, b = kill_node_run(kind, args.gb, args.blocks, s)
                print(f"{kind:<9}{s:<10}{a:>9.2f}{b:>10.2f}{b - a:>8.2f}", flush=True)
        return 0
    only = set(args.only.split(","))
    rows = []
    for kind in args.data.split(","):
        res: dict = {}
        if "floor" in only:
            res["floor"] = [floor(kind, args.gb, args.blocks) for _ in range(args.repeat)]
        if "refbook" in only:
            import refbook
            store = (args.store_mb << 20) if args.store_mb else None
            refbook.init(num_cpus=2, object_store_memory=store, log_to_stderr=False)
            try:
                for s in ("simple", "merge", "push"):
                    res[f"refbook {s}"] = run_library(refbook, kind, args.gb, args.blocks,
                                                      s, args.repeat)
            finally:
                refbook.shutdown()
            if args.store_mb:
                res["disk write+read"] = [disk_bound(args.gb, tempfile.gettempdir())]
        if "ray" in only:
            try:
                import ray
            except ImportError:
                print("(ray is not installed: skipped)", file=sys.stderr)
            else:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                try:
                    for s in ("simple", "merge", "push"):
                        res[f"ray {s}"] = run_library(ray, kind, args.gb, args.blocks,
                                                      s, args.repeat)
                finally:
                    ray.shutdown()
        if "dask" in only:
            try:
                import dask  # noqa: F401
            except ImportError:
                print("(dask is not installed: skipped)", file=sys.stderr)
            else:
                res["dask same algorithm"] = run_dask(kind, args.gb, args.blocks,
                                                      args.repeat)
                # records: sort_values would sort 10-byte keys as Python bytes objects
                # (object columns), which Dask cannot even plan (no min of objects)
                if "dask_sort_values" in only and kind == "uint64":
                    res["dask sort_values"] = run_dask(kind, args.gb, args.blocks, 1,
                                                       sort_values=True)
        base = statistics.median(res["floor"]) if "floor" in res else None
        for name, ts in res.items():
            med = statistics.median(ts)
            rows.append((kind, name, med, med / base if base else None, len(ts)))
        _table(rows)            # so far: a later failure loses nothing measured
    return 0


def _table(rows) -> None:
    print(f"{'data':<9}{'system':<22}{'median s':>10}{'/ floor':>9}  runs")
    for kind, name, med, ratio, n in rows:
        r = f"{ratio:.2f}" if ratio is not None else "-"
        print(f"{kind:<9}{name:<22}{med:>10.2f}{r:>9}  {n}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
