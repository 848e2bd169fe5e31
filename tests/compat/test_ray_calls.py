"""``import refbook as ray``: calls behave as Ray's (issue 19).

Arguments are checked at the call, in the caller; an actor's class attributes are
reachable through its class's name; ``get`` of a list fails fast; ``init(num_cpus=0)``
is a driver-only node; a ``get`` of objects already available keeps its CPU.
"""

import os
import time

import numpy as np
import pytest

import refbook as ray
from refbook import state

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def add(a, b=1):
    return a + b


@ray.remote
class Counter:
    LIMIT = 5

    def __init__(self, start=0):
        self.n = start

    def incr(self, by, *, twice=False):
        self.n += by * (2 if twice else 1)
        return self.n

    def limit(self):
        return Counter.LIMIT                 # the class's name, inside its own method

    def helped(self, x):
        return Counter.helper(x) + Counter.from_class()

    @staticmethod
    def helper(x):
        return x * 10

    @classmethod
    def from_class(cls):
        return cls.LIMIT


def submitted(since: int) -> list[str]:
    return [e["name"] for e in state.events(since=since, kinds=["task_submitted"])]


def last_seq() -> int:
    ev = state.events()
    return ev[-1]["seq"] if ev else 0


BAD_CALLS = [((1, 2, 3), {}), ((), {}), ((1,), {"c": 2})]


def test_arguments_are_checked_at_the_call_in_the_driver():
    c = Counter.remote(0)
    assert ray.get(c.incr.remote(1)) == 1
    seq = last_seq()
    for args, kwargs in BAD_CALLS:
        with pytest.raises(TypeError, match=r"add\.remote\(\)"):
            add.remote(*args, **kwargs)
    for args, kwargs in [((1, 2), {}), ((), {}), ((1,), {"twice": True, "x": 1})]:
        with pytest.raises(TypeError, match=r"Counter\.incr\.remote\(\)"):
            c.incr.remote(*args, **kwargs)
    with pytest.raises(TypeError, match=r"Counter\.helper\.remote\(\)"):
        c.helper.remote(1, 2)                # a static method: no self to skip
    with pytest.raises(TypeError):
        Counter.remote(1, 2)
    assert submitted(seq) == [], "a call with bad arguments must never be submitted"
    assert ray.get(c.incr.remote(2, twice=True)) == 5
    assert ray.get(add.options(num_cpus=1).remote(1, b=2)) == 3


@ray.remote
def call_badly(fn, handle):
    """A task that received a remote function and an actor handle: both still check."""
    out = []
    for call in (lambda: fn.remote(1, 2, 3), lambda: handle.incr.remote(),
                 lambda: handle.incr.remote(1, 2)):
        try:
            call()
            out.append("submitted")
        except TypeError as e:
            out.append(str(e))
    return out


@ray.remote
class Caller:
    def call_badly(self, fn, handle):
        return ray.get(call_badly.remote(fn, handle))


def test_arguments_are_checked_inside_tasks_and_actors():
    c = Counter.remote(0)
    seq = last_seq()
    for got in (ray.get(call_badly.remote(add, c)),
                ray.get(Caller.remote().call_badly.remote(add, c))):
        assert got[0].startswith("add.remote(): too many positional arguments"), got
        assert got[1].startswith("Counter.incr.remote(): missing a required argument"), got
        assert got[2].startswith("Counter.incr.remote(): too many positional"), got
    names = submitted(seq)
    assert "add" not in names and "Counter.incr" not in names, names


def test_class_and_static_attributes_through_the_class_name():
    c = Counter.remote()
    assert ray.get(c.limit.remote()) == 5
    assert ray.get(c.helped.remote(2)) == 25
    assert Counter.LIMIT == 5 and Counter.helper(3) == 30     # and in the driver
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        Counter.nope  # noqa: B018


@ray.remote
class Sleeper:
    def sleep(self, s):
        time.sleep(s)
        return s


@ray.remote
def fail():
    raise ValueError("boom")


@pytest.mark.parametrize("n_slow", [1, 9])      # 9: the path that shows progress
def test_get_of_a_list_raises_the_first_error_at_once(n_slow):
    sleeper = Sleeper.remote()          # its calls queue up in one process, no CPU
    refs = [sleeper.sleep.remote(30) for _ in range(n_slow)]
    bad = fail.remote()
    t0 = time.monotonic()
    try:
        with pytest.raises(ValueError, match="boom"):
            ray.get([*refs, bad])
        took = time.monotonic() - t0
    finally:
        ray.kill(sleeper)
    assert took < 5, f"get waited {took:.1f} s for refs still running after one failed"


@ray.remote
def read_all(refs):
    total = sum(float(np.sum(v)) for v in ray.get(refs))
    time.sleep(0.2)                  # long enough for an extra worker to be used
    return total, os.getpid()


def test_get_of_available_objects_keeps_the_cpu():
    objs = [ray.put(np.ones(50_000)) for _ in range(10)]
    ray.get(read_all.remote(objs))   # warm: the workers exist
    seq = last_seq()
    out = ray.get([read_all.remote(objs) for _ in range(10)])
    assert {t for t, _ in out} == {500_000.0}
    pids = {p for _, p in out}
    started = [e for e in state.events(since=seq, kinds=["worker_started"])]
    assert len(pids) <= 2 and not started, (
        f"10 tasks on 2 CPUs ran in {len(pids)} processes and started {len(started)} "
        f"worker(s): a get of objects already available gave its CPU away")
