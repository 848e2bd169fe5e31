"""Teaching controls (API.md section 3): kill a worker, kill a node, add a node.

They act on local clusters only: ``refbook.init()``'s embedded cluster (one node, or
``num_nodes=N``) and ``refbook.testing.Cluster``.  Each node says in its view how it was
started (``started_by``); nodes started by ``refbook start`` are refused, since they
may serve other people and run on other hosts."""

from __future__ import annotations

import os
import signal
import time

from ... import exceptions as exc
from ..processes import context
from ..protocol import messages as P
from . import functions as fn

_REMOTE = "refbook start"


def _refuse(what: str, node: dict) -> None:
    if node.get("started_by") == _REMOTE:
        raise exc.RefbookError(
            f"state.{what}() acts on local clusters only (refbook.init(), "
            f"refbook.testing.Cluster), and node {node['node_id']} was started by "
            f"`refbook start`: stop nodes there with `refbook stop` on their host, add "
            f"some with `refbook start --address HOST:PORT`")


def _live_nodes() -> list[dict]:
    return [n for n in fn.nodes() if n["alive"]]


def _node(node_id: str, what: str) -> dict:
    if not isinstance(node_id, str):
        raise TypeError(f"state.{what}() takes a node id (a str from state.nodes()), not "
                        f"{type(node_id).__name__}")
    for n in fn.nodes():
        if n["node_id"] == node_id:
            if not n["alive"]:
                raise ValueError(f"node {node_id} is dead already")
            return n
    raise ValueError(f"no node {node_id!r} in this cluster; state.nodes() lists them")


def kill_worker(node_id: str | None = None) -> dict:
    """SIGKILL one busy worker (one that holds a lease: it runs, or is about to run,
    a task) on node ``node_id``, or on any node if None.  Its tasks are retried (up to
    their ``max_retries``), an actor in it restarts (up to ``max_restarts``).  Returns
    ``{"node_id", "worker", "pid"}`` of the worker killed; raises ``RuntimeError`` if
    no worker is busy."""
    core = context.running()
    targets = [_node(node_id, "kill_worker")] if node_id is not None else _live_nodes()
    for n in targets:
        _refuse("kill_worker", n)
    for n in targets:
        try:
            workers = core.query(n["address"], "workers") or []
        except exc.RefbookError:
            continue           # it died meanwhile
        busy = [w for w in workers if w["busy"] and w["pid"]]
        busy.sort(key=lambda w: w["actor"])          # a task's worker before an actor's
        for w in busy:
            try:
                os.kill(w["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue
            return {"node_id": n["node_id"], "worker": w["address"], "pid": w["pid"]}
    where = f"node {node_id}" if node_id is not None else "any node"
    raise RuntimeError(f"no busy worker on {where}: kill_worker() kills a worker while it "
                       f"runs a task, so submit one first (a task that sleeps a little)")


def kill_node(node_id: str, timeout: float = 10.0) -> None:
    """SIGKILL node ``node_id``'s node manager: its workers, its object store and what
    it spilled go with it, as when a machine fails.  What was lost there is rebuilt
    from lineage when needed.  Returns once the cluster counts the node dead.  Not the
    node of this driver (it would take the driver with it), nor the head."""
    core = context.running()
    node = _node(node_id, "kill_node")
    _refuse("kill_node", node)
    if node_id == core.node_id:
        raise ValueError(f"node {node_id} is this driver's own node: killing it would take "
                         f"the driver with it. Kill another one (state.nodes() lists them), "
                         f"or call refbook.shutdown()")
    if node.get("is_head"):
        raise ValueError(f"node {node_id} is the head of the cluster: the cluster cannot "
                         f"live without it. Kill another one (state.nodes() lists them)")
    session = fn._session
    local = getattr(session, "local_nodes", None)
    if local is None or not local.kill(node_id):
        try:                   # a node of refbook.testing.Cluster, on this host too
            os.kill(node["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    # tell the head at once rather than wait for the heartbeats to stop
    core.send(core.head_address, (P.NODE_DIED, node_id, "killed by state.kill_node()"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(n["node_id"] == node_id and n["alive"] for n in fn.nodes()):
            return
        time.sleep(0.02)
    raise exc.RefbookError(f"node {node_id} was killed but the cluster did not count it "
                           f"dead within {timeout:g} s")


def add_node(num_cpus: int = 1, object_store_memory: int | None = None,
             resources: dict | None = None) -> str:
    """Start one more node manager on this host, with ``num_cpus`` workers, an object
    store of ``object_store_memory`` bytes (default: as big as the driver's node's) and
    custom ``resources``; returns its node id once the cluster counts it alive.  It
    stops with the cluster."""
    if not isinstance(num_cpus, int) or num_cpus < 0:
        raise ValueError(f"num_cpus must be a non-negative integer, not {num_cpus!r}")
    if object_store_memory is not None and (not isinstance(object_store_memory, int)
                                            or object_store_memory < (1 << 20)):
        raise ValueError("object_store_memory must be an integer number of bytes, at "
                         f"least 1 MiB; got {object_store_memory!r}")
    context.running()
    with fn._lock:
        session = fn._session
        local = getattr(session, "local_nodes", None)
        if local is None:
            for n in _live_nodes():
                _refuse("add_node", n)
            raise exc.RefbookError(
                "state.add_node() adds nodes to a cluster that this process started "
                "with refbook.init(); this process joined one (init(address=...)): add "
                "nodes from the process that started it (refbook.testing.Cluster."
                "add_node() for a test cluster)")
        capacity = object_store_memory or session.capacity
        return local.start([(num_cpus, capacity, dict(resources or {}))])[0]
