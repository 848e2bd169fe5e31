"""Helpers for tests that run real refbook processes."""

import os
import time

import psutil

import refbook


def wait_for(pred, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def store_used() -> int:
    return refbook.nodes()[0]["store"]["used"]


def owned_objects() -> list:
    return refbook.objects()


def session_pids(ctx) -> list[int]:
    """Every process of a session: the node manager and its descendants (the zygote
    and the workers are forked from it)."""
    node_pid = refbook.nodes()[0]["pid"]
    p = psutil.Process(node_pid)
    return [node_pid] + [c.pid for c in p.children(recursive=True)]


def alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids, timeout=10.0) -> bool:
    return wait_for(lambda: not any(alive(p) for p in pids), timeout)


def worker_pids() -> list[int]:
    node_pid = refbook.nodes()[0]["pid"]
    out = []
    for c in psutil.Process(node_pid).children(recursive=True):
        try:
            # the zygote is the node manager's direct child; workers are its children
            if c.ppid() != node_pid and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def no_files(path) -> bool:
    return not os.path.exists(path)


MB = 1 << 20


def random_bytes(seed: int, mb: int):
    """``mb`` MiB of seeded random bytes: the same on every run and every host."""
    import numpy as np
    return np.random.default_rng(seed).integers(0, 255, mb * MB, dtype=np.uint8)


def sha(a) -> str:
    import hashlib

    import numpy as np
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


@refbook.remote
def make(seed, mb):
    """A task that makes ``random_bytes(seed, mb)`` where it runs."""
    return random_bytes(seed, mb)


@refbook.remote
def digest(a):
    """A task that returns ``sha(a)`` where it runs (the value is not moved back)."""
    return sha(a)
