"""What one process answers to the state API's targeted queries (part of
:class:`~refbook.runtime.processes.core.CoreWorker`, through ``StateAnswers``): the
rows of a few objects or tasks it owns, looked up by id, without walking its tables.
``state.objects(ids=...)`` and ``state.tasks(ids=...)`` ask these of the owner only (a
driver answers its own directly); the notebook's live lines call them every 0.25 s.

The rows have the keys of the whole-cluster snapshots (``describe_objects``,
``describe_tasks``).  Not known here, so left as they are: an object's ``spilled``
(the store knows it), and ``contained_in`` beyond the containers this owner owns.
"""

from __future__ import annotations

import time

from ...exceptions import TaskCancelledError
from ..data.serialization import filename_display
from ..protocol.entries import ERROR, INLINE, STORED
from ..protocol.ids import is_put, object_id
from ..protocol.refcount import Effects
from .callsite import Formatter, names

# What does not change in a task's row (its id names the task), kept across answers so
# that a row asked for every 0.25 s is cheap: task id -> those fields.  Cleared when full.
_STATIC = ("task_id", "name", "args", "returns", "owner", "call_site")
_static_rows: dict = {}
MAX_STATIC = 10_000

_formatter: list = [None, Formatter()]   # [the filename display it was made under, it]


def _sites() -> Formatter:
    """A call site formatter kept across answers (these come every 0.25 s), made anew
    when the notebook names files differently or it has grown large."""
    shown = filename_display()
    if _formatter[0] is not shown or len(_formatter[1]._cache) > 10_000:
        _formatter[:] = [shown, Formatter()]
        _static_rows.clear()         # their call sites were named the old way
    return _formatter[1]


_TASK_KEYS = ("node_id", "worker", "pid", "attempt", "submitted_at", "started_at",
              "finished_at", "retried_because")


class TargetedAnswers:
    """Mixed into CoreWorker; reads its tables under its lock, one entry per id."""

    def objects_of(self, oids: list) -> list[dict]:
        """The rows (as ``state.objects()``'s) of those of ``oids`` this process owns and
        has not freed; the others are left out."""
        named = names()
        fmt = _sites()
        out = []
        with self.lock:
            self._drain()
            refs, me, actors = self.rt.refs, self.me, self.actors.owned
            for oid in oids:
                r = refs.get(oid)
                if r is None or r.owner != me or r.freed or oid in actors:
                    continue
                row = self._object_row(oid, r, named, fmt)
                if row is not None:
                    out.append(row)
        return out

    def _drain(self) -> None:
        """Let go of the handles dropped since (caller holds the lock): what they alone
        held is freed, and not shown."""
        if self._releases or self._view_releases:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)

    def _object_row(self, oid: bytes, r, named: dict, fmt: Formatter) -> dict | None:
        """One object's row, as ``Introspection._describe_objects`` makes it, plus
        ``error`` (the class of the error a failed object holds); None for an actor."""
        entry = self.values.get(oid)
        inline, error = False, None
        if entry is None:
            state = "reconstructing" if oid in self.recovery.rebuilding else "pending"
            size, nodes = None, []
        else:
            kind = entry[0]
            if kind == INLINE:
                state, inline, nodes = "ready", True, [self.node_id]
                size = len(entry[1]) + (sum(map(len, entry[2])) if entry[2] else 0)
            elif kind == STORED:
                state, size = "ready", entry[3]
                copies = self.copies.get(oid)
                nodes = [entry[1], *sorted(copies)] if copies else [entry[1]]
            elif kind == ERROR:
                state, size, nodes = "failed", None, []
                error = self._error_name(entry[1])
            else:                                       # an actor's location
                return None
        put = is_put(oid)
        site = r.site
        if site is not None:
            made_by, call_site = site[0], fmt(site)
        else:
            made_by, call_site = ("put" if put else self._made_by(oid, None)), None
        h = oid.hex()
        lineage = []
        if put and r.kept:          # kept (a put value) so that finished tasks can rerun
            tasks = self.recovery.tasks
            lineage = [{"task_id": tid.hex(), "name": tasks[tid].name,
                        "returns": [x.hex() for x in tasks[tid].return_ids]}
                       for tid, (_owned, pinned) in self.recovery.args.items()
                       if any(x == oid for x, _ in pinned)]
        contained_in = []
        if r.contained > 0:
            contained_in = [c.hex() for c in self._containers_of(oid, r, [])]
        b = r.borrowers
        return {
            "object_id": h, "owner": self.me, "size": size, "state": state,
            "nodes": nodes, "spilled": False, "task": None if put else h[:32],
            "local_refs": r.local, "submitted_refs": r.submitted,
            "lineage_refs": r.lineage_refs(put), "lineage": lineage,
            "borrowers": sorted(a for a, n in b.items() if n) if b else [],
            "inline": inline, "made_by": made_by, "call_site": call_site,
            "names": list(named[h]) if h in named else [], "contained_in": contained_in,
            "error": error,
        }

    def tasks_of(self, tids: list) -> list[dict]:
        """The rows (as ``state.tasks()``'s) of those of ``tids`` this process owns:
        tasks it still tracks, and finished ones whose first result it still holds
        (``done``, ``failed`` or ``cancelled``, from that result).  A task it forgot
        (finished, its results freed) is left out."""
        fmt = _sites()
        off = time.time() - time.monotonic()
        out = []
        with self.lock:
            self._drain()
            me, values, refs = self.me, self.values, self.rt.refs
            for tid in tids:
                t, q = self._find_task(tid)
                if t is not None:
                    row = self._tracked_row(t, q, fmt, off)
                    e = values.get(object_id(tid, 0)) if row["state"] == "done" else None
                    if e is not None and e[0] == ERROR:     # kept, but it failed
                        self._ended(row, e[1])
                    out.append(row)
                    continue
                oid = object_id(tid, 0)
                r = refs.get(oid)
                if r is None or r.owner != me or r.freed:
                    continue
                e = values.get(oid)
                row = {"task_id": tid.hex(), "name": r.site[0] if r.site else None,
                       "args": [], "returns": [oid.hex()], "owner": me,
                       "call_site": fmt(r.site), "rebuilds": 0, "error": None,
                       **dict.fromkeys(_TASK_KEYS)}
                if e is None:
                    row["state"] = "waiting"      # about to be submitted, or an actor's
                elif e[0] == ERROR:               # call waiting for its actor
                    self._ended(row, e[1])
                else:
                    row["state"] = "done"
                    if e[0] == STORED:
                        row["node_id"] = e[1]     # where its result is
                out.append(row)
        return out

    def _tracked_row(self, t, q, fmt: Formatter, off: float) -> dict:
        """``_task_row(t, q, fmt, off)``, its fixed fields from the last time."""
        tid = t.task_id
        static = _static_rows.get(tid)
        if static is None:
            row = self._task_row(t, q, fmt, off)
            if len(_static_rows) >= MAX_STATIC:
                _static_rows.clear()
            _static_rows[tid] = {k: row[k] for k in _STATIC}
            return row
        row = static.copy()
        row["args"], row["returns"] = list(row["args"]), list(row["returns"])
        row.update(self._task_now(t, q, off))
        return row

    def _ended(self, row: dict, err) -> None:
        if isinstance(err, TaskCancelledError):
            row["state"] = "cancelled"
        else:
            row["state"], row["error"] = "failed", self._error_name(err)
