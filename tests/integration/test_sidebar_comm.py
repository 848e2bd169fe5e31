"""The kernel's side of the JupyterLab sidebar: the comm target ``refbook``, driven by
a real kernel over jupyter_client exactly as the sidebar drives it."""

import queue
import time
import uuid

import pytest


class Sidebar:
    """What the sidebar does with a kernel's comm, from a jupyter_client client."""

    def __init__(self, kc):
        self.kc = kc
        self.comm_id = uuid.uuid4().hex
        self.got: list = []            # data of the comm messages, in order
        self.closed = False
        self.idle: set = set()
        self.errors: dict = {}

    def _send(self, msg_type: str, content: dict) -> None:
        self.kc.shell_channel.send(self.kc.session.msg(msg_type, content))

    def open(self) -> None:
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": "refbook",
                                 "data": {}})

    def send(self, **data) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": data})

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "comm_msg" and c.get("comm_id") == self.comm_id:
                self.got.append(c["data"])
            elif t == "comm_close" and c.get("comm_id") == self.comm_id:
                self.closed = True
            elif t == "status" and c["execution_state"] == "idle":
                self.idle.add(msg["parent_header"].get("msg_id"))
            elif t == "error":
                self.errors[msg["parent_header"].get("msg_id")] = c["evalue"]

    def run(self, code: str, timeout: float = 60) -> None:
        mid = self.kc.execute(code)
        end = time.monotonic() + timeout
        while mid not in self.idle:
            assert time.monotonic() < end, f"{code!r} did not finish"
            self.pump(0.05)
        assert mid not in self.errors, self.errors[mid]

    def wait_for(self, pred, timeout: float = 10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for d in self.got:
                if pred(d):
                    return d
            self.pump(0.02)
        raise AssertionError(f"no such message within {timeout} s: {self.got[-5:]}")


def _refs(msgs) -> dict:
    """The sidebar's ref rows after applying ``msgs`` (deltas) in order."""
    rows: dict = {}
    for d in msgs:
        if d.get("type") == "delta" and "refs" in d:
            for r in d["refs"]["upsert"]:
                rows[r["id"]] = r
            for h in d["refs"]["remove"]:
                rows.pop(h, None)
    return rows


def test_the_sidebar_sees_refs_nodes_and_frees_a_variable(kernel):
    km, kc = kernel
    sb = Sidebar(kc)
    sb.run("%load_ext refbook")
    sb.open()
    sb.send(type="visible", visible=True)
    first = sb.wait_for(lambda d: d.get("type") == "delta" and "nodes" in d)
    assert first["cluster"]["running"] is True
    (node,) = first["nodes"]
    assert node["alive"] and node["capacity"] > 0 and node["used"] is not None
    # a cell makes a ref: its row comes within half a second of the cell's end
    sb.run("x = refbook.put(b'a' * 200_000)\nhx = x.hex()")
    t = time.monotonic()
    row = sb.wait_for(lambda d: any(r["names"] == ["x"] for r in
                                    (d.get("refs") or {}).get("upsert", ())), timeout=5)
    took = time.monotonic() - t
    assert took < 0.5, took
    (r,) = [r for r in row["refs"]["upsert"] if r["names"] == ["x"]]
    assert r["state"] == "ready" and r["size"] >= 200_000 and r["owner"] == "this kernel"
    assert r["node"] == node["node_id"]
    # the details: why it is alive names the variable
    sb.send(type="inspect", id=r["id"])
    info = sb.wait_for(lambda d: d.get("type") == "inspect")
    assert info["id"] == r["id"]
    assert any(step["kind"] == "variable" and step["name"] == "x"
               for path in info["why_alive"] for step in path), info["why_alive"]
    assert any(n["id"] == r["id"] for n in info["lineage"]["nodes"])
    # "Free" deletes the variable; the row goes
    sb.send(type="free", id=r["id"])
    freed = sb.wait_for(lambda d: d.get("type") == "freed")
    assert freed == {"type": "freed", "id": r["id"], "names": ["x"]}
    sb.wait_for(lambda d: r["id"] in ((d.get("refs") or {}).get("remove") or ()))
    assert r["id"] not in _refs(sb.got)
    # a bad request is answered, and the kernel goes on
    sb.send(type="explode")
    err = sb.wait_for(lambda d: d.get("type") == "error")
    assert "unknown message type 'explode'" in err["message"]


def test_a_hidden_sidebar_costs_nothing_and_gets_nothing(kernel):
    psutil = pytest.importorskip("psutil")
    km, kc = kernel
    sb = Sidebar(kc)
    sb.run("%load_ext refbook")
    sb.open()
    sb.send(type="visible", visible=True)
    sb.wait_for(lambda d: d.get("type") == "delta")
    sb.send(type="visible", visible=False)
    sb.pump(0.5)
    n = len(sb.got)
    proc = psutil.Process(km.provisioner.pid)
    cpu = sum(proc.cpu_times()[:2])
    sb.run("y = refbook.put(123)")       # something changes while it is hidden
    sb.pump(2.0)
    assert len(sb.got) == n, sb.got[n:]
    spent = sum(proc.cpu_times()[:2]) - cpu
    assert spent < 0.3, spent            # the cell itself, not a refresh loop
    sb.send(type="visible", visible=True)  # shown again: everything, at once
    rows = sb.wait_for(lambda d: any(r["names"] == ["y"] for r in
                                     (d.get("refs") or {}).get("upsert", ())))
    assert rows["cluster"]["running"]


def test_a_kernel_without_refbook_closes_the_comm(kernel):
    km, kc = kernel
    sb = Sidebar(kc)
    sb.run("1 + 1")
    sb.open()
    end = time.monotonic() + 10
    while not sb.closed and time.monotonic() < end:
        sb.pump(0.05)
    assert sb.closed and sb.got == []


def _control(kc, msg_type: str, content: dict) -> dict:
    msg = kc.session.msg(msg_type, content)
    kc.control_channel.send(msg)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        reply = kc.get_control_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]
    raise AssertionError(f"no {msg_type} reply")


def test_a_message_naming_a_deleted_subshell_is_still_handled(kernel):
    """JupyterLab 4.4+ sends a comm's messages on a subshell shared by the comms of
    one target, and can delete it while a new comm of that target still names it (the
    sidebar closes and reopens its comm).  ipykernel 7 also routes a comm's messages to
    the subshell its last answer went to.  A confirmed Free sent that way was dropped:
    the row stayed, with no error anywhere."""
    km, kc = kernel
    sb = Sidebar(kc)
    sb.run("%load_ext refbook")
    info = kc.kernel_info(reply=True)["content"]
    if "kernel subshells" not in info.get("supported_features", []):
        pytest.skip("this ipykernel has no subshells")
    sub = _control(kc, "create_subshell_request", {})["subshell_id"]
    sb.run("x = refbook.put(b'a' * 1000)\nhx = x.hex()")
    sb.open()

    def send_on(subshell, **data):
        msg = kc.session.msg("comm_msg", {"comm_id": sb.comm_id, "data": data})
        msg["header"]["subshell_id"] = subshell
        kc.shell_channel.send(msg)

    sb.send(type="visible", visible=True)
    row = sb.wait_for(lambda d: any(r["names"] == ["x"] for r in
                                    (d.get("refs") or {}).get("upsert", ())))
    (r,) = [r for r in row["refs"]["upsert"] if r["names"] == ["x"]]
    send_on(sub, type="inspect", id=r["id"])       # answered from the subshell
    sb.wait_for(lambda d: d.get("type") == "inspect")
    sb.send(type="visible", visible=False)         # no pushes from here on
    sb.pump(0.5)
    assert _control(kc, "delete_subshell_request", {"subshell_id": sub})["status"] == "ok"
    send_on(sub, type="free", id=r["id"])          # names the subshell just deleted
    freed = sb.wait_for(lambda d: d.get("type") == "freed", timeout=10)
    assert freed["names"] == ["x"]
