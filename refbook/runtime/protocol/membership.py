"""The head's membership table and placement decisions, without I/O.

The head is the node manager started first (``init()``'s embedded node, or
``refbook.testing.Cluster()``); other node managers register with it and send a
heartbeat every ``period`` seconds.  A node that stays silent for ``timeout`` seconds is
declared dead, and the head tells every other node, which tells its processes.  Every
heartbeat's reply carries the current view, so each node can place work elsewhere
(spillback) without asking the head on the per-task path.
"""

from __future__ import annotations

from .leases import fits


class Membership:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.nodes: dict[str, dict] = {}      # node_id -> view (see node_view())
        self.last: dict[str, float] = {}      # node_id -> time of its last heartbeat

    def register(self, view: dict, now: float) -> None:
        self.nodes[view["node_id"]] = dict(view, alive=True)
        self.last[view["node_id"]] = now

    def heartbeat(self, view: dict, now: float) -> bool:
        """Returns False for a node already declared dead (it must not come back:
        its processes were reported dead to everyone)."""
        old = self.nodes.get(view["node_id"])
        if old is not None and not old["alive"]:
            return False
        self.nodes[view["node_id"]] = dict(view, alive=True)
        self.last[view["node_id"]] = now
        return True

    def expire(self, now: float, me: str) -> list[str]:
        """Nodes whose heartbeats stopped; they are now dead."""
        dead = []
        for node_id, t in self.last.items():
            n = self.nodes[node_id]
            if node_id != me and n["alive"] and now - t > self.timeout:
                n["alive"] = False
                dead.append(node_id)
        return dead

    def mark_dead(self, node_id: str) -> bool:
        n = self.nodes.get(node_id)
        if n is None or not n["alive"]:
            return False
        n["alive"] = False
        return True

    def view(self) -> list[dict]:
        return list(self.nodes.values())


def choose_node(view: list[dict], resources: dict, me: str) -> tuple[str | None, bool]:
    """Where a lease for ``resources`` should go, seen from node ``me``.  Returns
    ``(node_id, feasible)``: ``node_id`` None means "here"; ``feasible`` False means no
    node can ever run it.  Here is preferred when it has the resources free now;
    otherwise a node that has them free; otherwise here if it could ever run them;
    otherwise any node that could."""
    alive = [n for n in view if n["alive"]]
    here = next((n for n in alive if n["node_id"] == me), None)
    if here is not None and fits(resources, here["available"]):
        return None, True
    free = [n for n in alive if n["node_id"] != me and fits(resources, n["available"])]
    if free:
        return max(free, key=lambda n: n["available"].get("CPU", 0))["node_id"], True
    if here is not None and fits(resources, here["resources"]):
        return None, True
    able = [n for n in alive if fits(resources, n["resources"])]
    if able:
        return able[0]["node_id"], True
    return None, False


def place_lease(view: list[dict], resources: dict, me: str, prefer: str | None,
                fits_here: bool, crowded: bool, head: str | None) -> tuple[str, str | None]:
    """Where node ``me`` should run a lease request for ``resources`` whose arguments
    are on node ``prefer`` (``fits_here``: this node could ever run it; ``crowded``:
    it has not got them free, and other requests wait already; ``head``: the head's
    address, None on the head).  Returns
    ``("here", None)``, ``("spill", address)`` (ask that node), ``("spill_away",
    address)`` (ask that node, and stop preferring ``prefer``) or ``("reject", why)``.

    Locality first: a task runs where its arguments are, waiting for a worker there
    (a lease an owner holds idle comes back soon).  But when requests already queue
    there and another node is idle, moving the arguments costs less than waiting (as
    Ray's spillback)."""
    if prefer == me and fits_here:
        away = idle_node(view, resources, me) if crowded else None
        return ("here", None) if away is None else ("spill_away", away)
    if prefer is not None:
        target = next((n for n in view if n["node_id"] == prefer and n["alive"]
                       and fits(resources, n["resources"])), None)
        if target is not None:
            return "spill", target["address"]
    node, feasible = choose_node(view, resources, me)
    if not feasible:
        if head is not None:
            # our view of the cluster is a heartbeat old: the head decides what is
            # impossible (a node that can run it may just have joined)
            return "spill", head
        return "reject", unsatisfiable(resources, view)
    if node is not None:
        addr = next((n["address"] for n in view if n["node_id"] == node), None)
        if addr is not None:
            return "spill", addr
    return "here", None


def idle_node(view: list[dict], resources: dict, me: str) -> str | None:
    """The address of another live node with ``resources`` free (the most CPUs free
    first), or None."""
    free = [n for n in view if n["alive"] and n["node_id"] != me
            and fits(resources, n["available"])]
    if not free:
        return None
    return max(free, key=lambda n: n["available"].get("CPU", 0))["address"]


def unsatisfiable(resources: dict, view: list[dict]) -> str:
    """The error of a lease request that no node of ``view`` can ever run."""
    want = ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()) if v)
    have = "; ".join(
        f"node {n['node_id']}: " + ", ".join(f"{k}={v:g}" for k, v in
                                            sorted(n["resources"].items()))
        for n in view if n["alive"])
    return f"no node can ever satisfy the resources {{{want}}}: the nodes have {have}"
