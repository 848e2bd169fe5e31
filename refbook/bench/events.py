"""What the state API's events cost (``refbook bench --only events``), side by side in
one run: the workloads of ``--only core`` that run in a cluster (all but start-up and
shut-down) with event recording off, on with nobody listening, on with one subscriber
to every kind, and on with the subscriptions the widgets make (failures, spilling,
nodes); and "off" once more (``off_again``), whose ratio to "off" is the bench's own
noise in this run.  All run in one cluster, which switches recording on and off in
every process (``set_recording``) and subscribes or not between blocks, so that
nothing else differs.  The workloads run in short blocks (a fraction of a second) that
take turns among the modes, each mode in each place of a turn equally often, after a
block that none counts: the blocks compared ran within a second of each other, and a
shared machine's load, which drifts from one second to the next, slows them alike.  A
ratio is paired: per workload, the median over the turns of (mode / off, of the same
turn); then the geometric mean over the workloads (``events_*``: all of them, as the
targets are stated; ``per_task_*``: the four per-task ones, where events cost most).
``REFBOOK_EVENT_TURNS`` sets the number of turns (40; each adds about 8 s).  Then the
time from an event to a subscriber's callback."""

from __future__ import annotations

import os
import statistics
import threading
import time

# "off_again" is "off" once more, counted apart: the bench's own noise, the ratio that
# two identical modes show in this run
MODES = ("off", "on", "subscriber", "widgets", "off_again")
# what the widgets subscribe to: no per-task kinds
WIDGET_KINDS = ("object_spilled", "object_restored", "object_lost", "object_reconstructing",
                "object_reconstructed", "worker_died", "node_died", "node_added",
                "oom_kill", "task_retried", "actor_restarted", "actor_died")
EVENT_TARGETS = {"events_on_vs_off": ("<=", 1.03), "events_subscriber_vs_off": ("<=", 1.10),
                 "events_widgets_vs_off": ("<=", 1.10),
                 "event_to_callback_median": ("<=", 50), "event_to_callback_p99": ("<=", 250)}


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


# the workloads of ``--only core`` that run in a cluster (not the start-up ones, each
# in a fresh interpreter); the first four are the per-task ones, where events cost most
PER_TASK = ("task_round_trip", "async_throughput", "chain_200", "put_1KiB")
WORKLOADS = PER_TASK + ("nested_100", "get_1KiB", "put_1MB", "put_100MB", "get_100MB",
                        "task_100MB_arg")
MB = 1 << 20


def _noop(x=None):
    return x


def _shape(a):
    return a.shape


def _nested(inner, n):
    import refbook
    return sum(refbook.get([inner.remote(i) for i in range(n)]))


class _Kit:
    """What the workloads use, made once in the cluster."""

    def __init__(self):
        import numpy as np

        import refbook
        self.f = refbook.remote(_noop)
        self.outer = refbook.remote(_nested)
        self.shape = refbook.remote(_shape)
        self.a1 = np.random.rand(MB // 8)
        self.a100 = np.random.rand(100 * MB // 8)
        self.ref100 = refbook.put(self.a100)
        self.small = os.urandom(1024)


def _timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _workload(name: str, k: _Kit, quick: bool) -> float:
    """One block of a workload: seconds per call (per task, per put, per chain)."""
    import refbook
    f = k.f
    if name == "task_round_trip":
        return _timed(lambda: refbook.get(f.remote(1)), 150 if quick else 300)
    if name == "async_throughput":
        n = 1000 if quick else 2000
        t = time.perf_counter()
        refbook.get([f.remote(i) for i in range(n)])
        return (time.perf_counter() - t) / n
    if name == "chain_200":
        def chain():
            x = f.remote(0)
            for _ in range(199):
                x = f.remote(x)
            refbook.get(x)
        return _timed(chain, 1)
    if name in ("put_1KiB", "get_1KiB"):
        t = time.perf_counter()
        refs = [refbook.put(k.small) for _ in range(2000)]
        t1 = time.perf_counter()
        if name == "put_1KiB":
            del refs
            return (t1 - t) / 2000
        for r in refs:
            refbook.get(r)
        return (time.perf_counter() - t1) / len(refs)
    if name == "nested_100":
        return _timed(lambda: refbook.get(k.outer.remote(f, 100)), 3)
    if name == "put_1MB":
        return _timed(lambda: refbook.put(k.a1), 50)
    if name == "put_100MB":
        return _timed(lambda: refbook.put(k.a100), 2)
    if name == "get_100MB":
        return _timed(lambda: refbook.get(k.ref100), 100)
    return _timed(lambda: refbook.get(k.shape.remote(k.ref100)), 30)


def _switch(mode: str, sub):
    """Put this driver's cluster in ``mode``; returns the subscription it needs."""
    from refbook import state
    from refbook.runtime.api.events import set_recording
    if sub is not None:
        sub.close()
    set_recording(mode not in ("off", "off_again"))
    if mode == "subscriber":
        return state.subscribe(lambda evs: None)
    if mode == "widgets":
        return state.subscribe(lambda evs: None, kinds=WIDGET_KINDS, period=0.1)
    return None


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
    """See the module.  Returns the figures, and the ratios next to the targets."""
    import refbook
    turns = 3 if quick else int(os.environ.get("REFBOOK_EVENT_TURNS", 40))
    times: dict = {m: {w: [] for w in WORKLOADS} for m in MODES}
    cpus: dict = {m: {w: [] for w in WORKLOADS} for m in MODES}
    spent = [0.0, 0.0]      # the driver's CPU seconds, and its events thread's
    refbook.init(num_cpus=2, object_store_memory=1 << 30, log_to_stderr=False)
    sub = None
    try:
        kit = _Kit()
        for w in WORKLOADS:          # warm: workers started, the functions sent
            _workload(w, kit, True)
        for turn in range(turns):
            for i, w in enumerate(WORKLOADS):
                # each mode takes each place in the turn equally often, and a block
                # that no mode counts goes first: what the last workload left behind
                # (refs being freed, garbage) lands on it
                k = (turn + i) % len(MODES)
                order = MODES[k:] + MODES[:k]
                if (turn // len(MODES)) % 2:
                    order = order[::-1]
                _workload(w, kit, True)
                for m in order:
                    sub = _switch(m, sub)
                    cpu, driver = _cpu(), _events_thread_cpu()
                    times[m][w].append(_workload(w, kit, quick))
                    cpus[m][w].append(_cpu() - cpu)
                    if m == "subscriber":
                        ended = _events_thread_cpu()
                        spent[0] += ended[0] - driver[0]
                        spent[1] += ended[1] - driver[1]
        sub = _switch("on", sub)
    finally:
        if sub is not None:
            sub.close()
        refbook.shutdown()
    r: dict = {}
    for w in WORKLOADS:
        scale, unit = (1e3, "ms") if w in ("chain_200", "nested_100", "put_100MB") \
            else (1e6, "us")
        for m in MODES:
            r[f"{w}[{m}]"] = (statistics.median(times[m][w]) * scale, unit)

    def paired(table, m, ws=WORKLOADS):
        return statistics.geometric_mean([statistics.median(
            [a / b for a, b in zip(table[m][w], table["off"][w], strict=True)])
            for w in ws])
    for m in MODES[1:]:
        r[f"events_{m}_vs_off"] = (paired(times, m), "x")
    for m in MODES[1:]:
        # the per-task workloads alone, where the events cost most
        r[f"per_task_{m}_vs_off"] = (paired(times, m, PER_TASK), "x")
    for m in MODES[1:]:
        # the same work's CPU seconds, all processes: what the events cost the cluster,
        # read where elapsed time swings with a host that runs other guests (the
        # per-task workloads: the others' blocks are too short for CPU clocks)
        r[f"events_{m}_vs_off_cpu"] = (paired(cpus, m, PER_TASK), "x")
    # what one subscriber to every kind costs the driver (the bottleneck of these
    # workloads), read on its own thread: a figure the host's other guests barely move
    r["events_subscriber_thread_share"] = (spent[1] / spent[0] * 100 if spent[0] else 0.0,
                                           "%")
    lags = sorted(_latency(quick))
    if lags:
        r["event_to_callback_median"] = (statistics.median(lags) * 1e3, "ms")
        r["event_to_callback_p99"] = (lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1e3,
                                      "ms")
    return r
