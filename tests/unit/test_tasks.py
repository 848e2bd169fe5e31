from refbook.exceptions import (
    ObjectReconstructionFailedError,
    TaskCancelledError,
    WorkerCrashedError,
)
from refbook.runtime.protocol.tasks import RUNNING, Task, TaskManager


def task(n, quick=False, retries=3, res=None):
    t = Task(bytes([n]) * 16, f"t{n}", res or {"CPU": 1.0}, [bytes([n]) * 20], [], None,
             max_retries=retries)
    t.quick = quick
    return t


def kinds(actions):
    return [a[0] for a in actions]


def test_waits_for_dependencies_then_requests_a_lease_and_pushes():
    tm = TaskManager()
    t = task(1)
    assert tm.submit(t, {b"dep"}) == []
    (req,) = tm.resolved(b"dep")
    assert req[0] == "request"
    (push,) = tm.lease_granted(req[1], 10, "w1")
    assert push[0] == "push" and push[2] == [t] and t.state == RUNNING


def test_pipelines_only_quick_tasks():
    tm = TaskManager(depth=4)
    slow = [task(i) for i in range(3)]
    quick = [task(10 + i, quick=True) for i in range(6)]
    acts = []
    for t in slow:
        acts += tm.submit(t, set())
    req = [a for a in acts if a[0] == "request"][0]
    (push,) = [a for a in tm.lease_granted(req[1], 1, "w1") if a[0] == "push"]
    assert len(push[2]) == 1                     # unknown length: one at a time
    tm2 = TaskManager(depth=4)
    acts = []
    for t in quick:
        acts += tm2.submit(t, set())
    req = [a for a in acts if a[0] == "request"][0]
    (push,) = [a for a in tm2.lease_granted(req[1], 1, "w1") if a[0] == "push"]
    assert len(push[2]) == 4                     # quick: pipelined up to depth


def test_worker_death_retries_then_fails_with_worker_crashed():
    tm = TaskManager()
    t = task(1, retries=1)
    (req,) = tm.submit(t, set())
    tm.lease_granted(req[1], 1, "w1")
    acts = tm.worker_died("w1", "killed")
    assert "fail" not in kinds(acts) and "request" in kinds(acts)
    req = [a for a in acts if a[0] == "request"][0]
    tm.lease_granted(req[1], 2, "w2")
    (fail,) = [a for a in tm.worker_died("w2", "killed again") if a[0] == "fail"]
    assert isinstance(fail[2], WorkerCrashedError) and "max_retries=1" in str(fail[2])


def test_cancel_queued_fails_at_once_and_running_asks_the_worker():
    tm = TaskManager()
    a, b = task(1), task(2)
    (req,) = tm.submit(a, set())
    tm.submit(b, set())
    tm.lease_granted(req[1], 1, "w1")
    (fail,) = tm.cancel(b.task_id, force=False)
    assert fail[0] == "fail" and isinstance(fail[2], TaskCancelledError)
    (cancel,) = tm.cancel(a.task_id, force=True)
    assert cancel[0] == "cancel" and cancel[2] == "w1" and cancel[3] is True


def test_idle_leases_are_returned_after_the_timeout_or_on_reclaim():
    tm = TaskManager(idle_timeout=0.2)
    t = task(1)
    (req,) = tm.submit(t, set())
    tm.now = 1.0
    tm.lease_granted(req[1], 7, "w1")
    tm.now = 1.1
    tm.done(t.task_id)
    assert tm.tick() == []
    tm.now = 1.35
    assert tm.tick() == [("return", 7)]
    t2 = task(2)
    (req,) = tm.submit(t2, set())
    tm.lease_granted(req[1], 8, "w2")
    tm.done(t2.task_id)
    assert tm.reclaim() == [("return", 8)]


def test_infeasible_lease_fails_the_queued_tasks():
    tm = TaskManager()
    t = task(1, res={"CPU": 1.0, "tpu": 1.0})
    (req,) = tm.submit(t, set())
    (fail,) = tm.lease_rejected(req[1], "no tpu here")
    assert fail[0] == "fail" and "no tpu here" in str(fail[2])


def test_tasks_handed_back_by_a_blocked_worker_run_elsewhere():
    tm = TaskManager(depth=4)
    ts = [task(i, quick=True) for i in range(3)]
    acts = []
    for t in ts:
        acts += tm.submit(t, set())
    req = [a for a in acts if a[0] == "request"][0]
    tm.lease_granted(req[1], 1, "w1")
    acts = tm.returned("w1", [ts[1].task_id, ts[2].task_id])
    assert "push" not in kinds(acts)            # the blocked worker gets nothing more
    req2 = [a for a in acts if a[0] == "request"]
    pushes = [a for a in tm.lease_granted(req2[0][1], 2, "w2") if a[0] == "push"] \
        if req2 else []
    assert pushes and pushes[0][2][0] is ts[1]


def test_a_new_task_no_node_can_run_fails_at_once_but_a_rebuild_waits_for_one():
    tm = TaskManager(rebuild_wait=5)
    new, rebuild = task(1, res={"gpu": 1.0}), task(2, res={"tpu": 1.0})
    rebuild._rebuilds = 1
    (req_new,) = tm.submit(new, set())
    (req_re,) = tm.submit(rebuild, set())
    (fail,) = tm.lease_rejected(req_new[1], "no node has gpu")
    assert fail[0] == "fail" and "cannot be scheduled" in str(fail[2])
    assert tm.lease_rejected(req_re[1], "no node has tpu (nodes a, b)") == []
    tm.now = 1.0
    (again,) = tm.tick()                          # asks again a second later
    assert again[0] == "request"
    tm.now = 6.0
    (fail,) = tm.lease_rejected(again[1], "no node has tpu (node b)")
    assert fail[0] == "fail" and isinstance(fail[2], ObjectReconstructionFailedError)
    assert "(node b)" in str(fail[2]) and "within 5 s" in str(fail[2])
