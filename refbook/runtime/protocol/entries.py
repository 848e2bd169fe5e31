"""What a process knows of a value: an *entry*, one of

* ``(INLINE, meta, buffers)``: a small value held in the process's memory;
* ``(STORED, node_id, offset, size)``: a value in a node's shared-memory store;
* ``(ERROR, exception)``: the task that makes it failed, or the value is lost;
* ``(ACTOR, address, incarnation)``: where an actor lives (its handle's "value").

Entries are plain tuples because they travel in messages (OBJECT_REPLY, a task's
resolved arguments) on the per-task path.  Also: process addresses and the errors every
owner raises.
"""

from __future__ import annotations

from ... import exceptions as exc

INLINE, STORED, ERROR, ACTOR = 0, 1, 2, 3


def node_of(addr: str) -> str | None:
    """The node id in a process address (``.../n-<node>/<process>``)."""
    i = addr.rfind("/n-")
    if i < 0:
        return None
    return addr[i + 3:].split("/", 1)[0]


def owner_died(oid: bytes, owner: str) -> exc.OwnerDiedError:
    return exc.OwnerDiedError(
        f"object {oid.hex()} was owned by {owner}, which died; its objects died with it "
        f"(fate sharing). Re-create the value in a process that outlives its users, "
        f"e.g. the driver.")
