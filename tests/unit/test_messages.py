"""Every message refbook builds matches its declaration in protocol/messages.py.

The AST of every module in ``refbook/`` is walked: a tuple literal whose first element is
a message type (``P.TASKS_DONE``, or ``DEC_REF`` imported from messages) is a message
built there, and its length must fit the fields its class declares.  Every declared
message must also be built and handled somewhere in the runtime (the simulators in
``refbook/testing`` do not count): a handler table's key (``{P.TASKS_DONE: ...}``), a
comparison (``m[0] == P.ALLOC``), or, for a reply to a request-socket call, that call.
"""

from __future__ import annotations

import ast
import pathlib
import pickle
from typing import NamedTuple

import pytest

import refbook
from refbook.runtime.protocol import messages as P
from refbook.runtime.wire.frames import encode

ROOT = pathlib.Path(refbook.__file__).parent
MESSAGES = "refbook.runtime.protocol.messages"
CONSTANTS = {name: value for name, value in vars(P).items()
             if name.isupper() and type(value) is int}
# Replies read where the request is made: ``transport.request(nm, lambda reply_to: ...)``
# returns them to the caller, no handler sees them.
REPLY_TO_REQUEST = {"ALLOC_REPLY": "ALLOC", "PIN_REPLY": "PIN"}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        yield path, ".".join(parts), is_pkg


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Site(NamedTuple):
    where: str
    name: str


class Scan:
    """What the modules of refbook/ do with messages."""

    def __init__(self, modules):
        # (site, length, has a *starred, in the runtime rather than a simulator)
        self.built: list[tuple[Site, int, bool, bool]] = []
        self.handled: dict[str, list[Site]] = {}
        self.requested: set[str] = set()                  # built as a request-socket call
        for path, module, is_pkg in modules:
            self._scan(path, module, is_pkg)

    def _scan(self, path, module, is_pkg):
        tree = ast.parse(path.read_text(), str(path))
        aliases: set[str] = set()           # names of the messages module here
        names: dict[str, str] = {}          # local name -> constant imported from it
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_pkg, node)
                for a in node.names:
                    if f"{source}.{a.name}" == MESSAGES:
                        aliases.add(a.asname or a.name)
                    elif source == MESSAGES and a.name in CONSTANTS:
                        names[a.asname or a.name] = a.name
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == MESSAGES and a.asname:
                        aliases.add(a.asname)
        if not aliases and not names:
            return

        def message(node):
            """The constant's name if ``node`` names a message type, else None."""
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr in CONSTANTS:
                return node.attr
            if isinstance(node, ast.Name) and node.id in names:
                return names[node.id]
            return None

        runtime = not module.startswith("refbook.testing")
        rel = path.relative_to(ROOT.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and node.elts:
                name = message(node.elts[0])
                if name is not None:
                    starred = any(isinstance(e, ast.Starred) for e in node.elts)
                    site = Site(f"{rel}:{node.lineno}", name)
                    self.built.append((site, len(node.elts), starred, runtime))
            if not runtime:
                continue
            keys = []
            if isinstance(node, ast.Dict):
                keys = node.keys
            elif isinstance(node, ast.Compare):
                keys = [node.left, *node.comparators]
            for k in keys:
                name = message(k)
                if name is not None:
                    self.handled.setdefault(name, []).append(Site(f"{rel}:{k.lineno}", name))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "request":
                for arg in node.args:
                    if isinstance(arg, ast.Lambda) and isinstance(arg.body, ast.Tuple) \
                            and arg.body.elts:
                        name = message(arg.body.elts[0])
                        if name is not None:
                            self.requested.add(name)


@pytest.fixture(scope="module")
def scan():
    return Scan(_modules())


def _bounds(name: str) -> tuple[int, int]:
    """The lengths a tuple built for message ``name`` may have."""
    cls = P.BY_TYPE[CONSTANTS[name]]
    most = len(cls._fields)
    least = most - len(cls._field_defaults)
    if CONSTANTS[name] in P.WITH_DATA_FRAME:      # the data frame is not in the tuple
        least, most = least - 1, most - 1
    return least, most


def test_every_message_type_is_declared_once_with_its_fields():
    assert sorted(CONSTANTS.values()) == sorted(P.BY_TYPE), "constants and BY_TYPE differ"
    assert len(set(CONSTANTS.values())) == len(CONSTANTS), "a type number is used twice"
    for name, value in CONSTANTS.items():
        cls = P.BY_TYPE[value]
        assert cls.__name__ == name.title().replace("_", ""), (name, cls)
        assert issubclass(cls, tuple) and hasattr(cls, "_make"), f"{name}: not a NamedTuple"
        assert cls._fields[0] == "type" and "type" not in cls._field_defaults, name
        doc = cls.__doc__ or ""
        assert "->" in doc and "\n" not in doc.strip(), \
            f"{name}: want a one-line docstring saying who sends it to whom"
        assert P.name_of(value) == name
    for value in P.WITH_DATA_FRAME:
        assert P.BY_TYPE[value]._fields[-1] == "data"


def test_every_message_built_has_its_declared_fields(scan):
    assert len(scan.built) > 60, "the scan found too few messages: is it broken?"
    wrong = []
    for site, length, starred, _runtime in scan.built:
        least, most = _bounds(site.name)
        fields = P.BY_TYPE[CONSTANTS[site.name]]._fields
        if length > most or (not starred and length < least):
            wrong.append(f"{site.where}: {site.name} built with {length - 1} fields, "
                         f"declared {list(fields[1:])}")
    assert not wrong, "messages that do not match protocol/messages.py:\n" + "\n".join(wrong)


def test_every_message_is_built_and_handled_somewhere(scan):
    built = {site.name for site, _n, _s, runtime in scan.built if runtime}
    handled = set(scan.handled)
    handled |= {reply for reply, req in REPLY_TO_REQUEST.items() if req in scan.requested}
    never_sent = sorted(set(CONSTANTS) - built)
    assert not never_sent, f"declared but never sent: {never_sent}"
    never_handled = sorted(set(CONSTANTS) - handled)
    assert not never_handled, f"declared but never handled: {never_handled}"


def test_a_received_message_is_its_class_instance_and_goes_as_a_plain_tuple():
    msg = (P.TASKS_DONE, "ipc:///w", [(b"t", True, [], [], 0.1)])
    m = P.TasksDone._make(msg)
    assert m == msg and (m.type, m.worker, m.results) == msg
    assert encode(m) == encode(msg)
    assert type(pickle.loads(encode(m))) is tuple
    assert P.named((P.FREE, [b"x"])) == P.Free(P.FREE, [b"x"], None, None)
    assert P.named(msg) == m
