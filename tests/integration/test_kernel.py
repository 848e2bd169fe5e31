"""The notebook extension, through a real IPython kernel (jupyter_client)."""

import os
import queue
import time

import psutil
import pytest

jupyter_client = pytest.importorskip("jupyter_client")


@pytest.fixture
def kernel():
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code, timeout=60):
    """Execute ``code``; return (stdout text, error or None)."""
    msg_id = kc.execute(code)
    out, err = [], None
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no reply to {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        t = msg["msg_type"]
        if t == "stream":
            out.append(msg["content"]["text"])
        elif t == "error":
            err = msg["content"]
        elif t == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), err


def test_load_ext_and_remote_cells_pass_refs(kernel):
    km, kc = kernel
    out, err = run(kc, "%load_ext refbook")
    assert err is None and "refbook:" in out and "CPU" in out
    out, err = run(kc, "import numpy as np\ndef helper(v):\n    return v * 2\n"
                       "x = refbook.put(np.arange(10))\nk = 3")
    assert err is None
    out, err = run(kc, "%%remote --wait\ny = helper(int(x.sum())) + k\nz = [y, y]")
    assert err is None, err
    out, err = run(kc, "print(type(y).__name__, refbook.get(y), refbook.get(z))")
    assert out.strip() == "ObjectRef 93 [93, 93]", (out, err)
    out, err = run(kc, "%%remote --wait\nw = 1 / 0")
    assert err is not None and "ZeroDivisionError" in err["ename"]
    assert "remote cell" in "\n".join(err["traceback"])
    out, err = run(kc, "%get y\nprint(y)\n%put k\nprint(type(k).__name__)")
    assert err is None and "93" in out and "ObjectRef" in out


def test_killing_the_kernel_leaves_no_refbook_process(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, _ = run(kc, "import psutil, os\n"
                     "print([c.pid for c in psutil.Process(refbook.nodes()[0]['pid'])"
                     ".children(recursive=True)] + [refbook.nodes()[0]['pid']])")
    pids = eval(out.strip())
    assert len(pids) >= 3
    import signal
    km.signal_kernel(signal.SIGKILL)          # SIGKILL: no chance to clean up
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


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
