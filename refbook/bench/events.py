"""What the state API's events cost (``refbook bench --only events``), side by side in
one run: the per-task workloads of ``--only core`` with event recording off
(``REFBOOK_EVENTS=0``), on with nobody listening, on with one subscriber to every
kind, and on with the subscriptions the widgets make (failures, spilling, nodes).
The modes take turns, round after round, so that a busy machine slows them alike;
each time is the median over rounds.  A ratio is paired: in each round, the geometric
mean over the workloads of (time in the mode / time off, measured next to each other),
then the median of those over the rounds, so that the load of a shared machine, which
drifts from one minute to the next, cancels out rather than adds to the ratio.
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


def _cpu() -> float:
    """CPU seconds used so far by this process and every process under it (the
    cluster's): unlike elapsed time, not inflated while the host runs someone else."""
    import psutil
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for p in me.children(recursive=True):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _events_thread_cpu() -> tuple[float, float]:
    """CPU seconds so far of this process, and of its events thread (the one that
    reads the cluster's rings and calls the subscribers)."""
    import psutil
    ids = {t.native_id for t in threading.enumerate() if t.name == "refbook-events"}
    me = psutil.Process()
    mine = sum(t.user_time + t.system_time for t in me.threads() if t.id in ids)
    return sum(me.cpu_times()[:2]), mine


def _one_round(mode: str, quick: bool) -> tuple[dict, float, float | None]:
    """The per-task workloads once, in a fresh cluster, in ``mode``: seconds each, the
    CPU seconds the cluster spent on them all, and (with a subscriber) the share of the
    driver's CPU that its events thread took."""
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
        cpu, driver = _cpu(), _events_thread_cpu()
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
        cpu = _cpu() - cpu
        ended = _events_thread_cpu()
        share = (ended[1] - driver[1]) / (ended[0] - driver[0]) if sub is not None else None
        return out, cpu, share
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
    rounds = 3 if quick else 9
    per: dict = {m: {} for m in MODES}
    paired: dict = {m: [] for m in MODES[1:]}
    cpu_paired: dict = {m: [] for m in MODES[1:]}
    shares: list = []
    for i in range(rounds):
        order = MODES if i % 2 == 0 else MODES[::-1]
        got, cpu = {}, {}
        for mode in order:
            got[mode], cpu[mode], share = _one_round(mode, quick)
            if mode == "subscriber":
                shares.append(share)
        for m in MODES[1:]:
            cpu_paired[m].append(cpu[m] / cpu["off"])
        for mode, times in got.items():
            for k, v in times.items():
                per[mode].setdefault(k, []).append(v)
        for m in MODES[1:]:
            paired[m].append(statistics.geometric_mean(
                [got[m][k] / got["off"][k] for k in got["off"]]))
    r: dict = {}
    med = {m: {k: statistics.median(v) for k, v in per[m].items()} for m in MODES}
    for k in med["off"]:
        scale, unit = (1e6, "us") if k != "chain_200" else (1e3, "ms")
        for m in MODES:
            r[f"{k}[{m}]"] = (med[m][k] * scale, unit)
    for m in MODES[1:]:
        r[f"events_{m}_vs_off"] = (statistics.median(paired[m]), "x")
    for m in MODES[1:]:
        # the same work's CPU seconds, all processes: what the events cost the cluster,
        # read where elapsed time swings with a host that runs other guests
        r[f"events_{m}_vs_off_cpu"] = (statistics.median(cpu_paired[m]), "x")
    # what one subscriber to every kind costs the driver (the bottleneck of these
    # workloads), read on its own thread: a figure the host's other guests barely move
    r["events_subscriber_thread_share"] = (statistics.median(shares) * 100, "%")
    lags = sorted(_latency(quick))
    if lags:
        r["event_to_callback_median"] = (statistics.median(lags) * 1e3, "ms")
        r["event_to_callback_p99"] = (lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1e3,
                                      "ms")
    return r
