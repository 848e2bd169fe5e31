"""Nothing outlives its owner: processes, shared memory, files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import refbook
from refbook.exceptions import (
    ClusterShutdownError,
    OwnerDiedError,
    RefbookError,
    WorkerCrashedError,
)
from tests.integration.helpers import alive, all_gone, session_pids, wait_for, worker_pids

DRIVER = textwrap.dedent("""
    import os, sys, time, json
    import refbook
    ctx = refbook.init(num_cpus=2, object_store_memory=64 << 20)

    @refbook.remote
    def hang():
        time.sleep(600)

    refs = [hang.remote() for _ in range(2)]
    big = refbook.put(b"x" * (8 << 20))
    time.sleep(0.5)
    node = refbook.nodes()[0]
    import psutil
    kids = [c.pid for c in psutil.Process(node["pid"]).children(recursive=True)]
    print(json.dumps({"dir": ctx.session_dir, "pids": [node["pid"]] + kids}), flush=True)
    mode = sys.argv[1]
    if mode == "exit":
        sys.exit(0)
    if mode == "raise":
        raise RuntimeError("driver failed")
    time.sleep(600)
""")


def start_driver(mode):
    p = subprocess.Popen([sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    import json
    try:
        info = json.loads(line)
    except ValueError:
        p.kill()
        raise AssertionError(f"driver did not start: {line!r} {p.stderr.read()}") from None
    return p, info


def shm_entries():
    return set(os.listdir("/dev/shm"))


@pytest.mark.parametrize("mode", ["sigkill", "sigterm", "exit", "raise"])
def test_driver_exit_leaves_no_process_or_file(mode):
    shm_before = shm_entries()
    p, info = start_driver(mode)
    try:
        assert len(info["pids"]) >= 4        # node manager, zygote, two workers
        if mode == "sigkill":
            p.send_signal(signal.SIGKILL)
        elif mode == "sigterm":
            p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        assert all_gone(info["pids"], timeout=10), [pid for pid in info["pids"] if alive(pid)]
        assert wait_for(lambda: not os.path.exists(info["dir"]), timeout=10)
        assert not (shm_entries() - shm_before)
    finally:
        if p.poll() is None:
            p.kill()
        for pid in info["pids"]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_shutdown_is_complete_idempotent_and_init_works_again():
    refbook.shutdown()
    shm_before = shm_entries()
    ctx = refbook.init(num_cpus=2, object_store_memory=64 << 20)
    pids = session_pids(ctx)
    r = refbook.put(b"y" * (1 << 20))
    assert refbook.get(r) == b"y" * (1 << 20)
    refbook.shutdown()
    refbook.shutdown()
    assert not refbook.is_initialized()
    assert all_gone(pids)
    assert not os.path.exists(ctx.session_dir)
    assert not (shm_entries() - shm_before)
    ctx2 = refbook.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        assert ctx2.session_dir != ctx.session_dir

        @refbook.remote
        def one():
            return 1

        assert refbook.get(one.remote()) == 1
    finally:
        refbook.shutdown()


def test_a_ref_from_before_shutdown_raises_at_once_and_starts_nothing():
    refbook.shutdown()

    @refbook.remote
    def ident(x):
        return x

    refbook.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        made, stored = ident.remote(1), refbook.put(b"z" * (1 << 20))
        assert refbook.get(made) == 1
    finally:
        refbook.shutdown()
    t = time.monotonic()
    with pytest.raises(ClusterShutdownError, match="shut down"):
        refbook.get(made)                          # no silent new cluster, no hang
    assert not refbook.is_initialized()
    refbook.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        with pytest.raises(OwnerDiedError, match="shut down"):
            refbook.get([stored, made])
        for call in (lambda: refbook.wait([made]), lambda: ident.remote(made),
                     lambda: ident.remote([stored]), lambda: refbook.put({"r": made}),
                     lambda: refbook.cancel(made)):
            with pytest.raises(ClusterShutdownError):
                call()
        assert refbook.get(ident.remote(2)) == 2   # the new cluster is unharmed
    finally:
        refbook.shutdown()
    assert time.monotonic() - t < 5


def test_killed_idle_worker_is_replaced(fresh_cluster):
    assert wait_for(lambda: len(worker_pids()) == 2)      # the pool is still starting
    before = worker_pids()
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(worker_pids()) == 2 and before[0] not in worker_pids())

    @refbook.remote
    def pid():
        return os.getpid()

    assert refbook.get(pid.remote()) in worker_pids()


def test_node_manager_death_fails_pending_work_instead_of_hanging(fresh_cluster):
    pids = session_pids(fresh_cluster)

    @refbook.remote
    def slow():
        time.sleep(60)

    r = slow.remote()
    time.sleep(0.3)
    os.kill(pids[0], signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(WorkerCrashedError, match="node manager died"):
        refbook.get(r, timeout=20)
    assert time.monotonic() - t < 10
    with pytest.raises(RefbookError, match="node manager died"):
        slow.remote()
    assert all_gone(pids)


def test_init_rejects_bad_arguments():
    refbook.shutdown()
    with pytest.raises(ValueError, match="num_cpus"):
        refbook.init(num_cpus=-1)        # (0 is a driver-only node, as in Ray)
    with pytest.raises(ValueError, match="object_store_memory"):
        refbook.init(object_store_memory=10)
    with pytest.raises(TypeError, match="bogus"):
        refbook.init(bogus=1)
    assert not refbook.is_initialized()
