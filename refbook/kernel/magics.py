"""``%%remote`` and friends: notebook cells as tasks, notebook variables as refs."""

from __future__ import annotations

import types

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

import refbook

from .cellrun import run_cell
from .cells import analyze
from .restart import restart


@magics_class
class RefbookMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self._remote = refbook.remote(run_cell)

    @magic_arguments()
    @argument("--wait", action="store_true", help="return only when the cell has run")
    @argument("--cpus", type=float, default=1, help="CPUs the cell needs")
    @argument("--resources", default="", help="k=v,... custom resources")
    @argument("--retries", type=int, default=3, help="times to retry if the worker dies")
    @argument("--name", default=None, help="a name for the task")
    @argument("--out", default=None, metavar="A,B",
              help="only these names come back as refs (default: every name it assigns)")
    @cell_magic
    def remote(self, line, cell):
        """Run the cell as a task.  Notebook values it reads are shipped (refs by
        reference: they arrive as values); every name it assigns (or only those of
        --out) comes back as an ObjectRef owned by this kernel."""
        args = parse_argstring(self.remote, line)
        resources = {}
        for kv in filter(None, (p.strip() for p in args.resources.split(","))):
            k, _, v = kv.partition("=")
            try:
                resources[k.strip()] = float(v)
            except ValueError:
                raise ValueError(f"--resources takes k=v pairs with numbers, not {kv!r}") from None
        reads, assigned = analyze(cell)
        writes, kept = assigned, []
        if args.out is not None:
            writes = [n.strip() for n in args.out.split(",") if n.strip()]
            missing = [n for n in writes if n not in assigned]
            if missing:
                raise UsageError(f"--out names {', '.join(missing)}, which the cell does "
                                 f"not assign (it assigns: {', '.join(assigned) or 'nothing'})")
            kept = [n for n in assigned if n not in writes]
        ns = self.shell.user_ns
        names = [n for n in reads if n in ns and not isinstance(ns[n], types.ModuleType)]
        modules = {n: ns[n].__name__ for n in reads
                   if isinstance(ns.get(n), types.ModuleType)}
        values = [ns[n] for n in names]
        from . import _session
        count = (_session.prompt_number() if _session is not None
                 else self.shell.execution_count)
        f = self._remote.options(num_cpus=args.cpus, resources=resources or None,
                                 max_retries=args.retries,
                                 num_returns=max(1, len(writes)),
                                 name=args.name or f"cell[{count}]")
        line = None
        if _session is not None and _session.cell is not None and _session.widgets \
                and not args.wait:
            line = _session.show_line(_session.cell, writes, kept, remote=True)
        try:
            refs = f.remote(cell, f"<remote cell [{count}]>", writes, modules, names,
                            *values)
        except BaseException as e:
            if line is not None:
                line.abandon()
            if isinstance(e, TypeError):
                _name_unpicklable(names, values)
            raise
        refs = refs if isinstance(refs, list) else [refs]
        for name, ref in zip(writes, refs, strict=False):
            ns[name] = ref
        if line is not None:
            line.remote_task = refs[0]._id[:16]
            line.expecting = False
        if args.wait:
            refbook.get(refs)       # errors show here, with the cell's line numbers

    @line_magic
    def refbook(self, line):
        """%refbook: the cluster's summary.
        %refbook dashboard | memory | spilling | recovery: a live view (see
        refbook.widgets): memory per node, spilling, failures and recovery, or all of
        them in tabs.
        %refbook graph [name ...]: the live object graph of this notebook's refs, or
        of the refs these variables hold (a ref, or a list, tuple or dict of refs)
        and their lineage.
        %refbook restart [--num-cpus N] [--object-store-memory SIZE] [--spill-dir PATH]
                         [--resources k=v,...] [--memory-monitor-threshold F]:
        shut the cluster down and start a new one with these options.  Refs of the old
        cluster can no longer be read."""
        from . import show_summary
        cmd, _, rest = line.strip().partition(" ")
        if cmd in ("", "status"):
            show_summary(None)
        elif cmd == "restart":
            restart(self.shell, rest)
        elif cmd in VIEWS:
            show_view(cmd, rest)
        elif cmd == "graph":
            show_graph(self.shell.user_ns, rest)
        else:
            raise UsageError(f"%refbook {cmd}: unknown; use %refbook, %refbook "
                             f"{' | '.join(VIEWS)}, %refbook graph [name ...] or "
                             f"%refbook restart [options] (%refbook? for help)")

    @line_magic
    def put(self, line):
        """%put a b: replace notebook variables by refs to their values."""
        ns = self.shell.user_ns
        for name in line.split():
            if name not in ns:
                raise NameError(f"no notebook variable named {name!r}")
            if not isinstance(ns[name], refbook.ObjectRef):
                ns[name] = refbook.put(ns[name])

    @line_magic
    def get(self, line):
        """%get a b: replace refs by their values."""
        ns = self.shell.user_ns
        for name in line.split():
            if isinstance(ns.get(name), refbook.ObjectRef):
                ns[name] = refbook.get(ns[name])

    @line_magic
    def refs(self, line):
        """%refs: the refs this notebook holds (name, state, size, node, owner, what
        holds it), then objects this kernel owns that no notebook name holds (kept by
        a list, a closure, a running task...): they pin memory too.  %refs -l: with
        the full object ids."""
        from .refstable import refs_table
        print(refs_table(self.shell.user_ns, long="-l" in line.split()))


VIEWS = ("dashboard", "memory", "spilling", "recovery")   # and graph, which takes names
_shown: dict = {}       # a notebook cell's id -> the view it shows


def show_view(name: str, rest: str) -> None:
    """Display a live view (``refbook.widgets``); it is not kept in ``Out``.  A cell
    run again closes the view it showed before (its output is replaced, and a view
    nobody sees must not go on updating)."""
    from .. import widgets
    if rest.strip():
        raise UsageError(f"%refbook {name} takes no arguments, not {rest.strip()!r}")
    _show(getattr(widgets, name))


def _show(make) -> None:
    """Display the view ``make()`` returns, after closing the one this cell showed."""
    from IPython.display import display
    cell = _cell_id()
    old = _shown.pop(cell, None) if cell else None
    if old is not None:
        old.close()
    view = make()
    if cell:
        _shown[cell] = view
    display(view)


def _cell_id() -> str | None:
    """The id JupyterLab gives the running cell (in the request's metadata), or None."""
    from IPython import get_ipython
    kernel = getattr(get_ipython(), "kernel", None)
    try:
        parent = kernel.get_parent("shell")
    except (AttributeError, TypeError):
        return None
    return (parent or {}).get("metadata", {}).get("cellId")


def show_graph(ns: dict, rest: str) -> None:
    """``%refbook graph [name ...]``: the object graph of the refs these notebook
    variables hold (all of this notebook's refs without names)."""
    from .. import widgets
    from ..widgets.graph_refs import refs_in
    refs = None
    names = rest.split()
    if names:
        refs = []
        for name in names:
            if name not in ns:
                raise UsageError(f"%refbook graph: no notebook variable named {name!r}")
            v = ns[name]
            found = refs_in(v)
            if not found:
                raise UsageError(f"%refbook graph: {name} holds no ref "
                                 f"(it is a {type(v).__name__})")
            refs += found
    _show(lambda: widgets.object_graph(refs))


def _name_unpicklable(names: list, values: list) -> None:
    """After shipping failed: raise a TypeError naming the notebook variable that
    cannot be pickled (only now is each value pickled on its own)."""
    from ..runtime.api.frontend import first_unpicklable
    bad = first_unpicklable(zip(names, values, strict=True))
    if bad is not None:
        name, e = bad
        raise TypeError(
            f"the cell reads notebook variable {name!r}, which cannot be shipped to a "
            f"worker: it cannot be pickled ({type(e).__name__}: {e}). Create it inside "
            f"the cell, or keep the work that needs it in the notebook.") from None
