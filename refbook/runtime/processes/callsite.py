"""Where user code made an object or submitted a task, for the state API's
``call_site``: recorded by default at ``put()`` and ``submit()``, so it must cost next
to nothing.  :func:`here` walks up the stack to the first frame outside the refbook
package and keeps ``(made_by, filename, line)`` (a tuple: no string is built); the
text (``"<cell 3>, line 2"`` in a notebook, ``"file.py:12"`` elsewhere) is made only
when someone asks (:class:`Formatter`).

Also the names provider: the notebook says which of its variables hold which refs
(:func:`set_names_provider`), for the state API's ``names`` and ``why_alive``."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable

from ..data.serialization import display_filename

log = logging.getLogger("refbook.state")

# the refbook package's directory, as this process's code objects name its files
_PKG = os.path.dirname(os.path.dirname(os.path.dirname(__file__))) + os.sep
# REFBOOK_CALL_SITES=0: record none (call_site is then None everywhere)
_ENABLED = os.environ.get("REFBOOK_CALL_SITES", "1") != "0"
# directories whose frames are not the user's either (the notebook's: IPython's, so that
# a %%remote cell's task is made at its cell, not in IPython's magic dispatch)
_skip: tuple[str, ...] = (_PKG,)


def set_skipped_dirs(dirs) -> None:
    """Frames of code under ``dirs`` (besides refbook's own) are never a call site."""
    global _skip
    _skip = (_PKG, *(os.path.join(d, "") for d in dirs))


def here(made_by: str, depth: int = 3) -> tuple | None:
    """``(made_by, filename, line)`` of the innermost caller outside refbook, or None
    (called from refbook itself: a value it stores for its own use).

    Each public entry point reaches this through two refbook frames (``refbook.put``
    then ``CoreWorker.put``; ``f.remote`` then ``CoreWorker.submit``; an actor
    method's ``remote`` then ``ActorRuntime.submit_call``), so the user's frame is
    ``depth`` up: only that frame is materialized (about 0.3 us), and the stack is
    walked further only if it is still refbook's."""
    if not _ENABLED:
        return None
    try:
        f = sys._getframe(depth)
    except ValueError:                   # a shallower stack: walk it from the top
        f = sys._getframe(1)
    skip = _skip
    while f is not None:
        code = f.f_code
        if not code.co_filename.startswith(skip):
            return (made_by, code.co_filename, f.f_lineno)
        f = f.f_back
    return None


class Formatter:
    """Formats call sites, each distinct file and line once (one per answer: the
    notebook may name its cells' files differently later)."""

    __slots__ = ("_cache",)

    def __init__(self):
        self._cache: dict = {}

    def __call__(self, site: tuple | None) -> str | None:
        if site is None:
            return None
        key = (site[1], site[2])
        s = self._cache.get(key)
        if s is None:
            s = self._cache[key] = format_site(site[1], site[2])
        return s


def format_site(filename: str, line: int) -> str:
    shown = display_filename(filename)
    if shown.startswith("<cell "):
        return f"{shown}, line {line}"
    return f"{os.path.basename(shown)}:{line}"


# --------------------------------------------------------------------- variable names
_names_provider: Callable[[], dict] | None = None


def set_names_provider(fn: Callable[[], dict] | None) -> None:
    """``fn()`` returns ``{object_id_hex: [variable names]}``: the notebook's variables
    that hold each ref.  Called when the state API asks (``objects()``,
    ``why_alive()``), in any of this process's threads (the I/O thread when another
    driver asks, with refbook's lock held): it must be quick, must not block and must
    not call refbook.  None: no names."""
    global _names_provider
    _names_provider = fn


def names() -> dict:
    """What the names provider says now (``{}`` if none, or if it fails)."""
    fn = _names_provider
    if fn is None:
        return {}
    try:
        got = fn()
    except Exception:  # noqa: BLE001 - a broken provider must not break the state API
        log.exception("the names provider failed")
        return {}
    return got if isinstance(got, dict) else {}


@contextlib.contextmanager
def no_gc():
    """No garbage collection while a large answer is built: each of its many new lists
    and dicts would otherwise count towards full collections, which walk every object
    of the process (100,000 objects listed: several such walks).  At the end the new
    objects are moved to the oldest generation as they are (``freeze`` then
    ``unfreeze``), so that the next allocation does not start a young collection that
    walks all of them once more; they are collected with the oldest, if ever."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
