"""What the state API's events cost (``refbook bench --only events``), side by side in
one run: the per-task workloads of ``--only core`` with event recording off
(``REFBOOK_EVENTS=0``), on with nobody listening, on with one subscriber to every
kind, and on with the subscriptions the widgets make (failures, spilling, nodes).
The modes take turns, round after round, so that a busy machine slows them alike;
each figure is the median over rounds, and each ratio is against recording off.
Then the time from an event to a subscriber's callback."""

from __future__ import annotations

import os
import statistics
import threading
import time

MODES = ("off", "on", "subscriber", "widgets")
# what the widgets subscribe to: no per-task kinds
WIDGET_KINDS = ("object_spilled", "object_restored", "object_lost", "object_reconstructing",
                "object_reconstructed", "worker_died", "node_died", "node_added",
                "oom_kill", "task_retried", "actor_restarted", "actor_died")
EVENT_TARGETS = {"events_on_vs_off": ("<=", 1.03), "events_subscriber_vs_off": ("<=", 1.10),
                 "events_widgets_vs_off": ("<=", 1.10),
                 "event_to_callback_median": ("<=", 50), "event_to_callback_p99": ("<=", 250)}


def _noop(x=None):
    return x


def _one_round(mode: str, quick: bool) -> dict:
    """The per-task workloads once, in a fresh cluster, in ``mode``: seconds each."""
    import refbook
    from refbook import state
    os.environ["REFBOOK_EVENTS"] = "0" if mode == "off" else "1"
    refbook.init(num_cpus=2, object_store_memory=1 << 30, log_to_stderr=False)
    sub = None
    try:
        if mode == "subscriber":
            sub = state.subscribe(lambda evs: None)
        elif mode == "widgets":
            sub = state.subscribe(lambda evs: None, kinds=WIDGET_KINDS, period=0.1)
        f = refbook.remote(_noop)
        refbook.get(f.remote(0))
        out = {}
        n = 200 if quick else 500
        t = time.perf_counter()
        for _ in range(n):
            refbook.get(f.remote(1))
        out["task_round_trip"] = (time.perf_counter() - t) / n
        burst = 1000 if quick else 3000
        t = time.perf_counter()
        refbook.get([f.remote(i) for i in range(burst)])
        out["async_throughput"] = (time.perf_counter() - t) / burst
        t = time.perf_counter()
        x = f.remote(0)
        for _ in range(199):
            x = f.remote(x)
        refbook.get(x)
        out["chain_200"] = time.perf_counter() - t
        small = os.urandom(1024)
        t = time.perf_counter()
        refs = [refbook.put(small) for _ in range(2000)]
        out["put_1KiB"] = (time.perf_counter() - t) / len(refs)
        del refs
        return out
    finally:
        if sub is not None:
            sub.close()
        refbook.shutdown()
        os.environ.pop("REFBOOK_EVENTS", None)


def _latency(quick: bool) -> list[float]:
    """Seconds from each of a series of puts' ``object_created`` to the callback."""
    import refbook
    from refbook import state
    refbook.init(num_cpus=2, log_to_stderr=False)
    lags: list = []
    done = threading.Event()
    n = 100 if quick else 400

    def got(evs):
        now = time.time()
        lags.extend(now - e["time"] for e in evs if e["kind"] == "object_created")
        if len(lags) >= n:
            done.set()
    try:
        sub = state.subscribe(got, kinds=["object_created"])
        keep = []
        for _ in range(n):
            keep.append(refbook.put(b"x"))
            time.sleep(0.01)
        done.wait(10)
        sub.close()
        return lags
    finally:
        refbook.shutdown()


def run_event_workloads(quick: bool = False) -> dict:
    rounds = 2 if quick else 5
    per: dict = {m: {} for m in MODES}
    for i in range(rounds):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            for k, v in _one_round(mode, quick).items():
                per[mode].setdefault(k, []).append(v)
    r: dict = {}
    med = {m: {k: statistics.median(v) for k, v in per[m].items()} for m in MODES}
    for k in med["off"]:
        scale, unit = (1e6, "us") if k != "chain_200" else (1e3, "ms")
        for m in MODES:
            r[f"{k}[{m}]"] = (med[m][k] * scale, unit)
    for m in MODES[1:]:
        # the geometric mean over the workloads of (time in this mode / time off)
        ratios = [med[m][k] / med["off"][k] for k in med["off"]]
        r[f"events_{m}_vs_off"] = (statistics.geometric_mean(ratios), "x")
    lags = sorted(_latency(quick))
    if lags:
        r["event_to_callback_median"] = (statistics.median(lags) * 1e3, "ms")
        r["event_to_callback_p99"] = (lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1e3,
                                      "ms")
    return r
