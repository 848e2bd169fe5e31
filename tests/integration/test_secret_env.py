"""The cluster secret never appears in a node's or worker's environment: it reaches a
node manager through a pipe, and /proc/<pid>/environ (readable by the same user, and
kept for the life of the process and of its forks) shows the environment it started
with."""

import os
import subprocess
import sys

import psutil

import refbook
from refbook.runtime.processes import core as core_mod
from tests.integration.helpers import session_pids, wait_for
from tests.integration.test_cli import cli, free_port_pair, node_pids


def environ_of(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read()


def assert_no_secret(pids, secret: bytes) -> None:
    assert pids
    for pid in pids:
        env = environ_of(pid)
        assert b"REFBOOK_SECRET" not in env, pid
        assert secret.hex().encode() not in env, pid


@refbook.remote
def my_pid():
    return os.getpid()


def test_an_embedded_clusters_processes_have_no_secret_in_their_environment(fresh_cluster):
    secret = core_mod.current().transport._signer._key
    assert refbook.get([my_pid.remote() for _ in range(4)])
    assert_no_secret(session_pids(fresh_cluster), secret)


def test_started_nodes_have_no_secret_in_their_environment(tmp_path):
    port = free_port_pair()
    home = tmp_path
    try:
        cli(home, "start", "--head", "--port", str(port), "--num-cpus", "1",
            "--object-store-memory", str(32 << 20))
        secret = bytes.fromhex((home / ".refbook" / f"127.0.0.1_{port}.secret").read_text())
        # a node that joins with REFBOOK_SECRET set in the environment of `refbook start`
        cli(home, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
            "--object-store-memory", str(32 << 20),
            env_extra={"REFBOOK_SECRET": secret.hex()})
        nodes = node_pids(home)
        assert len(nodes) == 2
        pids = []
        for pid in nodes:
            # every node has its zygote and a worker forked from it by now
            assert wait_for(lambda p=pid: len(psutil.Process(p).children(recursive=True)) >= 2)
            pids += [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        assert_no_secret(pids, secret)
        # a driver that joins with the secret in its environment starts no node of its
        # own here (one runs on this host), so nothing new can inherit it; check that it
        # works without the variable leaking into what already runs
        env = dict(os.environ, HOME=str(home), REFBOOK_QUIET="1", REFBOOK_SECRET=secret.hex())
        p = subprocess.run([sys.executable, "-c",
                            f"import refbook; refbook.init(address='127.0.0.1:{port}');"
                            f"print(len(refbook.nodes()))"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.stdout.strip() == "2", p.stderr
        assert_no_secret(pids, secret)
    finally:
        cli(home, "stop", check=False)
