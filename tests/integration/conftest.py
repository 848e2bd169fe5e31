import os

import pytest


@pytest.fixture
def kernel():
    """``(km, kc)``: a real IPython kernel (jupyter_client), shut down afterwards."""
    pytest.importorskip("jupyter_client")
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
        if km.has_kernel:
            km.shutdown_kernel(now=True)
