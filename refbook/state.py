"""The state API (API.md section 3): one source of truth for every view of the
cluster: the widgets, the sidebar, the CLI and the tests read it.  A plain list of
imports; each part lives in the runtime's public API layer."""
# ruff: noqa: F401

from .runtime.api.controls import add_node, kill_node, kill_worker
from .runtime.api.events import Subscription, events, subscribe
from .runtime.api.snapshots import actors, lineage, nodes, objects, tasks, why_alive
