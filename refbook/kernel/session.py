"""The kernel's side of a notebook session.

Every cell execution gets a :class:`Cell`: the core records in it each task the cell
submits (``core.task_context``), from ``%%remote`` or from ``f.remote()`` anywhere in
the cell.  With that record:

- a task's output goes under the cell that submitted it, as stream messages whose
  parent is that cell's execute request, while the cell runs and after it finished
  (an ``Output`` widget under the cell captures what arrives late);
- a live line under the cell shows its tasks' state;
- an interrupt while the cell waits cancels the tasks it submitted;
- IPython's output history (``Out``, ``_``, ``_N``) is scrubbed of refs after each cell,
  so ``del x`` frees ``x``'s object even after it was displayed.
"""

from __future__ import annotations

import sys
import time

import refbook

from ..runtime import api
from ..runtime import core as core_mod


class Cell:
    """The tasks one cell execution submitted: ``tasks`` maps task id to name."""

    __slots__ = ("count", "parent", "tasks", "line", "out", "started")

    def __init__(self, count: int, parent: dict | None):
        self.started = time.monotonic()
        self.count = count
        self.parent = parent
        self.tasks: dict[bytes, str] = {}
        self.line = None
        self.out = None

    def add(self, task_id: bytes, name: str) -> None:
        self.tasks[task_id] = name


def _widgets_ok(ip) -> bool:
    if getattr(ip, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class NotebookSession:
    def __init__(self, ip):
        self.ip = ip
        self.kernel = getattr(ip, "kernel", None)
        self.core = core_mod.current()
        self.cell: Cell | None = None
        # IPython 9 counts the running cell before running it, older ones after
        import IPython
        self._count_offset = 1 if IPython.version_info[0] >= 9 else 0
        self.widgets = _widgets_ok(ip)
        self.refresher = None
        if self.widgets:
            from ..widgets.live import Refresher
            from ..widgets.progress import WidgetProgress
            self.refresher = Refresher()
            api.progress_factory = WidgetProgress
        self.core.output_sink = self.on_output
        ip.events.register("pre_run_cell", self.pre_run_cell)
        ip.events.register("post_run_cell", self.post_run_cell)
        if self.widgets:
            fmt = ip.display_formatter.ipython_display_formatter
            fmt.for_type(refbook.ObjectRef, self.display_ref)

    def close(self) -> None:
        for name, fn in (("pre_run_cell", self.pre_run_cell),
                         ("post_run_cell", self.post_run_cell)):
            try:
                self.ip.events.unregister(name, fn)
            except ValueError:
                pass
        if self.widgets:
            self.ip.display_formatter.ipython_display_formatter.pop(refbook.ObjectRef, None)
            api.progress_factory = None
        if self.refresher is not None:
            self.refresher.stop()
        self.core.output_sink = None
        self.core.task_context = None

    # -- cells -------------------------------------------------------------------------
    def pre_run_cell(self, info=None) -> None:
        parent = None
        if self.kernel is not None:
            try:
                parent = self.kernel.get_parent("shell")
            except (AttributeError, TypeError):
                parent = getattr(self.ip, "parent_header", None)
        self.cell = Cell(self.prompt_number(), parent)
        self.core.task_context = self.cell

    def prompt_number(self) -> int:
        """The number in the running cell's prompt, ``[N]``."""
        return self.ip.execution_count - self._count_offset

    def post_run_cell(self, result=None) -> None:
        cell, self.cell = self.cell, None
        n = getattr(result, "execution_count", None)
        if cell is not None and n is not None:      # learn how this IPython counts
            self._count_offset += cell.count - n
        self.core.task_context = None
        forget_refs_in_history(self.ip, result)
        if cell is None or not cell.tasks:
            return
        err = getattr(result, "error_in_exec", None)
        if isinstance(err, KeyboardInterrupt):
            names = self.core.cancel_tasks(list(cell.tasks))
            if names:
                shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                print(f"refbook: interrupted; cancelled {len(names)} task(s) this cell "
                      f"submitted: {shown}", file=sys.stderr)
        if not self.widgets:
            return
        unfinished = any(self.core.task_state(t) is not None for t in cell.tasks)
        if cell.line is None and unfinished:
            self.show_line(cell)
        if cell.out is not None and cell.parent is not None and unfinished:
            # from now on the frontend puts this cell's late messages in the widget
            cell.out.msg_id = cell.parent["header"]["msg_id"]

    def show_line(self, cell: Cell, outputs=()) -> None:
        """A live status line under the cell, with an output area below it for what
        its tasks print after the cell finished."""
        import ipywidgets

        from ..widgets.live import CellLine, plain, show
        line = CellLine(self.core, cell, outputs)
        cell.line = line
        cell.out = ipywidgets.Output()
        line.refresh()
        show(ipywidgets.VBox([line.widget, cell.out]), plain(line.last or ""))
        self.refresher.add(line)

    # -- output from tasks ----------------------------------------------------------
    def on_output(self, task_id: bytes, stream: str, text: str) -> None:
        """In the I/O thread: text a task printed goes under the cell that submitted it."""
        cell = self.core.contexts.get(task_id)
        parent = cell.parent if cell is not None else None
        if parent is None or self.kernel is None:
            (sys.stderr if stream == "err" else sys.stdout).write(text)
            return
        name = "stderr" if stream == "err" else "stdout"
        k = self.kernel
        k.session.send(k.iopub_socket, "stream", {"name": name, "text": text},
                       parent=parent, ident=f"stream.{name}".encode())

    # -- rich display of refs -----------------------------------------------------------
    def display_ref(self, ref) -> bool:
        from ..widgets.live import RefLine
        line = RefLine(self.core, ref._id)
        line.refresh()
        line.show()
        self.refresher.add(line)
        return True


def forget_refs_in_history(ip, result=None) -> None:
    """IPython keeps every displayed value in ``Out`` and ``_``/``__``/``___``/``_N``:
    refs there would keep their objects alive after ``del x``.  Keep the history, drop
    the refs from it (their display already showed what they were)."""
    if ip is None:
        return
    for r in (result, getattr(ip, "last_execution_result", None)):
        if isinstance(getattr(r, "result", None), refbook.ObjectRef):
            r.result = None          # IPython keeps the last cell's value here too
    out = ip.user_ns.get("Out", {})
    for k in [k for k, v in out.items() if isinstance(v, refbook.ObjectRef)]:
        out[k] = f"<ObjectRef {out[k].hex()}, not kept in the history>"
    # the displayhook pushes _, __, ___ and _N into the namespace *and* into
    # user_ns_hidden (to keep them out of %who), which holds them as well
    for ns in (ip.user_ns, getattr(ip, "user_ns_hidden", {})):
        for name in [n for n in ns if n in ("_", "__", "___") or
                     (n.startswith("_") and n[1:].isdigit())]:      # _, __, ___, _12 ...
            if isinstance(ns.get(name), refbook.ObjectRef):
                ns[name] = None
    dh = getattr(ip, "displayhook", None)
    for name in ("_", "__", "___"):
        if dh is not None and isinstance(getattr(dh, name, None), refbook.ObjectRef):
            setattr(dh, name, None)
