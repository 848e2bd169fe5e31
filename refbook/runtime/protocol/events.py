"""What a process did, kept in a bounded ring (API.md §3, DESIGN.md §7), without I/O.

Every process (each owner, each node manager) appends what happens to its own
:class:`EventRing`: a raw tuple ``(seq, time, kind, *fields)``, where ``seq`` numbers
this ring's events 1, 2, 3... and ``fields`` are the values of ``FIELDS[kind]`` in that
order (ids as bytes, padded with None), or one dict for the rarer free-form events.
Appending costs a counter and one deque append; nothing is formatted until someone
reads.  A reader asks for what came after the local ``seq`` it last saw
(:meth:`EventRing.since`) and learns how many it missed if the ring overflowed.  The
driver merges the rings of every process and numbers the result without gaps
(``runtime/api/events.py``); :func:`to_dict` makes the dicts that the state API shows.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

RING_SIZE = 20_000

# kind -> the names of its fields, in the order ``EventRing.add`` takes them
FIELDS = {
    "task_submitted": ("task_id", "name", "reason", "actor_id"),
    "task_started": ("task_id", "name", "owner", "actor_id"),
    "task_finished": ("task_id", "name", "attempt", "actor_id"),
    "task_failed": ("task_id", "name", "attempt", "error", "actor_id"),
    "task_retried": ("task_id", "name", "attempt", "reason", "actor_id"),
    "task_cancelled": ("task_id", "name", "attempt", "actor_id"),
    "object_created": ("object_id", "size"),
    "object_freed": ("object_id", "size"),
    "object_lost": ("object_id", "size", "reason"),
    "object_reconstructing": ("object_id", "size", "task_id", "name", "reason"),
    "object_reconstructed": ("object_id", "size", "task_id"),
    "object_spilled": ("object_id", "size", "bytes", "file"),
    "object_restored": ("object_id", "size", "bytes", "in_place"),   # in place: mapped
    "object_transferred": ("object_id", "size", "bytes", "source", "seconds"),
    "object_evicted": ("object_id", "size"),
    "worker_started": ("worker", "pid"),
    "worker_died": ("worker", "pid", "reason", "oom"),
    "node_added": ("node", "address"),
    "node_died": ("node", "reason"),
}
# A task event's ``actor_id`` is None unless the task is an actor call.  The actor events
# (``actor_created``, ``actor_restarted``, ``actor_died``: rare) are free-form, made by
# :func:`actor_event`.  Beyond API.md's kinds: ``object_evicted`` (a secondary copy
# dropped to make room) and the free-form ``oom_kill`` and ``spill_failed``; the driver
# adds ``events_dropped``.
TASK_END = ("task_finished", "task_failed", "task_cancelled")


class EventRing:
    """The last ``maxlen`` events of one process.  ``clock`` gives wall-clock time."""

    __slots__ = ("buf", "seq", "clock")

    def __init__(self, maxlen: int = RING_SIZE, clock=lambda: 0.0):
        self.buf: deque = deque(maxlen=maxlen)
        self.seq = 0
        self.clock = clock

    def add(self, kind: str, a=None, b=None, c=None, d=None, e=None) -> None:
        """Record an event of ``kind`` with the values of ``FIELDS[kind]`` (one flat
        tuple: the fewest objects for the allocator and the garbage collector)."""
        self.seq += 1
        self.buf.append((self.seq, self.clock(), kind, a, b, c, d, e))

    def note(self, kind: str, **details) -> None:
        """Record a rarer event whose fields are free-form (oom_kill, spill_failed...)."""
        self.seq += 1
        self.buf.append((self.seq, self.clock(), kind, details, None, None, None, None))

    def since(self, seq: int) -> tuple[list, int, int]:
        """``(events, dropped, last)``: the raw events after local ``seq``, how many
        after it are gone already (the ring overflowed), and the seq to ask after next
        time (that of the last event returned)."""
        buf = self.buf
        if not buf:
            return [], max(0, self.seq - seq), self.seq
        # No lock: the writer may append (and drop the oldest) in another thread between
        # any two steps here.  The copy itself is taken in one step, and its own numbers
        # are the truth: ``last`` is the last event returned, never a later one (that
        # one would be skipped for good), and a copy that begins after ``seq + 1`` though
        # the ring still held it (it moved under us) is taken again.
        # The new events are the ring's last ones: walk to them from its end (a deque
        # walks from where it starts, and a full ring holds RING_SIZE events).
        for _ in range(10):
            try:
                got = list(islice(reversed(buf), max(0, self.seq - seq)))
            except RuntimeError:
                continue
            got.reverse()
            # self.seq counts an event before it is appended: the walk may take one
            # already read
            k = 0
            while k < len(got) and got[k][0] <= seq:
                k += 1
            if k:
                del got[:k]
            if not got:
                return [], 0, seq
            if got[0][0] > seq + 1 and buf[0][0] <= seq + 1:
                continue            # appended to since self.seq was read: again
            return got, max(0, got[0][0] - seq - 1), got[-1][0]
        return [], 0, seq

    def __len__(self) -> int:
        return len(self.buf)


class Unrecorded(EventRing):
    """A ring that records nothing (``REFBOOK_EVENTS=0``): for measuring what recording
    costs.  The state API then sees no events from this process."""

    __slots__ = ()

    def add(self, kind: str, a=None, b=None, c=None, d=None, e=None) -> None:
        pass

    def note(self, kind: str, **details) -> None:
        pass


class Paused(Unrecorded):
    """A ring paused by :func:`recording`: records nothing, keeps the ring to go back
    to, and reads as that ring (which nothing appends to while paused), so that a
    reader still gets what it held and its cursor stays right."""

    __slots__ = ("real",)

    def __init__(self, real: EventRing):
        super().__init__(1, real.clock)
        self.real = real
        self.seq = real.seq

    def since(self, seq: int) -> tuple[list, int, int]:
        return self.real.since(seq)        # what it held when paused, not yet read


def make_ring(record: bool = True, **kw) -> EventRing:
    return EventRing(**kw) if record else Unrecorded(**kw)


def recording(ring: EventRing, on: bool) -> EventRing:
    """The ring a process keeps once recording is switched ``on`` or off at run time
    (``refbook bench --only events`` compares the two in one cluster): ``ring`` itself,
    a pause of it, or the ring a pause kept.  A ring made unrecorded stays so."""
    if on:
        return ring.real if isinstance(ring, Paused) else ring
    return ring if isinstance(ring, Unrecorded) else Paused(ring)


def _plain(v):
    return v.hex() if type(v) is bytes else v


def _maker(kind: str, names: tuple):
    """``make(raw, node_id, process, seq)``: the dict of one ``kind`` of event, compiled
    from a dict display (a reader may turn tens of thousands of events a second into
    dicts: a display builds one about four times faster than ``dict(zip(...))``).
    Every bytes value (an id) becomes hex; the ring pads with None past the fields."""
    items = ['"seq": seq', '"time": raw[1]', f'"kind": {kind!r}', '"node_id": node_id',
             '"process": process']
    items += [f"{name!r}: (v.hex() if (v := raw[{3 + i}]).__class__ is bytes else v)"
              for i, name in enumerate(names)]
    src = f"def make(raw, node_id, process, seq):\n    return {{{', '.join(items)}}}\n"
    scope: dict = {}
    exec(compile(src, f"<refbook event {kind}>", "exec"), scope)    # noqa: S102 - our text
    return scope["make"]


_MAKERS = {kind: _maker(kind, names) for kind, names in FIELDS.items()}


def to_dict(raw: tuple, node_id, process, seq=None) -> dict:
    """A raw ring event as the state API shows it (ids in hex), numbered ``seq`` (the
    ring's own number if None)."""
    if seq is None:
        seq = raw[0]
    kind = raw[2]
    if type(raw[3]) is dict:      # free-form; its own node_id (an actor's node) wins
        d = {"seq": seq, "time": raw[1], "kind": kind, "node_id": node_id,
             "process": process}
        for k, v in raw[3].items():
            if k not in ("seq", "time", "kind", "process"):
                d[k] = _plain(v)
        return d
    return _MAKERS[kind](raw, node_id, process, seq)


def entry_size(entry) -> int | None:
    """The size in bytes of a value entry (INLINE or STORED; see entries.py)."""
    if entry[0] == 1:
        return entry[3]
    try:
        return len(entry[1]) + (sum(map(len, entry[2])) if entry[2] else 0)
    except TypeError:           # the simulator's values are not bytes
        return 0


def error_name(err) -> str:
    """The class name of a task's error (of the exception it raised, if remote)."""
    cls = getattr(err, "cause_cls", None) or type(err)
    return getattr(cls, "__name__", str(cls))


def ended(ring: EventRing, task, error=None) -> None:
    """The event that ends an attempt of ``task``: finished, failed or cancelled."""
    if error is None:
        ring.add("task_finished", task.task_id, task.name, task.attempts, task.actor_id)
    elif task.cancelled:
        ring.add("task_cancelled", task.task_id, task.name, task.attempts, task.actor_id)
    else:
        ring.add("task_failed", task.task_id, task.name, task.attempts, error_name(error),
                 task.actor_id)


def retried(ring: EventRing, task, why: str) -> None:
    """``task`` runs again because ``why``."""
    ring.add("task_retried", task.task_id, task.name, task.attempts, why, task.actor_id)


def actor_event(ring: EventRing, kind: str, actor_id, class_name: str, name, node_id,
                pid, **more) -> None:
    """``actor_created``, ``actor_restarted`` or ``actor_died`` of one actor, on the node
    ``node_id`` where it runs (ran), in process ``pid`` (None where not known)."""
    ring.note(kind, actor_id=actor_id, class_name=class_name, name=name, node_id=node_id,
              pid=pid, **more)
