"""The base of the live views (API.md §4): ``memory()``, ``spilling()``, ``recovery()``
and the dashboard are each a :class:`LiveView`.

A view reads only the state API (``refbook.state``).  It subscribes to the event kinds
it shows; its subscription's callback only queues the events.  The view's own timer
thread (``refbook-view``, started by the view and ended by it) hands the queued events
to :meth:`LiveView.update` at most ``MAX_RATE`` times a second, and asks it to refresh
from snapshots (``state.nodes()``...) every ``poll_s``: so at most 5 model updates per
second reach the browser whatever the event rate, and an event is shown within
``MIN_GAP`` plus the subscription's pace ``EVENTS_S`` (well under 0.5 s).  The timer sleeps until
something is due (at most ``CHECK_S``), so an idle view costs next to nothing; each
view has its own, so that a slow snapshot in one (a node just died) delays no other.

A view holds object ids, never refs, so it never keeps memory alive.  It stops
updating (its subscription closed, its timer gone) when it is closed, and when the
cluster it shows shuts down (``refbook.shutdown()``, ``%refbook restart``): the
subscription's thread then simply ends without a word, so the timer notices by asking
``frontend.driver()`` before anything else, and never starts a cluster itself.

A new view (the object graph): subclass :class:`LiveView`; set ``kinds``, ``since``
and ``poll_s``; in ``build()`` make the widgets (``self.pane(bokeh_model)`` for a
plot: it is resent when displayed), in ``update(events, poll)`` call ``set_data()``
and change the widgets (``plots.batch`` sends a plot's changes as one patch), and say
in ``empty()`` what ``data`` is without a cluster; then return it from
``dashboard_view.graph_tab()``.
"""

from __future__ import annotations

import copy
import html
import logging
import threading
import time
from collections import deque

import ipywidgets

from ..runtime.api import frontend
from . import theme

log = logging.getLogger("refbook.widgets")

MAX_RATE = 5.0              # model updates per second per view, at most
MIN_GAP = 1.0 / MAX_RATE
CHECK_S = 0.25              # an idle view checks that its cluster still runs
EVENTS_S = 0.1              # the subscription's pace: each event read costs the driver
                            # the same, but each read round costs too; 0.1 s keeps an
                            # event within 0.5 s of the browser with 5 updates a second
HIDDEN_S = 2.0              # a view in a dashboard tab not in front updates this seldom:
                            # its data stays fresh and its tab current when picked
RESEND = (1.0, 3.0)         # plots sent whole again this long after being displayed
CPU_SHARE = 0.25            # a view's updates take at most this share of a core on
CPU_BURST = 0.5             # average, beyond a burst of this many CPU seconds: under a
FLOOD = 50                  # flood of events (an update with this many or more), where
                            # each update costs more, they come less often, and the kernel
                            # stays the user's; a few events (the user's own put) show at once
NO_CLUSTER = ("no refbook cluster: run <code>%load_ext refbook</code> "
              "(or <code>refbook.init()</code>), then show this view again")


class LiveView(ipywidgets.VBox):
    """A live view: an ``ipywidgets.VBox`` plus the machinery above.  Subclasses set
    ``kinds`` (event kinds to follow; None for all, () for none), ``since`` (None:
    events from now on; 0: what this driver still holds too), ``poll_s`` (snapshot
    refresh period, or None), and implement :meth:`build`, :meth:`empty` and :meth:`update`."""

    kinds: tuple | None = ()
    since: int | None = None
    poll_s: float | None = None
    title = "refbook"

    def __init__(self):
        super().__init__(layout=ipywidgets.Layout(width="100%"))
        self.add_class("refbook-view")
        self._lock = threading.Lock()
        self._pending: list = []
        self._last = 0.0                 # monotonic time of the last model update
        self._next_poll = 0.0
        self._debt = 0.0                 # update CPU seconds not yet paid off at
        self._debt_at = 0.0              # CPU_SHARE a second, as of this time
        self.update_cpu = 0.0            # CPU seconds the updates of floods took
        self._sub = None
        self._timer: threading.Thread | None = None
        self._wake = threading.Event()   # wakes the timer: events came, or stop
        self._ui = threading.RLock()     # one update of the widgets at a time
        self._panes: list = []           # the Bokeh plots (plots.pane)
        self._resend_at: list = []       # monotonic times to send the plots whole again
        self.born = time.time()
        self.updates = 0                 # model updates sent so far
        self.update_times: deque = deque(maxlen=2000)   # monotonic, for rates
        self.latencies: deque = deque(maxlen=2000)  # event time to model updated (s)
        self.stopped: str | None = None  # why the view stopped updating
        self.hidden = False              # in a tab not in front (see set_hidden)
        self._data = self.empty()
        self.header = ipywidgets.HTML()
        self.notice = ipywidgets.HTML()
        self._driver = frontend.driver()
        if self._driver is None:
            self.stopped = "no cluster"
            self.header.value = theme.header(self.title, "")
            self.notice.value = theme.notice(NO_CLUSTER)
            self.children = [theme.style(), self.header, self.notice]
            return
        from .plots import bokehjs
        parts = self.build()
        self.children = [theme.style(), bokehjs(), self.header, *parts, self.notice]
        self._refresh([], poll=True)
        self._debt = 0.0                 # the first drawing is paid for
        from .. import state
        if self.kinds != ():
            self._sub = state.subscribe(self._on_events, kinds=self.kinds, since=self.since,
                                        period=EVENTS_S)
        self._timer = threading.Thread(target=self._run, name="refbook-view", daemon=True)
        self._timer.start()

    # -- what subclasses provide ----------------------------------------------------------
    def build(self) -> list:
        """The widgets under the header."""
        raise NotImplementedError

    def empty(self) -> dict:
        """``data`` when nothing is known (no cluster)."""
        raise NotImplementedError

    def update(self, events: list, poll: bool) -> None:
        """Take new ``events`` (and, if ``poll``, fresh snapshots); set ``self._data``
        and the widgets.  Runs on the view's timer thread, at most ``MAX_RATE`` a second."""
        raise NotImplementedError

    # -- what everyone uses ---------------------------------------------------------------
    def pane(self, model):
        """A Bokeh model as a widget of this view (see ``plots.pane``)."""
        from .plots import pane
        w = pane(model)
        self._panes.append(w)
        return w

    def shown(self) -> None:
        """The view is being displayed: send its plots whole now and again shortly."""
        if self.stopped is not None or not self._panes:
            return
        self._resend()
        now = time.monotonic()
        self._resend_at = [now + d for d in RESEND]

    def _resend(self) -> None:
        with self._ui:
            for p in self._panes:
                p.resend()

    def _repr_mimebundle_(self, **kwargs):
        self.shown()
        return super()._repr_mimebundle_(**kwargs)

    def set_hidden(self, hidden: bool) -> None:
        """In a tab not in front (``hidden``): update every ``HIDDEN_S`` only.  Brought
        to the front: up to date at once, then at the usual pace."""
        hidden = bool(hidden)
        if hidden == self.hidden:
            return
        self.hidden = hidden
        if not hidden:
            self._next_poll = 0.0
            self._wake.set()

    def _gap(self) -> float:
        """The least time between two updates: ``MIN_GAP`` (``HIDDEN_S`` behind a tab),
        longer while the updates have taken more than ``CPU_SHARE`` of a core (a leaky
        bucket: a burst of ``CPU_BURST`` CPU seconds first)."""
        base = HIDDEN_S if self.hidden else MIN_GAP
        now = time.monotonic()
        over = self._debt - (now - self._debt_at) * CPU_SHARE - CPU_BURST
        return max(base, now - self._last + over / CPU_SHARE) if over > 0 else base

    def _paid(self, cost: float) -> None:
        """An update took ``cost`` CPU seconds."""
        now = time.monotonic()
        self._debt = max(0.0, self._debt - (now - self._debt_at) * CPU_SHARE) + cost
        self._debt_at = now
        self.update_cpu += cost

    @property
    def data(self) -> dict:
        """What the view shows right now, as plain dicts and lists (API.md §4)."""
        with self._lock:
            return copy.deepcopy(self._data)

    def set_data(self, data: dict) -> None:
        with self._lock:
            self._data = data

    def live(self) -> bool:
        """Is the cluster this view shows still the running one?"""
        return self.stopped is None and self._driver is not None and \
            self._driver.is_current()

    def _on_events(self, events: list) -> None:
        """The subscription's callback (its thread): queue, and wake the timer if it
        sleeps longer than the events may wait."""
        with self._lock:
            first = not self._pending
            self._pending.extend(events)
        if first:
            self._wake.set()

    def _run(self) -> None:
        """The view's timer: it sleeps until something is due (events to show, a poll,
        a resend of the plots), so an idle view costs nothing."""
        while self.stopped is None:
            self._wake.wait(self._due() - time.monotonic())
            self._wake.clear()
            if self.stopped is not None:
                return
            try:
                self._tick(time.monotonic())
            except Exception:  # noqa: BLE001 - keep the view going
                log.exception("a refbook view failed to update")

    def _due(self) -> float:
        """When the timer must look next (monotonic): events wait ``MIN_GAP`` after the
        last update; the cluster's liveness is checked at least every ``CHECK_S``."""
        now, gap = time.monotonic(), self._gap()
        due = now + CHECK_S
        if self._pending:
            due = min(due, self._last + gap)
        if self.poll_s is not None:
            due = min(due, max(self._next_poll, self._last + gap))
        if self._resend_at:
            due = min(due, max(self._resend_at[0], self._last + MIN_GAP))
        return due

    def _tick(self, now: float) -> None:
        if self.stopped is not None:
            return
        if not self._driver.is_current():
            self._stop("the cluster was shut down: this view no longer updates (show it "
                       "again once a cluster runs)")
            return
        if now - self._last < MIN_GAP:
            return
        if self._resend_at and now >= self._resend_at[0]:
            self._resend_at.pop(0)
            self._resend()
            self._last = now
            self.updates += 1
            self.update_times.append(now)
            return
        if now - self._last < self._gap():     # behind a tab, or updates cost much
            return
        poll = self.poll_s is not None and now >= self._next_poll
        with self._lock:
            if not self._pending and not poll:
                return
            events, self._pending = self._pending, []
        self._refresh(events, poll)

    def _refresh(self, events: list, poll: bool) -> None:
        now = time.monotonic()
        if poll:
            self._next_poll = now + (self.poll_s or 0)
        cpu = time.thread_time()
        try:
            with self._ui:
                self.update(events, poll)
        except Exception as e:  # noqa: BLE001 - a view must never break the kernel
            if self._driver is None or not self._driver.is_current():
                return self._stop("the cluster was shut down: this view no longer updates")
            log.debug("view update failed", exc_info=True)
            self._last = time.monotonic()     # try again, at the same pace
            theme.set_html(self.notice, theme.notice(
                f"cannot show this: {html.escape(type(e).__name__)}: {html.escape(str(e))}",
                error=True))
            return None
        if "rb-error" in self.notice.value:     # it works again
            self.notice.value = ""
        if len(events) >= FLOOD:
            self._paid(time.thread_time() - cpu)
        done = time.monotonic()
        self._last = done
        self.updates += 1
        self.update_times.append(done)
        fresh = [e["time"] for e in events if e.get("time", 0) >= self.born]
        if fresh:
            self.latencies.append(time.time() - min(fresh))
        return None

    def _stop(self, why: str) -> None:
        """Stop updating for good: the subscription and the timer go."""
        if self.stopped is not None:
            return
        self.stopped = why
        self._wake.set()
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout=5)
        if why != "closed":
            try:
                theme.set_html(self.notice, theme.notice(why))
            except Exception:  # noqa: BLE001 - the frontend went away
                pass

    def close(self) -> None:
        """Stop updating and close the widgets (the browser's views go away)."""
        self._stop("closed")
        self.close_widgets()
        super().close()

    def close_widgets(self) -> None:
        """Close the widgets this view made (subclasses add theirs)."""
        for w in (self.header, self.notice):
            w.close()

    def rate(self, window: float = 1.0) -> float:
        """Model updates per second over the last ``window`` seconds."""
        now = time.monotonic()
        return sum(1 for t in self.update_times if now - t <= window) / window
