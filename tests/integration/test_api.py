"""API.md section 1 for functions and objects, against a real cluster."""

import asyncio
import pickle
import time

import numpy as np
import pyarrow as pa
import pytest

import refbook
from refbook.exceptions import GetTimeoutError, RefbookError

pytestmark = pytest.mark.usefixtures("cluster")


@refbook.remote
def add(x, y=1):
    return x + y


@refbook.remote
def sleep_then(x, s):
    time.sleep(s)
    return x


def test_init_again_returns_the_same_context(cluster):
    again = refbook.init()
    assert again.session_dir == cluster.session_dir
    assert refbook.is_initialized()


def test_remote_function_args_kwargs_and_top_level_refs():
    assert refbook.get(add.remote(1)) == 2
    assert refbook.get(add.remote(1, y=5)) == 6
    r = refbook.put(10)
    assert refbook.get(add.remote(r, y=add.remote(1))) == 12


def test_nested_ref_arrives_as_ref():
    @refbook.remote
    def kinds(lst, d):
        return type(lst[0]).__name__, refbook.get(lst[0]), type(d["k"]).__name__

    r = refbook.put("v")
    assert refbook.get(kinds.remote([r], {"k": r})) == ("ObjectRef", "v", "ObjectRef")


def test_num_returns_and_options():
    @refbook.remote(num_returns=2)
    def two():
        return 1, 2

    a, b = two.remote()
    assert refbook.get([a, b]) == [1, 2]
    three = two.options(num_returns=3)

    @refbook.remote
    def f3():
        return "a", "b", "c"

    refs = f3.options(num_returns=3).remote()
    assert refbook.get(refs) == ["a", "b", "c"]
    assert three._options["num_returns"] == 3 and two._options["num_returns"] == 2


def test_wrong_number_of_returns_is_a_clear_error():
    @refbook.remote(num_returns=2)
    def one():
        return 1

    a, b = one.remote()
    with pytest.raises(ValueError, match="num_returns=2"):
        refbook.get(a)


def test_get_list_and_timeout():
    refs = [add.remote(i) for i in range(10)]
    assert refbook.get(refs) == list(range(1, 11))
    slow = sleep_then.remote(1, 2.0)
    t = time.monotonic()
    with pytest.raises(GetTimeoutError) as ei:
        refbook.get(slow, timeout=0.2)
    assert isinstance(ei.value, TimeoutError)
    assert time.monotonic() - t < 1.5
    assert refbook.get(slow) == 1
    many = [sleep_then.remote(1, 2.0)] + [add.remote(i) for i in range(9)]   # 10: a bar
    with pytest.raises(GetTimeoutError, match="timed out after 0.2 s; 1 of 10"):
        refbook.get(many, timeout=0.2)


def test_wait_returns_ready_first():
    fast = add.remote(1)
    slow = sleep_then.remote(2, 1.0)
    ready, not_ready = refbook.wait([slow, fast], num_returns=1)
    assert ready == [fast] and not_ready == [slow]
    ready, not_ready = refbook.wait([slow, fast], num_returns=2, timeout=5)
    assert set(ready) == {slow, fast} and not_ready == []
    ready, not_ready = refbook.wait([sleep_then.remote(3, 1.0)], timeout=0.05)
    assert ready == [] and len(not_ready) == 1
    with pytest.raises(ValueError, match="more than once"):
        refbook.wait([fast, fast])


def test_object_ref_is_hashable_picklable_awaitable():
    r = refbook.put(41)
    assert {r: 1}[r] == 1
    assert r.hex() == r._id.hex() and len(r.hex()) == 40
    r2 = pickle.loads(pickle.dumps(r))
    assert r2 == r and refbook.get(r2) == 41

    async def main():
        return await add.remote(r)

    assert asyncio.run(main()) == 42
    assert r.hex() in {o["object_id"] for o in refbook.objects()}


def test_redefining_a_remote_function_runs_the_new_body():
    @refbook.remote
    def version():
        return 1

    assert refbook.get(version.remote()) == 1

    @refbook.remote  # noqa: F811 - the point of the test
    def version():
        return 2

    assert refbook.get(version.remote()) == 2


def test_tasks_submit_tasks_and_put_get():
    @refbook.remote
    def fan_out(n):
        inner = refbook.put(list(range(n)))
        return sum(refbook.get([add.remote(i) for i in range(n)])) + len(refbook.get(inner))

    assert refbook.get(fan_out.remote(50)) == sum(range(1, 51)) + 50


def test_deep_nesting_does_not_deadlock_on_two_cpus():
    @refbook.remote
    def depth(n):
        if n == 0:
            return 0
        return 1 + refbook.get(depth.remote(n - 1))

    assert refbook.get(depth.remote(6), timeout=60) == 6


def test_put_and_get_values_of_many_kinds():
    values = [None, 1, "s", b"x" * 200_000, {"a": [1, 2]}, np.arange(5),
              pa.array([1, 2, 3]), pa.table({"x": [1, 2]}), (1, "two", 3.0)]
    for v in values:
        out = refbook.get(refbook.put(v))
        if isinstance(v, np.ndarray):
            assert (out == v).all()
        elif isinstance(v, (pa.Array, pa.Table)):
            assert out.equals(v)
        else:
            assert out == v


def test_introspection():
    nodes = refbook.nodes()
    assert len(nodes) == 1
    n = nodes[0]
    assert n["alive"] and n["resources"]["CPU"] == 2
    assert set(n["store"]) >= {"capacity", "used", "num_objects", "spilled_bytes",
                               "spilled_objects", "restored_bytes"}
    assert n["store"]["capacity"] == 256 << 20
    assert refbook.cluster_resources()["CPU"] == 2
    assert 0 <= refbook.available_resources()["CPU"] <= 2
    r = refbook.put(np.zeros(1 << 20))
    objs = {o["object_id"]: o for o in refbook.objects()}
    o = objs[r.hex()]
    assert o["state"] == "ready" and o["size"] >= 8 << 20 and o["nodes"] == [n["node_id"]]
    assert o["local_refs"] == 1 and o["task"] is None


def test_bad_input_gets_clear_errors():
    with pytest.raises(TypeError, match="remote"):
        add(1)
    with pytest.raises(TypeError, match="unknown task option"):
        add.options(num_cpu=1)
    with pytest.raises(ValueError, match="num_returns"):
        add.options(num_returns=0)
    with pytest.raises(TypeError, match="add.remote"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="ObjectRef"):
        refbook.get(5)
    with pytest.raises(TypeError, match="ObjectRef"):
        refbook.put(refbook.put(1))


def test_infeasible_resources_fail_fast():
    r = add.options(resources={"gpu_unicorn": 1}).remote(1)
    with pytest.raises(RefbookError, match="gpu_unicorn"):
        refbook.get(r, timeout=10)
    r = add.options(num_cpus=64).remote(1)
    with pytest.raises(RefbookError, match="CPU"):
        refbook.get(r, timeout=10)
    assert refbook.get(add.remote(1)) == 2


def test_task_output_reaches_the_driver(capfd):
    @refbook.remote
    def talk():
        print("hello from a task")
        return 1

    refbook.get(talk.remote())
    # output is sent before the result, so it has been written by the time get returns
    assert "hello from a task" in capfd.readouterr().out


def test_get_with_duplicate_refs():
    r = add.remote(1)
    assert refbook.get([r, r, r]) == [2, 2, 2]
