"""Teaching controls (API.md section 3): init(num_nodes=N), state.kill_worker,
state.kill_node, state.add_node, and the command line that shows what they did
(`refbook memory`, `refbook events`)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

import refbook
from refbook import state
from refbook.exceptions import RefbookError
from tests.integration.helpers import wait_for
from tests.integration.test_cli import cli, tcp_cluster  # noqa: F401 - a fixture


@refbook.remote
def where(delay=0.0):
    from refbook.runtime.processes import core
    time.sleep(delay)
    return core.current().node_id


@refbook.remote
def block(i, delay):
    time.sleep(delay)
    return np.full(1 << 17, i, dtype=np.int64)        # 1 MiB: in a node's store


@refbook.remote(max_retries=3)
def slow_and_logged(path, delay):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return 42


def node_tree(pids) -> list[int]:
    """The node managers ``pids`` and every process under them."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out += [pid] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


def gone(pids) -> bool:
    def dead(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(dead(p) for p in pids)


@pytest.fixture
def three_nodes():
    refbook.shutdown()
    ctx = refbook.init(num_nodes=3, num_cpus=1, object_store_memory=64 << 20)
    try:
        yield ctx
    finally:
        refbook.shutdown()


def live(nodes=None):
    return [n for n in (nodes or refbook.nodes()) if n["alive"]]


def test_three_nodes_run_tasks_and_shutdown_leaves_nothing(three_nodes):
    ctx = three_nodes
    nodes = live()
    assert len(nodes) == 3
    assert {n["started_by"] for n in nodes} == {"init"}
    assert refbook.cluster_resources()["CPU"] == 3
    with pytest.warns(RuntimeWarning, match=r"init\(num_nodes=4\) changes nothing"):
        refbook.init(num_nodes=4)
    ran = set(refbook.get([where.remote(0.4) for _ in range(9)]))
    assert ran == {n["node_id"] for n in nodes}, ran
    pids = node_tree([n["pid"] for n in nodes])
    assert len(pids) >= 3 * 3          # node manager, zygote, worker on each
    refbook.shutdown()
    assert wait_for(lambda: gone(pids), timeout=10)
    assert not os.path.exists(ctx.session_dir)


def test_kill_node_holding_an_object_rebuilds_it(three_nodes):
    ctx = three_nodes
    refs = [block.remote(i, 0.3) for i in range(6)]
    ready, _ = refbook.wait(refs, num_returns=6, timeout=60)
    assert len(ready) == 6
    held = {o["object_id"]: o["nodes"] for o in refbook.objects()}
    victim, i = next((held[r.hex()][0], i) for i, r in enumerate(refs)
                     if held[r.hex()] and held[r.hex()][0] != ctx.node_id)
    with pytest.raises(ValueError, match="driver's own node"):
        state.kill_node(ctx.node_id)
    state.kill_node(victim)
    assert victim not in {n["node_id"] for n in live()}
    assert len(live()) == 2
    values = refbook.get(refs, timeout=60)      # those lost with the node are rebuilt
    assert [int(v[0]) for v in values] == list(range(6))
    assert int(values[i].sum()) == i << 17
    with pytest.raises(ValueError, match="dead already"):
        state.kill_node(victim)


def test_kill_worker_during_a_task_retries_it(three_nodes, tmp_path):
    with pytest.raises(RuntimeError, match="no busy worker"):
        state.kill_worker()
    log = tmp_path / "attempts"
    ref = slow_and_logged.remote(str(log), 1.5)
    assert wait_for(lambda: log.exists() and log.read_text().count("\n") == 1, timeout=30)
    killed = state.kill_worker()
    assert int(log.read_text().split()[0]) == killed["pid"]
    assert refbook.get(ref, timeout=60) == 42
    attempts = log.read_text().split()
    assert len(attempts) == 2 and attempts[0] != attempts[1]


def test_add_node_runs_tasks_and_refbook_events_follows(three_nodes):
    ctx = three_nodes
    addr = open(os.path.join(ctx.session_dir, "head")).read()
    follow = subprocess.Popen(
        [sys.executable, "-m", "refbook.cli", "events", "--follow", "--interval", "0.1",
         "--address", addr], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        new = state.add_node(num_cpus=1, resources={"added": 1})
        view = {n["node_id"]: n for n in live()}
        assert len(view) == 4 and view[new]["started_by"] == "init"
        assert refbook.get(where.options(resources={"added": 1}).remote()) == new
        first = follow.stdout.readline()
        assert first.startswith("cluster at") and "following" in first, first
        state.kill_node(new)
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and "node_died" not in line:
            line = follow.stdout.readline()
        assert "node_died" in line and f"={new}" in line, line
    finally:
        follow.send_signal(signal.SIGINT)
        try:
            assert follow.wait(timeout=10) == 0, follow.stderr.read()
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
            follow.stdout.close()
            follow.stderr.close()


def test_refbook_memory_and_events_print_what_the_api_says(three_nodes):
    ctx = three_nodes
    addr = open(os.path.join(ctx.session_dir, "head")).read()
    a = refbook.put(np.zeros(1 << 18))                  # 2 MiB
    b = block.remote(7, 0.0)
    refbook.wait([b], timeout=30)
    env = dict(os.environ, REFBOOK_QUIET="1")
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "refbook.cli", *args], capture_output=True, text=True,
        env=env, timeout=60)
    objs = {o["object_id"]: o for o in refbook.objects()}
    for group in ("call_site", "node", "owner"):
        p = run("memory", "--group-by", group, "--address", addr)
        assert p.returncode == 0, p.stderr
        for ref in (a, b):
            line = next(x for x in p.stdout.splitlines() if ref.hex() in x)
            assert "2 MiB" in line if ref is a else "1 MiB" in line, line
            assert objs[ref.hex()]["state"] in line
        assert f"{len(objs)} object(s)" in p.stdout
    p = run("memory", "--address", addr)                # by node, as `ray memory`
    assert f"--- node {ctx.node_id}:" in p.stdout
    p = run("memory", "--group-by", "call_site", "--address", addr)
    assert "--- call_site " in p.stdout or "grouped by owner instead" in p.stdout
    p = run("status", "--address", addr)
    assert p.returncode == 0 and "3 live node(s)" in p.stdout, p.stdout + p.stderr
    victim = next(n["node_id"] for n in live() if n["node_id"] != ctx.node_id)
    state.kill_node(victim)
    died = lambda evs: [e for e in evs  # noqa: E731
                        if e["kind"] == "node_died" and victim in e.values()]
    assert wait_for(lambda: died(refbook.events()), timeout=10)
    time.sleep(0.5)                     # the other node hears of it too
    api = refbook.events()
    p = run("events", "--address", addr)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith(f"{len(lines) - 1} event(s)"), lines[0]
    printed = [x.split()[3] for x in lines[1:]]     # seq, time, node, kind
    # every kind the live nodes recorded (what the driver keeps alone, with an owner,
    # may be missing: the command line reads the nodes and their processes)
    kinds = {e["kind"] for e in api if "owner" not in e and e.get("node_id") != victim}
    assert kinds <= set(printed), (printed, api)
    assert sum("node_died" in x and f"={victim}" in x for x in lines) == len(died(api))


def test_the_command_line_says_what_to_do_when_nothing_runs(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), TMPDIR=str(tmp_path))
    env.pop("REFBOOK_ADDRESS", None)
    for cmd in ("memory", "events", "status"):
        p = subprocess.run([sys.executable, "-m", "refbook.cli", cmd], capture_output=True,
                           text=True, env=env, timeout=60)
        assert p.returncode == 1 and "no refbook cluster is running" in p.stderr, p.stderr
        assert "refbook.init()" in p.stderr and "refbook start --head" in p.stderr


@pytest.fixture
def short_tmp():
    """A temporary directory with a short path (ipc socket paths are at most 107 bytes)."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="t-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_command_line_finds_a_notebooks_cluster_and_its_sigkill_leaves_nothing(
        short_tmp):
    tmp_path = short_tmp
    script = textwrap.dedent("""
        import sys, refbook
        ctx = refbook.init(num_nodes=3, num_cpus=1, object_store_memory=32 << 20)
        print(ctx.session_dir, *[n["pid"] for n in refbook.nodes()], flush=True)
        sys.stdin.read()
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, REFBOOK_QUIET="1", TMPDIR=str(tmp_path)))
    try:
        session, *pids = driver.stdout.readline().split()
        assert len(pids) == 3
        env = dict(os.environ, HOME=str(tmp_path), TMPDIR=str(tmp_path))
        env.pop("REFBOOK_ADDRESS", None)
        p = subprocess.run([sys.executable, "-m", "refbook.cli", "status"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and "3 live node(s)" in p.stdout, p.stdout + p.stderr
        assert "3/3 CPU" in p.stdout
        tree = node_tree(int(p) for p in pids)
        driver.kill()
        driver.wait()
        assert wait_for(lambda: gone(tree), timeout=15)
        assert wait_for(lambda: not os.path.exists(session), timeout=5)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        driver.stdin.close()
        driver.stdout.close()


def test_controls_refuse_nodes_started_by_refbook_start(tcp_cluster):  # noqa: F811
    home, port = tcp_cluster
    driver = textwrap.dedent(f"""
        import os
        import refbook
        from refbook import state
        from refbook.exceptions import RefbookError
        os.environ["HOME"] = {str(home)!r}
        refbook.init(address="127.0.0.1:{port}")
        other = next(n["node_id"] for n in refbook.nodes() if not n["is_head"])
        for call in (lambda: state.kill_node(other), state.kill_worker, state.add_node):
            try:
                call()
            except RefbookError as e:
                assert "`refbook start`" in str(e), e
                print("refused")
        refbook.shutdown()
    """)
    env = dict(os.environ, HOME=str(home.parent), REFBOOK_QUIET="1")
    p = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.stdout.split() == ["refused"] * 3, p.stdout + p.stderr
    out = cli(home, "status", "--address", f"127.0.0.1:{port}").stdout
    assert "2 live node(s)" in out


def test_controls_on_a_joined_test_cluster():
    from refbook.testing import Cluster
    refbook.shutdown()
    with Cluster(head_num_cpus=1) as c:
        n = c.add_node(num_cpus=1)
        c.wait_for_nodes()
        try:
            refbook.init(address=c.address)
            assert {x["started_by"] for x in refbook.nodes()} == {"testing.Cluster"}
            with pytest.raises(RefbookError, match="Cluster.add_node"):
                state.add_node()
            with pytest.raises(ValueError, match="own node"):
                state.kill_node(c.head.node_id)
            state.kill_node(n.node_id)
            assert [x["node_id"] for x in live()] == [c.head.node_id]
            assert refbook.get(where.remote()) == c.head.node_id
        finally:
            refbook.shutdown()
