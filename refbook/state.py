"""The state API (API.md §3): one source of truth for every view of the cluster."""

from .runtime.api.events import Subscription, events, subscribe  # noqa: F401
