"""Every socket authenticates before it parses; garbage never crashes a process."""

import os
import pickle
import random
import stat
import time

import psutil
import pytest
import zmq

import refbook
from refbook.exceptions import RefbookError
from refbook.runtime.processes import core as core_mod
from refbook.runtime.protocol import messages as P
from refbook.runtime.wire.frames import Signer, encode, tag_for
from tests.integration.helpers import session_pids, wait_for


@refbook.remote
def square(x):
    return x * x


def addresses(ctx) -> list[str]:
    """Every bound socket of the session, once both workers are up."""
    sock_dir = os.path.join(ctx.session_dir, f"n-{ctx.node_id}")
    assert wait_for(lambda: len(os.listdir(sock_dir)) >= 5)
    return [f"ipc://{sock_dir}/{name}" for name in os.listdir(sock_dir)]


class Evil:
    """Unpickling this would create a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def blast(addr: str, frames_list) -> None:
    ctx = zmq.Context.instance()
    # request sockets are ROUTERs; every other socket is a PULL inbox
    s = ctx.socket(zmq.DEALER if addr.endswith("-rpc") else zmq.PUSH)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(addr)
    for frames in frames_list:
        s.send_multipart(frames)
    s.close()


def test_sockets_are_private_ipc_and_nothing_listens_on_tcp(fresh_cluster):
    ctx = fresh_cluster
    mode = stat.S_IMODE(os.stat(ctx.session_dir).st_mode)
    assert mode == 0o700
    addrs = addresses(ctx)
    assert len(addrs) >= 5 and all(a.startswith("ipc://") for a in addrs)
    assert any(a.endswith("nm-rpc") for a in addrs)
    for pid in session_pids(ctx) + [os.getpid()]:
        for c in psutil.Process(pid).net_connections(kind="inet"):
            assert c.status != psutil.CONN_LISTEN, c


def test_garbage_on_every_socket_is_dropped_and_nothing_crashes(fresh_cluster, tmp_path):
    ctx = fresh_cluster
    pids = session_pids(ctx)
    rng = random.Random(1234)
    evil_file = tmp_path / "pwned"
    evil = pickle.dumps((P.STATE_QUERY, Evil(str(evil_file))))
    wrong_key = Signer(os.urandom(32), os.urandom(8))
    garbage = []
    for _ in range(50):
        n = rng.randint(1, 4)
        garbage.append([rng.randbytes(rng.randint(0, 300)) for _ in range(n)])
    garbage += [[b""], [b"x" * 32, b""], [b"\x00" * 32, b"\x00" * 24 + evil], [evil],
                [os.urandom(32), evil]]
    for addr in addresses(ctx):
        frames = garbage + [wrong_key.sign(tag_for(addr), evil),
                            wrong_key.sign(tag_for(addr), b"")]
        blast(addr, frames)
    time.sleep(0.5)
    assert all(psutil.pid_exists(p) for p in pids)
    assert not evil_file.exists()
    assert core_mod.current().transport.rejected >= len(garbage)
    assert refbook.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
    r = refbook.put(os.urandom(1 << 20))
    assert len(refbook.get(r)) == 1 << 20


def test_replayed_and_misaddressed_messages_are_dropped(fresh_cluster):
    core = core_mod.current()
    key = core.transport._signer._key      # a test may know the secret; an attacker not
    me = core.me
    before = core.transport.rejected
    replies = []

    # a valid request to the node manager from a fake sender: answered once
    fake = Signer(key, os.urandom(8))
    nm = core.node_address
    frames = fake.sign(tag_for(nm), encode((P.STATE_QUERY, me, 999_001, "nodes")))
    orig = core._on_reply

    def spy(msg):
        if msg[1] == 999_001:
            replies.append(msg)
        orig(msg)

    core._handlers[P.STATE_REPLY] = spy
    try:
        blast(nm, [frames])
        assert wait_for(lambda: len(replies) == 1)
        blast(nm, [frames, frames])            # the same frames again: a replay
        time.sleep(0.3)
        assert len(replies) == 1
        # a correctly signed message for another process, sent to the driver
        other = fake.sign(tag_for(nm), encode((P.STATE_QUERY, me, 999_002, "nodes")))
        blast(me, [other])
        time.sleep(0.3)
        assert core.transport.rejected >= before + 1
    finally:
        core._handlers[P.STATE_REPLY] = orig
    assert refbook.get(square.remote(3)) == 9


@pytest.mark.parametrize("n", [1, 5])
def test_truncated_frames(fresh_cluster, n):
    core = core_mod.current()
    fake = Signer(core.transport._signer._key, os.urandom(8))
    good = fake.sign(tag_for(core.me), encode((P.STATE_QUERY, core.me, 1, "objects")))
    bad = [[good[0][:n], good[1]], [good[0], good[1][:n]], [good[0]], good + [b"extra"]]
    blast(core.me, bad)
    time.sleep(0.3)
    assert refbook.get(square.remote(4)) == 16


def test_a_nodes_directory_must_be_private(tmp_path):
    from refbook.runtime.processes.launch import private_dir
    fresh = tmp_path / "fresh"
    private_dir(str(fresh))
    assert fresh.is_dir() and (fresh.stat().st_mode & 0o777) == 0o700
    private_dir(str(fresh))                           # ours already: fine
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(RefbookError, match="not a private directory"):
        private_dir(str(shared))
    link = tmp_path / "link"
    link.symlink_to(fresh)                            # a name planted in /tmp
    with pytest.raises(RefbookError, match="not a private directory"):
        private_dir(str(link))
