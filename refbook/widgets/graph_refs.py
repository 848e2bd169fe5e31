"""Which refs ``widgets.object_graph(refs)`` shows: refs, object ids or notebook
variable names (a variable may hold a ref or a list, tuple, set or dict of refs),
turned into object ids at once, so that the view keeps no ref."""

from __future__ import annotations

from .. import state
from ..runtime.api.frontend import is_ref as _is_ref


def resolve_refs(refs) -> set | None:
    """The object ids ``refs`` names: None (this notebook's refs), a ref, an object id,
    a notebook variable name, or a list of those.  Keeps no ref."""
    if refs is None:
        return None
    is_ref = _is_ref
    if is_ref(refs) or isinstance(refs, str):
        refs = [refs]
    try:
        items = list(refs)
    except TypeError:
        raise TypeError(f"object_graph(refs=...) takes refs, object ids or notebook "
                        f"variable names (or a list of them), not "
                        f"{type(refs).__name__}") from None
    ids: set = set()
    names: list = []
    for r in items:
        if is_ref(r):
            ids.add(r.hex())
        elif isinstance(r, str) and len(r) in (32, 40) and _is_hex(r):
            ids.add(r.lower())
        elif isinstance(r, str) and r.isidentifier():
            names.append(r)
        else:
            raise TypeError(f"object_graph(refs=...): {r!r} is not a ref, an object id "
                            f"or a notebook variable name")
    if names:
        known: dict = {}
        for o in state.objects():
            for nm in o.get("names") or ():
                known.setdefault(nm, o["object_id"])
        ns = _user_ns()
        missing = []
        for nm in names:
            held = [known[nm]] if nm in known else \
                [r.hex() for r in refs_in(ns.get(nm))]
            if not held:
                missing.append(nm)
            ids.update(held)
        if missing:
            raise ValueError(
                f"object_graph: no ref is held by notebook variable(s) "
                f"{', '.join(missing)} (variables holding refs: "
                f"{', '.join(sorted(known)) or 'none'})")
    return ids


def refs_in(v) -> list:
    """The refs ``v`` is or holds at its top level (a list, tuple, set or dict)."""
    if _is_ref(v):
        return [v]
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, (list, tuple, set, frozenset)):
        return [x for x in v if _is_ref(x)]
    return []


def _user_ns() -> dict:
    """The notebook's variables, when this runs in IPython (else none)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    ip = get_ipython()
    return getattr(ip, "user_ns", None) or {}


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True
