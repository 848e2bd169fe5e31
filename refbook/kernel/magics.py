"""``%%remote`` and friends: notebook cells as tasks, notebook variables as refs."""

from __future__ import annotations

import types

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

import refbook

from .cells import analyze


def _run_cell(code: str, filename: str, outputs: list, names: list, *values):
    """Runs on a worker: the cell, with the notebook values it reads."""
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    ns.update(zip(names, values, strict=True))
    exec(compile(code, filename, "exec"), ns)
    missing = [n for n in outputs if n not in ns]
    if missing:
        raise NameError(f"the cell did not assign {', '.join(missing)}")
    result = tuple(ns[n] for n in outputs)
    return result if len(outputs) != 1 else result[0]


@magics_class
class RefbookMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self._cells = 0
        self._remote = refbook.remote(_run_cell)

    @magic_arguments()
    @argument("--wait", action="store_true", help="return only when the cell has run")
    @argument("--cpus", type=float, default=1, help="CPUs the cell needs")
    @argument("--resources", default="", help="k=v,... custom resources")
    @argument("--retries", type=int, default=3, help="times to retry if the worker dies")
    @argument("--name", default=None, help="a name for the task")
    @cell_magic
    def remote(self, line, cell):
        """Run the cell as a task.  Notebook values it reads are shipped (refs by
        reference: they arrive as values); every name it assigns comes back as an
        ObjectRef owned by this kernel."""
        args = parse_argstring(self.remote, line)
        resources = {}
        for kv in filter(None, (p.strip() for p in args.resources.split(","))):
            k, _, v = kv.partition("=")
            try:
                resources[k.strip()] = float(v)
            except ValueError:
                raise ValueError(f"--resources takes k=v pairs with numbers, not {kv!r}") from None
        reads, writes = analyze(cell)
        ns = self.shell.user_ns
        names = [n for n in reads if n in ns and not isinstance(ns[n], types.ModuleType)]
        values = [ns[n] for n in names]
        self._cells += 1
        count = self.shell.execution_count
        f = self._remote.options(num_cpus=args.cpus, resources=resources or None,
                                 max_retries=args.retries,
                                 num_returns=max(1, len(writes)),
                                 name=args.name or f"cell[{count}]")
        try:
            refs = f.remote(cell, f"<remote cell [{count}]>", writes, names, *values)
        except TypeError as e:          # names the variable that could not be shipped
            raise TypeError(str(e).replace("argument 'argument ",
                                           "notebook variable '")) from None
        refs = refs if isinstance(refs, list) else [refs]
        for name, ref in zip(writes, refs, strict=False):
            ns[name] = ref
        if args.wait:
            refbook.get(refs)       # errors show here, with the cell's line numbers

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
        """%refs: the notebook's refs with their state, size and node."""
        ns = self.shell.user_ns
        objs = {o["object_id"]: o for o in refbook.objects()}
        rows = [(n, v) for n, v in ns.items()
                if isinstance(v, refbook.ObjectRef) and not n.startswith("_")]
        print(f"{'name':<16}{'state':<15}{'size':>12}  node")
        for n, ref in rows:
            o = objs.get(ref.hex(), {})
            size = o.get("size")
            print(f"{n:<16}{o.get('state', '?'):<15}{size if size is not None else '':>12}  "
                  f"{','.join(o.get('nodes') or [])}")
