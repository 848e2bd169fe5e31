"""Issue 12 §5: ``shutdown()`` releases the driver's hold on the node's shared memory
(the arena's descriptor and mapping) at once, not when the cyclic garbage collector
happens to run; values read before it stay readable until they go."""

import gc
import os

import numpy as np
import pytest

import refbook

CYCLES = 50


def arena_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "refbook-arena" in line)


def memfd_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "memfd:" in os.readlink(f"/proc/self/fd/{fd}"):
                n += 1
        except OSError:
            pass
    return n


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc():
    """The cyclic collector off: what is released must be released by shutdown()."""
    refbook.shutdown()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        refbook.shutdown()
        gc.collect()


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_init_put_shutdown_cycles_keep_no_arena_and_no_descriptor(no_gc):
    """Before the fix, every cycle kept a 32 MiB mapping and a memfd descriptor (mmap's
    own copy) until gc.collect(): 50 of each after 50 cycles with the collector off."""
    counts = []
    for i in range(CYCLES):
        refbook.init(num_cpus=1, object_store_memory=32 << 20)
        r = refbook.put(np.ones(1 << 20))
        assert refbook.get(r).sum() == 1 << 20
        del r
        refbook.shutdown()
        assert arena_mappings() == 0 and memfd_fds() == 0, f"cycle {i + 1}"
        counts.append(fd_count())
    assert max(counts) == min(counts), counts


def test_a_value_read_before_shutdown_keeps_its_memory_until_it_goes(no_gc):
    refbook.init(num_cpus=1, object_store_memory=32 << 20)
    v = refbook.get(refbook.put(np.arange(1 << 20)))
    refbook.shutdown()
    assert arena_mappings() == 1                # the memory under ``v`` stays mapped
    assert memfd_fds() == 1                     # (mmap keeps a descriptor of its own)
    assert int(v.sum()) == (1 << 20) * ((1 << 20) - 1) // 2
    del v                                       # and goes with it, without a GC
    assert arena_mappings() == 0 and memfd_fds() == 0
