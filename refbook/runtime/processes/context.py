"""The core this process works through: the driver's (made by ``init()``) or the
worker's.  A leaf module, so that refs, handles and remote functions reach the core
without importing the modules that build it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_current: Any = None                       # the CoreWorker, or None
_starter: Callable[[], Any] | None = None  # api/functions.py: the first use of the API starts one


def current():
    """This process's core, or None."""
    return _current


def set_current(core) -> None:
    global _current
    _current = core


def set_starter(start: Callable[[], Any]) -> None:
    global _starter
    _starter = start


def running():
    """This process's core; never starts a cluster (the state API only looks)."""
    c = _current
    if c is None:
        from ...exceptions import RefbookError
        raise RefbookError("no refbook cluster is running here: call refbook.init(), or "
                           "run %load_ext refbook in a notebook")
    return c


def core():
    """This process's core, starting a local cluster on first use (as Ray does)."""
    c = _current
    if c is None:
        if _starter is None:
            from ...exceptions import RefbookError
            raise RefbookError("refbook is not initialized: call refbook.init()")
        c = _starter()
    return c
