"""ZeroMQ sockets between refbook processes: :class:`Transport`, and the address helpers
(``endpoint``, ``rpc_address``, ``free_port``).

Messages.  Every process binds one PULL *inbox* at its address and keeps one PUSH
socket per peer it sends to; a message is a one-way, signed send into the peer's inbox
(replies are sends the other way), optionally with a large buffer as a frame of its own.
One send lock covers these sockets, so each connection is FIFO and sequence numbers
increase strictly (see frames.py).  One thread at a time reads the inbox (in a driver
or worker: the I/O thread, or a thread waiting for a reply; see processes/iothread.py).

Synchronous requests.  A node manager also binds a ROUTER next to its inbox
(``serve_rpc``, ``rpc_address``); a thread that must wait for an answer (an allocation
or a pin in the store) asks there on a DEALER of its own and reads the reply itself
(``request``).

Defences.  Frames that fail verification are dropped and counted (gate.DropLog); on
TCP a peer must pass a handshake first (gate.py), and the caps below bound what it can
send.
"""

from __future__ import annotations

import logging
import threading

import zmq

from .frames import RejectedMessage, Signer, Verifier, encode, tag_for
from .gate import DropLog, HandshakeCheck, connect_securely, serve_securely

log = logging.getLogger("refbook.transport")

# Caps on what a listening socket takes in, enforced by libzmq before any check of ours.
# ``MAXMSGSIZE`` bounds one frame (and, on TCP, what a connection may hold before it has
# passed the handshake: see gate.py); ``RCVHWM`` bounds the messages queued here per
# peer (a full queue stops reading that peer's connection, whose sender keeps the rest:
# nothing is lost, and the peers are read in turn, so one cannot starve the others).
MAX_FRAME = (4 << 20) + 4096  # an inbox: object chunks (4 MiB, transfer.CHUNK) and
                             # envelope parts (1 MiB, frames.PART)
RPC_MAX_FRAME = 1 << 20      # a node manager's request port: ALLOC and PIN requests
INBOX_HWM = 1000             # messages queued per peer
MAX_DRAIN = 512              # messages read from one socket before others get a turn


class Transport:
    def __init__(self, address: str, secret: bytes, tag: bytes, bind: bool = True,
                 aliases: tuple = (), max_frame: int = MAX_FRAME):
        self.address = address
        self.ctx = zmq.Context()
        self._tcp = address.startswith("tcp://")
        self.drops = DropLog(log, address)
        self._suspect = False               # bad frames lately: see recv
        self._drops_seen = 0
        self._handshake = None
        if self._tcp and bind:
            self._handshake = HandshakeCheck(self.ctx, secret,
                                             DropLog(log, address, what="connection"))
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.RCVHWM, INBOX_HWM)
        self.inbox.setsockopt(zmq.MAXMSGSIZE, max_frame)
        if self._tcp:
            serve_securely(self.inbox)
        if bind:
            self.inbox.bind(endpoint(address))
        self._signer = Signer(secret, tag)
        self._verifier = Verifier(secret, tag_for(address), *(tag_for(a) for a in aliases))
        self._secret = secret
        self._peers: dict[str, tuple] = {}  # address -> (its endpoint's socket, its tag)
        # one PUSH socket per endpoint, not per address: a head's node manager answers to
        # two addresses (tcp://host:port, and tcp://host:port/n-<id>/nm) on one inbox, and
        # two connections to it would reorder this process's sequence numbers (frames.py),
        # so that it dropped one message in a few (seen: transfers that never finished)
        self._socks: dict[str, zmq.Socket] = {}
        self.send_lock = threading.Lock()
        self.rejected = 0
        self._local = threading.local()     # per-thread request sockets
        self._rpc_socks: list = []          # every one of them, to close at the end
        self.rpc = None

    def send(self, addr: str, msg: tuple, data=None) -> bool:
        """``data``: a large buffer sent as a frame of its own, without copying it
        into the message (it must stay unchanged until the peer has it)."""
        body = encode(msg)
        with self.send_lock:
            peer = self._peers.get(addr)
            if peer is None:
                peer = self._connect(addr)
            frames = self._signer.sign(peer[1], body, data)
            try:
                peer[0].send_multipart(frames, flags=zmq.NOBLOCK,
                                       copy=data is None and len(body) < 65536)
                return True
            except zmq.Again:
                log.warning("dropping message to %s: its queue is full", addr)
                return False

    def _connect(self, addr: str) -> tuple:
        ep = endpoint(addr)
        s = self._socks.get(ep)
        if s is None:
            s = self._socks[ep] = self._open(ep)
        peer = self._peers[addr] = (s, tag_for(addr))
        return peer

    def _open(self, ep: str):
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 10)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        try:
            if ep.startswith("tcp://"):
                connect_securely(s, self._secret)
            s.connect(ep)
        except zmq.ZMQError:
            s.close(linger=0)     # an open socket would block Context.term() for ever
            raise
        return s

    def disconnect(self, addr: str) -> None:
        with self.send_lock:
            peer = self._peers.pop(addr, None)
            if peer is not None and not any(p[0] is peer[0] for p in self._peers.values()):
                self._socks.pop(endpoint(addr), None)
                peer[0].close(linger=0)

    def recv(self, flags: int = 0):
        """Return one verified message tuple, or None if the frames were rejected."""
        sock = self.inbox
        first = None
        if self._suspect:
            # bad frames came lately: keep the first frame's properties, to tell who
            # sends them (a little slower, so only then)
            first = sock.recv(flags, copy=False)
            frames = [first.bytes]
        else:
            frames = [sock.recv(flags)]
        if sock.getsockopt(zmq.RCVMORE):
            frames.append(sock.recv())
            # a third frame is raw data (or the rest of an envelope in parts), up to
            # MAX_FRAME: read it in place, without a copy
            while sock.getsockopt(zmq.RCVMORE):
                frames.append(sock.recv(copy=False).buffer)
        try:
            return self._verifier.verify(frames)
        except RejectedMessage as e:
            # cheap: counted, and reported at most every few seconds (gate.DropLog)
            self.rejected += 1
            self._suspect = True
            self.drops.drop(self._peer_of(first), e)
            return None

    # -- synchronous requests ------------------------------------------------------
    # A thread that must wait for an answer (an allocation in the store) asks on a
    # DEALER socket of its own and reads the reply itself, instead of waiting for the
    # I/O thread to hand it over.  Each such socket signs with a tag of its own, so its
    # sequence numbers increase strictly on its one connection.

    def serve_rpc(self) -> None:
        """Bind a ROUTER at ``rpc_address(self.address)`` for synchronous requests."""
        self.rpc = self.ctx.socket(zmq.ROUTER)
        self.rpc.setsockopt(zmq.LINGER, 0)
        self.rpc.setsockopt(zmq.MAXMSGSIZE, RPC_MAX_FRAME)
        self.rpc.setsockopt(zmq.RCVHWM, INBOX_HWM)
        if self._tcp:
            serve_securely(self.rpc)
        self.rpc.bind(endpoint(rpc_address(self.address)))
        self._rpc_verifier = Verifier(self._secret, tag_for(rpc_address(self.address)))

    def recv_rpc(self):
        """One request from the ROUTER: ``(identity, message)``, or None if rejected."""
        frames = self.rpc.recv_multipart(zmq.NOBLOCK)
        if len(frames) != 3:
            self.rejected += 1
            self.drops.drop(self._peer, f"a request of {len(frames)} frames")
            return None
        try:
            return frames[0], self._rpc_verifier.verify(frames[1:])
        except RejectedMessage as e:
            self.rejected += 1
            self.drops.drop(self._peer, e)
            return None

    def reply_rpc(self, identity: bytes, reply_to: str, msg: tuple) -> None:
        body = encode(msg)
        with self.send_lock:
            frames = self._signer.sign(tag_for(reply_to), body)
            self.rpc.send_multipart([identity] + frames, flags=zmq.NOBLOCK)

    def request(self, addr: str, msg_for, timeout: float):
        """Send ``msg_for(reply_to)`` to ``addr``'s request socket and wait for the
        reply in this thread.  Returns the reply tuple; raises TimeoutError."""
        st = getattr(self._local, "rpc", None)
        if st is None:
            import os
            me = f"{self.address}#rpc-{os.urandom(4).hex()}"
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            with self.send_lock:
                self._rpc_socks.append(sock)
            st = self._local.rpc = {"me": me, "sock": sock, "peers": set(),
                                    "signer": Signer(self._secret, os.urandom(8)),
                                    "verifier": Verifier(self._secret, tag_for(me))}
        target = rpc_address(addr)
        if target not in st["peers"]:
            ep = endpoint(target)
            if ep.startswith("tcp://"):
                connect_securely(st["sock"], self._secret)
            st["sock"].connect(ep)
            st["peers"].add(target)
        st["sock"].send_multipart(st["signer"].sign(tag_for(target), encode(msg_for(st["me"]))))
        deadline_ms = int(timeout * 1000)
        while True:
            if not st["sock"].poll(deadline_ms):
                # a late reply would answer the next request: start a fresh socket
                self._local.rpc = None
                st["sock"].close(linger=0)
                raise TimeoutError(f"no reply from {addr} within {timeout} s")
            frames = st["sock"].recv_multipart()
            try:
                return st["verifier"].verify(frames)
            except RejectedMessage as e:
                self.rejected += 1
                self.drops.drop(self._peer, e)

    @property
    def _peer(self) -> str:
        # Past the TCP handshake only holders of the token remain; on ipc, processes of
        # this user.  Who sent a frame is known only from its properties (see recv).
        return "a peer past the handshake" if self._tcp else "a local process"

    def _peer_of(self, frame) -> str:
        if frame is not None and self._tcp:
            try:
                return frame.get("Peer-Address") or self._peer
            except zmq.ZMQError:
                pass
        return self._peer

    def tick(self, now: float) -> None:
        """Write the report of dropped frames if one is due; stop looking at frames'
        properties once a tick has passed without a bad one."""
        self.drops.tick(now)
        if self._suspect:
            self._suspect = self.drops.total != self._drops_seen
            self._drops_seen = self.drops.total

    def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close(linger=0)
        with self.send_lock:
            for sock in self._rpc_socks:
                sock.close(linger=0)
            self._rpc_socks.clear()
            for s in self._socks.values():
                s.close(linger=0)
            self._socks.clear()
            self._peers.clear()
            self.inbox.close(linger=0)
            if self._handshake is not None:
                self._handshake.close()    # its thread closes its own sockets
            # destroy, not term: it closes any socket still open (linger 0) first, so
            # no exit path can block on one that was missed
            self.ctx.destroy(linger=0)


def endpoint(addr: str) -> str:
    """The ZeroMQ endpoint of a process address.  An ipc address is its endpoint; a TCP
    address is ``tcp://host:port`` followed by the process's name in the cluster
    (``/n-<node>/<process>``), which identifies it but is not part of the endpoint."""
    if addr.startswith("tcp://"):
        rest = addr[6:]
        i = rest.find("/")
        return addr if i < 0 else "tcp://" + rest[:i]
    return addr


def rpc_address(addr: str) -> str:
    """Where a process that serves synchronous requests binds its ROUTER: next to its
    inbox (ipc), or on the next port (TCP)."""
    if addr.startswith("tcp://"):
        ep = endpoint(addr)
        host, port = ep[6:].rsplit(":", 1)
        return f"tcp://{host}:{int(port) + 1}{addr[len(ep):]}-rpc"
    return addr + "-rpc"


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now, with the next one free too (a process
    binds its inbox there and its RPC socket on the next: ``rpc_address``).  Checking
    only the first, the RPC bind failed now and then with "Address already in use" on
    a busy machine, where outgoing connections take ephemeral ports too."""
    import socket
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s2:
                s2.bind((host, port + 1))
        except OSError:
            continue
        return port
    raise OSError(f"no two free TCP ports in a row on {host}")


__all__ = ["Transport", "rpc_address", "endpoint", "free_port"]
