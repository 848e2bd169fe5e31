"""The hooks a front end (the notebook extension, the widgets) has into the engine.

A front end works through a :class:`Driver`, which wraps this process's core: it never
touches the core itself.  :func:`driver` returns the running one, or None when refbook
is not running (it never starts a cluster).  Thin delegation, nothing more.  What a
front end *shows* (the state of tasks, objects and nodes) it reads from the state API,
``refbook.state``, not from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..data import serialization as _serialization
from ..processes import callsite as _callsite
from ..processes import context as _context
from ..processes import writing as _writing
from . import functions as _functions


class Driver:
    """This process's core, as a front end sees it.  Two drivers of the same core are
    equal; after ``refbook.shutdown()`` and ``init()`` :func:`driver` is another one."""

    __slots__ = ("_core",)

    def __init__(self, core):
        self._core = core

    def __eq__(self, other) -> bool:
        return isinstance(other, Driver) and other._core is self._core

    def __hash__(self) -> int:
        return id(self._core)

    def __repr__(self) -> str:
        return f"<refbook Driver {self.me}>"

    # -- who ------------------------------------------------------------------------
    @property
    def me(self) -> str:
        """This process's address (the ``owner`` of the objects it owns)."""
        return self._core.me

    def is_current(self) -> bool:
        """Is this still the running cluster's driver (not one shut down since)?"""
        return _context.current() is self._core

    def owns(self, ref) -> bool:
        """Does ``ref`` belong to this cluster?  False for a ref that a cluster shut
        down since made (its value is gone); a ref made outside any cluster counts."""
        core = ref._core
        return core is None or core is self._core

    # -- the notebook's hooks -------------------------------------------------------
    def attach(self, output_sink: Callable[[bytes, str, str], None]) -> None:
        """Send tasks' output to ``output_sink(task_id, stream, text)`` (called in the
        I/O thread) and hold Ctrl-C back while messages are handled.  Idempotent."""
        core = self._core
        if core.output_sink != output_sink:
            core.output_sink = output_sink
            core.defer_sigint = True

    def detach(self) -> None:
        """Undo :meth:`attach` (output goes to this process's stdout and stderr again)
        and forget the running cell."""
        core = self._core
        core.output_sink = None
        core.task_context = None

    def set_cell(self, cell) -> None:
        """Tasks submitted from now on are recorded in ``cell`` (``cell.add(task_id,
        name)``) and remembered for their output; None: no cell runs."""
        self._core.task_context = cell

    def cell_of(self, task_id: bytes):
        """The cell that submitted a task (see :meth:`set_cell`), or None."""
        return self._core.contexts.get(task_id)

    # -- tasks -------------------------------------------------------------------
    def cancel_tasks(self, task_ids: Iterable[bytes]) -> list:
        """Cancel those of ``task_ids`` not finished yet; the names of those cancelled."""
        return self._core.cancel_tasks(task_ids)

    def task_error(self, task_id: bytes) -> BaseException | None:
        """The error a failed task ended with, else None."""
        return self._core.task_error(task_id)


def driver() -> Driver | None:
    """This process's driver, or None when refbook is not running (never starts one)."""
    core = _context.current()
    return Driver(core) if core is not None else None


def is_ref(x) -> bool:
    """Is ``x`` an ObjectRef?  (For views, which may not import the package itself.)"""
    from ..processes.object_ref import ObjectRef
    return isinstance(x, ObjectRef)


def first_unpicklable(named_values) -> tuple | None:
    """``(name, error)`` of the first of ``(name, value)`` pairs whose value cannot be
    pickled (refs always can), or None."""
    return _writing.first_unpicklable(named_values)


def set_filename_display(fn: Callable[[str], str | None] | None) -> None:
    """Name code files in tracebacks, e.g. ``<cell 3>`` for a notebook cell's file;
    ``fn`` returns None to keep a name.  None: names as they are."""
    _serialization.set_filename_display(fn)


def set_names_provider(fn: Callable[[], dict] | None) -> None:
    """Say which notebook variables hold which refs, for the state API (``names`` in
    ``state.objects()``, ``variable`` steps in ``state.why_alive()``): ``fn()`` returns
    ``{object_id_hex: [names]}``.  It is called whenever someone asks, in any thread
    (the I/O thread, with refbook's lock held, when another driver asks): it must be
    quick, must not block and must not call refbook.  None: no names."""
    _callsite.set_names_provider(fn)


def set_call_site_skipped_dirs(dirs) -> None:
    """Frames of code in these directories are not where the user made an object or
    submitted a task (the state API's ``call_site``): the front end's own code, such as
    IPython's magic dispatch.  ``()``: only refbook's own frames are skipped."""
    _callsite.set_skipped_dirs(dirs)


def set_progress_factory(factory: Callable[[int, str], object] | None) -> None:
    """Show the progress of a ``get`` or ``wait`` that blocks on many refs with
    ``factory(total, what)`` (an object with ``update(n)`` and ``close(n)``), e.g. a bar
    under the cell; None: the default."""
    _functions.progress_factory = factory


def joined_cluster() -> bool:
    """Did this process join a cluster that ``refbook start`` runs (rather than start
    one of its own, which it may restart)?"""
    return isinstance(_functions._session, _functions.JoinedSession)
