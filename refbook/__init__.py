"""refbook: pass-by-reference RPC for Python, built into the Jupyter kernel.

``import refbook as ray`` works for the common subset of Ray's core API.
"""

from . import exceptions
from .runtime.api.actor import ActorHandle, method
from .runtime.api.functions import (
    actors,
    available_resources,
    cancel,
    cluster_resources,
    events,
    get,
    get_actor,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    release_lineage,
    shutdown,
    wait,
)
from .runtime.api.remote_function import remote
from .runtime.api.snapshots import objects  # as state.objects(): one table
from .runtime.processes.object_ref import ObjectRef

__version__ = "0.1.0"


def load_ipython_extension(ip):
    """``%load_ext refbook``"""
    from .kernel import load_ipython_extension as load
    load(ip)


def unload_ipython_extension(ip):
    """``%unload_ext refbook``: shuts the cluster down."""
    from .kernel import unload_ipython_extension as unload
    unload(ip)

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "put", "get", "wait", "cancel",
    "ObjectRef", "nodes", "objects", "events", "cluster_resources", "available_resources",
    "exceptions", "__version__", "method", "get_actor", "kill", "actors", "ActorHandle",
    "release_lineage",
]
