"""What a process answers to the state API, on the owner's real tables (no I/O)."""

import threading
from types import SimpleNamespace

from refbook.runtime.processes.callsite import set_names_provider
from refbook.runtime.processes.state_answers import StateAnswers
from refbook.runtime.protocol import messages as P
from refbook.runtime.protocol.entries import INLINE
from refbook.runtime.protocol.ids import object_id
from refbook.runtime.protocol.owner import Owner
from refbook.runtime.protocol.refcount import Effects
from refbook.runtime.protocol.tasks import Task, TaskPayload

ME = "ipc:///s/n-n1/d-me"
WORKER = "ipc:///s/n-n2/w-1"


class Core(StateAnswers):
    """The parts of a CoreWorker that StateAnswers reads."""

    def __init__(self):
        self.owner = o = Owner(ME, "n1", "nm")
        self.me, self.node_id, self.lock = ME, "n1", threading.RLock()
        self.rt, self.tm, self.values, self.recovery = o.rt, o.tm, o.values, o.lineage
        self.actors = SimpleNamespace(queues={}, calls={}, owned={})
        self._holders, self._holders_n = {}, 0

    def _drain_releases(self, fx):
        pass

    def _apply(self, fx):
        self.owner.apply(fx)


def _submit(core, n: int, args=()) -> Task:
    tid = bytes([n]) * 16
    ret = object_id(tid, 0)
    core.rt.own(ret).site = ("f", "/x/test_y.py", 7)
    core.rt.add_local(ret, ME)
    arg_refs = [(a, ME) for a in args]
    core.rt.add_submitted(arg_refs)
    t = Task(tid, "f", {"CPU": 1.0}, [ret], arg_refs,
             TaskPayload(b"fn", b"blob", (INLINE, b"", []), arg_refs))
    t.site = ("f", "/x/test_y.py", 7)
    core.owner.now = 100.0
    core.owner.submit(t, {a for a in args if a not in core.values})
    return t


def _lease_requests(core) -> list:
    reqs = [m[2] for _a, m in core.owner.out.send if m[0] == P.LEASE_REQUEST]
    core.owner.out.send.clear()
    return reqs


def test_task_rows_through_queued_running_retrying():
    core = Core()
    t = _submit(core, 1)
    (row,) = core.describe_tasks()
    assert row["state"] == "queued" and row["call_site"] == "test_y.py:7"
    assert row["submitted_at"] is not None and row["started_at"] is None
    (req,) = _lease_requests(core)
    core.owner.now = 101.0
    core.owner.lease_granted(req, 7, WORKER, "nm")
    (row,) = core.describe_tasks()
    assert (row["state"], row["node_id"], row["worker"], row["attempt"]) == \
        ("running", "n2", WORKER, 1)
    assert row["started_at"] - row["submitted_at"] == 1.0
    core.owner.do(core.tm.worker_died(WORKER, "killed"))
    (row,) = core.describe_tasks()
    assert row["state"] == "retrying" and row["node_id"] is None
    assert t.task_id.hex() == row["task_id"]


def test_waiting_task_and_why_a_value_is_alive():
    core = Core()
    x = b"x" * 16 + b"\xff" * 4
    core.rt.own(x)
    core.rt.add_local(x, ME)
    core.values[x] = (INLINE, b"", [])
    t = _submit(core, 2, [b"y" * 20])     # waits for y (never made)
    (row,) = [r for r in core.describe_tasks() if r["task_id"] == t.task_id.hex()]
    assert row["state"] == "waiting" and row["args"] == [(b"y" * 20).hex()]
    # x held by a handle, then by a box a variable holds, and by a borrower of the box
    box = b"b" * 16 + b"\xff" * 4
    core.rt.own(box, [(x, ME)])
    core.rt.add_local(box, ME)
    core.rt.remove_local(x, Effects())
    core.rt.on_inc(box, "other")
    set_names_provider(lambda: {box.hex(): ["box"]})
    try:
        paths = core.why(x)["paths"]
    finally:
        set_names_provider(None)
    assert paths == [
        [{"kind": "variable", "name": "box", "process": ME},
         {"kind": "object", "object_id": box.hex()}],
        [{"kind": "borrower", "process": "other", "_of": box.hex()},
         {"kind": "object", "object_id": box.hex()}]]
    assert core.why(b"z" * 20) is None


def test_containers_noted_by_put_and_pruned_when_they_go():
    core = Core()
    x = b"x" * 16 + b"\xff" * 4
    core.rt.own(x)
    core.rt.add_local(x, ME)
    boxes = []
    for i in range(3):
        box = bytes([i]) * 16 + b"\xff" * 4
        core.rt.own(box, [(x, ME)])
        core.rt.add_local(box, ME)
        core.note_containers(box, [(x, ME)])
        boxes.append(box)
    assert core._containers_of(x, core.rt.get(x), []) == boxes
    fx = Effects()
    for box in boxes[:2]:
        core.rt.remove_local(box, fx)
    core.owner.apply(fx)
    index: list = []
    assert core._containers_of(x, core.rt.get(x), index) == boxes[2:] and not index
    core._holders_n = 10 ** 6                         # prune at the next note
    core.note_containers(boxes[2], [])
    assert core._holders == {x: boxes[2:]}
