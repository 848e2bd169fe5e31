"""The simulator's check of what owners say they did (DESIGN.md §7): the events an
owner's ring holds (``protocol/events.py``) must match the transitions it made.

Per task: ``task_submitted``, then ``task_retried`` any number of times, then exactly
one of ``task_finished``, ``task_failed`` or ``task_cancelled``; a task may be
submitted again after that only to rebuild its outputs.  Per object the owner made:
``object_freed`` only for a value created (or reconstructed) and not freed since;
``object_reconstructed`` only after ``object_reconstructing``.  At the end, when every
handle is dropped and the system settled, no live owner has a task left open.
"""

from __future__ import annotations

from ..runtime.protocol.events import TASK_END


def check_owner(owner, at_end: bool) -> str | None:
    """What is wrong with ``owner``'s events, or None."""
    evs, dropped, _ = owner.events.since(0)
    if dropped:
        return None                     # the ring overflowed: nothing to compare
    tasks: dict[bytes, str] = {}
    objects: dict[bytes, str] = {}
    for ev in evs:
        seq, kind, f = ev[0], ev[2], ev[3:]
        if kind.startswith("task_"):
            tid = f[0]
            st = tasks.get(tid)
            if kind == "task_submitted":
                if st == "open":
                    return f"event {seq}: task {tid.hex()} submitted twice"
                tasks[tid] = "open"
            elif kind == "task_retried" or kind in TASK_END:
                if st != "open":
                    return f"event {seq}: {kind} of task {tid.hex()} that is {st}"
                if kind in TASK_END:
                    tasks[tid] = "ended"
        elif kind.startswith("object_"):
            oid = f[0]
            st = objects.get(oid)
            if kind == "object_created":
                if st not in (None, "freed", "lost"):
                    return f"event {seq}: object {oid.hex()} created while {st}"
                objects[oid] = "live"
            elif kind == "object_freed":
                if st != "live":
                    return f"event {seq}: object {oid.hex()} freed while {st}"
                objects[oid] = "freed"
            elif kind == "object_lost":
                objects[oid] = "lost"
            elif kind == "object_reconstructing":
                objects[oid] = "rebuilding"
            elif kind == "object_reconstructed":
                if st != "rebuilding":
                    return f"event {seq}: object {oid.hex()} reconstructed while {st}"
                objects[oid] = "live"
    if at_end:
        left = [tid.hex() for tid, st in tasks.items() if st == "open"]
        if left:
            return f"tasks never ended: {left}"
    return None


def check_events(world, at_end: bool = False) -> None:
    for p in world.procs.values():
        wrong = check_owner(p.owner, at_end and p.alive)
        if wrong is not None:
            world.fail(f"{p.addr}: {wrong}")
