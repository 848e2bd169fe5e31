"""What a notebook user sees (issue 11, section 2), through a real IPython kernel:
errors of cells that run on their own, live lines that follow a ref until it is freed,
a second %load_ext, restarts with new options, recovery made visible, tracebacks
without refbook's own frames, %%remote --out, and the paper cuts."""

import os
import re
import struct
import subprocess
import sys
import time

from tests.integration.test_kernel import Messages, run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def widget_states(m: Messages) -> dict:
    """model id -> the latest HTML value (or outputs) each widget model was given."""
    last: dict = {}
    for msg in m.all:
        if msg["msg_type"] not in ("comm_open", "comm_msg"):
            continue
        state = msg["content"].get("data", {}).get("state", {})
        cid = msg["content"]["comm_id"]
        for key in ("value", "outputs"):
            if key in state:
                last[cid] = state[key]
    return last


def all_widget_text(m: Messages) -> str:
    parts = []
    for v in widget_states(m).values():
        if isinstance(v, (list, tuple)):          # an Output widget's outputs
            for o in v:
                parts += o.get("traceback", []) + [str(o.get("text", ""))]
        else:
            parts.append(str(v))
    return ANSI.sub("", "\n".join(parts))


def wait_until(m: Messages, pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        m.pump(0.2)
    return pred()


# -- 2: a failed %%remote cell shows the remote traceback ------------------------------------
def test_a_failed_remote_cell_shows_its_traceback_under_it(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    m.run("%%remote\na = 1\nraise ValueError('bad value ' + str(a))")
    m.run("%%remote\nimport time\ntime.sleep(1.5)\nb = 2\nraise KeyError('late ' + str(b))")
    ok = wait_until(m, lambda: "late 2" in all_widget_text(m), 15)
    text = all_widget_text(m)
    assert ok, text
    # the cell's own lines, numbered as in the cell
    assert "<remote cell [2]>\", line 2" in text, text
    assert "raise ValueError('bad value ' + str(a))" in text, text
    assert "ValueError: bad value 1" in text
    # ...also for a cell that failed long after it finished
    assert "<remote cell [3]>\", line 4" in text, text
    assert "KeyError: 'late 2'" in text
    assert "cellrun.py" not in text and "run_cell" not in text


# -- 6: a displayed ref's line says "freed" after del ------------------------------------------
def test_a_displayed_refs_line_says_freed_after_del(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    m.run("import numpy as np\nblock = refbook.put(np.ones(2_000_000))")
    shown = m.run("block")
    model = next(d["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
                 for d in m.of(shown) if d["msg_type"] == "display_data")
    m.pump(1.5)
    assert "ready" in widget_states(m)[model]
    m.run("del block")
    assert wait_until(m, lambda: "freed" in widget_states(m)[model], 5), \
        widget_states(m)[model]


# -- 7: the refbook kernel vs the quickstart ------------------------------------------------
def test_load_ext_twice_shows_the_summary_and_init_with_options_warns(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, err = run(kc, "%load_ext refbook")
    assert err is None and "CPUs" in out and "store" in out, out
    assert "already loaded" not in out
    m = Messages(kc)
    mid = m.run("ctx = refbook.init(object_store_memory=100 * 2**20)")
    warn = "".join(x["content"]["text"] for x in m.of(mid) if x["msg_type"] == "stream")
    assert "object_store_memory" in warn and "Warning" in warn, warn
    assert "%refbook restart --object-store-memory" in warn and "shutdown()" in warn


def test_refbook_restart_with_new_options(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "x = refbook.put(1)")
    old = run(kc, "print(refbook.nodes()[0]['node_id'])")[0].strip()
    out, err = run(kc, "%refbook restart --object-store-memory 100MiB --num-cpus 1")
    assert err is None, err
    assert "100 MiB" in out and "1 CPU" in out, out
    assert "x" in out and "old cluster" in out, out        # names the stale refs
    out, err = run(kc, "n = refbook.nodes()[0]\nprint(n['node_id'], n['store']['capacity'],"
                       " n['resources']['CPU'])")
    node, cap, cpus = out.split()
    assert node != old and int(cap) == 100 * 2**20 and float(cpus) == 1, out
    out, err = run(kc, "%%remote --wait\ny = 40 + 2")
    assert err is None and run(kc, "print(refbook.get(y))")[0].strip() == "42"
    out, err = run(kc, "%refbook restart --object-store-memory lots")
    assert "MiB" in out + str(err), (out, err)


# -- 8: recovery made visible --------------------------------------------------------------
def test_a_cell_whose_worker_died_says_retried_and_labels_each_attempt(kernel, tmp_path):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    pidfile = tmp_path / "pid"
    mid = m.run(f"%%remote\nimport os, time\nprint('started', flush=True)\n"
                f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(2)\n"
                f"print('finished')\nv = 1")
    assert wait_until(m, pidfile.exists, 10)
    time.sleep(0.3)
    os.kill(int(pidfile.read_text()), 9)
    assert wait_until(m, lambda: "finished" in m.text(mid) and
                      "done" in all_widget_text(m), 20), m.text(mid)
    m.pump(0.5)
    text = all_widget_text(m)
    assert "retried after worker died (attempt 2)" in text, text
    out = m.text(mid)
    assert out.count("started") == 2, out
    first, second = out.split("attempt 2", 1)
    assert "started" in first and "started" in second and "finished" in second, out


def test_a_rebuilt_tasks_output_is_marked_as_a_rerun(tmp_path):
    from jupyter_client.manager import KernelManager

    from refbook.testing import Cluster
    c = Cluster()
    km = kc = None
    try:
        n = c.add_node(num_cpus=1, resources={"x": 1})
        c.wait_for_nodes()
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1", REFBOOK_ADDRESS=c.address))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        m = Messages(kc)
        m.run("%load_ext refbook")
        cell = m.run("%%remote --resources x=1\nimport numpy as np\n"
                     "print('making v', flush=True)\nv = np.ones(1_000_000)")
        m.run("assert refbook.wait([v], timeout=30, fetch_local=False)[0]")
        m.pump(0.5)
        assert "making v" in m.text(cell) and "re-run" not in m.text(cell)
        c.add_node(num_cpus=1, resources={"x": 1})   # where the rebuild can run
        c.wait_for_nodes()
        c.remove_node(n)
        mid = m.run("@refbook.remote(resources={'x': 1})\ndef total(a):\n"
                    "    return a.sum()\nprint(refbook.get(total.remote(v), timeout=60))",
                    timeout=90)
        assert "1000000.0" in m.text(mid), m.text(mid)
        m.pump(1)
        out = m.text(cell)
        assert out.count("making v") == 2, out
        assert "re-run" in out.split("making v", 1)[1], out
        assert "making v" not in m.text(mid)
    finally:
        if kc is not None:
            kc.stop_channels()
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=True)
        c.shutdown()


# -- 9: no refbook or zmq frames in tracebacks -------------------------------------------------
def test_interrupts_and_get_errors_show_no_refbook_frames(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.interrupt = km.interrupt_kernel
    m.run("%load_ext refbook")
    m.run("import time\n@refbook.remote\ndef slow():\n    time.sleep(100)\n"
          "@refbook.remote\ndef fail():\n    raise KeyError('k')")
    mid = m.run("r = slow.remote()\nrefbook.get(r)", interrupt_after=1.5)
    err = m.error(mid)
    assert err is not None and err["ename"] == "KeyboardInterrupt"
    tb = ANSI.sub("", "\n".join(err["traceback"]))
    assert "zmq" not in tb and "refbook/runtime" not in tb, tb
    assert "refbook.get(r)" in tb and len(tb.splitlines()) <= 8, tb
    out, err = run(kc, "refbook.get(fail.remote())")
    tb = ANSI.sub("", "\n".join(err["traceback"]))
    assert "reading.py" not in tb and "functions.py" not in tb, tb
    assert "refbook.get(fail.remote())" in tb and "KeyError" in tb
    out, err = run(kc, "%%remote --wait\nq = {}['missing']")
    tb = ANSI.sub("", "\n".join(err["traceback"]))
    assert "magics.py" not in tb and "functions.py" not in tb and "<remote cell" in tb, tb
    out, err = run(kc, "def inner():\n    raise ValueError('mine')\ninner()")
    tb = ANSI.sub("", "\n".join(err["traceback"]))
    assert "inner()" in tb and "raise ValueError('mine')" in tb, tb   # user frames stay


# -- 10: %%remote --out -------------------------------------------------------------------------
def test_remote_out_brings_back_only_the_names_given(kernel):
    km, kc = kernel
    m = Messages(kc)
    m.run("%load_ext refbook")
    m.run("rng = 'the notebook rng'")
    m.run("%%remote --out a,b\nrng = 5\ntmp = rng * 2\na = tmp + 1\nb = a + 1")
    assert wait_until(m, lambda: "done" in all_widget_text(m), 10)
    m.pump(0.5)
    text = all_widget_text(m)
    assert "refs: a, b" in text and "not returned: rng, tmp" in text, text
    out, err = run(kc, "print(rng, refbook.get(a), refbook.get(b), 'tmp' in dir())")
    assert out.strip() == "the notebook rng 11 12 False", (out, err)
    out, err = run(kc, "%%remote --out nope --wait\nz = 1")
    assert "nope" in out + str(err) and "assigns: z" in out + str(err), (out, err)


# -- 11: paper cuts -----------------------------------------------------------------------------
def test_init_prints_to_stdout_with_human_sizes():
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name="python3")
    env = {k: v for k, v in os.environ.items() if k != "REFBOOK_QUIET"}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        m = Messages(kc)
        mid = m.run("import refbook\nrefbook.init(num_cpus=1, object_store_memory=100 * 2**20)"
                    "\nNone")
        streams = [(x["content"]["name"], x["content"]["text"]) for x in m.of(mid)
                   if x["msg_type"] == "stream"]
        assert streams and all(name == "stdout" for name, _ in streams), streams
        assert "100 MiB" in streams[0][1] and "GiB" not in streams[0][1], streams
        run(kc, "refbook.shutdown()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_refs_shows_short_ids_and_readable_owners(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "@refbook.remote\ndef make():\n    return [refbook.put(5)]\n"
            "mine = refbook.put(1)\ninner = refbook.get(make.remote())[0]")
    out, err = run(kc, "%refs")
    assert err is None, err
    assert "ipc://" not in out and "tcp://" not in out, out
    assert not re.search(r"[0-9a-f]{24}", out), out        # no 40-digit ids
    assert max(len(line) for line in out.splitlines()) <= 110, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "this kernel" in rows["mine"], out
    assert re.search(r"worker \d+ on node [0-9a-f]{4}", rows["inner"]), out
    out, err = run(kc, "%refs -l")                          # the full ids on request
    assert re.search(r"[0-9a-f]{40}", out), out


def test_refs_says_where_each_object_was_made_and_what_holds_it(kernel):
    """%refs reads state.objects(): the function and cell that made each object, and
    what keeps it besides its variable: a containing object, a borrower, lineage."""
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "@refbook.remote\ndef make():\n    return [refbook.put(5)]\n"
            "@refbook.remote\ndef twice(v):\n    return v * 2")
    run(kc, "mine = refbook.put(1)\nbox = refbook.put([mine])\n"
            "inner = refbook.get(make.remote())[0]\ny = twice.remote(mine)")
    out, err = run(kc, "%refs")
    assert err is None, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "state", "size", "node", "owner", "made", "by",
                                "held", "by", "id"], out
    rows: dict = {}                  # a row, with the lines below it of more holders
    last = ""
    for line in lines[1:]:
        if line.startswith(" "):
            rows[last] += "\n" + line
        else:
            last = line.split()[0]
            rows[last] = line
    assert "put (<cell 3>:1)" in rows["mine"] and "inside box" in rows["mine"], out
    assert "twice (<cell 3>:4)" in rows["y"], out
    assert "borrowed by this kernel" in rows["inner"], out
    assert "kept to rebuild y (lineage)" in rows["mine"], out
    assert max(len(line) for line in lines) <= 110, out
    out, err = run(kc, "inner")          # a borrowed ref's line asks its owner: ready
    assert "ready" in out and "pending" not in out and "made by put" in out, out


def test_kernelspec_has_logos(tmp_path):
    from refbook.kernel import kernelspec
    dest = kernelspec.install(prefix=str(tmp_path))
    for size in (32, 64):
        data = open(os.path.join(dest, f"logo-{size}x{size}.png"), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (size, size)


def test_the_refbook_kernel_runs_the_quickstarts_first_cell(tmp_path):
    """The "Python 3 (refbook)" kernel loads refbook when it starts; the quickstart's
    %load_ext refbook then shows the summary, not "already loaded"."""
    from jupyter_client.manager import KernelManager

    from refbook.kernel import kernelspec
    dest = kernelspec.install(prefix=str(tmp_path))
    km = KernelManager(kernel_name="refbook")
    km.kernel_spec_manager.kernel_dirs.insert(0, os.path.dirname(dest))
    km.start_kernel(env=dict(os.environ, REFBOOK_QUIET="1"))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out, err = run(kc, "%load_ext refbook")
        assert err is None and "CPUs" in out and "already loaded" not in out, out
        out, err = run(kc, "%load_ext refbook")
        assert err is None and "CPUs" in out, out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _help(*args) -> str:
    p = subprocess.run([sys.executable, "-m", "refbook.cli", *args, "--help"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_command_line_help_is_clean():
    bench = _help("bench")
    assert "``" not in bench and "compare.py" not in bench and "backend" not in bench, bench
    start = _help("start")
    opts = re.findall(r"^  (--[a-z-]+)(.*)$", start, re.M)
    assert len(opts) >= 7
    for name, _rest in opts:                     # every option says what it is
        tail = start.split(name, 1)[1].split("\n  --", 1)[0]
        assert len(tail.split()) >= 3, (name, start)
    assert "MiB" in start and "GB" in start, start      # units of --object-store-memory


def test_demo_serves_a_working_copy_of_the_examples(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    work = tmp_path / "work"
    p = subprocess.run(["bash", os.path.join(root, "scripts", "demo"), "--print-command"],
                       capture_output=True, text=True,
                       env=dict(os.environ, REFBOOK_DEMO_DIR=str(work)), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "examples/notebooks" not in p.stdout and str(work) in p.stdout, p.stdout
    examples = sorted(os.listdir(os.path.join(root, "examples", "notebooks")))
    assert sorted(x for x in os.listdir(work) if x.endswith(".ipynb")) == \
        [x for x in examples if x.endswith(".ipynb")]
    assert sorted(os.listdir(work / "answers")) == \
        sorted(os.listdir(os.path.join(root, "examples", "notebooks", "answers")))
    for path in ("notebooks/x.ipynb", "examples/notebooks/.ipynb_checkpoints/a.ipynb"):
        ignored = subprocess.run(["git", "-C", root, "check-ignore", "-q", path])
        assert ignored.returncode == 0, path
