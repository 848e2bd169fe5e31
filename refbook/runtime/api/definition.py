"""What ``@refbook.remote`` makes of a function or a class: validated options, the
signature calls are checked against, and the body pickled once (shared by every
``.options()`` copy, sent to a worker once)."""

from __future__ import annotations

import hashlib
import inspect

from ..data.serialization import dumps_function


class Definition:
    """Base of RemoteFunction and ActorClass.  Subclasses set ``DEFAULTS`` (every
    option with its default), ``KIND`` (for messages) and ``_check(options)``."""

    DEFAULTS: dict = {}
    KIND = "remote"

    def __init__(self, target, options: dict, _shared: dict | None = None):
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown {self.KIND} option(s) {', '.join(sorted(unknown))}; "
                            f"valid options are {', '.join(sorted(self.DEFAULTS))}")
        self._check(options)
        self._target = target
        self._options = {**self.DEFAULTS, **options}
        self._shared = _shared if _shared is not None else {}
        self.__name__ = getattr(target, "__name__", self.KIND)
        self.__qualname__ = getattr(target, "__qualname__", self.__name__)
        self.__doc__ = target.__doc__
        try:
            self._signature = inspect.signature(target)
        except (TypeError, ValueError):
            self._signature = None

    def _check(self, options: dict) -> None:
        """Raise ``ValueError`` for an option value that makes no sense."""

    def options(self, **opts):
        """A copy with some options changed, e.g. ``f.options(num_cpus=2).remote()``."""
        merged = {k: v for k, v in self._options.items() if v != self.DEFAULTS[k]}
        merged.update(opts)
        return type(self)(self._target, merged, self._shared)

    def _bind(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` now if ``.remote(*args, **kwargs)`` does not fit the
        signature, rather than in the worker."""
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{self.__name__}.remote(): {e}") from None

    def _export(self) -> tuple[bytes, bytes]:
        """``(id, pickled body)``: the id is the body's hash, so a redefinition (a cell
        run again) is a new function to every worker."""
        s = self._shared
        if "blob" not in s:
            blob = dumps_function(self._target)
            s["blob"] = blob
            s["id"] = hashlib.blake2b(blob, digest_size=16).digest()
        return s["id"], s["blob"]


def check_num_cpus(opts: dict, default) -> None:
    """The ``num_cpus`` check both kinds of ``_check`` make."""
    n = opts.get("num_cpus", default)
    if not isinstance(n, (int, float)) or n < 0:
        raise ValueError(f"num_cpus must be a non-negative number, not {n!r}")
