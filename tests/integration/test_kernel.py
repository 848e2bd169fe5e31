"""The notebook extension, through a real IPython kernel (jupyter_client)."""

import os
import queue
import signal
import time

import psutil
import pytest

jupyter_client = pytest.importorskip("jupyter_client")
# the `kernel` fixture (a real IPython kernel) is in conftest.py


class Messages:
    """Every iopub message a client received, in order, kept across cells."""

    def __init__(self, kc):
        self.kc = kc
        self.all: list[dict] = []

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self.all.append(self.kc.get_iopub_msg(timeout=left))
            except queue.Empty:
                return

    def run(self, code: str, timeout: float = 60, interrupt_after: float | None = None):
        """Execute ``code`` until its kernel is idle; returns its msg_id."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        sent_interrupt = False
        while True:
            if interrupt_after is not None and not sent_interrupt and \
                    time.monotonic() > deadline - timeout + interrupt_after:
                self.interrupt()
                sent_interrupt = True
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no reply to {code!r} within {timeout} s") from None
                continue
            self.all.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id and \
                    msg["msg_type"] == "status" and \
                    msg["content"]["execution_state"] == "idle":
                return msg_id

    def interrupt(self):
        raise NotImplementedError       # set by the test

    def of(self, msg_id: str) -> list[dict]:
        return [m for m in self.all if m["parent_header"].get("msg_id") == msg_id]

    def text(self, msg_id: str) -> str:
        """Streams and plain-text displays under a cell."""
        out = []
        for m in self.of(msg_id):
            c = m["content"]
            if m["msg_type"] == "stream":
                out.append(c["text"])
            elif m["msg_type"] in ("display_data", "execute_result"):
                out.append(c["data"].get("text/plain", "") + "\n")
        return "".join(out)

    def error(self, msg_id: str):
        return next((m["content"] for m in self.of(msg_id) if m["msg_type"] == "error"), None)


def run(kc, code, timeout=60):
    """Execute ``code``; return (its text output, error or None)."""
    m = Messages(kc)
    mid = m.run(code, timeout)
    return m.text(mid), m.error(mid)


def test_load_ext_and_remote_cells_pass_refs(kernel):
    km, kc = kernel
    out, err = run(kc, "%load_ext refbook")
    assert err is None and "refbook" in out and "CPUs" in out and "store" in out
    out, err = run(kc, "import numpy as np\ndef helper(v):\n    return v * 2\n"
                       "x = refbook.put(np.arange(10))\nk = 3")
    assert err is None
    out, err = run(kc, "%%remote --wait\ny = helper(int(x.sum())) + k\nz = [y, y]")
    assert err is None, err
    out, err = run(kc, "print(type(y).__name__, refbook.get(y), refbook.get(z))")
    assert out.strip() == "ObjectRef 93 [93, 93]", (out, err)
    out, err = run(kc, "%get y\nprint(y)\n%put k\nprint(type(k).__name__)")
    assert err is None and "93" in out and "ObjectRef" in out
    out, err = run(kc, "z")                           # the rich display of a ref
    assert "ObjectRef" in out and "ready" in out and "cell[" in out, out
    out, err = run(kc, "%refs")
    assert err is None and "this kernel" in out and "ready" in out
    assert {"x", "z", "k"} <= {line.split()[0] for line in out.splitlines()[1:]}, out


def test_errors_show_the_cells_own_lines_and_name_what_cannot_be_shipped(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, err = run(kc, "%%remote --wait\na = 1\nb = 2\nw = a / (b - 2)")
    assert err is not None and "ZeroDivisionError" in err["ename"]
    tb = "\n".join(err["traceback"])
    assert "<remote cell [2]>" in tb and "line 3" in tb and "w = a / (b - 2)" in tb, tb
    assert "_run_cell" not in tb                   # no frames of refbook's own
    run(kc, "import numpy as np\nimport os.path as osp")
    out, err = run(kc, "%%remote --wait\nv = int(np.arange(4).sum()) + len(osp.sep)")
    assert err is None and run(kc, "print(refbook.get(v))")[0].strip() == "7"
    run(kc, "import threading\nlock = threading.Lock()")
    out, err = run(kc, "%%remote --wait\nwith lock:\n    v = 1")
    assert err is not None and "notebook variable 'lock'" in err["evalue"], err
    assert "pickled" in err["evalue"]


def test_a_remote_function_defined_in_a_cell_names_the_cell_in_its_traceback(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "@refbook.remote\ndef bad(n):\n    m = n - 2\n    return n / m")
    out, err = run(kc, "refbook.get(bad.remote(2))")
    assert err is not None and "ZeroDivisionError" in err["ename"]
    remote = err["evalue"] + "\n".join(err["traceback"])
    assert 'File "<cell 2>", line 4, in bad' in remote, remote
    assert "return n / m" in remote and "<dynamic-code>" not in remote, remote


def test_refs_names_lineage_as_what_keeps_a_deleted_put_and_release_lineage_frees_it(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "import numpy as np\nx = np.ones(5_000_000)\n%put x")
    out, err = run(kc, "%%remote --wait\ns = float(x.sum())")
    assert err is None, err
    run(kc, "del x\nused = lambda: refbook.nodes()[0]['store']['used']\nbefore = used()")
    out, err = run(kc, "%refs")
    assert err is None, err
    kept = [line for line in out.splitlines() if line.startswith("(no name)")]
    assert kept and "kept to rebuild s (lineage)" in kept[0], out
    assert "pending task" not in out, out                     # no task is pending
    out, err = run(kc, "import time\nok, t = refbook.release_lineage(s), time.time()\n"
                       "while before - used() < 40_000_000 and time.time() - t < 5:\n"
                       "    time.sleep(0.02)\nprint(ok, before - used() >= 40_000_000)")
    assert err is None and out.split() == ["True", "True"], (out, err)
    out, err = run(kc, "%refs")
    assert "(no name)" not in out and "lineage" not in out, out


def test_a_ref_from_before_a_restart_says_so_in_refs_and_raises_at_once(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "old = refbook.put(41)")
    out, err = run(kc, "%refbook restart --num-cpus 1")
    assert err is None, err
    out, err = run(kc, "%refs")
    row = next(line for line in out.splitlines() if line.startswith("old "))
    assert "gone (its cluster was shut down)" in row, out
    out, err = run(kc, "import time\nt = time.time()\ntry:\n    refbook.get(old)\n"
                       "except refbook.exceptions.ClusterShutdownError as e:\n"
                       "    print('raised', time.time() - t < 2)")
    assert out.strip() == "raised True", (out, err)


def test_independent_remote_cells_run_concurrently(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    m = Messages(kc)
    start = time.monotonic()
    m.run("%%remote\nimport time\ntime.sleep(2)\na = 1")
    m.run("%%remote\nimport time\ntime.sleep(2)\nb = 2")
    submitted = time.monotonic() - start
    mid = m.run("print(refbook.get(a) + refbook.get(b))")
    took = time.monotonic() - start
    assert m.text(mid).strip() == "3"
    assert submitted < 1.0                     # without --wait the magic returns at once
    assert took < 3.5, took                    # two 2-second cells side by side


def test_task_output_goes_under_the_cell_that_submitted_it(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    m.run("import time\n@refbook.remote\ndef talk(tag, s):\n    print(tag, 'early', flush=True)\n"
          "    time.sleep(s)\n    print(tag, 'late')\n    return 0")
    first = m.run("r1 = talk.remote('A', 1.5)")
    second = m.run("%%remote\nimport time\nprint('B early', flush=True)\ntime.sleep(1.5)\n"
                   "print('B late')\nq = 1")
    third = m.run("x = 1 + 1")                  # a cell that prints nothing itself
    m.pump(4)
    assert "A early" in m.text(first) and "A late" in m.text(first), m.text(first)
    assert "B early" in m.text(second) and "B late" in m.text(second)
    assert "A " not in m.text(second) + m.text(third)
    assert "B " not in m.text(first) + m.text(third)
    # the late lines came after their cell had finished
    order = [(m["parent_header"].get("msg_id"), m["msg_type"], m["content"])
             for m in m.all]
    idle_first = next(i for i, (pid, t, c) in enumerate(order) if pid == first and
                      t == "status" and c["execution_state"] == "idle")
    late_a = next(i for i, (pid, t, c) in enumerate(order) if pid == first and
                  t == "stream" and "A late" in c["text"])
    assert late_a > idle_first
    # and the cell shows a live status line that ended in "done"
    assert any(t == "comm_msg" and "done" in str(c) for pid, t, c in order), \
        "no status line update says done"


def test_del_frees_memory_even_after_the_ref_was_displayed(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "import numpy as np\nbig = refbook.put(np.ones(40_000_000))")
    out, err = run(kc, "big")
    assert "ObjectRef" in out and "MiB" in out
    run(kc, "big")                                 # shown twice: _, __, _3, _4
    out, err = run(kc, "def used():\n    return sum(n['store']['used'] for n in "
                       "refbook.nodes())\nprint(used() > 300_000_000)")
    assert out.strip() == "True"
    out, err = run(kc, "del big\nimport time\nt = time.monotonic()\n"
                       "while used() and time.monotonic() - t < 5:\n    time.sleep(0.05)\n"
                       "print(used())")
    assert err is None and out.strip() == "0", (out, err)
    run(kc, "parts = [refbook.put(np.ones(1_000_000)) for _ in range(3)]")
    run(kc, "parts")                               # a list of refs in Out, _ and _N
    out, err = run(kc, "del parts\nt = time.monotonic()\n"
                       "while used() and time.monotonic() - t < 5:\n    time.sleep(0.05)\n"
                       "print(used())")
    assert err is None and out.strip() == "0", (out, err)
    run(kc, "_ = refbook.put(7)")                  # a _ of the user's own is left alone
    out, err = run(kc, "print(refbook.get(_))")
    assert out.strip() == "7", (out, err)
    run(kc, "big2 = refbook.put(np.ones(1000))\nbig2")
    out, _ = run(kc, "big2 = 5\nimport gc; gc.collect()\n"
                     "print(len([o for o in refbook.objects() if o['size'] and "
                     "o['size'] > 1000]))")
    assert out.strip() == "0"                       # rebinding frees it too


def test_interrupting_a_cell_cancels_its_tasks(kernel, tmp_path):
    km, kc = kernel
    m = Messages(kc)
    m.interrupt = km.interrupt_kernel
    m.run("%load_ext refbook")
    path = tmp_path / "ticks"
    m.run("import time\n@refbook.remote\ndef tick(path):\n    while True:\n"
          "        with open(path, 'a') as f:\n            f.write('x')\n"
          "        time.sleep(0.05)\n")
    mid = m.run(f"t = tick.remote({str(path)!r})\nrefbook.get(t)", interrupt_after=1.5)
    err = m.error(mid)
    assert err is not None and err["ename"] == "KeyboardInterrupt"
    assert "cancelled 1 task(s)" in m.text(mid) and "tick" in m.text(mid)
    time.sleep(0.5)
    size = path.stat().st_size
    assert size > 0
    time.sleep(1.0)
    assert path.stat().st_size == size             # the task stopped writing
    out, err = run(kc, "try:\n    refbook.get(t)\nexcept Exception as e:\n"
                       "    print(type(e).__name__)")
    assert "TaskCancelledError" in out


def test_a_get_on_many_refs_shows_progress(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    mid = m.run("import time\n@refbook.remote\ndef slow(i):\n    time.sleep(0.1)\n"
                "    return i\nprint(sum(refbook.get([slow.remote(i) for i in range(20)])))")
    assert "190" in m.text(mid)
    states = [m["content"]["data"].get("state", {}) for m in m.all
              if m["msg_type"] == "comm_open"]
    bars = [s for s in states if s.get("_model_name") == "IntProgressModel"]
    assert bars and bars[0]["max"] == 20
    assert any("20/20 ready" in str(msg["content"]) for msg in m.all
               if msg["msg_type"] == "comm_msg")


def _refbook_pids(kc) -> list[int]:
    out, _ = run(kc, "import psutil\nnm = refbook.nodes()[0]['pid']\n"
                     "print([c.pid for c in psutil.Process(nm).children(recursive=True)]"
                     " + [nm])")
    pids = eval(out.strip())
    assert len(pids) >= 3
    return pids


def _gone(pids, timeout=15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.1)
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


@pytest.mark.parametrize("how", ["sigkill", "restart", "shutdown"])
def test_ending_the_kernel_leaves_no_refbook_process(kernel, how):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    pids = _refbook_pids(kc)
    out, _ = run(kc, "from refbook.runtime.api import functions as api\nprint(api._session.dir)")
    session_dir = out.strip()
    assert os.path.isdir(session_dir)
    if how == "sigkill":
        km.signal_kernel(signal.SIGKILL)           # no chance to clean up
    elif how == "restart":
        km.restart_kernel(now=False)
    else:
        km.shutdown_kernel(now=False)
    assert _gone(pids)
    deadline = time.monotonic() + 5           # its sockets and spill files went with it
    while os.path.exists(session_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(session_dir)


def test_reload_ext_keeps_refs_and_unload_ext_shuts_down(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "x = refbook.put(41)")
    pids = _refbook_pids(kc)
    out, err = run(kc, "%reload_ext refbook\nrefbook.init()\nprint(refbook.get(x) + 1)")
    assert err is None and out.strip().endswith("42"), (out, err)
    out, err = run(kc, "%%remote --wait\ny = x + 2")
    assert err is None and run(kc, "print(refbook.get(y))")[0].strip() == "43"
    assert all(psutil.pid_exists(p) for p in pids)   # the same cluster
    out, err = run(kc, "%unload_ext refbook")
    assert err is None
    assert _gone(pids)
    out, err = run(kc, "import time\ntime.sleep(1.5)\nprint(refbook.is_initialized())")
    assert out.strip() == "False"                   # nothing started it again
    out, err = run(kc, "%%remote\nq = 1")                   # the magic went with it
    assert "not found" in out + str(err), (out, err)


def test_kernelspec_starts_with_refbook_loaded(tmp_path):
    import subprocess
    import sys

    from jupyter_client.manager import KernelManager
    prefix = tmp_path / "prefix"
    home = tmp_path / "home"
    p = subprocess.run([sys.executable, "-m", "refbook.cli", "kernel", "install", "--user"],
                       capture_output=True, text=True, env=dict(os.environ, HOME=str(home)))
    assert p.returncode == 0, p.stderr
    assert list(home.rglob("kernels/refbook/kernel.json"))
    from refbook.kernel import kernelspec
    dest = kernelspec.install(prefix=str(prefix))
    assert os.path.exists(os.path.join(dest, "kernel.json"))
    km = KernelManager(kernel_name="refbook")
    km.kernel_spec_manager.kernel_dirs.insert(0, os.path.dirname(dest))
    km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1"))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out, err = run(kc, "print(refbook.is_initialized())")
        assert err is None and out.strip() == "True", (out, err)
        out, err = run(kc, "%%remote --wait\ny = 2")
        assert err is None, err
        out, err = run(kc, "print(refbook.is_initialized(), refbook.get(y))")
        assert out.strip() == "True 2", (out, err)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
