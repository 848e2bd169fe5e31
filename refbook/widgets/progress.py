"""Progress of a ``get`` or ``wait`` that blocks on many refs: a bar in a notebook, a
line on a terminal's stderr elsewhere (nothing when stderr is not a terminal)."""

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


class WidgetProgress:
    def __init__(self, total: int, what: str):
        import ipywidgets
        from IPython.display import display
        self.total, self.what = total, what
        self.since = time.monotonic()
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=total,
                                          layout=ipywidgets.Layout(width="240px"))
        self.label = ipywidgets.Label()
        self.update(0)
        display(ipywidgets.HBox([self.bar, self.label]))

    def update(self, n: int) -> None:
        self.bar.value = n
        self.label.value = (f"{self.what}: {n}/{self.total} ready "
                            f"({time.monotonic() - self.since:.1f} s)")

    def close(self, n: int) -> None:
        self.update(n)
        self.bar.bar_style = "success" if n >= self.total else "warning"


def default_factory():
    """What ``get``/``wait`` use outside a notebook."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return TextProgress if tty else None
