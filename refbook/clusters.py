"""The clusters this user runs on this host, as something outside them sees them: the
command line (``refbook status``, ``memory``, ``events``) and the Jupyter server
extension (``GET /refbook/api/clusters``).  Neither is a driver: a :class:`Client`
asks the cluster's nodes through an authenticated probe."""

from __future__ import annotations

import os

from .exceptions import RefbookError


class Client:
    """A connection to a running cluster: a probe that asks its nodes and processes
    (STATE_QUERY).  ``address`` is HOST:PORT (``refbook start``) or the ``ipc://``
    address of an embedded cluster's head on this host."""

    def __init__(self, address: str, secret: bytes):
        from .runtime.processes.launch import local_ip_towards, parse_address
        from .runtime.processes.probe import Probe
        from .runtime.wire.transport import free_port
        self.address = address
        if address.startswith("ipc://"):
            root = os.path.dirname(os.path.dirname(address[len("ipc://"):]))
            self.head = address
            me = f"ipc://{root}/cli-{os.urandom(4).hex()}"
        else:
            host, port = parse_address(address.removeprefix("tcp://"))
            self.head = f"tcp://{host}:{port}"
            ip = local_ip_towards(host)
            me = f"tcp://{ip}:{free_port(ip)}/cli"
        self.probe = Probe(me, secret, head=self.head)

    def ask(self, target: str, what, timeout: float = 5.0):
        try:
            return self.probe.ask(target, what, timeout)
        except TimeoutError:
            if target == self.head:
                raise RefbookError(
                    f"no answer from the cluster at {self.address}: it is not running "
                    f"there, or it refused us because the secret does not match") from None
            raise RefbookError(f"no answer from {target}") from None

    def close(self) -> None:
        self.probe.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_hex(path: str) -> bytes:
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def candidates(secret_file: str | None = None) -> list[tuple[str, str, object]]:
    """``(address, kind, secret())`` of every cluster this user started on this host,
    the newest first: ``kind`` "embedded" (``refbook.init()`` in a notebook or a
    script) or "started" (``refbook start --head``)."""
    from .runtime.processes.launch import find_secret, local_clusters, started_here
    out: list = [(a, "embedded", lambda d=d: read_hex(os.path.join(d, "secret")))
                 for a, d in local_clusters()]
    out += [(f"{r['host']}:{r['port']}", "started",
             lambda r=r: find_secret(r["host"], r["port"], secret_file))
            for r in reversed(started_here()) if r["head"]]
    return out


def running_clusters(timeout: float = 1.0) -> list[dict]:
    """Every cluster of :func:`candidates` that answers, with its nodes: ``{"address",
    "kind", "nodes": [{"node_id", "address", "alive", "resources", "available",
    "store"}]}``.  One that does not answer is left out (it stopped)."""
    out = []
    for address, kind, secret in candidates():
        try:
            with Client(address, secret()) as client:
                nodes = client.ask(client.head, "nodes", timeout)
        except (OSError, RefbookError, ValueError):
            continue
        out.append({"address": address, "kind": kind,
                    "nodes": [{k: n.get(k) for k in ("node_id", "address", "alive",
                                                      "resources", "available", "store")}
                              for n in nodes or ()]})
    return out
