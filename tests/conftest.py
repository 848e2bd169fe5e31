import os

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
        if "refbook.runtime.node" in cmd and p.pid != me.pid:
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
