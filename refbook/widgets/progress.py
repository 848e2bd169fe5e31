"""Progress of a ``get`` or ``wait`` that blocks on many refs, in a notebook: a bar
under the cell (the runtime's ``progress_factory`` while the extension is loaded)."""

from __future__ import annotations

import time


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
