"""Benchmarks of clusters over TCP (``refbook bench --only net``): moving a 1 GB object
between two nodes on loopback and between two network namespaces over veth links, each
against raw TCP measured in the same run; and a task's round trip to another node."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .common import MB, median_time

NET_TARGETS = {"transfer_vs_tcp": (">=", 70), "transfer_vs_tcp_veth": (">=", 70),
               "remote_vs_local_rtt": ("<=", 2)}


def tcp_sink(host: str, port: int, nbytes: int, ready=None) -> float:
    """Accept one connection on ``host:port``, read ``nbytes`` and return bytes/s from
    the first byte to the last (the iperf-style yardstick for transfers)."""
    import socket
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(1)
        if ready is not None:
            ready()
        conn, _ = srv.accept()
        with conn:
            buf = bytearray(4 << 20)
            n = conn.recv_into(buf)
            start = time.perf_counter()
            while n < nbytes:
                k = conn.recv_into(buf)
                if not k:
                    break
                n += k
            return n / (time.perf_counter() - start)


def tcp_source(host: str, port: int, nbytes: int) -> None:
    import socket
    for _ in range(100):
        try:
            c = socket.create_connection((host, port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    chunk = memoryview(os.urandom(4 << 20))
    with c:
        sent = 0
        while sent < nbytes:
            sent += c.send(chunk[: min(len(chunk), nbytes - sent)])


def raw_tcp_throughput(host: str, nbytes: int) -> float:
    """Bytes/s of a plain TCP stream between two threads on ``host``."""
    import threading

    from ..runtime.wire.transport import free_port
    port = free_port(host)
    ready = threading.Event()
    out = []
    t = threading.Thread(target=lambda: out.append(tcp_sink(host, port, nbytes, ready.set)))
    t.start()
    ready.wait()
    tcp_source(host, port, nbytes)
    t.join()
    return out[0]


def transfer_speeds(size: int, reps: int) -> list[float]:
    """In a driver joined to a cluster with nodes offering resources ``a`` and ``b``:
    bytes/s of moving a ``size``-byte object made on ``a`` to a task on ``b``."""
    import refbook

    @refbook.remote
    def make(n):
        return np.ones(n // 8)

    @refbook.remote
    def touch(a):
        return a.nbytes

    speeds = []
    for _ in range(reps):
        x = make.options(resources={"a": 1}).remote(size)
        refbook.wait([x])
        refbook.get(touch.options(resources={"b": 1}).remote(x))
        ev = [e for e in refbook.events("transfer")][-1]
        speeds.append(ev["bytes"] / ev["seconds"])
        del x
    return speeds


_VETH_DRIVER = """
import json, os, sys, time
import refbook
from .net import transfer_speeds
refbook.init(address=os.environ["HEAD"], log_to_stderr=False)
deadline = time.monotonic() + 20
while not {"a", "b"} <= set(refbook.cluster_resources()) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(transfer_speeds(int(sys.argv[1]), int(sys.argv[2]))))
refbook.shutdown()
"""


def run_veth_workloads(size: int, reps: int) -> dict:
    """The same transfer between two hosts that are network namespaces joined by veth
    links and a bridge, against raw TCP over the same links.  Needs CAP_NET_ADMIN."""
    import json
    import subprocess
    import sys
    import tempfile

    from ..testing.hosts import Hosts
    with tempfile.TemporaryDirectory(prefix="refbook-bench-veth-") as home:
        h = Hosts(["h", "a", "b"], home, fast_heartbeat=False)
        if not h.netns:
            print(f"veth: skipped, network namespaces unavailable ({h.reason})")
            return {}
        try:
            port = 7480
            h.refbook("h", "start", "--head", "--port", str(port), "--bind", h.ip["h"],
                      "--num-cpus", "1", "--object-store-memory", str(256 << 20))
            head = f"{h.ip['h']}:{port}"
            for name in ("a", "b"):
                h.refbook(name, "start", "--address", head, "--bind", h.ip[name],
                          "--num-cpus", "1", "--object-store-memory", str(2 * size),
                          "--resources", json.dumps({name: 1}))
            env = dict(h.env(), HEAD=head, REFBOOK_BIND=h.ip["h"])
            speeds, raws = [], []
            for _ in range(reps):        # each transfer next to its own raw TCP figure
                p = subprocess.run(h.argv("h", [sys.executable, "-c", _VETH_DRIVER,
                                                str(size), "1"]),
                                   capture_output=True, text=True, env=env, timeout=300)
                if p.returncode != 0:
                    raise RuntimeError(f"veth transfer driver failed:\n{p.stderr[-2000:]}")
                speeds += json.loads(p.stdout.strip().splitlines()[-1])
                sink = subprocess.Popen(h.argv("b", [
                    sys.executable, "-c", "import sys; from refbook.bench.net import "
                    "tcp_sink; print(tcp_sink(sys.argv[1], 7490, int(sys.argv[2])))",
                    h.ip["b"], str(size)]), stdout=subprocess.PIPE, text=True, env=h.env())
                h.run("a", [sys.executable, "-c", "import sys; from refbook.bench.net "
                            "import tcp_source; tcp_source(sys.argv[1], 7490, "
                            "int(sys.argv[2]))", h.ip["b"], str(size)])
                raws.append(float(sink.communicate(timeout=60)[0]))
        finally:
            h.refbook("h", "stop", check=False)
            h.close()
    return {"transfer_1GB_veth": (statistics.median(speeds) / 1e9, "GB/s"),
            "raw_tcp_veth": (statistics.median(raws) / 1e9, "GB/s"),
            "transfer_vs_tcp_veth": (100 * statistics.median(
                t / w for t, w in zip(speeds, raws, strict=True)), "%")}


def run_net_workloads(quick: bool = False) -> dict:
    """Two nodes over TCP: moving a 1 GB object between them against raw TCP, on
    loopback and (where the machine allows network namespaces) over veth links; and a
    task's round trip to a node other than the driver's."""
    import tempfile

    import refbook

    from ..runtime.processes.launch import start_node
    from ..runtime.wire.transport import free_port
    size = (256 if quick else 1024) * MB
    reps = 2 if quick else 5
    old_home = os.environ.get("HOME")
    r: dict = {}
    with tempfile.TemporaryDirectory(prefix="refbook-bench-home-") as home:
        os.environ["HOME"] = home
        secret = os.urandom(32)
        procs = []
        try:
            port = free_port("127.0.0.1")
            procs.append(start_node(host="127.0.0.1", port=port, secret=secret, head=None,
                                    num_cpus=1, capacity=2 * size, resources={"here": 1}))
            head = f"tcp://127.0.0.1:{port}"
            for res in ({"a": 1}, {"b": 1}):
                procs.append(start_node(host="127.0.0.1", port=free_port("127.0.0.1"),
                                        secret=secret, head=head, num_cpus=1,
                                        capacity=2 * size, resources=res))
            os.environ["REFBOOK_SECRET"] = secret.hex()
            deadline = time.monotonic() + 20
            refbook.init(address=f"127.0.0.1:{port}", log_to_stderr=False)
            while len([n for n in refbook.nodes() if n["alive"]]) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("nodes did not join")
                time.sleep(0.05)
            speeds, raws = [], []
            for _ in range(reps):        # each transfer next to its own raw TCP figure
                speeds += transfer_speeds(size, 1)
                raws.append(raw_tcp_throughput("127.0.0.1", size))
            r["transfer_1GB_loopback"] = (statistics.median(speeds) / 1e9, "GB/s")
            r["raw_tcp_loopback"] = (statistics.median(raws) / 1e9, "GB/s")
            r["transfer_vs_tcp"] = (100 * statistics.median(
                t / w for t, w in zip(speeds, raws, strict=True)), "%")

            @refbook.remote
            def noop():
                return 0

            local = noop.options(resources={"here": 1})
            remote = noop.options(resources={"a": 1})
            refbook.get([local.remote(), remote.remote()])
            n = 100 if quick else 500
            t_local = median_time(lambda: refbook.get(local.remote()), n, 20)
            t_remote = median_time(lambda: refbook.get(remote.remote()), n, 20)
            r["task_rtt_same_node"] = (t_local * 1e6, "us")
            r["task_rtt_other_node"] = (t_remote * 1e6, "us")
            r["remote_vs_local_rtt"] = (t_remote / t_local, "x")
        finally:
            refbook.shutdown()
            for rec in procs:
                try:
                    os.kill(rec["pid"], 15)
                except ProcessLookupError:
                    pass
            os.environ.pop("REFBOOK_SECRET", None)
            if old_home is not None:
                os.environ["HOME"] = old_home
    r.update(run_veth_workloads(size, reps))
    return r
