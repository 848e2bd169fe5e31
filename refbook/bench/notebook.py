"""Benchmarks of the notebook (``refbook bench --only notebook``), through a real IPython
kernel as a notebook sees it."""

from __future__ import annotations

import os
import statistics
import time

NOTEBOOK_TARGETS = {"load_ext_to_first_remote": ("<=", 0.5),
                    "remote_cell_overhead": ("<=", 2.0)}


def _execute(kc, code: str, timeout: float = 60) -> None:
    """Run ``code`` in a kernel and wait until the kernel is idle again."""
    import queue
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"no answer to {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise RuntimeError(f"{code!r} failed: {msg['content']['evalue']}")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return


def run_notebook_workloads(quick: bool = False) -> dict:
    """Through a real IPython kernel (jupyter_client), as a notebook sees it:
    ``%load_ext refbook`` alone and up to the first ``%%remote`` result, in fresh
    kernels; and what an empty ``%%remote --wait`` cell costs over an empty cell."""
    from jupyter_client.manager import KernelManager
    loads, firsts = [], []
    for i in range(2 if quick else 5):
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1"))
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            t = time.perf_counter()         # importing refbook counts too
            _execute(kc, "%load_ext refbook")
            loads.append(time.perf_counter() - t)
            _execute(kc, "%%remote --wait\nx = 1")
            _execute(kc, "assert refbook.get(x) == 1")
            firsts.append(time.perf_counter() - t)
            if i == 0:
                n = 50 if quick else 300
                for _ in range(20):
                    _execute(kc, "%%remote --wait\npass")
                plain, remote = [], []
                for _ in range(n):           # interleaved: noise hits both alike
                    t0 = time.perf_counter()
                    _execute(kc, "pass")
                    t1 = time.perf_counter()
                    _execute(kc, "%%remote --wait\npass")
                    plain.append(t1 - t0)
                    remote.append(time.perf_counter() - t1)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return {"load_ext": (statistics.median(loads), "s"),
            "load_ext_to_first_remote": (statistics.median(firsts), "s"),
            "plain_cell": (statistics.median(plain) * 1e3, "ms"),
            "remote_wait_cell": (statistics.median(remote) * 1e3, "ms"),
            "remote_cell_overhead": ((statistics.median(remote) - statistics.median(plain))
                                     * 1e3, "ms")}
