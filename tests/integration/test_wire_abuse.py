"""A head under attack by peers that do not know the secret (issue 12 §3).

On loopback, a `refbook start --head` gets an endless multipart message of 1 MB frames
on its inbox and on its request port, floods of 1-byte messages on both, the same from a
peer that tries the handshake with a wrong password, and a flood of raw connections.
Meanwhile: the head's RSS stays within +100 MB, its log grows by less than 10 MB a
minute, a legitimate task's p99 stays within 3x its idle value, and a new driver gets
served."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import refbook
from tests.integration.test_cli import cli, free_port_pair

ATTACK_S = 30.0
RSS_BOUND = 100 << 20
LOG_BOUND_PER_MIN = 10 << 20

# One process, one thread, at the lowest priority: a real attacker runs on another host,
# and what is measured here is the head's defence, not a CPU taken away from it on this
# 2-core machine.
ATTACKER = textwrap.dedent("""
    import os, socket, struct, sys, time
    import zmq
    os.nice(19)
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ctx = zmq.Context()

    def sock(kind, target, password=None):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100)
        if password is not None:
            s.plain_username = b"refbook"
            s.plain_password = password
        s.connect(f"tcp://{host}:{target}")
        return s

    # 1-byte messages, with no handshake credentials and with a wrong password
    floods = [sock(zmq.PUSH, port), sock(zmq.DEALER, port + 1),
              sock(zmq.PUSH, port, b"y" * 32), sock(zmq.DEALER, port + 1, b"z" * 32)]

    class Endless:
        # ZMTP 3.0 spoken by hand (libzmq itself never sends a message before its last
        # part): the NULL handshake, then 1 MB frames that all say "more follows"
        def __init__(self, target, socket_type):
            self.target, self.type, self.c, self.retry = target, socket_type, None, 0.0

        def step(self):
            if self.c is None:
                if time.monotonic() < self.retry:
                    return
                self.retry = time.monotonic() + 0.01      # at most 100 connections/s
                try:
                    self.c = socket.create_connection((host, self.target), timeout=0.2)
                except OSError:
                    return
                ready = (b"\\x05READY" + b"\\x0bSocket-Type"
                         + struct.pack(">I", len(self.type)) + self.type)
                self.out = (b"\\xff" + bytes(8) + b"\\x7f\\x03\\x00"
                            + b"NULL".ljust(20, b"\\0") + bytes(32)
                            + bytes([0x04, len(ready)]) + ready)
                self.c.setblocking(False)
            try:
                if not self.out:
                    self.out = b"\\x03" + struct.pack(">Q", 1 << 20) + MB
                n = self.c.send(self.out)
                self.out = self.out[n:]
            except BlockingIOError:
                pass
            except OSError:
                self.c.close()
                self.c = None

    MB = b"\\xab" * (1 << 20)
    endless = [Endless(port, b"PUSH"), Endless(port + 1, b"DEALER")]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for e in endless:
            for _ in range(8):
                e.step()
        for s in floods:
            for _ in range(200):
                try:
                    s.send(b"x", zmq.NOBLOCK)
                except zmq.Again:
                    break
        time.sleep(0.0005)
""")


@refbook.remote
def one():
    return 1


def latencies(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        refbook.get(one.remote())
        out.append(time.perf_counter() - t)
    return out


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def new_driver_served(home, port: int, secret: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import refbook
        refbook.init(address="127.0.0.1:{port}")
        @refbook.remote
        def f(x):
            return x + 1
        print(refbook.get(f.remote(41), timeout=20))
        refbook.shutdown()
    """)
    env = dict(os.environ, HOME=str(home), REFBOOK_QUIET="1", REFBOOK_SECRET=secret)
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def head(tmp_path, monkeypatch):
    port = free_port_pair()
    home = tmp_path
    try:
        rec = cli(home, "start", "--head", "--port", str(port), "--num-cpus", "2",
                  "--object-store-memory", str(64 << 20)).stdout
        pid = int(rec.split("(pid ")[1].split(")")[0])
        secret = (home / ".refbook" / f"127.0.0.1_{port}.secret").read_text().strip()
        log = f"/tmp/refbook-{os.getuid()}-127.0.0.1-{port}/logs/node.log"
        monkeypatch.setenv("REFBOOK_SECRET", secret)
        refbook.shutdown()
        refbook.init(address=f"127.0.0.1:{port}")
        yield home, port, pid, secret, log
    finally:
        refbook.shutdown()
        cli(home, "stop", check=False)


@pytest.mark.alone
def test_a_head_under_unauthenticated_attack_keeps_its_bounds(head):
    home, port, pid, secret, log = head
    proc = psutil.Process(pid)
    latencies(200)                                      # warm up
    rss0 = proc.memory_info().rss
    log0 = os.path.getsize(log)
    peak = rss0

    def watch():
        nonlocal peak
        peak = max(peak, proc.memory_info().rss)
        assert peak - rss0 < 2 * RSS_BOUND, "the head's memory keeps growing"

    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, "127.0.0.1", str(port),
                                 str(ATTACK_S)], stdout=subprocess.PIPE, text=True)
    driver = None
    busy = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:              # the attack gets going
            watch()
            latencies(10)
        driver = new_driver_served(home, port, secret)
        while driver.poll() is None:
            busy += latencies(10)
            watch()
            assert time.monotonic() - t0 < ATTACK_S - 3, "the new driver was not served"
        out, err = driver.communicate()
        # (the samples above are taken while the new driver starts: its start-up takes a
        # CPU too, so they show that tasks run, not how fast)
        busy = []
        # The machine is shared: pair idle and attacked samples taken moments apart,
        # by pausing the attacker, so that background load weighs on both alike.
        idle = []
        for _ in range(6):
            attacker.send_signal(signal.SIGSTOP)
            idle += latencies(150)
            attacker.send_signal(signal.SIGCONT)
            time.sleep(0.1)
            busy += latencies(150)
            watch()
        elapsed = time.monotonic() - t0
        grown = os.path.getsize(log) - log0
        with open(log, errors="replace") as f:
            f.seek(log0)
            reported = f.read()
    finally:
        for p in (attacker, driver):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    print(f"rss +{(peak - rss0) / 2**20:.1f} MB, log +{grown / 2**10:.1f} KiB in "
          f"{elapsed:.1f} s, p99 idle {p99(idle) * 1e3:.2f} ms, under attack "
          f"{p99(busy) * 1e3:.2f} ms over {len(busy)} tasks")
    assert proc.is_running()
    assert peak - rss0 < RSS_BOUND
    assert grown < LOG_BOUND_PER_MIN * max(elapsed, 1.0) / 60
    # the refused handshakes (wrong password) are reported, in aggregate, by address
    assert "bad connection" in reported and "from 127.0.0.1" in reported, reported
    assert p99(busy) <= 3 * max(p99(idle), 0.002)
    assert out.strip() == "42", err[-2000:]
    assert refbook.get(one.remote()) == 1


def test_a_connection_that_never_finishes_its_handshake_is_dropped(head):
    _, port, pid, _, log = head
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"PLAIN".ljust(20, b"\0")
                  + bytes(32))
        c.settimeout(10)
        c.recv(64)                                      # the head's greeting
        # a HELLO command announced at 200 MB: it may not exceed the frame cap
        c.sendall(b"\x06" + (200 << 20).to_bytes(8, "big") + b"\x05HELLO")
        with pytest.raises(OSError):
            for _ in range(64):
                c.sendall(b"a" * (1 << 20))
    assert psutil.Process(pid).memory_info().rss < 150 << 20      # a frame is 4 MiB at most
    assert refbook.get(one.remote()) == 1


@refbook.remote
class Sink:
    def __init__(self):
        time.sleep(1)                   # calls queue up meanwhile

    def take(self, blob):
        return len(blob)


def test_messages_larger_than_the_frame_cap_still_pass(head):
    # 300 calls queued before the actor is placed go in one message of ~27 MB, more
    # than an inbox takes in one frame (4 MiB): it travels in parts
    s = Sink.remote()
    blobs = [os.urandom(90_000) for _ in range(300)]
    refs = [s.take.remote(b) for b in blobs]
    assert refbook.get(refs, timeout=60) == [90_000] * 300


LOCAL_FLOOD = textwrap.dedent("""
    import os, sys, time
    import zmq
    os.nice(19)
    ctx = zmq.Context()
    socks = []
    for addr in sys.argv[2:]:
        s = ctx.socket(zmq.DEALER if addr.endswith("-rpc") else zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(addr)
        socks.append(s)
    n = 0
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        for s in socks:
            for _ in range(500):
                try:
                    s.send_multipart([b"x" * 32, b"y" * 40], zmq.NOBLOCK)
                    n += 1
                except zmq.Again:
                    break
        time.sleep(0.0005)
    print(n)
""")


def test_a_flood_of_bad_frames_from_a_local_process_is_dropped_cheaply(fresh_cluster):
    # Past the handshake (here: ipc, a process of this user), frames with a bad MAC
    # are counted and reported in aggregate, a bounded number per turn
    ctx = fresh_cluster
    log = os.path.join(ctx.session_dir, "logs", "node.log")
    nm = refbook.nodes()[0]
    proc = psutil.Process(nm["pid"])
    sock_dir = os.path.join(ctx.session_dir, f"n-{ctx.node_id}")
    targets = [f"ipc://{sock_dir}/nm", f"ipc://{sock_dir}/nm-rpc"]
    latencies(100)
    rss0, log0 = proc.memory_info().rss, os.path.getsize(log)
    flood = subprocess.Popen([sys.executable, "-c", LOCAL_FLOOD, "6", *targets],
                             stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        t = time.monotonic()
        assert len(latencies(200)) == 200
        assert refbook.get(refbook.put(b"z" * (1 << 20))) == b"z" * (1 << 20)  # ALLOC, PIN
        served = time.monotonic() - t
        sent = int(flood.communicate(timeout=30)[0])
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    grown = os.path.getsize(log) - log0
    print(f"{sent:,} bad frames; log +{grown} B; rss +"
          f"{(proc.memory_info().rss - rss0) / 2**20:.1f} MB; 200 tasks in {served:.2f} s")
    assert sent > 10_000
    assert grown < 10_000
    assert proc.memory_info().rss - rss0 < RSS_BOUND
    assert served < 10


def test_bad_frames_past_the_handshake_are_counted_per_peer(caplog):
    import logging

    import zmq

    from refbook.runtime.wire.gate import PLAIN_USER, handshake_token
    from refbook.runtime.wire.transport import Transport, endpoint, free_port
    secret = os.urandom(32)
    addr = f"tcp://127.0.0.1:{free_port('127.0.0.1')}/n-test/nm"
    t = Transport(addr, secret, os.urandom(8))
    ctx = zmq.Context()
    socks = []
    for password in (handshake_token(secret), b"wrong" * 6):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.plain_username, s.plain_password = PLAIN_USER, password
        s.connect(endpoint(addr))
        socks.append(s)
    try:
        with caplog.at_level(logging.WARNING, "refbook.transport"):
            good, wrong = socks
            for _ in range(1000):
                good.send_multipart([b"x" * 32, b"y" * 40])
                try:
                    wrong.send_multipart([b"x" * 32, b"y" * 40], zmq.NOBLOCK)
                except zmq.Again:                  # refused: nowhere to queue it
                    pass
            deadline = time.monotonic() + 10
            while t.rejected < 1000 and time.monotonic() < deadline:
                if t.inbox.poll(100):
                    t.recv(zmq.NOBLOCK)
            time.sleep(0.3)
            assert not t.inbox.poll(100)           # nothing from the wrong password
            t.drops.report(time.monotonic())
        lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert t.rejected == 1000
        assert any("from 127.0.0.1" in line and "bad frames" in line for line in lines)
        assert any("bad connection from 127.0.0.1" in line for line in lines)
        assert len(lines) <= 4, lines
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()
        t.close()
