"""Waits that could never end (issue 12 §4): nested get() deeper than the worker cap,
an actor calling itself synchronously, a task getting its own result.  Each either
completes or fails at once with an error that says why, never hangs."""

import time

import pytest

import refbook
from refbook.exceptions import DeadlockError, RefbookError


@refbook.remote
def nested(n):
    if n == 0:
        return 0
    return 1 + refbook.get(nested.remote(n - 1))


@pytest.fixture
def two_cpus():
    refbook.shutdown()
    refbook.init(num_cpus=2, object_store_memory=64 << 20)
    yield
    refbook.shutdown()


@pytest.mark.parametrize("depth", [10, 30])
def test_nested_get_deeper_than_the_worker_cap_completes(two_cpus, depth):
    # the cap on running workers is max(4 * 2, 2 + 8) = 10: blocked ones do not count
    assert refbook.get(nested.remote(depth), timeout=60) == depth
    assert refbook.get(nested.remote(3), timeout=30) == 3      # the pool still serves


def test_nested_get_beyond_the_hard_limit_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("REFBOOK_MAX_WORKERS", "6")
    refbook.shutdown()
    refbook.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        t = time.monotonic()
        with pytest.raises(RefbookError, match="REFBOOK_MAX_WORKERS=6"):
            refbook.get(nested.remote(10), timeout=60)
        assert time.monotonic() - t < 30
        assert refbook.get(nested.remote(2), timeout=30) == 2    # and it recovers
    finally:
        refbook.shutdown()


@refbook.remote
class Selfish:
    def __init__(self):
        self.me = None

    def set_me(self, handle):
        self.me = handle

    def ping(self):
        return "pong"

    def call_myself(self):
        return refbook.get(self.me.ping.remote())


@refbook.remote(max_concurrency=2)
class Threaded:
    def __init__(self):
        self.me = None

    def set_me(self, handle):
        self.me = handle

    def ping(self):
        return "pong"

    def call_myself(self):
        return refbook.get(self.me.ping.remote())


def test_an_actor_calling_itself_synchronously_fails_at_once(two_cpus):
    a = Selfish.remote()
    refbook.get(a.set_me.remote(a))
    t = time.monotonic()
    with pytest.raises(DeadlockError, match=r"actor Selfish .*own call Selfish\.ping"):
        refbook.get(a.call_myself.remote(), timeout=30)
    assert time.monotonic() - t < 5
    assert refbook.get(a.ping.remote(), timeout=10) == "pong"   # the actor lives on
    # with a thread free for the inner call, calling itself is fine
    b = Threaded.remote()
    refbook.get(b.set_me.remote(b))
    assert refbook.get(b.call_myself.remote(), timeout=30) == "pong"


@refbook.remote
class Mailbox:
    def __init__(self):
        self.refs = None

    def put(self, refs):
        self.refs = refs

    def take(self):
        while self.refs is None:
            time.sleep(0.01)
        return self.refs


@refbook.remote(max_retries=0)
def wait_for_myself(box):
    [mine] = refbook.get(box.take.remote())
    return refbook.get(mine)


def test_a_task_getting_its_own_result_fails_at_once(two_cpus):
    box = Mailbox.options(max_concurrency=2).remote()
    r = wait_for_myself.remote(box)
    box.put.remote([r])              # the task learns its own ref, nested in a list
    t = time.monotonic()
    with pytest.raises(DeadlockError, match="wait_for_myself .*its own result"):
        refbook.get(r, timeout=30)
    assert time.monotonic() - t < 5
