"""The example notebooks (examples/notebooks) run top to bottom in a real kernel
(nbclient), and say what they teach: each test checks the outputs of the cells (found
by their tags) that show the notebook's point, not only that it ran.  Every run leaves
nothing behind: no kernel, no node or worker, no session directory, no /dev/shm segment
(the kernel and everything it starts carry a marker in their environment)."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
import pytest

nbclient = pytest.importorskip("nbclient")
import nbformat  # noqa: E402

from tests.notebooks.nbfiles import NOTEBOOKS, ORDER  # noqa: E402

MARKER = "REFBOOK_NOTEBOOK_TEST"


def outputs(nb) -> dict[str, str]:
    """Each tagged code cell's text output (streams, text/plain, errors), by tag."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                parts.append(o["text"])
            elif o["output_type"] == "error":
                parts.append(f"{o['ename']}: {o['evalue']}")
            elif "data" in o:
                parts.append(o["data"].get("text/plain", ""))
        for tag in cell.metadata.get("tags", []):
            out[tag] = "\n".join(parts)
    return out


def _marked(marker: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            if (p.info["environ"] or {}).get(MARKER) == marker:
                found.append(f"process {p.pid}: {' '.join(p.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _shm() -> set:
    try:
        return {n for n in os.listdir("/dev/shm") if "refbook" in n}
    except FileNotFoundError:
        return set()


def run_notebook(name: str, tmp_path, **params) -> tuple[dict, float]:
    """Execute ``examples/notebooks/<name>.ipynb`` (with ``params`` set after its
    parameters cell, as papermill does) in a kernel of its own; return its outputs by
    tag and the seconds it took.  Fails if anything it started outlives it."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if params:
        at = next(i for i, c in enumerate(nb.cells)
                  if "parameters" in c.metadata.get("tags", []))
        cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(at + 1, cell)
    # the kernel's own temporary directory, short (ipc socket paths are limited to 107
    # bytes): what refbook leaves there is a leak
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nb-"))
    marker = uuid.uuid4().hex
    env = dict(os.environ, REFBOOK_QUIET="1", TMPDIR=str(tmp), **{MARKER: marker})
    shm_before = _shm()
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t = time.monotonic()
    try:
        client.execute(env=env)          # shuts its kernel down, also when a cell fails
    finally:
        took = time.monotonic() - t
        deadline = time.monotonic() + 15
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _marked(marker)
        for p in psutil.process_iter(["environ"]):      # clean up, then fail below
            try:
                if (p.info["environ"] or {}).get(MARKER) == marker:
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    left += [f"/dev/shm/{n}" for n in _shm() - shm_before]
    left += [str(p) for p in tmp.iterdir() if p.name.startswith("refbook")]
    shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"{name} left these behind:\n  " + "\n  ".join(left)
    return outputs(nb), took


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"no {pattern!r} in:\n{text}"
    return float(m.group(1).replace(",", ""))


def test_notebooks_are_committed_without_outputs_and_teach_the_same_way():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ORDER)
    for name in ORDER:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert "You will learn" in nb.cells[0].source, name
        assert all(c.source.strip() for c in nb.cells), f"{name}: an empty cell"
        params = [i for i, c in enumerate(nb.cells)
                  if "parameters" in c.metadata.get("tags", [])]
        assert params and params[0] <= 3, f"{name}: a parameters cell near the top"
        assert "full size" in nb.cells[params[0]].source, name
        last = nb.cells[-1]
        assert last.source.startswith("## Exercises"), name
        assert f"[answers/{name}.md](answers/{name}.md)" in last.source, name
        answers = (NOTEBOOKS / "answers" / f"{name}.md").read_text()
        n = len(re.findall(r"^\d+\. ", last.source, re.M))
        assert n >= 3 and len(re.findall(r"^\d+\. ", answers, re.M)) == n, name


def test_quickstart(tmp_path):
    out, _ = run_notebook("quickstart", tmp_path)
    assert "CPUs" in out["summary"]                            # the summary line
    assert "0.5" in out["mean"]                                # mean of uniform samples
    assert "ObjectRef" in out["ref-display"] and "ready" in out["ref-display"]
    assert "spread computed on a worker" in out["spread-remote"]
    assert all(f"task {i} says hello" in out["chatty"] for i in range(4))
    assert "[0, 1, 4, 9]" in out["chatty"]
    assert "Dashboard" in out["dashboard"]                     # %refbook dashboard
    assert "left" in out["refs"] and "this kernel" in out["refs"]
    # del freed everything, with the dashboard open: views hold ids, never refs
    assert out["freed"].strip().startswith("0 bytes"), out["freed"]


def test_ownership(tmp_path):
    out, _ = run_notebook("ownership", tmp_path)
    owners = out["owners"]
    assert re.search(r"data +is owned by the notebook \(d-", owners), owners
    assert re.search(r"doubled +is owned by the notebook \(d-.*made by double", owners)
    assert re.search(r"inner +is owned by a worker \(w-", owners), owners
    assert "ObjectGraphView" in out["graph"]
    assert re.search(r"while the actor keeps it: \['w-", out["borrowers"]), out["borrowers"]
    assert "after it let go: []" in out["borrowers-after"]
    before = number(r"in use: ([\d.]+) MiB", out["used-before"])
    after = number(r"in use after del: ([\d.]+) MiB", out["used-after"])
    assert before >= 2 * 16 and after < 1, (before, after)    # the memory view dropped
    assert re.search(r"^variable bundle -> object [0-9a-f]{12} -> the part", out["why-alive"],
                     re.M), out["why-alive"]
    assert "paths after del bundle: []" in out["why-after"]
    assert out["owner-died"].startswith("OwnerDiedError: ") and "died" in out["owner-died"]


def test_memory_pressure(tmp_path):
    out, _ = run_notebook("memory-pressure", tmp_path)
    assert number(r"on disk: (\d+) MiB", out["spilled"]) > 0           # it spilled
    assert number(r"in memory: (\d+) MiB", out["spilled"]) <= 64
    assert number(r"restored: (\d+) MiB", out["restored"]) > 0         # and restored
    assert "first values: [0, 1, 2, 3]" in out["restored"]
    assert "16 tasks finished, results right: True" in out["admission"]
    assert "under 64 MiB: True" in out["admission"]
    assert "16 blocks, 128 MiB at once, right: True" in out["in-place"]  # twice the store
    assert number(r"read in place from spill files: (\d+) MiB", out["in-place"]) > 0
    assert out["store-full"].startswith("ObjectStoreFullError: ")
    assert "larger than the whole object store" in out["store-full"]
    assert "computed where the blocks live: 125829120" in out["fixed"]
    assert "after del: 0 MiB in memory, 0 MiB on disk" in out["cleanup"]


def test_recovery(tmp_path):
    out, _ = run_notebook("recovery", tmp_path)
    assert "result: 49" in out["worker-retry"]
    assert number(r"retried (\d+) time", out["worker-retry"]) >= 1
    assert "every part back: True" in out["node-rebuild"]
    assert number(r"saw (\d+) object\(s\) reconstructed", out["node-rebuild"]) >= 1
    assert "ObjectGraphView" in out["graph"]
    # each put_here ran on some node: those on the killed node are lost, clearly
    lines = out["lost-put"].splitlines()
    assert len(lines) == 3 and any("OwnerDiedError" in x for x in lines), lines
    assert "fate sharing" in out["fate-sharing"] and "OwnerDiedError" in out["fate-sharing"]


def test_actors(tmp_path):
    out, _ = run_notebook("actors", tmp_path)
    assert "total: 8 top: [('the', 3), ('and', 2)" in out["counter"]
    assert "total after the tasks: 212" in out["handles"]       # 8 + 4 tasks x 51 calls
    assert re.search(r"Tally +alive +node \w+ pid \d+ restarts 0", out["actors-table"])
    assert "before: 101" in out["restart"] and "after the restart: 101" in out["restart"]
    assert "new process: True" in out["restart"]
    assert "restart events: ['actor_restarted']" in out["restart"]
    assert "scoreboard: [('ada', 5), ('bob', 1)]" in out["named"]


def test_analysis(tmp_path):
    out, _ = run_notebook("analysis", tmp_path)
    assert "8 Parquet files" in out["generate"]
    assert number(r"in the object store: ([\d.]+) MiB", out["load"]) > 5
    dropped = number(r"([\d,]+) broken rows dropped", out["clean"])
    assert 0 < dropped < 0.02 * 400_000
    assert "result shape: (120, 5)" in out["group"]       # 5 boroughs x 24 hours
    assert "sorted: True" in out["sort"]
    assert number(r"quantile 0.50: ([\d.]+)", out["sort"]) < \
        number(r"quantile 0.99: ([\d.]+)", out["sort"])
    assert "VBox" in out["plot"]                           # widgets.plot(fig)
    assert "object store in use: 0.0 MiB" in out["cleanup"]


def test_multi_host(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    try:
        out, _ = run_notebook("multi-host", tmp_path, CLI_HOME=str(home))
    finally:                             # the nodes `refbook start` started, if it failed
        subprocess.run([sys.executable, "-m", "refbook.cli", "stop"], capture_output=True,
                       env=dict(os.environ, HOME=str(home)), timeout=60)
    assert "refbook head started at 127.0.0.1:" in out["start-head"]
    assert "2 live node(s)" in out["start-node"]
    assert "(head; this notebook)" in out["join"] and "'host_b': 2" in out["join"]
    assert "made, stored on:     ['B', 'B', 'B', 'B']" in out["transfer"]
    assert "read, stored on:     ['A+B', 'A+B', 'A+B', 'A+B']" in out["transfer"]
    assert number(r"(\d+) transfers, ", out["transfer"]) >= 4
    assert "put, stored on:      ['A']" in out["transfer-back"]
    assert "checksum computed on B: 1048576" in out["transfer-back"]
    assert "after the task:      ['A+B']" in out["transfer-back"]
    assert "stopped 2 process(es)" in out["stop"]


def test_shuffle(tmp_path):
    out, _ = run_notebook("shuffle", tmp_path)
    assert "200,000 records in 8 blocks, sorted: False" in out["data"]
    lines = [x for x in out["strategies"].splitlines() if x.strip()]
    assert [x.split()[0] for x in lines] == ["simple", "merge", "push"], lines
    for line in lines:
        assert "sorted: True  same records: True" in line, line
    assert "merge_groups" not in lines[0] and "merge_groups" in lines[1] \
        and "merge_groups" in lines[2]
    assert "ObjectGraphView" in out["graph"]
    sizes = eval(out["first-keys"].split("output block sizes: ")[1])
    assert len(sizes) == 4 and sum(sizes) == 200_000
