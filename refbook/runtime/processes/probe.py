"""Asking a node what it knows from a process that is not part of the cluster (yet):
``refbook status``, a driver about to join, ``testing.Cluster``."""

from __future__ import annotations

import os
import time

from ..protocol import messages as P
from ..wire.transport import Transport


class Probe:
    """A one-off authenticated client at ``address`` (where answers come back)."""

    def __init__(self, address: str, secret: bytes):
        self.transport = Transport(address, secret, os.urandom(8))
        self._req = 0

    def ask(self, target: str, what, timeout: float = 5.0):
        """``target``'s answer to a STATE_QUERY for ``what``.  Raises ``TimeoutError``
        if nothing (authentic) comes back within ``timeout`` seconds."""
        self._req += 1
        self.transport.send(target, (P.STATE_QUERY, self.transport.address, self._req, what))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.transport.inbox.poll(int(left * 1000) + 1):
                raise TimeoutError(f"no answer from {target} within {timeout:g} s")
            msg = self.transport.recv()
            if msg is not None and msg[0] == P.STATE_REPLY:
                reply = P.StateReply._make(msg)
                if reply.req_id == self._req:
                    return reply.data

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
