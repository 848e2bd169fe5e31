"""What a notebook cell reads and writes, from its syntax tree (no I/O)."""

from __future__ import annotations

import ast
import builtins

NOT_SHIPPED = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_ih", "_oh",
               "_dh", "_i", "_ii", "_iii"}


def analyze(code: str) -> tuple[list[str], list[str]]:
    """``(reads, writes)``: names the cell may read from the notebook (any name it
    loads that Python does not provide itself), and names it binds at top level, in
    order of first appearance."""
    tree = ast.parse(code)
    reads: list[str] = []
    writes: list[str] = []

    def add(lst, name):
        if name not in lst:
            lst.append(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if not hasattr(builtins, node.id) and node.id not in NOT_SHIPPED:
                add(reads, node.id)
    for stmt in tree.body:
        for name in _bound(stmt):
            if not name.startswith("_"):
                add(writes, name)
    return reads, writes


def _bound(stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return []          # modules stay on the worker; the notebook has its own imports
    targets = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    names = []
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                names.append(n.id)
    if isinstance(stmt, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                names += _bound(child)
        for attr in ("orelse", "finalbody", "handlers"):
            for child in getattr(stmt, attr, []):
                if isinstance(child, ast.stmt):
                    names += _bound(child)
                elif isinstance(child, ast.ExceptHandler):
                    for c in child.body:
                        names += _bound(c)
    return names
