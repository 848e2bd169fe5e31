"""Memory is freed the moment nothing can reach an object, and never before."""

import gc
import time

import numpy as np
import pytest

import refbook
from tests.integration.helpers import store_used, wait_for

pytestmark = pytest.mark.usefixtures("cluster")
MB = 1 << 20


@pytest.fixture(autouse=True)
def quiet_store():
    """Start each test with an empty store: objects of the previous test are released
    asynchronously once its frame is gone."""
    gc.collect()
    assert wait_for(lambda: store_used() == 0)


def live_ids() -> set:
    return {o["object_id"] for o in refbook.objects()}


@refbook.remote
def hold(lst):
    """Keep the ref nested in ``lst`` in a global (``lst=None`` drops it): this worker
    becomes a borrower.  One function, so both calls see the same globals."""
    global HELD
    HELD = lst[0] if lst else None
    time.sleep(0.3)   # occupy the worker, so two calls land on two workers
    return 1


@refbook.remote
def read_sum(x):
    return float(np.asarray(x).sum())


def test_del_frees_store_memory():
    base = store_used()
    r = refbook.put(np.ones(4 * MB // 8))
    assert store_used() >= base + 4 * MB
    rid = r.hex()
    del r
    assert wait_for(lambda: store_used() == base)
    assert rid not in live_ids()


def test_rebinding_frees_the_old_value():
    base = store_used()
    x = refbook.put(np.zeros(MB))
    x = refbook.put(np.zeros(MB))   # noqa: F841 - the first value must go
    assert wait_for(lambda: store_used() <= base + 8 * MB + 4096)


def test_ref_nested_in_a_container_is_kept_alive_by_it():
    base = store_used()
    inner = refbook.put(np.arange(MB))
    inner_id = inner.hex()
    outer = refbook.put({"data": [inner]})
    del inner
    gc.collect()
    time.sleep(0.1)
    assert inner_id in live_ids()
    again = refbook.get(outer)["data"][0]
    assert refbook.get(read_sum.remote(again)) == float(np.arange(MB).sum())
    del again, outer
    assert wait_for(lambda: inner_id not in live_ids() and store_used() == base)


def test_ref_held_only_by_a_borrower_lives_until_the_borrower_drops_it():
    base = store_used()
    x = refbook.put(np.ones(MB))
    xid = x.hex()
    refbook.get([hold.remote([x]), hold.remote([x])])   # both workers borrow it
    del x
    time.sleep(0.2)
    objs = {o["object_id"]: o for o in refbook.objects()}
    assert xid in objs and objs[xid]["borrowers"], objs.get(xid)
    refbook.get([hold.remote(None), hold.remote(None)])
    assert wait_for(lambda: xid not in live_ids() and store_used() == base)


def test_ref_passed_to_a_pending_task_stays_alive():
    @refbook.remote
    def later(lst):
        time.sleep(0.3)
        return float(refbook.get(lst[0]).sum())

    x = refbook.put(np.ones(MB))
    r = later.remote([x])
    del x
    gc.collect()
    assert refbook.get(r) == MB


def test_ref_returned_inside_a_task_result():
    @refbook.remote
    def make():
        # owned by the worker that runs this task
        return [refbook.put(np.full(MB, 3.0))]

    @refbook.remote
    def passthrough(lst):
        return lst

    base = store_used()
    lst = refbook.get(make.remote())
    inner = lst[0]
    assert inner.owner_address != refbook.init().driver_address
    assert float(refbook.get(inner).sum()) == 3.0 * MB
    # a driver-owned ref that comes back inside a result
    mine = refbook.put(np.zeros(MB))
    back = refbook.get(passthrough.remote([mine]))[0]
    assert back == mine
    mid, iid = mine.hex(), inner.hex()
    del lst, inner, mine, back
    assert wait_for(lambda: not ({mid, iid} & live_ids()) and store_used() == base)


def test_ten_thousand_tasks_leave_nothing_behind():
    @refbook.remote
    def inc(x):
        return x + 1

    base_used = store_used()
    before = live_ids()
    refs = [inc.remote(i) for i in range(10_000)]
    assert sum(refbook.get(refs)) == sum(range(1, 10_001))
    del refs
    assert wait_for(lambda: live_ids() <= before, timeout=20)
    assert store_used() == base_used


def test_zero_copy_get_and_task_argument():
    from refbook.runtime.processes import core as core_mod

    @refbook.remote
    def inspect_arg(a):
        arena = core_mod.current().arena
        lo = arena.np.ctypes.data
        addr = a.__array_interface__["data"][0]
        return (lo <= addr < lo + arena.capacity, a.flags.writeable, a.flags.owndata)

    arr = np.random.rand(2 * MB)
    r = refbook.put(arr)
    a1, a2 = refbook.get(r), refbook.get(r)
    arena = core_mod.current().arena
    lo = arena.np.ctypes.data
    p1 = a1.__array_interface__["data"][0]
    assert lo <= p1 < lo + arena.capacity          # a view of shared memory
    assert p1 == a2.__array_interface__["data"][0]  # the same memory, no copy
    assert not a1.flags.writeable
    with pytest.raises(ValueError):
        a1[0] = 1
    assert (a1 == arr).all()
    assert refbook.get(inspect_arg.remote(r)) == (True, False, False)


def test_a_view_keeps_the_object_alive_after_the_ref_is_dropped():
    base = store_used()
    r = refbook.put(np.arange(MB, dtype=np.int64))
    view = refbook.get(r)
    del r
    time.sleep(0.2)
    assert store_used() > base            # the view still needs the memory
    assert view[-1] == MB - 1
    del view
    assert wait_for(lambda: store_used() == base)


def test_task_output_freed_when_ref_dropped_before_it_finishes():
    @refbook.remote
    def big():
        time.sleep(0.2)
        return np.ones(2 * MB)

    base = store_used()
    r = big.remote()
    del r
    time.sleep(0.5)
    assert wait_for(lambda: store_used() == base)


def test_arrow_values_are_zero_copy_too():
    import pyarrow as pa

    from refbook.runtime.processes import core as core_mod

    table = pa.table({"x": np.arange(2 * MB, dtype=np.int64)})
    r = refbook.put(table)
    out = refbook.get(r)
    assert out.equals(table)
    arena = core_mod.current().arena
    lo = arena.np.ctypes.data
    addr = out.column("x").chunk(0).buffers()[1].address
    assert lo <= addr < lo + arena.capacity
