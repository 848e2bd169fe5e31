"""`refbook start / status / stop` and joining over TCP (loopback)."""

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.integration.helpers import wait_for


def cli(home, *args, env_extra=None, check=True):
    env = dict(os.environ, HOME=str(home), REFBOOK_QUIET="1")
    env.pop("REFBOOK_SECRET", None)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-m", "refbook.cli", *args], capture_output=True,
                       text=True, env=env, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"refbook {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p


def free_port_pair():
    import socket
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


@pytest.fixture
def tcp_cluster(tmp_path):
    port = free_port_pair()
    try:
        cli(tmp_path, "start", "--head", "--port", str(port), "--num-cpus", "0",
            "--object-store-memory", str(64 << 20))
        cli(tmp_path, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2",
            "--object-store-memory", str(64 << 20), "--resources", '{"tcpnode": 1}')
        yield tmp_path, port
    finally:
        cli(tmp_path, "stop", check=False)      # the nodes outlive `refbook start`


def node_pids(home):
    """The node processes `refbook start` started with this HOME."""
    import json
    try:
        with open(home / ".refbook" / "started.json") as f:
            pids = [r["pid"] for r in json.load(f)]
    except OSError:
        return []
    return [p for p in pids if psutil.pid_exists(p)]


def test_start_status_join_and_stop(tcp_cluster):
    home, port = tcp_cluster
    secret = home / ".refbook" / f"127.0.0.1_{port}.secret"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    out = cli(home, "status", "--address", f"127.0.0.1:{port}").stdout
    assert "2 live node(s)" in out
    assert "2/2 CPU, 1/1 tcpnode" in out and "cluster: 2/2 CPU, 1/1 tcpnode" in out, out
    # the driver sets HOME only after importing refbook: ~/.refbook is looked up on use
    driver = textwrap.dedent(f"""
        import os
        import refbook, numpy as np
        os.environ["HOME"] = {str(home)!r}
        refbook.init(address="127.0.0.1:{port}")
        @refbook.remote(resources={{"tcpnode": 1}})
        def where(a):
            from refbook.runtime.processes import core
            return core.current().me, int(a.sum())
        addr, total = refbook.get(where.remote(refbook.put(np.arange(1_000_000))))
        assert addr.startswith("tcp://127.0.0.1:"), addr
        assert total == 499999500000
        print("ok")
        refbook.shutdown()
    """)
    env = dict(os.environ, HOME=str(home.parent), REFBOOK_QUIET="1")
    env.pop("REFBOOK_SECRET", None)
    p = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.stdout.strip() == "ok", p.stderr
    before = node_pids(home)
    assert len(before) == 2
    cli(home, "stop")
    assert wait_for(lambda: not any(psutil.pid_exists(p) for p in before), timeout=15)


def test_a_driver_or_node_without_the_secret_is_refused(tcp_cluster, tmp_path_factory):
    home, port = tcp_cluster
    stranger = tmp_path_factory.mktemp("stranger")        # a HOME without the secret
    p = cli(stranger, "start", "--address", f"127.0.0.1:{port}", check=False)
    assert p.returncode != 0 and "secret" in p.stderr
    wrong = stranger / "wrong.secret"
    wrong.write_text(os.urandom(32).hex())
    p = cli(stranger, "start", "--address", f"127.0.0.1:{port}", "--secret-file",
            str(wrong), "--num-cpus", "1", check=False)
    assert p.returncode != 0 and "secret does not match" in p.stderr
    env = dict(os.environ, HOME=str(stranger), REFBOOK_SECRET=os.urandom(32).hex())
    p = subprocess.run([sys.executable, "-c",
                        f"import refbook; refbook.init(address='127.0.0.1:{port}')"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and "secret does not match" in p.stderr
    out = cli(home, "status", "--address", f"127.0.0.1:{port}").stdout
    assert "2 live node(s)" in out          # nothing the strangers sent was taken in
    time.sleep(0.1)
