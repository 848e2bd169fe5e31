"""Asking a node what it knows from a process that is not part of the cluster (yet):
``refbook status``, a driver about to join, ``testing.Cluster``.  A probe can also read
the state API's snapshots and events (``api/snapshots.py``, ``api/events.py``) as a
driver does: it answers to the same ``query``/``query_many``, but no node lists it."""

from __future__ import annotations

import os
import time

from ...exceptions import RefbookError
from ..protocol import messages as P
from ..wire.transport import Transport


class Probe:
    """A one-off authenticated client at ``address`` (where answers come back);
    ``head``: the node to ask for the list of nodes (for the state API)."""

    kind = None              # not a process of the cluster: it owns nothing, records nothing
    alive = True

    def __init__(self, address: str, secret: bytes, head: str | None = None):
        self.transport = Transport(address, secret, os.urandom(8))
        self.me = address
        self.node_address = head
        self._req = 0

    def known_dead(self) -> frozenset:
        return frozenset()

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

    def query(self, target: str, what, timeout: float = 5.0):
        """As :meth:`ask`, but a silence raises ``RefbookError`` (as a driver's does)."""
        try:
            return self.ask(target, what, timeout)
        except TimeoutError as e:
            raise RefbookError(str(e)) from None

    def query_many(self, asks, timeout: float = 5.0, poll: bool = True) -> list:
        """Ask several at once: ``asks`` is ``[(target, what)]``; their answers in
        order, None for one that did not answer within ``timeout``."""
        slots = {}
        for i, (target, what) in enumerate(asks):
            self._req += 1
            slots[self._req] = i
            self.transport.send(target, (P.STATE_QUERY, self.transport.address, self._req,
                                         what))
        out: list = [None] * len(asks)
        deadline = time.monotonic() + timeout
        while slots:
            left = deadline - time.monotonic()
            if left <= 0 or not self.transport.inbox.poll(int(left * 1000) + 1):
                break
            msg = self.transport.recv()
            if msg is not None and msg[0] == P.STATE_REPLY:
                reply = P.StateReply._make(msg)
                i = slots.pop(reply.req_id, None)
                if i is not None:
                    out[i] = reply.data
        return out

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
