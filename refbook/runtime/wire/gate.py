"""What a peer that does not know the cluster's secret can reach, and what it costs us.

Two layers keep such a peer from spending our memory, disk and time:

* **The handshake** (TCP sockets only; ipc sockets live in a private directory).  Every
  TCP connection must prove it knows a token derived from the secret in ZeroMQ's PLAIN
  handshake, checked by :class:`HandshakeCheck` (the ZAP handler of a process's
  context) before a single message frame is taken in.  This is what bounds an endless
  multipart message: libzmq buffers the parts of a message until its last one arrives,
  and no socket option limits the number of parts, so the only defence is to never
  accept message frames from such a peer.  Until the handshake is done a connection can
  hold at most one frame of ``MAXMSGSIZE`` bytes (see transport.py for the caps).
  The token is not the secret and signs nothing: a peer that learns it (by watching an
  unencrypted network) can get past the handshake, but every message is still checked
  against the secret (frames.py) before anything is unpickled.
* **Cheap drops**.  Whatever fails a check is counted, not logged one line a frame:
  :class:`DropLog` writes at most one line per peer every ``every`` seconds.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time

import zmq

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"refbook"
PLAIN_USER = b"refbook"
MAX_PEERS_LOGGED = 64          # distinct peers per report; the rest are summed up


def handshake_token(secret: bytes) -> bytes:
    """The password of the PLAIN handshake: derived from the secret, never the secret."""
    return hmac.digest(secret, b"refbook handshake token", "sha256")


class DropLog:
    """Counts what was dropped, per peer, and reports it at most every ``every`` s:
    "dropped 9,200,000 bad frames from 127.0.0.1 on <where> in the last 10 s"."""

    __slots__ = ("_log", "_where", "_what", "_every", "_counts", "_since", "_next",
                 "total")

    def __init__(self, logger: logging.Logger, where: str, every: float = 10.0,
                 what: str = "frame"):
        self._log = logger
        self._where = where
        self._what = what
        self._every = every
        self._counts: dict[str, list] = {}    # peer -> [count, an example reason]
        self._since = time.monotonic()
        self._next = 0.0                      # the first drop is reported at once
        self.total = 0

    def drop(self, peer: str, reason) -> None:
        """Count one dropped frame (or connection).  ``reason`` may be an exception or a
        string; it is formatted only when a report is written."""
        self.total += 1
        c = self._counts.get(peer)
        if c is None:
            if len(self._counts) >= MAX_PEERS_LOGGED:
                peer = "other peers"
                c = self._counts.get(peer)
            if c is None:
                c = self._counts[peer] = [0, reason]
        c[0] += 1
        now = time.monotonic()
        if now >= self._next:
            self.report(now)

    def tick(self, now: float) -> None:
        """Report what was counted since the last report, if it is due."""
        if self._counts and now >= self._next:
            self.report(now)

    def report(self, now: float) -> None:
        span = max(now - self._since, 0.001)
        for peer, (n, reason) in self._counts.items():
            self._log.warning("dropped %s bad %s%s from %s on %s in the last %.0f s (%s)",
                              f"{n:,}", self._what, "" if n == 1 else "s", peer,
                              self._where, span, reason)
        self._counts.clear()
        self._since = now
        self._next = now + self._every


class HandshakeCheck:
    """The ZAP handler of one ZeroMQ context: accepts a PLAIN handshake whose password
    is the cluster's token, refuses anything else.  A thread of its own, because libzmq
    waits for its answer while a connection is being set up.  ``close()`` stops it, and
    it closes its own sockets: a ZeroMQ socket must never be closed under the thread
    that polls it (that crashed a process at exit, losing what it had printed)."""

    def __init__(self, ctx: zmq.Context, secret: bytes, drops: DropLog):
        self._token = handshake_token(secret)
        self._drops = drops
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        wake = f"inproc://refbook-zap-stop-{id(self):x}"
        self._stop_r = ctx.socket(zmq.PAIR)
        self._stop_r.bind(wake)
        self._stop_w = ctx.socket(zmq.PAIR)
        self._stop_w.setsockopt(zmq.LINGER, 0)
        self._stop_w.connect(wake)
        self._thread = threading.Thread(target=self._serve, name="refbook-zap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread; it closes its sockets before it ends."""
        if self._thread.is_alive():
            try:
                self._stop_w.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._thread.join(timeout=2)
        self._stop_w.close(linger=0)

    def _serve(self) -> None:
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._stop_r, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll(1000))
                if self._stop_r in ready:
                    return
                if sock not in ready:
                    self._drops.tick(time.monotonic())     # report refusals when due
                    continue
                frames = sock.recv_multipart()
                ok = False
                peer = "?"
                if len(frames) >= 9:
                    # [routing id, b"", version, request id, domain, address, identity,
                    #  mechanism, username, password]
                    peer = frames[5].decode(errors="replace") or "?"
                    ok = (frames[7] == b"PLAIN" and len(frames) == 10
                          and hmac.compare_digest(frames[9], self._token))
                if not ok:
                    self._drops.drop(peer, "handshake refused: it does not know the "
                                           "cluster's secret")
                rid = frames[3] if len(frames) > 3 else b""
                sock.send_multipart([frames[0], b"", b"1.0", rid,
                                     b"200" if ok else b"400",
                                     b"OK" if ok else b"refused", b"", b""])
        except zmq.ContextTerminated:
            pass
        except Exception:  # noqa: BLE001 - log it; the context goes on without us
            logging.getLogger("refbook.transport").exception("the handshake check failed")
        finally:
            sock.close(linger=0)
            self._stop_r.close(linger=0)


def serve_securely(sock: zmq.Socket) -> None:
    """A listening TCP socket: only peers that pass the handshake send it anything."""
    sock.setsockopt(zmq.PLAIN_SERVER, 1)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)   # a connection that never finishes goes


def connect_securely(sock: zmq.Socket, secret: bytes) -> None:
    """A socket about to connect to a TCP endpoint: show the token in the handshake."""
    sock.setsockopt(zmq.PLAIN_USERNAME, PLAIN_USER)
    sock.setsockopt(zmq.PLAIN_PASSWORD, handshake_token(secret))
