"""The inbox of a process (part of :class:`~refbook.runtime.processes.core.CoreWorker`): the I/O
thread, and how a thread that waits for an answer polls the inbox itself instead
(``take_poller``/``give_poller``), so that no thread hand-off sits on the reply path."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import zmq

from ... import exceptions as exc
from ..protocol import messages as P
from ..protocol.refcount import Effects
from ..wire.transport import MAX_DRAIN
from .waiting import LAZY_S, TICK_MS, _DeferSigint

log = logging.getLogger("refbook.core")


class IOThread:
    """Mixed into CoreWorker; dispatches to its ``_handlers`` under its ``lock``."""

    def _wait_event(self, ev: threading.Event, timeout: float | None,
                    poll: bool = True) -> bool:
        """Wait for ``ev``, polling the inbox in this thread if nobody else does
        (``poll`` False: never; a background reader leaves the inbox to the threads
        on the task path, which would otherwise queue behind it for the interpreter)."""
        if not poll or threading.current_thread() is self._io or not self.take_poller():
            return ev.wait(timeout)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not ev.is_set() and self.alive and not self.broken:
                wait_ms = TICK_MS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait_ms = max(1, min(TICK_MS, int(left * 1000) + 1))
                self.poll_once(wait_ms)
        finally:
            self.give_poller()
        return ev.is_set()

    # ----------------------------------------------------------- requests
    def call(self, addr: str, make_msg, timeout: float | None = 10.0):
        """Send a request that carries a fresh ``req_id`` and wait for its reply."""
        req = next(self._req_ids)
        slot = [threading.Event(), None]
        self._replies[req] = slot
        self._check_usable()
        self.send(addr, make_msg(req))
        if not self._wait_event(slot[0], timeout):
            self._replies.pop(req, None)
            raise exc.RefbookError(f"no reply from {addr} within {timeout} s")
        self._replies.pop(req, None)
        self._check_usable()
        return slot[1]

    def _check_usable(self) -> None:
        if not self.alive:
            raise exc.RefbookError("refbook was shut down")
        if self.broken:
            raise exc.RefbookError(
                f"the refbook node manager died ({self.broken}). Call refbook.shutdown() "
                f"and refbook.init() to start again.")

    def _on_reply(self, msg):
        slot = self._replies.get(msg[1])
        if slot is not None:
            slot[1] = msg[2] if len(msg) == 3 else msg[2:]
            slot[0].set()

    # ------------------------------------------------------------------ I/O loop
    def _dispatch(self, msg) -> None:
        handler = self._handlers.get(msg[0])
        if handler is None:
            log.warning("unexpected message type %s", P.name_of(msg[0]))
            return
        try:
            handler(msg)
        except Exception:  # noqa: BLE001 - a bad message must not kill the process
            log.exception("error handling a %s message", P.name_of(msg[0]))

    def _io_loop(self) -> None:
        """The I/O thread.  It must never die while the process lives: an unexpected
        error is logged and the loop goes on; if it keeps failing, the core is marked
        broken so that callers get an error instead of waiting forever."""
        poller = self._poller = zmq.Poller()
        poller.register(self.transport.inbox, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        for fd in self._extra_fds:
            poller.register(fd, zmq.POLLIN)
        self._last_tick = time.monotonic()
        failures = 0
        cond = self._pcond
        while not self._stop:
            if self._poll_owner is not None:
                with cond:
                    while self._poll_owner is not None and not self._stop:
                        self._io_parked = True
                        cond.notify_all()
                        cond.wait(LAZY_S)
                        if not self._poll_busy and \
                                time.monotonic() - self._poll_released >= LAZY_S:
                            self._poll_owner = None      # its owner moved on: take it back
                    self._io_parked = False
                continue
            try:
                self._io_step(poller, TICK_MS)
                failures = 0
            except Exception as e:  # noqa: BLE001
                if self._stop:
                    return
                failures += 1
                log.exception("error in the I/O loop")
                if failures >= 100:
                    self.node_died(f"the I/O thread of {self.me} keeps failing: {e!r}")
                    return
                time.sleep(0.001)

    def take_poller(self) -> bool:
        """Become the inbox's poller (False if another thread already is)."""
        cond = self._pcond
        me = threading.get_ident()
        with cond:
            owner = self._poll_owner
            if owner == me or (owner is not None and not self._poll_busy):
                # still ours from the last wait (no hand-off at all), nested, or left
                # idle by another thread
                self._poll_owner = me
                self._poll_depth += 1
                self._poll_busy = True
                return True
            if owner is not None or self._poller is None or self._stop:
                return False
            self._poll_owner = me
            self._poll_depth = 1
            self._poll_busy = True
        try:
            self._wake()                    # get the I/O thread out of its poll
            with cond:
                while not self._io_parked and not self._stop:
                    if not self._io.is_alive():
                        raise exc.RefbookError("the I/O thread is gone")
                    cond.wait(0.05)
        except BaseException:
            with cond:
                self._poll_owner = None
                self._poll_depth = 0
                self._poll_busy = False
                cond.notify_all()
            if isinstance(sys.exc_info()[1], exc.RefbookError):
                return False
            raise
        return not self._stop

    def give_poller(self, now: bool = False) -> None:
        """Done waiting.  The poller stays with this thread for ``LAZY_S`` in case it
        waits again at once (a loop of calls); then the I/O thread takes it back.
        ``now``: give it back at once (before running user code that may be long)."""
        with self._pcond:
            self._poll_depth -= 1
            if self._poll_depth <= 0:
                self._poll_depth = 0
                self._poll_busy = False
                self._poll_released = time.monotonic()
                if now:
                    self._poll_owner = None
                    self._pcond.notify_all()

    def poll_once(self, timeout_ms: int) -> None:
        """Handle what arrives within ``timeout_ms`` (the caller owns the poller)."""
        self._io_step(self._poller, timeout_ms)

    def _io_step(self, poller, timeout_ms: int) -> None:
        if self._releases or self._view_releases:
            timeout_ms = 0     # refs dropped (by the task that just ran): tell owners now
        events = dict(poller.poll(timeout_ms))      # a Ctrl-C may interrupt the wait...
        if self._stop:
            return
        if self.defer_sigint and threading.current_thread() is threading.main_thread():
            with _DeferSigint():                    # ...but not what it read
                self._handle(poller, events)
        else:
            self._handle(poller, events)

    def _handle(self, poller, events: dict) -> None:
        inbox = self.transport.inbox
        msgs = []
        if inbox in events:
            # a bounded turn (the rest waits for the next poll, which returns at once),
            # so that a flood of bad frames cannot pile up here nor hold the lock
            for _ in range(MAX_DRAIN):
                if not inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    break
                m = self.transport.recv(zmq.NOBLOCK)
                if m is not None:
                    msgs.append(m)
        if self._wake_r in events:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        for fd in [fd for fd in self._extra_fds if fd in events]:
            cb = self._extra_fds.pop(fd)    # one-shot: a pidfd stays readable
            poller.unregister(fd)
            cb()
        now = time.monotonic()
        with self.lock:
            fx = Effects()
            self._drain_releases(fx)
            self._apply(fx)
            for m in msgs:
                self._dispatch(m)
            if now - self._last_tick > TICK_MS / 1000:
                self._last_tick = now
                self.transport.tick(now)
                self.tm.now = now
                self._do(self.tm.tick())
                if self._refetch:
                    due = [r for r in self._refetch if r[0] <= now]
                    self._refetch = [r for r in self._refetch if r[0] > now]
                    for _, oid, owner in due:
                        if oid in self.rt and oid not in self.values:
                            self._fetch(oid, owner)
