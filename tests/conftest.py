import os
import shutil
import tempfile
import time

import psutil
import pytest


def refbook_children() -> list[psutil.Process]:
    """Processes started (directly or not) by this test process for refbook."""
    me = psutil.Process()
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "ppid"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "refbook.runtime.processes.node" in cmd and p.pid != me.pid:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU embedded cluster shared by the tests of one module."""
    import refbook
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=256 << 20)
    yield ctx
    refbook.shutdown()


@pytest.fixture
def fresh_cluster():
    """A cluster of its own, for tests that break things."""
    import refbook
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=256 << 20)
    yield ctx
    refbook.shutdown()


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long runs under pressure and faults "
                            "(each under 100 s; deselect with -m 'not soak')")
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    os.environ.setdefault("REFBOOK_QUIET", "1")
    if not hasattr(config, "workerinput"):    # the run's controller: watch for leaks
        run_dir = tempfile.mkdtemp(prefix="refbook-test-run-")
        # every process of the run (xdist workers, kernels, nodes, workers) makes its
        # temporary files in run_dir and carries this marker in its environment
        os.environ["TMPDIR"] = run_dir
        tempfile.tempdir = None
        config._refbook_leak_check = (run_dir, _tmp_entries(), _shm_entries())


def _tmp_entries() -> set:
    """The directories of nodes started as by ``refbook start`` (always in /tmp)."""
    return {n for n in os.listdir("/tmp") if n.startswith(f"refbook-{os.getuid()}-")}


def _shm_entries() -> set:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _leaks(run_dir: str, tmp_before: set, shm_before: set) -> list[str]:
    found = [f"{run_dir}/{n}" for n in os.listdir(run_dir) if n.startswith("refbook")]
    found += [f"/tmp/{n}" for n in _tmp_entries() - tmp_before]
    found += [f"/dev/shm/{n}" for n in _shm_entries() - shm_before]
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            env = p.info["environ"] or {}
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("TMPDIR") == run_dir and p.pid != os.getpid() and \
                "pytest" not in cmd and "execnet" not in cmd and "sys.stdin.readline" not in cmd:
            found.append(f"process {p.pid}: {cmd[:120]}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """Nothing the suite started may outlive it: no process, no directory under /tmp,
    no shared-memory segment."""
    info = getattr(session.config, "_refbook_leak_check", None)
    if info is None:
        return
    run_dir, tmp_before, shm_before = info
    deadline = time.monotonic() + 10
    while (leaks := _leaks(*info)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if leaks:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "the test run left these behind:\n  " + "\n  ".join(leaks)
        if tr is not None:
            tr.write_line(msg, red=True)
        else:
            print(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(run_dir, ignore_errors=True)
