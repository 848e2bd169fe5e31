"""Live lines in a notebook: a cell's task status, a ref's state, the cluster summary.

Each line reads the state API (``refbook.state``): a cell's and a ref's line its
targeted queries, ``state.tasks(ids=...)`` and ``state.objects(ids=...)``, which this
driver answers for its own tasks and objects without asking another process; the
cluster line ``state.nodes()``.  Rendered as HTML into an ``ipywidgets.HTML``; one
background thread refreshes the lines that can still change.  A line holds object ids,
never refs, so showing a ref does not keep it alive.  A line checks that its cluster
still runs (``frontend.Driver.is_current``) before it asks: the state API would start
a new one.
"""

from __future__ import annotations

import html
import threading
import time

from .. import state as state_api
from ..runtime.api import frontend
from ..units import fmt_bytes

_STYLE = ("font-family: var(--jp-code-font-family, monospace); font-size: 12px; "
          "line-height: 1.6; color: var(--jp-ui-font-color1, #333)")
_DOT = {"waiting": "#9e9e9e", "queued": "#9e9e9e", "pending": "#9e9e9e",
        "running": "#1e88e5", "done": "#43a047", "failed": "#e53935",
        "cancelled": "#fb8c00", "freed": "#9e9e9e", "ready": "#43a047",
        "retrying": "#fb8c00", "reconstructing": "#fb8c00", "unknown": "#9e9e9e"}
_ENDED = ("done", "failed", "cancelled")


def status_of(row: dict | None) -> tuple[str, str | None, str | None]:
    """``(state, node it runs on, error class)`` of a ``state.tasks(ids=...)`` row; no
    row: the task finished and nothing holds its results any more."""
    if row is None:
        return "done", None, None
    st = row["state"]
    return st, (row["node_id"] if st == "running" else None), row["error"]


def ref_info(oid: bytes) -> dict:
    """A ref as its line shows it: ``id``, ``state``, ``size``, ``where``, ``made_by``,
    ``detail``, from ``state.objects(ids=...)`` (and, while it is pending, the state
    of the task that makes it)."""
    rows = state_api.objects(ids=[oid])
    info = {"id": oid.hex(), "state": "freed", "size": None, "where": None,
            "made_by": "put" if oid.endswith(b"\xff\xff\xff\xff") else "a task",
            "detail": None}
    if not rows:
        return info
    o = rows[0]
    info.update(state=o["state"], size=o["size"], detail=o["error"],
                made_by=o["made_by"] or info["made_by"])
    if o["state"] == "ready" and o["inline"]:
        info["where"] = "inline, in its owner's memory"
    elif o["state"] == "ready" and o["nodes"]:
        copies = o["nodes"][1:]
        info["where"] = f"on node {o['nodes'][0]}" + (
            f", copies on {', '.join(copies)}" if copies else "")
    elif o["state"] == "pending" and o["task"]:
        t = state_api.tasks(ids=[oid[:16]])     # the task that makes it
        if t and t[0]["state"] not in _ENDED:
            info["state"] = t[0]["state"]
            if t[0]["state"] == "running" and t[0]["node_id"]:
                info["where"] = f"on node {t[0]['node_id']}"
    return info


def dot(state: str) -> str:
    return (f'<span style="color:{_DOT.get(state, "#9e9e9e")}">&#9679;</span>')


def plain(body: str) -> str:
    """The text of a line's HTML, for frontends that show no widgets."""
    import re
    return html.unescape(re.sub(r"<[^>]+>", "", body)).replace("\u25cf ", "").strip()


def show(widget, text: str) -> None:
    """Display ``widget`` with ``text`` as its plain-text form (instead of the widget's
    repr), so a notebook run without a widget manager still reads well."""
    from IPython.display import display
    bundle = widget._repr_mimebundle_()
    bundle["text/plain"] = text
    display(bundle, raw=True)


class Line:
    """One live line.  ``text()`` returns ``(html, final)``; a line that sets ``slow``
    changes rarely and is refreshed at the refresher's slow pace."""

    def __init__(self):
        import ipywidgets
        self.widget = ipywidgets.HTML()
        self.last = None
        self.slow = False

    def refresh(self) -> bool:
        """Update the widget; False once the line will not change any more."""
        try:
            body, final = self.text()
        except Exception as e:  # noqa: BLE001 - a view must never break the kernel
            body, final = f"(refbook: cannot show this: {html.escape(repr(e))})", True
        if body != self.last:
            self.last = body
            try:
                self.widget.value = f'<div style="{_STYLE}">{body}</div>'
            except Exception:  # noqa: BLE001 - the frontend went away: stop updating
                return False
        return not final

    def text(self) -> tuple[str, bool]:
        raise NotImplementedError

    def show(self) -> None:
        show(self.widget, plain(self.last or ""))


class CellLine(Line):
    """Under a cell: the state of the tasks it submitted."""

    def __init__(self, driver, cell, outputs=(), kept=(), on_failed=None):
        self.driver = driver      # the cluster the cell's tasks ran on
        self.cell, self.outputs = cell, list(outputs)
        self.kept = list(kept)
        self.on_failed = on_failed        # (task id, name) of a task that failed
        self.retries: dict[bytes, str] = {}   # task id -> "retried after ... (attempt n)"
        self.remote_task = None   # the task of a %%remote cell (its errors show below)
        self.expecting = False    # shown before its task is submitted
        self.since = getattr(cell, "started", None) or time.monotonic()
        self.ended = None
        self.seen: dict[bytes, None] = {}     # task ids in submission order
        self.open: dict[bytes, str] = {}      # ...not finished yet
        self.closed: list[tuple] = []         # (name, state, node, detail) of the others
        self.counts: dict[str, int] = {}
        super().__init__()

    def text(self) -> tuple[str, bool]:
        # a finished task does not change again: look only at the others
        for tid, name in list(self.cell.tasks.items())[len(self.seen):]:
            self.seen[tid] = None
            self.open[tid] = name
            if self.expecting and self.remote_task is None:
                self.remote_task = tid          # before anyone can see it fail
        live: dict[str, int] = {}
        first_open = None
        sample = list(self.open.items())[:2000]   # tasks mostly finish in order
        if not sample:
            rows = {}
        elif self.driver.is_current():
            asked = state_api.tasks(ids=[tid for tid, _ in sample])
            rows = {t["task_id"]: t for t in asked}
        else:           # the cluster was shut down: its tasks ended with it
            rows = {tid.hex(): {"state": "cancelled", "node_id": None,
                                "error": None, "attempt": None} for tid, _ in sample}
        for tid, name in sample:
            row = rows.get(tid.hex())
            st = status_of(row)
            self._retry(tid, row)
            if st[0] in _ENDED:
                del self.open[tid]
                self.closed.append((name, *st))
                self.counts[st[0]] = self.counts.get(st[0], 0) + 1
                if st[0] == "failed" and self.on_failed is not None:
                    self.on_failed(tid, name)
            else:
                live[st[0]] = live.get(st[0], 0) + 1
                first_open = first_open or (name, *st)
        states = self.closed[:1] if first_open is None else [first_open]
        if not self.seen:
            return "", not self.expecting
        final = not self.open
        if final and self.ended is None:
            self.ended = time.monotonic()
        took = (self.ended or time.monotonic()) - self.since
        if len(self.seen) == 1:
            name, state, node, detail = states[0]
            parts = [dot(state), f"<b>{html.escape(name)}</b>", state]
            if state == "running" and node:
                parts[-1] = f"running on node {node}"
            if detail:
                parts.append(f"({html.escape(detail)})")
            parts.append(f"{'in' if final else 'for'} {took:.2f} s")
            tid = next(iter(self.seen))
            if tid in self.retries:
                parts.append(f"&middot; {html.escape(self.retries[tid])}")
            return " ".join(parts) + self._names(failed=state == "failed"), final
        counts = dict(self.counts)
        for k, n in live.items():
            counts[k] = counts.get(k, 0) + n
        rest = len(self.open) - sum(live.values())
        if rest > 0:
            counts["not looked at yet"] = rest
        worst = next((k for k in ("failed", "cancelled", "retrying", "running", "queued",
                                  "waiting", "pending", "unknown") if k in counts), "done")
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        retried = len(self.retries)
        more = f", {retried} retried after a worker died" if retried else ""
        return (f"{dot(worst)} <b>{len(self.seen)} tasks</b> from this cell: {summary}{more} "
                f"({'in' if final else 'for'} {took:.2f} s)"), final

    def abandon(self) -> None:
        """The task this line waited for was never submitted."""
        self.expecting = False

    def _retry(self, tid: bytes, row: dict | None) -> None:
        """Note "retried after worker died (attempt 2)" once a task ran again."""
        if row is not None and (row["attempt"] or 0) > 1 and row.get("retried_because"):
            self.retries[tid] = (f"retried after {row['retried_because']} "
                                 f"(attempt {row['attempt']})")

    def _names(self, failed: bool = False) -> str:
        """Which names of a %%remote cell became refs (and which stayed behind); after
        a failure those refs hold the error, and ``get`` raises it."""
        out = ""
        if self.outputs:
            label = "refs holding the error" if failed else "refs"
            out += f" &middot; {label}: " + ", ".join(html.escape(o) for o in self.outputs)
        if self.kept:
            out += (' <span style="opacity:0.7">(not returned: '
                    + ", ".join(html.escape(o) for o in self.kept) + ")</span>")
        return out


class RefLine(Line):
    """A ref's rich display: it follows the ref until its value is known."""

    def __init__(self, driver, oid: bytes):
        self.driver, self.oid = driver, oid
        super().__init__()

    def text(self) -> tuple[str, bool]:
        if not self.driver.is_current():
            return (f"{dot('freed')} <b>ObjectRef</b> {self.oid.hex()} of a cluster that "
                    f"was shut down"), True
        i = ref_info(self.oid)
        # a ready ref changes only when it is freed (or spilled...): look now and then
        self.slow = i["state"] in ("ready", "failed")
        parts = [dot(i["state"]), f"<b>ObjectRef</b> {i['id']}", i["state"]]
        if i["detail"]:
            parts.append(f"({html.escape(i['detail'])})")
        if i["size"] is not None:
            parts.append(fmt_bytes(i["size"]))
        if i["where"]:
            parts.append(html.escape(i["where"]))
        parts.append(f"&middot; made by {html.escape(i['made_by'])}")
        return " ".join(parts), i["state"] == "freed"


class ClusterLine(Line):
    """The summary ``%load_ext refbook`` shows: nodes, CPUs, the store (``state.nodes()``),
    kept current."""

    def text(self) -> tuple[str, bool]:
        if frontend.driver() is None:      # never start a cluster just to show one
            return f"{dot('freed')} <b>refbook</b> is shut down", True
        nodes = [n for n in state_api.nodes() if n["alive"]]
        cpus = sum(n["resources"].get("CPU", 0) for n in nodes)
        busy = cpus - sum(n["available"].get("CPU", 0) for n in nodes)
        used = sum(n["store"]["used"] for n in nodes)
        cap = sum(n["store"]["capacity"] for n in nodes)
        spilled = sum(n["store"].get("spilled_bytes", 0) for n in nodes)
        objs = sum(n["store"]["num_objects"] for n in nodes)
        state = "running" if busy > 0 else "ready"
        body = (f"{dot(state)} <b>refbook</b> &middot; {len(nodes)} node"
                f"{'s' if len(nodes) != 1 else ''} &middot; {cpus:g} CPUs ({max(busy, 0):g} "
                f"busy) &middot; store {fmt_bytes(used)} / {fmt_bytes(cap)}, {objs} objects"
                + (f", {fmt_bytes(spilled)} spilled" if spilled else ""))
        return body, False


class Refresher:
    """One daemon thread that refreshes the live lines every ``period`` seconds (the
    cluster line every ``slow`` seconds) and forgets the lines that are final."""

    def __init__(self, period: float = 0.25, slow: float = 1.0):
        self.period, self.slow = period, slow
        self.lines: list[Line] = []
        self.slow_lines: list[Line] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="refbook-live", daemon=True)
        self._thread.start()

    def add(self, line: Line, slow: bool = False) -> None:
        line.refresh()
        with self._cv:
            (self.slow_lines if slow else self.lines).append(line)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        next_slow = 0.0
        while True:
            with self._cv:
                while not self._stop and not self.lines and not self.slow_lines:
                    self._cv.wait()
                if self._stop:
                    return
                lines = list(self.lines)
                tick = time.monotonic() >= next_slow
                slow = list(self.slow_lines) if tick else []
            if tick:
                next_slow = time.monotonic() + self.slow
            done = [ln for ln in lines if (tick or not ln.slow) and not ln.refresh()]
            for ln in slow:
                ln.refresh()
            with self._cv:
                self.lines = [ln for ln in self.lines if ln not in done]
                self._cv.wait(self.period)
