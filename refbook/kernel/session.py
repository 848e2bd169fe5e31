"""The kernel's side of a notebook session.

Every cell execution gets a :class:`Cell`: the core records in it each task the cell
submits (``Driver.set_cell``), from ``%%remote`` or from ``f.remote()`` anywhere in
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

import os
import sys
import time

import refbook

from .. import state
from ..runtime.api import frontend

NAMES_TTL = 1.0      # variable_names() between cells: kept at most this long (seconds)


class Cell:
    """The tasks one cell execution submitted: ``tasks`` maps task id to name."""

    __slots__ = ("count", "parent", "tasks", "line", "out", "started", "labels")

    def __init__(self, count: int, parent: dict | None):
        self.started = time.monotonic()
        self.count = count
        self.parent = parent
        self.tasks: dict[bytes, str] = {}
        self.line = None
        self.out = None
        self.labels: dict[bytes, tuple] = {}   # task id -> (attempt, rebuilds) last shown

    def add(self, task_id: bytes, name: str) -> None:
        self.tasks[task_id] = name


def _sidebar_ok() -> bool:
    try:
        import comm  # noqa: F401  (ipykernel's comms)
    except ImportError:
        return False
    return True


def _widgets_ok(ip) -> bool:
    """Widgets need a kernel (a frontend to show them) and ipywidgets 8."""
    if getattr(ip, "kernel", None) is None:
        return False
    try:
        import ipywidgets
    except ImportError:
        return False
    return int(ipywidgets.__version__.split(".")[0]) >= 8


class NotebookSession:
    def __init__(self, ip):
        self.ip = ip
        self.kernel = getattr(ip, "kernel", None)
        self.cell: Cell | None = None
        self._names: tuple | None = None      # (when, variable_names()) between cells
        # IPython 9 counts the running cell before running it, older ones after
        import IPython
        self._count_offset = 1 if IPython.version_info[0] >= 9 else 0
        self.widgets = _widgets_ok(ip)
        self.refresher = None
        self.tracebacks = None
        if self.widgets:
            from ..widgets.live import Refresher
            from ..widgets.progress import WidgetProgress
            self.refresher = Refresher()
            frontend.set_progress_factory(WidgetProgress)
        self._attach()
        frontend.set_names_provider(self.variable_names)
        # a %%remote cell's task is made at its cell, not in IPython's magic dispatch
        frontend.set_call_site_skipped_dirs([os.path.dirname(IPython.__file__)])
        self.sidebar = self.kernel is not None and _sidebar_ok()
        if self.sidebar:                    # the JupyterLab sidebar's comm (sidebar.py)
            from . import sidebar
            sidebar.register(self)
        ip.events.register("pre_run_cell", self.pre_run_cell)
        ip.events.register("post_run_cell", self.post_run_cell)
        if self.widgets:
            fmt = ip.display_formatter.ipython_display_formatter
            fmt.for_type(refbook.ObjectRef, self.display_ref)

    @property
    def driver(self) -> frontend.Driver | None:
        """The running driver: after refbook.shutdown() and init() it is another one."""
        return frontend.driver()

    def _attach(self) -> frontend.Driver | None:
        drv = frontend.driver()
        if drv is not None:
            drv.attach(self.on_output)
        return drv

    def attach_new_core(self) -> None:
        """After ``%refbook restart``: tasks of the running cell go to the new core."""
        drv = self._attach()
        if drv is not None:
            drv.set_cell(self.cell)

    def close(self) -> None:
        for name, fn in (("pre_run_cell", self.pre_run_cell),
                         ("post_run_cell", self.post_run_cell)):
            try:
                self.ip.events.unregister(name, fn)
            except ValueError:
                pass
        if self.widgets:
            self.ip.display_formatter.ipython_display_formatter.pop(refbook.ObjectRef, None)
            frontend.set_progress_factory(None)
        if self.refresher is not None:
            self.refresher.stop()
        frontend.set_names_provider(None)
        frontend.set_call_site_skipped_dirs(())
        if self.sidebar:
            from . import sidebar
            sidebar.unregister()
        drv = self.driver
        if drv is not None:
            drv.detach()

    def variable_names(self) -> dict:
        """``{object_id_hex: [names]}``: the notebook's variables that hold a ref, for
        the state API (``names``, ``why_alive``).  Any thread; quick; never blocks.
        The live lines ask several times a second: between cells (when only a thread
        or a widget's callback can change the namespace) an answer is kept for up to
        ``NAMES_TTL`` seconds; while a cell runs it is made anew each time."""
        kept = self._names
        if kept is not None and self.cell is None and \
                time.monotonic() - kept[0] < NAMES_TTL:
            return dict(kept[1])
        out: dict[str, list] = {}
        ref = refbook.ObjectRef
        for name, v in list(self.ip.user_ns.items()):
            if type(v) is ref and name[:1] != "_":        # the cheap test first
                out.setdefault(v.hex(), []).append(name)
        self._names = (time.monotonic(), out) if self.cell is None else None
        return dict(out)

    # -- cells -------------------------------------------------------------------------
    def pre_run_cell(self, info=None) -> None:
        parent = None
        if self.kernel is not None:
            try:
                parent = self.kernel.get_parent("shell")
            except (AttributeError, TypeError):
                parent = getattr(self.ip, "parent_header", None)
        self.cell = Cell(self.prompt_number(), parent)
        self._names = None
        drv = self._attach()
        if drv is not None:
            drv.set_cell(self.cell)

    def prompt_number(self) -> int:
        """The number in the running cell's prompt, ``[N]``."""
        return self.ip.execution_count - self._count_offset

    def post_run_cell(self, result=None) -> None:
        cell, self.cell = self.cell, None
        self._names = None
        n = getattr(result, "execution_count", None)
        if cell is not None and n is not None:      # learn how this IPython counts
            self._count_offset += cell.count - n
        drv = self.driver
        if drv is not None:
            drv.set_cell(None)
        forget_refs_in_history(self.ip, result)
        if cell is None or not cell.tasks or drv is None:
            return
        tasks = list(cell.tasks)
        err = getattr(result, "error_in_exec", None)
        if isinstance(err, KeyboardInterrupt):
            names = drv.cancel_tasks(tasks)
            if names:
                shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                print(f"refbook: interrupted; cancelled {len(names)} task(s) this cell "
                      f"submitted: {shown}", file=sys.stderr)
        if not self.widgets:
            return
        unfinished = any(t["state"] not in ("done", "failed", "cancelled")
                         for t in state.tasks(ids=tasks))
        if cell.line is None and unfinished:
            self.show_line(cell)
        if cell.out is not None and cell.parent is not None and unfinished:
            # from now on the frontend puts this cell's late messages in the widget
            cell.out.msg_id = cell.parent["header"]["msg_id"]

    def show_line(self, cell: Cell, outputs=(), kept=(), remote: bool = False):
        """A live status line under the cell, with an output area below it for what
        its tasks print after the cell finished.  ``outputs``: the names that became
        refs (``kept``: those the cell assigns that stay on the worker).  ``remote``: a
        ``%%remote`` cell, shown before its task is submitted (so that everything the
        task prints lands below the line) and whose error is shown here; set
        ``line.remote_task`` once it is submitted, or call ``line.abandon()``."""
        import ipywidgets

        from ..widgets.live import CellLine, plain, show
        out = ipywidgets.Output()

        def on_failed(tid, name):
            if tid == line.remote_task:
                from .errors import error_output
                drv = self.driver
                err = drv.task_error(tid) if drv is not None else None
                if err is not None:
                    out.outputs = (*out.outputs, error_output(name, err))
        line = CellLine(self.driver, cell, outputs, kept, on_failed if remote else None)
        line.expecting = remote
        cell.line = line
        cell.out = out
        line.refresh()
        show(ipywidgets.VBox([line.widget, cell.out]), plain(line.last or ""))
        if remote and cell.parent is not None:
            # the cell itself prints nothing more: from now on (not before, or the
            # widget would capture its own display) its task's output goes below the line
            out.msg_id = cell.parent["header"]["msg_id"]
        self.refresher.add(line)
        return line

    # -- output from tasks ----------------------------------------------------------
    def on_output(self, task_id: bytes, stream: str, text: str) -> None:
        """In the I/O thread: text a task printed goes under the cell that submitted it."""
        drv = self.driver
        cell = drv.cell_of(task_id) if drv is not None else None
        parent = cell.parent if cell is not None else None
        if parent is None or self.kernel is None:
            (sys.stderr if stream == "err" else sys.stdout).write(text)
            return
        name = "stderr" if stream == "err" else "stdout"
        k = self.kernel
        header = _attempt_header(cell, task_id)
        if header:
            k.session.send(k.iopub_socket, "stream", {"name": "stdout", "text": header},
                           parent=parent, ident=b"stream.stdout")
        k.session.send(k.iopub_socket, "stream", {"name": name, "text": text},
                       parent=parent, ident=f"stream.{name}".encode())

    # -- rich display of refs -----------------------------------------------------------
    def display_ref(self, ref) -> bool:
        from ..widgets.live import RefLine
        drv = self.driver
        if drv is None:
            return False             # refbook is shut down: the plain repr will do
        line = RefLine(drv, ref._id)
        line.refresh()
        line.show()
        self.refresher.add(line)
        return True


def _attempt_header(cell: Cell, task_id: bytes) -> str | None:
    """A line before the first output of a retried or rebuilt task's new run."""
    rows = state.tasks(ids=[task_id])       # this driver's own task: no message sent
    info = rows[0] if rows else None
    if info is None or info["attempt"] is None:
        return None
    key = (info["attempt"], info["rebuilds"])
    last = cell.labels.get(task_id)
    cell.labels[task_id] = key
    if key == last or key == (1, 0):
        return None
    name = cell.tasks.get(task_id, "task")
    if info["rebuilds"] and key[1] != (last or (0, 0))[1]:
        return (f"\u2500\u2500 {name}: re-run to rebuild its lost result "
                f"(rebuild {info['rebuilds']}) \u2500\u2500\n")
    why = info["retried_because"] or "an error"
    return (f"\u2500\u2500 {name}: attempt {info['attempt']} (retried after {why}) "
            f"\u2500\u2500\n")


def holds_refs(v) -> bool:
    """A ref, or a container with a ref in it (what a cell's last line often shows)."""
    if isinstance(v, refbook.ObjectRef):
        return True
    try:
        if isinstance(v, (list, tuple, set, frozenset)):
            return any(isinstance(x, refbook.ObjectRef) for x in v)
        if isinstance(v, dict):
            return any(isinstance(x, refbook.ObjectRef) for x in (*v.keys(), *v.values()))
    except Exception:  # noqa: BLE001 - an odd container: leave it alone
        return False
    return False


def forget_refs_in_history(ip, result=None) -> None:
    """IPython keeps every displayed value in ``Out``, ``_``/``__``/``___`` and ``_N``:
    refs there (alone or in a list, tuple, set or dict) would keep their objects alive
    after ``del x``.  Keep the history, drop such values from it (their display already
    showed them).  A ``_`` the user assigned is left alone."""
    if ip is None:
        return
    for r in (result, getattr(ip, "last_execution_result", None)):
        if holds_refs(getattr(r, "result", None)):
            r.result = None          # IPython keeps the last cell's value here too
    out = ip.user_ns.get("Out", {})
    for k in [k for k, v in out.items() if holds_refs(v)]:
        out[k] = "<a value holding refs, not kept in the history>"
    dh = getattr(ip, "displayhook", None)
    shown = {name: getattr(dh, name, None) for name in ("_", "__", "___")}
    # the displayhook pushes _, __, ___ and _N into the namespace *and* into
    # user_ns_hidden (to keep them out of %who), which holds them as well
    for ns in (ip.user_ns, getattr(ip, "user_ns_hidden", {})):
        for name in [n for n in ns if n.startswith("_") and n[1:].isdigit()]:
            if holds_refs(ns.get(name)):
                ns[name] = None
        for name, value in shown.items():
            if value is not None and ns.get(name) is value and holds_refs(value):
                ns[name] = None
    for name, value in shown.items():
        if holds_refs(value):
            setattr(dh, name, None)
