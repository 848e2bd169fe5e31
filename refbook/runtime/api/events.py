"""The state API's events (API.md §3): what every process of the cluster did, pulled,
merged in time order and numbered 1, 2, 3... by this driver, with no gaps.

Every process keeps its own bounded ring (``protocol/events.py``) and pays nothing
more when nobody listens.  A :class:`Collector` (one per driver, made on first use)
asks every node manager and every process they listed, all at once, for what its ring
holds after the local seq it read last (STATE_QUERY ``("events", seq)``), and merges
the answers.  An
event stamped after the round began waits for the next round, so that the merge is in
time order (on one host; across hosts, up to their clocks' skew).  A ring
that overflowed before it was read becomes an ``events_dropped`` event saying how many
were lost.  Subscriptions share one background thread that polls every ``POLL_S`` and
calls each callback with the new events, batched; the runtime never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import deque
from itertools import islice, repeat
from operator import itemgetter

from ... import exceptions as exc
from ..processes import context
from ..protocol.events import to_dict

log = logging.getLogger("refbook.events")

POLL_S = 0.05            # a subscription's poll period
LOG_SIZE = 100_000       # events this driver keeps for events(since=) and late readers
NODES_S = 1.0            # how often the list of nodes is asked again
QUERY_TIMEOUT = 2.0      # a node manager's answer
PROCESS_TIMEOUT = 1.0    # a process's (it may have just died)
# a reader turning thousands of events into dicts lets the driver's other threads (the
# user's) take the interpreter every so many: its batch is ready a little later, while
# the user's calls are not held up for the whole batch
YIELD_EVERY = 200
FLOOD_EVENTS = 500       # a round this large: the next one comes up to twice as late,
FLOOD_PAUSE_S = 0.1      # but no later than this


class Collector:
    """This driver's merged, numbered view of every ring (see the module); ``core`` may
    also be the command line's probe (see ``snapshots.py``: a viewer).

    The log keeps each event as it came: ``(time, raw, source)``, its time, the ring's
    own tuple and ``(node_id, process)`` (the time first, so that sorting and splitting
    by it run in C); an event's number is its place in the log.  Dicts are made
    only for those who read (a subscriber, ``events()``), and only of the kinds they
    want: the log itself is tuples of plain values, which the garbage collector stops
    tracking, so a full log costs the driver's other work nothing."""

    def __init__(self, core):
        self.core = core
        self.lock = threading.Lock()          # one round at a time
        self.log: deque = deque(maxlen=LOG_SIZE)
        self.seq = 0                          # the last number given
        self.cursors: dict[str, int] = {}     # source -> its last local seq read
        self.last_time: dict[str, float] = {}
        self.held: list = []                  # stamped after the last round began
        self.nodes: list[str] = []
        self.procs: list[str] = []            # the processes the nodes listed last
        self.nodes_at = 0.0
        self.subs: list[Subscription] = []
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    # -- pulling -------------------------------------------------------------------------
    def _nodes(self, now: float) -> list[str]:
        """The live node managers (asked again every ``NODES_S``)."""
        if self.nodes_at and now - self.nodes_at < NODES_S:
            return self.nodes
        core = self.core
        self.nodes = [n["address"] for n in
                      core.query(core.node_address, "nodes", QUERY_TIMEOUT) or []
                      if n["alive"]]
        self.nodes_at = now
        return self.nodes

    def _ask(self, srcs: list[str]) -> list:
        """Every source's answer to ``("events", its cursor)``, asked all at once
        (None for one that did not answer)."""
        core = self.core
        try:
            return core.query_many([(s, ("events", self.cursors.get(s, 0))) for s in srcs],
                                   PROCESS_TIMEOUT, poll=False)
        except exc.RefbookError:
            self.nodes_at = 0.0
            return [None] * len(srcs)

    def _take(self, src: str, rep, fresh: list, t0: float) -> None:
        """Add ``src``'s answer's events to ``fresh`` as log entries (see the class)."""
        if not rep:
            self.nodes_at = 0.0          # it died or is stuck: list the nodes again
            return
        prev = self.last_time.get(src, 0.0)
        evs = rep["events"]
        where = (rep["node_id"], src)
        if rep["dropped"]:
            t = max(prev, evs[0][1] if evs else t0)
            fresh.append((t, (0, t, "events_dropped", {"count": rep["dropped"]}), where))
        times = list(map(_time, evs))
        if evs and times[0] >= prev and times == sorted(times):
            fresh += zip(times, evs, repeat(where))   # in order, as a ring nearly always is
            prev = evs[-1][1]
        else:
            for raw in evs:
                if raw[1] < prev:            # a clock stepped back: keep its order
                    raw = (raw[0], prev, *raw[2:])
                prev = raw[1]
                fresh.append((prev, raw, where))
        self.last_time[src] = prev
        self.cursors[src] = rep["last"]

    def poll(self) -> int:
        """One round: read every ring, merge, number.  Returns how many were new.

        The node managers' answers list their processes as they are then, and every
        ring is read after ``t0``: whatever was stamped before ``t0`` is in this round,
        so what is held back to the next round sorts after all of it.  Every source of
        a round is asked at once; a process a node lists for the first time is asked
        in a second step of the same round."""
        with self.lock:
            core = self.core
            t0 = time.time()
            fresh: list = []
            nodes = self._nodes(t0)
            dead = core.known_dead()             # deaths this process heard of
            me = [core.me] if core.kind is not None else []     # a probe records nothing
            srcs = [*me, *nodes, *(p for p in self.procs if p not in dead and p != core.me)]
            srcs = list(dict.fromkeys(srcs))
            asked = set(srcs)
            listed: list = []
            for src, rep in zip(srcs, self._ask(srcs), strict=True):
                self._take(src, rep, fresh, t0)
                if rep and "processes" in rep:
                    listed += rep["processes"]
            new = [p for p in dict.fromkeys(listed) if p not in asked and p not in dead]
            for src, rep in zip(new, self._ask(new) if new else (), strict=True):
                self._take(src, rep, fresh, t0)
            self.procs = [p for p in dict.fromkeys(listed) if p not in dead]
            fresh.sort(key=_time0)            # stable: each source's order is kept
            cut = bisect_right(list(map(_time0, fresh)), t0)
            # what the last round held goes now, whatever its time: a host whose clock
            # runs ahead is out of order by its skew, but not held back by it
            ready = self.held + fresh[:cut]
            self.held = fresh[cut:]
            ready.sort(key=_time0)
            self.log.extend(ready)
            self.seq += len(ready)
            return len(ready)

    def after(self, seq: int, kinds=None) -> list[dict]:
        """Logged events numbered after ``seq`` (of ``kinds``; None: all) as dicts; an
        ``events_dropped`` first if the log no longer holds some of them."""
        log_ = self.log
        if not log_:
            return []
        first = self.seq - len(log_) + 1
        out = []
        if seq + 1 < first:
            out.append({"seq": first - 1, "time": log_[0][0], "kind": "events_dropped",
                        "node_id": None, "process": None, "count": first - 1 - seq})
        start = max(0, seq + 1 - first)
        n = first + start
        # the new events are the log's last ones: walk to them from its end (a deque
        # walks from the start, and a full log holds LOG_SIZE events)
        new = list(islice(reversed(log_), len(log_) - start))
        new.reverse()
        add = out.append
        for i, (_t, raw, (node_id, process)) in enumerate(new, 1):
            if kinds is None or raw[2] in kinds or raw[2] == "events_dropped":
                add(to_dict(raw, node_id, process, n))
            n += 1
            if not i % YIELD_EVERY:
                time.sleep(0)        # let the user's thread run between slices
        return out

    # -- subscriptions --------------------------------------------------------------------
    def add(self, sub: Subscription) -> None:
        with self.lock:
            self.subs.append(sub)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="refbook-events",
                                               daemon=True)
                self.thread.start()

    def remove(self, sub: Subscription) -> None:
        with self.lock:
            if sub in self.subs:
                self.subs.remove(sub)
        self.wake.set()

    def _run(self) -> None:
        while self.core.alive:
            with self.lock:
                if not self.subs:
                    self.thread = None
                    return
            pause = min((s.period for s in self.subs), default=POLL_S)
            try:
                if self.poll() >= FLOOD_EVENTS:
                    # a flood: each round carries a full batch anyway, and fewer
                    # rounds spend less of the driver asking every process
                    pause = max(pause, min(2 * pause, FLOOD_PAUSE_S))
            except Exception:  # noqa: BLE001 - keep the subscribers going
                if not self.core.alive:
                    break
                log.warning("reading the cluster's events failed", exc_info=True)
                pause = 1.0
            for sub in list(self.subs):
                sub.deliver(self)
            self.wake.wait(pause)
            self.wake.clear()
        self.thread = None


_time = itemgetter(1)      # a raw event's time
_time0 = itemgetter(0)     # a log entry's


def _kinds(kinds):
    if kinds is None:
        return None
    return {kinds} if isinstance(kinds, str) else set(kinds)


class Subscription:
    """``callback(list_of_events)`` on a background thread for each batch of new events
    (of ``kinds``), until :meth:`close`."""

    def __init__(self, collector: Collector, callback, kinds, cursor: int,
                 period: float = POLL_S):
        self.collector = collector
        self.callback = callback
        self.kinds = kinds
        self.cursor = cursor
        self.period = period      # the collector reads at the pace of its quickest
        self.closed = False

    def deliver(self, collector: Collector) -> None:
        if self.closed:
            return
        with collector.lock:
            last = collector.seq
            if last <= self.cursor:
                return
            evs = collector.after(self.cursor, self.kinds)
        self.cursor = last
        if evs:
            try:
                self.callback(evs)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the others
                log.exception("an events callback failed")

    def close(self) -> None:
        """Stop; no callback starts after this returns (one running may finish)."""
        self.closed = True
        self.collector.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def collector() -> Collector:
    core = context.running()
    c = getattr(core, "_event_collector", None)
    if c is None:
        c = core._event_collector = Collector(core)
    return c


def events(since: int = 0, kinds=None) -> list[dict]:
    """What happened in the cluster, oldest first (API.md §3): each event a dict with
    ``seq`` (this driver's numbering: 1, 2, 3... with no gaps, so ``since=seq``
    resumes), ``time``, ``kind``, ``node_id``, ``process`` and details."""
    c = collector()
    c.poll()
    with c.lock:
        return c.after(since, _kinds(kinds))


def subscribe(callback, kinds=None, since: int | None = None,
              period: float = POLL_S) -> Subscription:
    """Call ``callback(list_of_events)`` on a background thread with each batch of new
    events (of ``kinds``), from now on, or after ``since`` (0: everything this driver
    still holds), reading the cluster every ``period`` seconds or sooner (another
    subscription may ask for sooner; a slower pace costs the driver less while events
    pour in; during a flood, ``FLOOD_EVENTS`` or more a round, up to twice as late but
    no later than ``FLOOD_PAUSE_S`` unless ``period`` is longer).  Returns a
    :class:`Subscription`; ``.close()`` it.  When the cluster shuts down, callbacks
    simply stop: the subscriber is not told."""
    if not period > 0:
        raise ValueError(f"period must be a positive number of seconds, not {period!r}")
    c = collector()
    if since is None:
        c.poll()
        since = c.seq
    sub = Subscription(c, callback, _kinds(kinds), since, period)
    c.add(sub)
    return sub


def set_recording(on: bool) -> int:
    """Switch event recording on or off in every process of the cluster at once (for
    ``refbook bench --only events``, which compares the two in one cluster, so that
    nothing but the recording differs).  Returns how many processes switched; one
    started later records as usual."""
    c = collector()
    c.poll()                    # learn every process
    core = c.core
    with c.lock:
        srcs = list(dict.fromkeys([core.me, *c.nodes, *c.procs]))
    return sum(bool(r) for r in core.query_many([(s, ("record", on)) for s in srcs],
                                                PROCESS_TIMEOUT, poll=False))


# refbook.events(): the pressure and recovery events, under their earlier names
LEGACY = {"object_spilled": "spill", "object_restored": "restore",
          "object_transferred": "transfer", "object_evicted": "evict",
          "object_reconstructing": "reconstruct", "oom_kill": "oom_kill",
          "spill_failed": "spill_failed", "node_died": "node_died",
          "task_retried": "task_retried"}


def legacy_events(kinds=None) -> list[dict]:
    """``refbook.events()``: spill, restore, transfer, evict, reconstruct, oom_kill,
    spill_failed, node_died and task_retried, each with ``object_ids`` if it is about
    objects."""
    kinds = _kinds(kinds)
    out = []
    for e in events():
        old = LEGACY.get(e["kind"])
        if old is None or (kinds is not None and old not in kinds):
            continue
        e = dict(e, kind=old)
        if "object_id" in e:
            e["object_ids"] = [e["object_id"]]
        if old == "reconstruct":
            e["task"] = e["name"]
        elif old == "node_died":
            e["dead_node"] = e["node"]
        out.append(e)
    return out
