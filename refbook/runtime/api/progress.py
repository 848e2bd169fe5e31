"""Progress of a ``get`` or ``wait`` that blocks on many refs, outside a notebook: a
line on a terminal's stderr (nothing when stderr is not a terminal).  The notebook
extension sets ``functions.progress_factory`` to show a bar instead."""

from __future__ import annotations

import sys
import time

PROGRESS_AFTER = 0.5         # seconds blocked before progress shows


class TextProgress:
    def __init__(self, total: int, what: str, stream=None):
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.since = time.monotonic()
        self.update(0)

    def update(self, n: int) -> None:
        self.stream.write(f"\rrefbook: {self.what} {n}/{self.total} ready")
        self.stream.flush()

    def close(self, n: int) -> None:
        self.stream.write(f"\rrefbook: {self.what} {n}/{self.total} ready in "
                          f"{time.monotonic() - self.since:.1f} s\n")
        self.stream.flush()


def default_factory():
    """What ``get``/``wait`` use outside a notebook."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return TextProgress if tty else None


def wait_with_progress(core, refs: list, num: int, timeout, what: str, factory=None,
                       fail_fast: bool = False) -> set:
    """``core.wait_ready``, showing progress (made by ``factory``, or on a terminal by
    default) once it has blocked for PROGRESS_AFTER seconds.  ``fail_fast``: return as
    soon as one of ``refs`` holds an error."""
    if factory is None:
        factory = default_factory()
    if factory is None:
        return core.wait_ready(refs, num, timeout, fail_fast)
    deadline = None if timeout is None else time.monotonic() + timeout
    first = PROGRESS_AFTER if timeout is None else min(timeout, PROGRESS_AFTER)
    ready = core.wait_ready(refs, num, first, fail_fast)
    if len(ready) >= num or (deadline is not None and time.monotonic() >= deadline) or \
            (fail_fast and core.first_error(refs, ready) is not None):
        return ready
    bar = factory(num, what)
    step = max(1, num // 100)
    try:
        while len(ready) < num:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            ready = core.wait_ready(refs, min(num, len(ready) + step),
                                    0.25 if left is None else min(0.25, left), fail_fast)
            bar.update(min(len(ready), num))
            if fail_fast and core.first_error(refs, ready) is not None:
                break
    finally:
        bar.close(min(len(ready), num))
    return ready
