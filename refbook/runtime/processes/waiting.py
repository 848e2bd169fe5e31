"""How the threads of a process wait: for a number of values, for Ctrl-C to be safe
to raise, and the per-thread record of refs a running task covers."""

from __future__ import annotations

import copy
import signal
import threading

TICK_MS = 20           # the I/O thread's housekeeping period (releases, idle leases)
LAZY_S = 0.002         # a thread that waited keeps polling the inbox this long after
_tls = threading.local()       # .covered: set of oids covered by the running task


class _Countdown:
    """Sets ``ev`` once ``hit`` has been called ``n`` times (under the core lock)."""

    __slots__ = ("n", "ev")

    def __init__(self, n: int):
        self.n = n
        self.ev = threading.Event()

    def hit(self) -> None:
        self.n -= 1
        if self.n <= 0:
            self.ev.set()


class _DeferSigint:
    """In the main thread (a notebook's get() polls there), a KeyboardInterrupt raised in
    the middle of handling messages would lose them or leave a handler half done.  Ctrl-C
    is held back until the messages read are handled, then raised as usual."""

    __slots__ = ("old", "hit")

    def __enter__(self):
        self.hit = False
        try:
            self.old = signal.signal(signal.SIGINT, self._hit)
        except (ValueError, TypeError):
            self.old = None
        return self

    def _hit(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> bool:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            if self.hit and callable(self.old):
                self.old(signal.SIGINT, None)
        return False


def _fresh(err: BaseException) -> BaseException:
    try:
        return copy.copy(err)
    except Exception:  # noqa: BLE001 - an exotic exception class: raise it as is
        return err
