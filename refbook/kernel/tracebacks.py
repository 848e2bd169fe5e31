"""Tracebacks as IPython users expect them: an error raised inside refbook (a ``get``
that re-raises a task's error, a Ctrl-C while ``get`` waits) shows the user's frames
only, not refbook's (nor pyzmq's, where a wait is interrupted).

Installed as IPython's custom exception handler while the extension is loaded; it cuts
the innermost run of frames that belong to refbook or pyzmq and shows the rest the
usual way.  Frames of the user's own code are never cut, nor is anything an exception
raised outside refbook shows; ``%xmode Verbose`` shows every frame."""

from __future__ import annotations

import os
import types

import refbook

_HIDDEN = [os.path.dirname(os.path.abspath(refbook.__file__)) + os.sep]
try:
    import zmq
    _HIDDEN.append(os.path.dirname(os.path.abspath(zmq.__file__)) + os.sep)
except ImportError:  # pragma: no cover - refbook requires pyzmq
    pass


def _internal(tb) -> bool:
    name = tb.tb_frame.f_code.co_filename
    return name.startswith(tuple(_HIDDEN)) or name.startswith("zmq/")


def trim(tb):
    """``tb`` without its innermost frames that are refbook's or pyzmq's (a new chain;
    the exception's own traceback is left as it is)."""
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    keep = len(frames)
    while keep > 1 and _internal(frames[keep - 1]):
        keep -= 1
    if keep == len(frames):
        return frames[0] if frames else None
    new = None
    for t in reversed(frames[:keep]):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return new


def _handler(shell, etype, value, tb, tb_offset=None):
    if getattr(shell.InteractiveTB, "mode", None) != "Verbose":   # %xmode Verbose: all
        tb = trim(tb)
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)


class Installed:
    """The handler while refbook is loaded; ``remove()`` puts back what was there."""

    def __init__(self, ip):
        self.ip = ip
        self.active = not ip.custom_exceptions      # never replace someone else's
        if self.active:
            ip.set_custom_exc((Exception, KeyboardInterrupt), _handler)

    def remove(self) -> None:
        if self.active and self.ip.custom_exceptions == (Exception, KeyboardInterrupt):
            self.ip.set_custom_exc((), None)
        self.active = False
