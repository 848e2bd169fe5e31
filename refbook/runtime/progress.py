"""Progress of a ``get`` or ``wait`` that blocks on many refs, outside a notebook: a
line on a terminal's stderr (nothing when stderr is not a terminal).  The notebook
extension sets ``api.progress_factory`` to show a bar instead."""

from __future__ import annotations

import sys
import time


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
