"""``import refbook as ray``: reference counts and actor lifetimes as Ray's (issue 19).

A task's arguments count as submitted only while it is pending or running; holds kept
for lineage are a count of their own (``lineage_refs``, Ray's ``lineage_ref_count``).
An actor goes, promptly, when its last handle goes, wherever that handle was.
"""

import os
import time

import numpy as np
import psutil
import pytest

import refbook as ray
from refbook import state

pytestmark = pytest.mark.usefixtures("cluster")


def row(ref) -> dict:
    rows = state.objects(ids=[ref])
    assert rows and rows[0]["object_id"] == ref.hex(), rows
    return rows[0]


def counts(ref) -> tuple:
    r = row(ref)
    return r["local_refs"], r["submitted_refs"], r["lineage_refs"]


def wait_counts(ref, want: tuple, timeout: float = 5.0) -> tuple:
    deadline = time.monotonic() + timeout
    got = counts(ref)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = counts(ref)
    return got


@ray.remote
def hold_for(x, s):
    time.sleep(s)
    return 1


@ray.remote
def fail_after(x, s):
    time.sleep(s)
    raise ValueError("no")


@ray.remote
def make():
    return np.ones(100_000)


def test_submitted_only_while_the_task_is_pending_or_running():
    dep = ray.put(np.ones(100_000))
    out = hold_for.remote(dep, 0.5)
    assert counts(dep) == (1, 1, 0), state.why_alive(dep)
    ray.get(out)
    # finished: no longer submitted; kept for lineage (out can be rebuilt from it)
    assert wait_counts(dep, (1, 0, 1)) == (1, 0, 1), state.why_alive(dep)
    assert [s[0]["kind"] for s in state.why_alive(dep)] == ["ref", "lineage"]
    del out
    assert wait_counts(dep, (1, 0, 0)) == (1, 0, 0), state.why_alive(dep)


def test_a_failed_task_and_one_without_lineage_hold_nothing():
    dep = ray.put(np.ones(100_000))
    bad = fail_after.remote(dep, 0.3)
    assert counts(dep) == (1, 1, 0)
    with pytest.raises(ValueError):
        ray.get(bad)
    assert wait_counts(dep, (1, 0, 0)) == (1, 0, 0), state.why_alive(dep)
    out = hold_for.options(max_retries=0).remote(dep, 0)
    ray.get(out)
    assert wait_counts(dep, (1, 0, 0)) == (1, 0, 0), state.why_alive(dep)


def test_lineage_of_a_task_made_argument_is_counted_apart():
    dep = make.remote()
    out = hold_for.remote(dep, 0)
    ray.get(out)
    assert wait_counts(dep, (1, 0, 1)) == (1, 0, 1), state.why_alive(dep)
    del out
    assert wait_counts(dep, (1, 0, 0)) == (1, 0, 0), state.why_alive(dep)


@ray.remote
class Keeper:
    def __init__(self, x=None):
        self.kept = x

    def pid(self):
        return os.getpid()

    def keep(self, h):
        self.kept = h
        return 1

    def drop(self):
        self.kept = None
        return 1

    def child(self, keep: bool):
        c = Keeper.remote()
        if keep:
            self.kept = c
        return c

    def get_named(self, name, n):
        pids = set()
        for _ in range(n):
            self.kept = ray.get_actor(name)      # the last one is kept
            pids.add(ray.get(self.kept.pid.remote()))
        return pids


def test_actor_constructor_arguments_are_submitted_until_it_ran():
    arg = ray.put(np.ones(100_000))
    k = Keeper.remote([arg])                 # nested: the instance keeps (borrows) it
    ray.get(k.pid.remote())
    assert wait_counts(arg, (1, 0, 0)) == (1, 0, 0), state.why_alive(arg)
    assert any(p[-1]["kind"] == "borrower" for p in state.why_alive(arg))
    r = Keeper.options(max_restarts=1).remote(arg)   # may restart: kept as lineage
    ray.get(r.pid.remote())
    assert wait_counts(arg, (1, 0, 1)) == (1, 0, 1), state.why_alive(arg)
    assert any(p[0]["kind"] == "lineage" for p in state.why_alive(arg))
    del r
    assert wait_counts(arg, (1, 0, 0)) == (1, 0, 0), state.why_alive(arg)
    del k


def actor_pid(handle) -> int:
    return ray.get(handle.pid.remote())


def gone_within(pid: int, seconds: float) -> float | None:
    """How long ``pid`` took to exit (None: not within ``seconds``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - t0
        except psutil.NoSuchProcess:
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


PROMPT = 0.5     # s: "in well under a second"


@ray.remote
def use_and_drop(h):
    return ray.get(h.pid.remote())


def test_an_actor_goes_when_its_last_handle_goes_anywhere():
    a = Keeper.remote()
    pid = actor_pid(a)
    del a
    assert gone_within(pid, 5) < PROMPT
    a = Keeper.remote()                          # passed to a task, dropped there
    pid = ray.get(use_and_drop.remote(a))
    del a
    assert gone_within(pid, 5) < PROMPT
    a = Keeper.remote()                          # kept by another actor, dropped there
    pid = actor_pid(a)
    k = Keeper.remote()
    ray.get(k.keep.remote(a))
    del a
    assert gone_within(pid, 0.3) is None, "the other actor's handle must keep it"
    ray.get(k.drop.remote())
    took = gone_within(pid, 5)
    assert took is not None and took < PROMPT, f"the actor took {took} s to go"


def test_a_nested_actor_lives_as_long_as_the_returned_handle():
    parent = Keeper.remote()
    child = ray.get(parent.child.remote(False))      # only the returned handle holds it
    pid = actor_pid(child)
    time.sleep(0.3)
    assert actor_pid(child) == pid
    del child
    took = gone_within(pid, 5)
    assert took is not None and took < PROMPT, f"the child took {took} s to go"
    child = ray.get(parent.child.remote(True))       # the parent keeps it too
    pid = actor_pid(child)
    del child
    assert gone_within(pid, 0.3) is None
    ray.get(parent.drop.remote())
    assert gone_within(pid, 5) < PROMPT


def test_get_actor_in_a_loop_neither_leaks_nor_fails():
    named = Keeper.options(name="compat-named").remote()
    pid = actor_pid(named)
    for _ in range(30):
        assert actor_pid(ray.get_actor("compat-named")) == pid
    other = Keeper.remote()
    assert ray.get(other.get_named.remote("compat-named", 30)) == {pid}
    time.sleep(0.1)
    paths = state.why_alive(named._id.hex())
    kinds = sorted(p[0]["kind"] for p in paths)
    assert kinds == ["ref", "ref"], paths       # the driver's handle, the other's kept one
    del named
    assert gone_within(pid, 0.3) is None, "the other actor's handle must keep it"
    ray.get(other.drop.remote())
    took = gone_within(pid, 5)
    assert took is not None and took < PROMPT, f"the actor took {took} s to go"
