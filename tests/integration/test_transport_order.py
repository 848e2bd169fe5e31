"""One process, two addresses: a head's node manager answers to ``tcp://host:port`` and
to ``tcp://host:port/n-<id>/nm`` on one inbox.  A sender that talks to it under both
names must use one connection, or its sequence numbers arrive out of order and the
receiver drops messages as replays (seen as a transfer that never finished, when a
notebook joined a `refbook start --head` on its own host)."""

import os
import time

import zmq

from refbook.runtime.wire.transport import Transport, free_port


def test_messages_to_one_process_under_two_addresses_all_arrive_in_order():
    secret = os.urandom(32)
    head = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    node = f"{head}/n-0123abcd/nm"
    rx = Transport(node, secret, os.urandom(8), aliases=(head,))
    tx = Transport(f"tcp://127.0.0.1:{free_port('127.0.0.1')}/n-0123abcd/d-1", secret,
                   os.urandom(8), bind=False)
    got: list = []

    def receive(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(got) + rx.rejected < n and time.monotonic() < deadline:
            if rx.inbox.poll(100):
                m = rx.recv(zmq.NOBLOCK)
                if m is not None:
                    got.append(m[1])

    try:
        # the node's address first, until its connection carries messages; then the
        # head's name (a new connection, if it were one, takes a handshake) with more
        # messages to the node's address right behind
        for i in range(100):
            assert tx.send(node, ("msg", i))
        receive(100)
        for i in range(100, 400):
            assert tx.send(head if i % 50 == 0 else node, ("msg", i))
        receive(400)
        assert rx.rejected == 0, f"{rx.rejected} of 400 messages dropped as reordered"
        assert got == list(range(400))
    finally:
        tx.close()
        rx.close()
