"""``refbook.testing.Cluster``: a head and node managers as separate processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import psutil

from ..exceptions import RefbookError
from ..runtime.processes.launch import spawn_node, wait_ready
from ..runtime.processes.probe import Probe


class Node:
    def __init__(self, node_id: str, address: str, proc: subprocess.Popen, log_path: str):
        self.node_id = node_id
        self.address = address
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __repr__(self) -> str:
        return f"Node({self.node_id}, pid={self.pid})"


class Cluster:
    """A head node (with ``head_num_cpus`` CPUs, 0 by default) and the nodes added to
    it.  Drivers join with ``refbook.init(address=cluster.address)``.  Every process
    started here dies with this object's process."""

    def __init__(self, head_num_cpus: int = 0, head_object_store_memory: int = 256 << 20,
                 heartbeat_s: float = 0.1, heartbeat_timeout_s: float = 0.6):
        self.dir = tempfile.mkdtemp(prefix="refbook-cluster-")
        os.mkdir(os.path.join(self.dir, "logs"), 0o700)
        self.secret = os.urandom(32)
        fd = os.open(os.path.join(self.dir, "secret"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, self.secret.hex().encode())
        os.close(fd)
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.nodes: list[Node] = []
        self._client: Probe | None = None
        self.head = self._start(head_num_cpus, head_object_store_memory, {}, None)
        self.address = self.head.address
        with open(os.path.join(self.dir, "head"), "w") as f:    # for `refbook memory`
            f.write(self.address)

    def _start(self, num_cpus: int, capacity: int, resources: dict,
               head: str | None) -> Node:
        node_id = os.urandom(4).hex()
        sock_dir = os.path.join(self.dir, f"n-{node_id}")
        os.mkdir(sock_dir, 0o700)
        address = f"ipc://{sock_dir}/nm"
        cfg = {"session_dir": self.dir, "sock_dir": sock_dir, "node_id": node_id,
               "node_address": address, "num_cpus": num_cpus, "resources": resources,
               "capacity": capacity, "arena_fd": None, "driver_pid": os.getpid(),
               # the head removes the cluster's directory if this process dies first
               "owns_session": head is None,
               "spill_dir": os.path.join(sock_dir, "spill"), "memory_threshold": 0.95,
               "head_address": head, "heartbeat_s": self.heartbeat_s,
               "heartbeat_timeout_s": self.heartbeat_timeout_s,
               "started_by": "testing.Cluster"}
        log_path = os.path.join(self.dir, "logs", f"node-{node_id}.log")
        proc, ready_r = spawn_node(cfg, self.secret, log_path)
        wait_ready(proc, ready_r, log_path)
        node = Node(node_id, address, proc, log_path)
        self.nodes.append(node)
        return node

    def add_node(self, num_cpus: int = 1, object_store_memory: int | None = None,
                 resources: dict | None = None) -> Node:
        """Start a node manager (with ``num_cpus`` workers) that joins the head."""
        return self._start(num_cpus, object_store_memory or (256 << 20),
                           dict(resources or {}), self.address)

    def _query(self, what, timeout: float = 5.0):
        if self._client is None:
            self._client = Probe(f"ipc://{self.dir}/c-{os.urandom(4).hex()}", self.secret)
        try:
            return self._client.ask(self.address, what, timeout)
        except TimeoutError:
            raise RefbookError(f"the head did not answer within {timeout} s") from None

    def live_nodes(self) -> list[dict]:
        return [n for n in self._query("nodes") if n["alive"]]

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the head sees every node added (and not removed) as alive (a
        node manager starting on a busy 2-core machine took over 10 s in CI)."""
        want = {n.node_id for n in self.nodes}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want <= {n["node_id"] for n in self.live_nodes()}:
                return
            time.sleep(0.02)
        raise RefbookError(f"nodes {sorted(want)} did not all join within {timeout} s")

    def remove_node(self, node: Node) -> None:
        """SIGKILL the node's manager: its workers, store and spill files go with it."""
        try:
            os.kill(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait()
        self.nodes.remove(node)

    def shutdown(self) -> None:
        """SIGKILL every node; return once their workers are gone too and the cluster's
        directory is removed (a worker still starting could otherwise add a socket or a
        log file to it while it is being removed)."""
        procs = []
        for node in self.nodes:
            try:
                procs += psutil.Process(node.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for node in list(self.nodes):
            try:
                os.kill(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.proc.wait()
        self.nodes.clear()
        _, alive = psutil.wait_procs(procs, timeout=3)   # they exit when their node does
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=3)
        if self._client is not None:
            self._client.close()
            self._client = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
