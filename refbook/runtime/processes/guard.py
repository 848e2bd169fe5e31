"""Running a long-lived process's handlers so that an unexpected error is survived.

A node manager serves every process of its node: one bug met while handling one
message, I/O completion or timer must not take the node down (its workers, its store
and every object in it).  :class:`Guard` runs a handler, and logs an error that escapes
it with its traceback the first time, then at most one line per ``every`` seconds per
kind of error, with the number held back, so a fault that repeats on every message
cannot fill the disk.
"""

from __future__ import annotations

import logging
import time


class Guard:
    def __init__(self, log: logging.Logger, every: float = 10.0, clock=time.monotonic):
        self.log = log
        self.every = every
        self.clock = clock
        self._last: dict[tuple, float] = {}     # (what, error type) -> last logged at
        self._held: dict[tuple, int] = {}       # ... -> errors not logged since
        self.errors = 0                          # every error survived, for tests

    def __call__(self, what: str, fn, *args) -> bool:
        """Run ``fn(*args)``; True if it returned, False if it raised (and was logged)."""
        try:
            fn(*args)
            return True
        except Exception as e:  # noqa: BLE001 - the point: log it and go on
            self.errors += 1
            self._report(what, e)
            return False

    def _report(self, what: str, e: Exception) -> None:
        key = (what, type(e).__name__)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 1000:                   # bounded, whatever goes wrong
            self._last.clear()
            self._held.clear()
        more = f" ({held} more like it in the last {self.every:g} s)" if held else ""
        if last is None:
            self.log.exception("error while handling %s; going on%s", what, more)
        else:
            self.log.error("error while handling %s: %s: %s; going on%s", what,
                           type(e).__name__, e, more)
