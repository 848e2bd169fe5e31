"""The head: cluster membership and the actor directory, a role of one node manager.

The node manager started first (``init()``'s embedded node, ``refbook start`` without
``--address``, or the first node of ``refbook.testing.Cluster()``) is the head as
well: in the same process and over the same sockets, it owns a :class:`Head` and hands
it the head's messages.  The head

- keeps the membership table: other node managers register with it (NODE_REGISTER)
  and send a heartbeat every ``heartbeat_s`` (HEARTBEAT), each answered with the
  cluster view (HEAD_VIEW) that they place work by;
- decides which nodes are dead (silent for ``heartbeat_timeout`` seconds, or reported
  dead by this node) and tells every other node (NODE_DIED);
- keeps the actor directory (ACTOR_UPDATE from actors' owners), which ``get_actor()``,
  ``actors()`` and ``refbook status`` read through STATE_QUERY.

It is not the membership table's logic (``protocol.membership``, without I/O), nor what a
node does when another node or a process dies (the node manager fails, frees and
reports what depended on it; the head only records and announces), nor a node's side
of membership (heartbeats sent, the latest view kept: the node manager).  The head is
not on the per-task path: nodes place leases from their latest view without asking it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..protocol import messages as P
from ..protocol.events import actor_event
from ..protocol.membership import Membership
from ..wire.transport import Transport

MAX_ACTOR_RECORDS = 10_000     # past this, the oldest dead actors are forgotten


class Head:
    """The head's membership table and actor directory, and the messages that keep them.

    ``this_node`` returns this node's own entry of the view, fresh; ``node_died`` is the
    node manager's handling of a node's death (it calls :meth:`announce_death` back when
    it is done); ``pid_of`` gives the pid of a worker of this node, or None."""

    def __init__(self, transport: Transport, node_id: str, heartbeat_timeout: float,
                 this_node: Callable[[], dict], node_died: Callable[[str, str], None],
                 pid_of: Callable[[str], int | None], events=None):
        self.t = transport
        self.node_id = node_id
        self.heartbeat_timeout = heartbeat_timeout
        self.members = Membership(heartbeat_timeout)
        self.actors: dict[str, dict] = {}     # actor id (hex) -> its latest record
        self._this_node = this_node
        self._node_died = node_died
        self._pid_of = pid_of
        self.events = events                  # this node's ring: node_added goes there
        if events is not None:
            events.add("node_added", node_id, transport.address)

    def handlers(self) -> dict:
        return {P.NODE_REGISTER: self._on_node_register, P.HEARTBEAT: self._on_heartbeat,
                P.ACTOR_UPDATE: self._on_actor_update}

    # -- membership ------------------------------------------------------------------------
    def cluster_view(self) -> list[dict]:
        """Every node the cluster has had, this one up to date, the others as of their
        last heartbeat; dead ones stay, with ``alive`` False."""
        self.members.nodes[self.node_id] = self._this_node()
        return self.members.view()

    def _on_node_register(self, m) -> None:
        self.members.register(m[1], time.monotonic())
        if self.events is not None:
            self.events.add("node_added", m[1]["node_id"], m[1]["address"])
        self.t.send(m[1]["address"], (P.HEAD_VIEW, self.cluster_view()))

    def _on_heartbeat(self, m) -> None:
        view = m[1]
        if self.members.heartbeat(view, time.monotonic()):
            self.t.send(view["address"], (P.HEAD_VIEW, self.cluster_view()))
        else:    # declared dead already: it must go (its processes were written off)
            self.t.send(view["address"], (P.NODE_DIED, view["node_id"],
                                          "missed its heartbeats"))

    def tick(self, now: float) -> None:
        """Nodes silent for longer than the timeout die now."""
        for node_id in self.members.expire(now, self.node_id):
            self._node_died(node_id, f"no heartbeat for {self.heartbeat_timeout:g} s")

    def announce_death(self, node_id: str, reason: str) -> None:
        """``node_id`` is dead, and this node has dealt with it: record it, and tell
        every other live node (each then fails what depended on it)."""
        self.members.mark_dead(node_id)
        marker = f"/n-{node_id}/"              # its processes owned actors no more
        for owner in {r.get("owner") for r in self.actors.values()
                      if r["state"] != "dead" and marker in (r.get("owner") or "")}:
            self.process_died(owner)
        for n in self.members.view():
            if n["alive"] and n["node_id"] != self.node_id:
                self.t.send(n["address"], (P.NODE_DIED, node_id, reason))

    # -- the actor directory -----------------------------------------------------------------
    def _on_actor_update(self, m) -> None:
        """An owner's record of its actor: the node and pid it runs at are the owner's
        (the pid known once the constructor ran; before, if on this node, ours)."""
        rec = dict(m[1])
        old = self.actors.get(rec["actor_id"])
        if old is not None and old.get("owner_died"):
            return                            # (sent before its owner died)
        if rec.get("pid") is None and rec.get("node_id") == self.node_id:
            rec["pid"] = self._pid_of(rec.get("address"))
        self.actors[rec["actor_id"]] = rec
        if len(self.actors) > MAX_ACTOR_RECORDS:
            for k in [k for k, v in self.actors.items() if v["state"] == "dead"][:1000]:
                del self.actors[k]

    def process_died(self, addr: str) -> None:
        """Fate sharing: the actors that ``addr`` owned died with it.  Their owner cannot
        say so: the head records their ``actor_died`` (and only the head: it does so
        for owners that are gone)."""
        for rec in self.actors.values():
            if rec.get("owner") == addr and rec["state"] != "dead":
                if self.events is not None:
                    actor_event(self.events, "actor_died", rec["actor_id"],
                                rec["class_name"], rec.get("name"), rec.get("node_id"),
                                rec.get("pid"), reason="owner_died",
                                restarts=rec.get("restarts", 0),
                                detail=f"its owner {addr} died")
                rec.update(state="dead", pid=None, node_id=None, address=None,
                           owner_died=True)

    def actor_records(self) -> list[dict]:
        """The state API's "actors": every actor's latest record, dead ones too."""
        return list(self.actors.values())

    def named_actor(self, name: str) -> dict | None:
        """The live actor named ``name`` (``get_actor()``), or None."""
        return next((r for r in self.actors.values()
                     if r.get("name") == name and r["state"] != "dead"), None)


class HeadLink:
    """A node's side of membership when another node manager is the head: it registers
    with the head, sends it a heartbeat every ``heartbeat_s``, and keeps the latest
    cluster view the head answered with (HEAD_VIEW).

    ``this_node`` returns this node's own entry of the view, fresh; ``node_died`` is the
    node manager's handling of a node's death, called for each node the head's view
    shows dead (the node manager ignores the ones it has dealt with already)."""

    def __init__(self, transport: Transport, head_address: str, node_id: str,
                 heartbeat_s: float, heartbeat_timeout: float,
                 this_node: Callable[[], dict], node_died: Callable[[str, str], None]):
        self.t = transport
        self.head_address = head_address
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.silence_limit = max(3 * heartbeat_timeout, 5.0)   # then the head is gone
        self.view: list[dict] = []            # the head's latest HEAD_VIEW
        self.last_heartbeat = 0.0
        self.last_view_at = time.monotonic()
        self._this_node = this_node
        self._node_died = node_died

    def handlers(self) -> dict:
        return {P.HEAD_VIEW: self._on_head_view}

    def register(self) -> None:
        self.t.send(self.head_address, (P.NODE_REGISTER, self._this_node()))

    def cluster_view(self, dead: set[str]) -> list[dict]:
        """This node up to date, the others as the head last said, those in ``dead``
        (deaths this node heard of since) not alive."""
        return [self._this_node()] + [
            dict(n, alive=n["alive"] and n["node_id"] not in dead)
            for n in self.view if n["node_id"] != self.node_id]

    def _on_head_view(self, m) -> None:
        self.view = m[1]
        self.last_view_at = time.monotonic()
        for n in self.view:
            if not n["alive"]:
                self._node_died(n["node_id"], "declared dead by the head")

    def tick(self, now: float) -> None:
        if now - self.last_heartbeat >= self.heartbeat_s:
            self.last_heartbeat = now
            self.t.send(self.head_address, (P.HEARTBEAT, self._this_node()))

    def head_silent(self, now: float) -> bool:
        """Whether the head has not answered for so long that this node must stop (its
        processes may already have been written off as dead)."""
        return now - self.last_view_at > self.silence_limit
