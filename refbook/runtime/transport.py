"""ZeroMQ messaging between refbook processes.

Every process binds one PULL *inbox* at its address and keeps one PUSH socket per peer
it sends to; a message is a one-way send into the peer's inbox (replies are sends the
other way).  One send lock covers every outgoing socket, so each connection is FIFO and
sequence numbers increase strictly (see protocol.py).  Only the I/O thread reads the
inbox.  Frames that fail authentication are logged and dropped.
"""

from __future__ import annotations

import logging
import threading

import zmq

from . import protocol
from .protocol import RejectedMessage, Signer, Verifier, encode, tag_for

log = logging.getLogger("refbook.transport")


class Transport:
    def __init__(self, address: str, secret: bytes, tag: bytes, bind: bool = True):
        self.address = address
        self.ctx = zmq.Context()
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.RCVHWM, 0)
        self.inbox.setsockopt(zmq.MAXMSGSIZE, 256 << 20)
        if bind:
            self.inbox.bind(address)
        self._signer = Signer(secret, tag)
        self._verifier = Verifier(secret, tag_for(address))
        self._peers: dict[str, tuple] = {}
        self.send_lock = threading.Lock()
        self.rejected = 0

    def send(self, addr: str, msg: tuple) -> bool:
        body = encode(msg)
        with self.send_lock:
            peer = self._peers.get(addr)
            if peer is None:
                peer = self._connect(addr)
            frames = self._signer.sign(peer[1], body)
            try:
                peer[0].send_multipart(frames, flags=zmq.NOBLOCK, copy=len(body) < 65536)
                return True
            except zmq.Again:
                log.warning("dropping message to %s: its queue is full", addr)
                return False

    def send_many(self, items) -> None:
        for addr, msg in items:
            self.send(addr, msg)

    def _connect(self, addr: str) -> tuple:
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 10)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        s.connect(addr)
        peer = self._peers[addr] = (s, tag_for(addr))
        return peer

    def disconnect(self, addr: str) -> None:
        with self.send_lock:
            peer = self._peers.pop(addr, None)
            if peer is not None:
                peer[0].close(linger=0)

    def recv(self, flags: int = 0):
        """Return one verified message tuple, or None if the frames were rejected."""
        frames = self.inbox.recv_multipart(flags, copy=True)
        try:
            return self._verifier.verify(frames)
        except RejectedMessage as e:
            self.rejected += 1
            log.warning("dropped a message on %s: %s", self.address, e)
            return None

    def close(self) -> None:
        with self.send_lock:
            for s, _ in self._peers.values():
                s.close(linger=0)
            self._peers.clear()
            self.inbox.close(linger=0)
            self.ctx.term()


__all__ = ["Transport", "protocol"]
