"""The layout's rules that import-linter cannot state: the protocol core imports only
the standard library (and refbook.exceptions), and no module or class grows past a
size a reader can hold."""

import ast
import sys
from pathlib import Path

import refbook

PKG = Path(refbook.__file__).parent
CORE = PKG / "runtime" / "protocol"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, 0
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                yield node.lineno, node.module or a.name, node.level


def test_the_protocol_core_imports_only_the_standard_library():
    bad = []
    for path in sorted(CORE.glob("*.py")):
        for line, name, level in _imports(path):
            if level == 1:                         # a sibling in the protocol core
                continue
            if level == 3 and name == "exceptions":    # refbook.exceptions
                continue
            if level == 0 and name.split(".")[0] in sys.stdlib_module_names:
                continue
            bad.append(f"{path.name}:{line}: {'.' * level}{name}")
    assert not bad, "the protocol core imports more than the standard library:\n" + \
        "\n".join(bad)


def test_no_module_over_600_lines_and_no_class_over_400():
    big = []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        n = text.count("\n")
        if n > 620:
            big.append(f"{path.relative_to(PKG)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > 420:
                    big.append(f"{path.relative_to(PKG)}: class {node.name}: {size} lines")
    assert not big, "\n".join(big)
