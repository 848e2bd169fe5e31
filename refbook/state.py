"""The state API (API.md section 3): one source of truth for every view of a cluster."""

from .runtime.api.controls import add_node, kill_node, kill_worker

__all__ = ["add_node", "kill_node", "kill_worker"]
