"""Benchmarks of the live views (``refbook bench --only widgets``), in a real IPython
kernel (jupyter_client) with ``%refbook dashboard`` open, as a notebook sees them:

- ``event_to_view``: from an event's time stamp (in the process where it happened) to
  the view's widgets updated in the kernel, for puts one every 0.25 s (median, p99),
  counting for each update its oldest event; ``_load``: the same while the tasks run
  (their events come all the time, so each waits for the next of the 5 updates a
  second, after the state API's collector has pulled it);
- ``view_updates_per_s``: the most model updates any view sent in one second while
  about 2,000 tasks a second ran (at most 5);
- ``cell_ratio_dashboard``: the round trip of an empty cell through jupyter_client with
  the dashboard open and those tasks running, over the same without the dashboard.
The tasks run from another driver joined to the kernel's cluster (``address=``), at
2,000 a second: the dashboard reads all their events.  ``..._kernel_load``: the same
with the tasks run from a thread of the kernel itself, as fast as it can beside the
cells (the harder case: the kernel also submits them).  Blocks of cells with and
without the dashboard alternate in one kernel."""

from __future__ import annotations

import json
import os
import statistics
import time

from .notebook import _execute

WIDGET_TARGETS = {"event_to_view_median": ("<=", 0.3), "event_to_view_p99": ("<=", 0.5),
                  "view_updates_per_s": ("<=", 5.0), "cell_ratio_dashboard": ("<=", 1.2)}

LOAD = """
import threading, time as _t
@refbook.remote
def _tiny(i):
    return i
_load = {"run": True, "done": 0, "secs": 0.0}
def _loader(rate=2000, batch=250):
    t0 = _t.monotonic()
    while _load["run"]:
        refbook.get([_tiny.remote(i) for i in range(batch)])
        _load["done"] += batch
        ahead = _load["done"] / rate - (_t.monotonic() - t0)
        if ahead > 0:
            _t.sleep(ahead)
    _load["secs"] = _t.monotonic() - t0
_load_thread = threading.Thread(target=_loader, daemon=True)
_load_thread.start()
"""


# another driver of the kernel's cluster: tasks at ``rate`` a second until its stdin
# closes; then it prints how many it ran and over how long
EXTERNAL_LOAD = """
import sys, threading, time, refbook
refbook.init(address=sys.argv[1], log_to_stderr=False)
@refbook.remote
def tiny(i):
    return i
run = [True]
threading.Thread(target=lambda: (sys.stdin.read(), run.clear()), daemon=True).start()
rate, batch, done, t0 = float(sys.argv[2]), 100, 0, time.monotonic()
while run:
    refbook.get([tiny.remote(i) for i in range(batch)])
    done += batch
    ahead = done / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(done, time.monotonic() - t0, flush=True)
refbook.shutdown()
"""


def _value(kc, expr: str):
    """The JSON value of ``expr`` in the kernel."""
    import queue
    msg_id = kc.execute(f"import json as _j; print(_j.dumps({expr}))")
    out = []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=60)
        except queue.Empty:
            raise RuntimeError(f"no answer to {expr!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise RuntimeError(f"{expr!r} failed: {msg['content']['evalue']}")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return json.loads("".join(out).strip().splitlines()[-1])


def _cells(kc, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        _execute(kc, "pass")
        out.append(time.perf_counter() - t)
    return out


def _kernel():
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _round_trips(quick: bool, external: bool) -> tuple[list, list, dict]:
    """Empty cells while tasks run (from another driver if ``external``, else from a
    thread of the kernel), in blocks with and without a dashboard open, one after the
    other in the same kernel (so that the noise of this machine hits both alike):
    ``(without, with, extra)``."""
    import subprocess
    import sys
    km, kc = _kernel()
    plain: list = []
    with_d: list = []
    busiest: list = []
    lat: list = []
    loader = None
    try:
        _execute(kc, "%load_ext refbook\nfrom refbook import widgets")
        if external:
            address = _value(kc, "refbook.init().address")
            loader = subprocess.Popen([sys.executable, "-c", EXTERNAL_LOAD, address, "2000"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        else:
            _execute(kc, LOAD.replace("rate=2000", "rate=100_000"))
        time.sleep(1.0)
        for _ in range(2 if quick else 4):
            plain += _cells(kc, 20 if quick else 50)
            _execute(kc, "d = widgets.dashboard()\ndisplay(d)")
            time.sleep(0.5)
            with_d += _cells(kc, 20 if quick else 50)
            times = _value(kc, "{k: list(v.update_times) for k, v in d.views.items()}")
            busiest += [_busiest(ts) for ts in times.values()]
            # the tab in front (those behind update every HIDDEN_S, by design)
            lat += _value(kc, "[x for v in d.views.values() if not v.hidden "
                              "for x in v.latencies]")
            _execute(kc, "d.close()")
        if external:
            out, _ = loader.communicate("", timeout=60)
            done, secs = map(float, out.split())
        else:
            _execute(kc, "_load['run'] = False\n_load_thread.join()")
            load = _value(kc, "_load")
            done, secs = load["done"], load["secs"]
        extra = {"tasks_per_s": done / max(secs, 1e-9), "busiest": max(busiest), "lat": lat}
        return plain, with_d, extra
    finally:
        if loader is not None and loader.poll() is None:
            loader.kill()
            loader.wait()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _busiest(times: list) -> int:
    """The most of ``times`` (seconds) in any one-second window."""
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def _latency(quick: bool) -> list[float]:
    """Puts one every 0.25 s with the dashboard open: event to view updated."""
    km, kc = _kernel()
    try:
        _execute(kc, "%load_ext refbook")
        _execute(kc, "import numpy as np, time\nfrom refbook import widgets\n"
                     "d = widgets.dashboard()\ndisplay(d)\ntime.sleep(1)")
        # the memory tab in front (the tabs behind update every HIDDEN_S, by design)
        _execute(kc, "m = d.views['memory']\nd.tabs.selected_index = list(d.views)"
                     ".index('memory')\ntime.sleep(0.5)\nm.latencies.clear()\n"
                     f"for i in range({20 if quick else 120}):\n"
                     "    x = refbook.put(np.ones(1000))\n"
                     "    time.sleep(0.25)\n"
                     "time.sleep(1)", timeout=120)
        lat = _value(kc, "list(m.latencies)")
        _execute(kc, "d.close()")
        return lat
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _p99(xs: list) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def run_widget_workloads(quick: bool = False) -> dict:
    lat = _latency(quick)
    k_plain, k_with, k_extra = _round_trips(quick, external=False)
    plain, with_d, extra = _round_trips(quick, external=True)
    return {
        "event_to_view_median": (statistics.median(lat), "s"),
        "event_to_view_p99": (_p99(lat), "s"),
        "event_to_view_load_med": (statistics.median(extra["lat"]) if extra["lat"] else 0.0,
                                   "s"),
        "event_to_view_load_p99": (_p99(extra["lat"]) if extra["lat"] else 0.0, "s"),
        "view_updates_per_s": (float(extra["busiest"]), "/s"),
        "load_tasks_per_s": (extra["tasks_per_s"], "/s"),
        "cell_plain": (statistics.median(plain) * 1e3, "ms"),
        "cell_with_dashboard": (statistics.median(with_d) * 1e3, "ms"),
        "cell_ratio_dashboard": (statistics.median(with_d) / statistics.median(plain), "x"),
        "kernel_load_tasks_per_s": (k_extra["tasks_per_s"], "/s"),
        "cell_ratio_dashboard_kernel_load": (statistics.median(k_with) /
                                             statistics.median(k_plain), "x"),
        "view_updates_per_s_kernel_load": (float(k_extra["busiest"]), "/s"),
    }
