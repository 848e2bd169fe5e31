"""The kernel's side of the JupyterLab sidebar (API.md section 5): the comm target
``refbook``.  The sidebar opens a comm for the active notebook's kernel; while it says
it is visible, this pushes what changed since the last push, every ``interval`` seconds,
read from the state API: the notebook's refs (one row per object, with the variables
that hold it), the nodes with their memory, the actors.  While it is hidden nothing
runs at all.  No port, no proxy: everything travels over the kernel's own channel.

Messages from the sidebar (``data["type"]``):
- ``visible`` ``{"visible": bool}``, ``interval`` ``{"seconds": float}``, ``refresh``;
- ``inspect`` ``{"id"}``: answered with its lineage and why it is alive;
- ``free`` ``{"id"}``: deletes the notebook variables that hold it (the sidebar asks the
  person first), answered with ``freed``.
Messages to it: ``delta`` ``{"cluster", "refs": {"upsert": [...], "remove": [...]},
"nodes", "actors"}`` (``nodes``/``actors``/``cluster`` only when they changed), then
``inspect`` and ``freed`` answers, and ``error`` ``{"message"}``.
"""

from __future__ import annotations

import logging
import threading
import time

import refbook
from refbook import state

from ..runtime.api import frontend
from ..units import short_id
from .refstable import held_by, made_by, owner_name

log = logging.getLogger("refbook.sidebar")

TARGET = "refbook"
INTERVAL = 0.25          # seconds between pushes while visible (the settings can change it)
SLOW = 1.0               # nodes and actors: at most this often


def register(session) -> None:
    """Let sidebars open the ``refbook`` comm with this kernel."""
    from comm import get_comm_manager
    get_comm_manager().register_target(TARGET, lambda comm, msg: Channel(session, comm))


def route_to_live_subshell(comm, kernel) -> None:
    """Have the kernel hand this comm's messages to the subshell they name while it
    exists, and to the main shell otherwise.

    JupyterLab 4.4+ sends a comm's messages on a subshell it shares among the comms of
    one target; closing one comm just as another opens (the sidebar does, after a
    restart or once refbook is loaded) can leave the new comm naming a subshell that
    has just been deleted.  ipykernel 7 also sends a comm's messages to the subshell
    its last *reply* came from.  Together, a message (a confirmed Free) could go to a
    subshell that is gone, and the kernel drops it without a word."""
    manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    if manager is None or not hasattr(manager, "list_subshell"):
        return                                            # a kernel without subshells

    def route(data, default):
        try:
            return default if default in manager.list_subshell() else None
        except Exception:  # noqa: BLE001 - the main shell always exists
            return None
    comm._reply_subshell_for = route


def unregister() -> None:
    from comm import get_comm_manager
    try:
        get_comm_manager().unregister_target(TARGET, None)
    except (KeyError, TypeError):
        mgr = get_comm_manager()
        mgr.targets.pop(TARGET, None)


class Channel:
    """One sidebar's comm."""

    def __init__(self, session, comm):
        self.session, self.comm = session, comm
        route_to_live_subshell(comm, getattr(session, "kernel", None))
        self.visible = False
        self.interval = INTERVAL
        self.closed = False
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.sent_refs: dict[str, dict] = {}
        self.sent_other: dict = {}
        self.slow_at = 0.0
        comm.on_msg(self.on_msg)
        comm.on_close(lambda msg: self.close())
        self.thread = threading.Thread(target=self._run, name="refbook-sidebar", daemon=True)
        self.thread.start()

    # -- from the sidebar -------------------------------------------------------------
    def on_msg(self, msg) -> None:
        data = msg["content"]["data"] or {}
        kind = data.get("type")
        try:
            if kind == "visible":
                self.visible = bool(data.get("visible"))
                if self.visible:
                    self.forget()
                self.wake.set()
            elif kind == "interval":
                self.interval = min(10.0, max(0.1, float(data["seconds"])))
                self.wake.set()
            elif kind == "refresh":
                self.forget()
                self.wake.set()
            elif kind == "inspect":
                self.comm.send({"type": "inspect", **inspect(data["id"])})
            elif kind == "free":
                self.comm.send({"type": "freed", **self.free(data["id"])})
                self.wake.set()
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except Exception as e:  # noqa: BLE001 - tell the sidebar, keep the kernel going
            self.comm.send({"type": "error", "message": f"{type(e).__name__}: {e}"})

    def free(self, hexid: str) -> dict:
        """Delete the notebook variables that hold object ``hexid``."""
        ns = self.session.ip.user_ns
        names = [n for n, v in list(ns.items())
                 if isinstance(v, refbook.ObjectRef) and v.hex() == hexid]
        for n in names:
            del ns[n]
        return {"id": hexid, "names": names}

    def forget(self) -> None:
        """Send everything again at the next push."""
        with self.lock:
            self.sent_refs, self.sent_other, self.slow_at = {}, {}, 0.0

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    # -- to the sidebar ---------------------------------------------------------------
    def _run(self) -> None:
        while not self.closed:
            if not self.visible:
                self.wake.wait()          # hidden: no work at all until it is shown
                self.wake.clear()
                continue
            try:
                delta = self.delta()
                if delta:
                    self.comm.send({"type": "delta", **delta})
            except Exception:  # noqa: BLE001 - a failed push must not end the channel
                log.debug("sidebar push failed", exc_info=True)
            self.wake.wait(self.interval)
            self.wake.clear()

    def delta(self) -> dict:
        """What changed since the last push (empty: nothing)."""
        now = time.monotonic()
        with self.lock:
            out: dict = {}
            cluster, refs, nodes, actors = self.snapshot(now - self.slow_at >= SLOW)
            if nodes is not None:
                self.slow_at = now
            for key, value in (("cluster", cluster), ("nodes", nodes), ("actors", actors)):
                if value is not None and self.sent_other.get(key) != value:
                    self.sent_other[key] = out[key] = value
            upsert = [r for r in refs.values() if self.sent_refs.get(r["id"]) != r]
            remove = [h for h in self.sent_refs if h not in refs]
            if upsert or remove:
                out["refs"] = {"upsert": upsert, "remove": remove}
            self.sent_refs = refs
            return out

    def snapshot(self, slow: bool) -> tuple:
        """``(cluster, {id: ref row}, nodes or None, actors or None)``."""
        drv = frontend.driver()
        if drv is None:
            return {"running": False}, {}, ([] if slow else None), ([] if slow else None)
        names = self.session.variable_names()
        rows = state.objects(ids=list(names)) if names else []
        me = drv.me
        refs = {o["object_id"]: ref_row(o, names, me) for o in rows}
        cluster = {"running": True, "driver": me}
        if not slow:
            return cluster, refs, None, None
        return cluster, refs, [node_row(n) for n in state.nodes()], \
            [actor_row(a) for a in state.actors()]


def ref_row(o: dict, names: dict, me: str) -> dict:
    h = o["object_id"]
    return {"id": h, "short_id": short_id(h), "names": sorted(names.get(h, ())),
            "state": o.get("state"), "size": o.get("size"),
            "node": ",".join(o.get("nodes") or []), "owner": owner_name(o.get("owner"), me),
            "holders": held_by(o, names, me), "made_by": made_by(o),
            "error": o.get("error")}


def node_row(n: dict) -> dict:
    st = n.get("store") or {}
    return {"node_id": n["node_id"], "alive": n["alive"], "is_head": n.get("is_head"),
            "capacity": st.get("capacity"), "used": st.get("used"),
            "pinned": st.get("pinned"), "spilled_bytes": st.get("spilled_bytes"),
            "spill_threshold": st.get("spill_threshold"), "workers": n.get("workers"),
            "cpus": (n.get("resources") or {}).get("CPU"),
            "cpus_free": (n.get("available") or {}).get("CPU")}


def actor_row(a: dict) -> dict:
    return {k: a.get(k) for k in ("actor_id", "name", "class_name", "state", "node_id",
                                  "pid", "restarts", "pending_calls")}


def inspect(hexid: str) -> dict:
    """An object's lineage and why it is alive, for the sidebar's details."""
    if frontend.driver() is None:
        return {"id": hexid, "lineage": None, "why_alive": [],
                "message": "no refbook cluster is running"}
    return {"id": hexid, "lineage": state.lineage(hexid, depth=3),
            "why_alive": state.why_alive(hexid)}
