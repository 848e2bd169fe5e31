"""What a ``%%remote`` cell runs on a worker.  Kept apart from the magics so that a
worker imports nothing of IPython to run a cell."""

from __future__ import annotations


def run_cell(code: str, filename: str, outputs: list, modules: dict, names: list,
             *values):
    """Runs on a worker: the cell, with the notebook values it reads (``modules``:
    names bound to modules in the notebook, imported here under the same names)."""
    import importlib
    import linecache
    # the remote traceback then shows the cell's own lines, numbered as in the cell
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    for name, module in modules.items():
        ns[name] = importlib.import_module(module)
    ns.update(zip(names, values, strict=True))
    __tracebackhide__ = True        # the remote traceback starts in the cell
    exec(compile(code, filename, "exec"), ns)
    missing = [n for n in outputs if n not in ns]
    if missing:
        raise NameError(f"the cell did not assign {', '.join(missing)}")
    result = tuple(ns[n] for n in outputs)
    return result if len(outputs) != 1 else result[0]
