"""The state API's targeted queries, ``state.objects(ids=...)`` and
``state.tasks(ids=...)`` (what the notebook's live lines poll), against a real cluster:
they give the snapshot's rows, ask only the owners, and this driver answers for its
own ids without a message."""

import os
import signal
import time

import psutil
import pytest

import refbook
from refbook import state

from .helpers import wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@refbook.remote
def add(x, y=1):
    return x + y


@refbook.remote
def boom():
    raise KeyError("no such key")


@refbook.remote
def sleep_then(x, s):
    time.sleep(s)
    return x


@refbook.remote
def put_inside():
    return [refbook.put("inner value")]


@refbook.remote
class Keeper:
    def make(self):
        self.kept = refbook.put("kept by an actor")
        return [self.kept]

    def pid(self):
        return os.getpid()


def _same_as_snapshot(rows: list, snapshot: list) -> None:
    full = {o["object_id"]: o for o in snapshot}
    for r in rows:
        f = full[r["object_id"]]
        for k, v in f.items():
            if k not in ("spilled", "contained_in"):
                assert r[k] == v, (k, r, f)


def test_objects_by_id_are_the_snapshots_rows_in_the_order_asked():
    x = refbook.put(7)
    y = add.remote(x)
    refbook.get(y)
    inner = refbook.get(put_inside.remote())[0]          # owned by a worker
    lst = refbook.put([x])
    rows = state.objects(ids=[lst, inner, y.hex(), x._id])
    assert [r["object_id"] for r in rows] == [lst.hex(), inner.hex(), y.hex(), x.hex()]
    _same_as_snapshot(rows, state.objects())
    assert rows[1]["owner"] == inner._owner != rows[0]["owner"]
    assert rows[3]["contained_in"] == [lst.hex()]          # the same owner's container
    assert rows[2]["made_by"] == "add" and rows[2]["error"] is None
    z = refbook.put(3)
    gone = z.hex()
    del z
    assert wait_for(lambda: state.objects(ids=[gone]) == [], 5)   # freed: left out
    assert state.objects(ids=[]) == []


def test_an_id_this_driver_holds_no_ref_to_is_found_by_asking_every_process():
    a = refbook.get(put_inside.remote())[0]
    hexid, owner = a.hex(), a._owner
    rows = state.objects(ids=[hexid])
    assert len(rows) == 1 and rows[0]["owner"] == owner and rows[0]["state"] == "ready"
    unknown = "ab" * 20                                  # nobody made this one
    assert state.objects(ids=[unknown]) == []


def test_tasks_by_id_say_running_failed_done_and_leave_out_forgotten_ones():
    slow = sleep_then.remote(1, 30)
    bad = boom.remote()
    ok = add.remote(1)
    gone = add.options(max_retries=0).remote(2)
    with pytest.raises(refbook.exceptions.TaskError):
        refbook.get(bad)
    assert refbook.get([ok, gone]) == [2, 3]
    tid = {name: r._id[:16] for name, r in
           (("slow", slow), ("bad", bad), ("ok", ok), ("gone", gone))}
    gone_id = tid["gone"]
    del gone
    try:
        assert wait_for(lambda: state.tasks(ids=[tid["slow"]])[0]["state"] == "running", 10)
        assert wait_for(lambda: state.tasks(ids=[gone_id]) == [], 5)   # its result freed
        rows = {r["task_id"]: r for r in state.tasks(ids=list(tid.values()))}
        run, failed, done = (rows[tid[k].hex()] for k in ("slow", "bad", "ok"))
        assert run["node_id"] and run["name"] == "sleep_then" and run["error"] is None
        assert failed["state"] == "failed" and failed["error"] == "KeyError"
        assert done["state"] == "done" and done["attempt"] == 1
        full = {t["task_id"]: t for t in state.tasks()}
        for k in ("task_id", "name", "state", "node_id", "attempt", "args", "returns",
                  "owner", "call_site"):
            assert run[k] == full[run["task_id"]][k], k
        for k in ("submitted_at", "started_at"):       # the same instant, told twice
            assert abs(run[k] - full[run["task_id"]][k]) < 0.01, k
        assert [r["task_id"] for r in state.tasks(ids=[tid["ok"].hex(), tid["bad"]])] \
            == [tid["ok"].hex(), tid["bad"].hex()]
    finally:
        refbook.cancel(slow, force=True)


def test_own_ids_are_answered_without_a_message_even_when_the_node_is_stuck():
    """This driver owns these: answered from its own tables while its node manager (and
    so every other process) cannot answer; the snapshot has to wait for it."""
    x = refbook.put(1)
    y = add.remote(x)
    refbook.get(y)
    node = psutil.Process(refbook.nodes()[0]["pid"])
    node.send_signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        rows = state.objects(ids=[x, y])
        tasks = state.tasks(ids=[y._id[:16]])
        took = time.monotonic() - t
    finally:
        node.send_signal(signal.SIGCONT)
    assert [r["state"] for r in rows] == ["ready", "ready"] and tasks[0]["state"] == "done"
    assert took < 0.5, took


def test_an_owner_that_does_not_answer_gives_state_unknown():
    k = Keeper.remote()
    inner = refbook.get(k.make.remote())[0]
    worker = psutil.Process(refbook.get(k.pid.remote()))
    assert state.objects(ids=[inner])[0]["state"] == "ready"
    worker.send_signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        rows = state.objects(ids=[inner])
        took = time.monotonic() - t
    finally:
        worker.send_signal(signal.SIGCONT)
    assert [(r["object_id"], r["owner"], r["state"]) for r in rows] == \
        [(inner.hex(), inner._owner, "unknown")]
    assert took < 3, took
    refbook.kill(k)


def test_bad_ids_get_a_clear_error():
    x = refbook.put(1)
    with pytest.raises(TypeError, match=r"ids=\[\.\.\.\]"):
        state.objects(ids=x)
    with pytest.raises(TypeError, match=r"ids=\[\.\.\.\]"):
        state.tasks(ids="ab" * 16)
    with pytest.raises(ValueError, match="not an object id"):
        state.objects(ids=["xyz"])
    with pytest.raises(ValueError, match="16"):
        state.tasks(ids=[x._id])                         # an object id, not a task id
    with pytest.raises(TypeError, match="not int"):
        state.objects(ids=[3])
