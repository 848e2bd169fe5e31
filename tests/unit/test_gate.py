"""The drop log: a flood of bad frames costs a few lines, not one line a frame."""

import logging

from refbook.runtime.wire.gate import MAX_PEERS_LOGGED, DropLog, handshake_token


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def logger():
    log = logging.getLogger("test.gate")
    log.propagate = False
    h = Lines()
    log.handlers[:] = [h]
    return log, h


def test_a_flood_is_reported_at_once_then_in_aggregate():
    log, h = logger()
    d = DropLog(log, "tcp://127.0.0.1:1/head", every=3600)
    for _ in range(100_000):
        d.drop("127.0.0.1", "bad signature")
    assert len(h.lines) == 1 and "dropped 1 bad frame from 127.0.0.1" in h.lines[0]
    d.report(1e12)
    assert len(h.lines) == 2
    assert "dropped 99,999 bad frames from 127.0.0.1 on tcp://127.0.0.1:1/head" in h.lines[1]
    assert d.total == 100_000


def test_many_peers_are_summed_up_beyond_a_bound():
    log, h = logger()
    d = DropLog(log, "x", every=3600, what="connection")
    for i in range(10 * MAX_PEERS_LOGGED):
        d.drop(f"10.0.{i // 256}.{i % 256}", "refused")
    d.report(1e12)
    assert len(h.lines) <= MAX_PEERS_LOGGED + 2
    assert any("other peers" in line and "connections" in line for line in h.lines)


def test_the_handshake_token_is_not_the_secret():
    secret = bytes(range(32))
    assert handshake_token(secret) != secret and len(handshake_token(secret)) == 32


def test_closing_a_tcp_transport_stops_its_handshake_thread_before_its_sockets_go(caplog):
    """The handshake thread polls its socket; closing that socket under it ("Socket
    operation on non-socket", or a crash at exit that lost a process's output) is
    what closing a transport used to do."""
    import os

    from refbook.runtime.wire.transport import Transport, free_port
    secret = os.urandom(32)
    with caplog.at_level("ERROR", logger="refbook.transport"):
        for _ in range(40):
            t = Transport(f"tcp://127.0.0.1:{free_port('127.0.0.1')}/probe", secret,
                          os.urandom(8))
            thread = t._handshake._thread
            t.close()
            assert not thread.is_alive()
    assert not [r for r in caplog.records if "handshake check failed" in r.getMessage()]
