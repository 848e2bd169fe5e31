"""The node managers of an embedded cluster besides its first: ``init(num_nodes=N)``
and ``state.add_node()`` start them on this host, to teach recovery without a second
machine.

They are started as ``refbook.testing.Cluster`` starts its nodes (``launch.spawn_node``),
but belong to the driver's session: each joins the session's first node (the head),
watches the driver's pid and exits with it (a SIGKILL of the driver included), makes
its own arena (a memfd: nothing in /dev/shm), and keeps its sockets in the session's
directory, which the head removes.  ``shutdown()`` stops them first (SIGTERM: they kill
their workers on the way out)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ... import exceptions as exc
from ..processes.launch import spawn_node, wait_ready


class LocalNodes:
    """The extra nodes of the session in ``session_dir`` whose head is ``head_address``."""

    def __init__(self, core, session_dir: str, head_address: str, secret: bytes,
                 spill_dir: str, memory_threshold: float):
        self.core = core
        self.dir = session_dir
        self.head_address = head_address
        self.secret = secret
        self.spill_dir = spill_dir
        self.memory_threshold = memory_threshold
        self.procs: dict[str, subprocess.Popen] = {}     # node id -> its node manager

    def start(self, specs: list[tuple[int, int, dict]], timeout: float = 30.0) -> list[str]:
        """Start one node per ``(num_cpus, capacity, resources)``, all at once; return their ids
        once the head sees every one of them alive."""
        started = []
        for num_cpus, capacity, resources in specs:
            node_id = os.urandom(4).hex()
            sock_dir = os.path.join(self.dir, f"n-{node_id}")
            os.mkdir(sock_dir, 0o700)
            cfg = {"session_dir": self.dir, "sock_dir": sock_dir, "node_id": node_id,
                   "node_address": f"ipc://{sock_dir}/nm", "num_cpus": num_cpus,
                   "resources": dict(resources), "capacity": capacity, "arena_fd": None,
                   "driver_pid": os.getpid(), "owns_session": False,
                   # spill files are anonymous (O_TMPFILE): nodes can share a directory
                   "spill_dir": self.spill_dir, "memory_threshold": self.memory_threshold,
                   "head_address": self.head_address, "started_by": "init",
                   "heartbeat_s": float(os.environ.get("REFBOOK_HEARTBEAT_S", 0.5)),
                   "heartbeat_timeout_s":
                       float(os.environ.get("REFBOOK_HEARTBEAT_TIMEOUT_S", 3.0))}
            log_path = os.path.join(self.dir, "logs", f"node-{node_id}.log")
            proc, ready_r = spawn_node(cfg, self.secret, log_path)
            self.procs[node_id] = proc
            started.append((node_id, proc, ready_r, log_path))
        error = None
        for _, proc, ready_r, log_path in started:   # they import in parallel
            try:
                wait_ready(proc, ready_r, log_path, timeout)
            except exc.RefbookError as e:
                error = error or e
        if error is not None:
            raise error
        ids = [s[0] for s in started]
        self.wait_alive(ids, timeout)
        return ids

    def wait_alive(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            view = self.core.query(self.head_address, "nodes")
            if set(ids) <= {n["node_id"] for n in view if n["alive"]}:
                return
            if time.monotonic() > deadline:
                raise exc.RefbookError(f"node(s) {', '.join(ids)} did not join the head "
                                       f"within {timeout:g} s; see {self.dir}/logs")
            time.sleep(0.01)

    def kill(self, node_id: str) -> bool:
        """SIGKILL the node ``node_id`` if it is one of ours (its workers exit with it)."""
        proc = self.procs.pop(node_id, None)
        if proc is None:
            return False
        proc.kill()
        proc.wait()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``) and wait for them."""
        procs, self.procs = list(self.procs.values()), {}
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
