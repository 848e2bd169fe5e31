"""``@refbook.remote`` on a function."""

from __future__ import annotations

import hashlib
import inspect

from . import context
from .serialization import dumps_function

TASK_OPTIONS = {"num_cpus": 1, "num_returns": 1, "max_retries": 3,
                "retry_exceptions": False, "resources": None, "name": None,
                "num_gpus": 0, "memory": None, "scheduling_strategy": None}


def _validate(opts: dict) -> dict:
    unknown = set(opts) - set(TASK_OPTIONS)
    if unknown:
        raise TypeError(f"unknown task option(s) {', '.join(sorted(unknown))}; valid options "
                        f"are {', '.join(sorted(TASK_OPTIONS))}")
    n = opts.get("num_returns", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_returns must be a positive integer, not {n!r}")
    c = opts.get("num_cpus", 1)
    if not isinstance(c, (int, float)) or c < 0:
        raise ValueError(f"num_cpus must be a non-negative number, not {c!r}")
    r = opts.get("max_retries", 3)
    if not isinstance(r, int) or r < -1:
        raise ValueError(f"max_retries must be an integer >= -1, not {r!r}")
    res = opts.get("resources") or {}
    if not isinstance(res, dict) or any(not isinstance(v, (int, float)) or v < 0
                                        for v in res.values()):
        raise ValueError(f"resources must map names to non-negative numbers, not {res!r}")
    if "CPU" in res:
        raise ValueError("use num_cpus=, not resources={'CPU': ...}")
    return opts


class RemoteFunction:
    """A function that runs as a task: ``f.remote(*args)`` returns ObjectRef(s) at once."""

    def __init__(self, fn, options: dict, _shared=None):
        self._function = fn
        self._options = {**TASK_OPTIONS, **_validate(options)}
        self._shared = _shared if _shared is not None else {}
        try:
            self._signature = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self.__name__ = getattr(fn, "__name__", "task")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly; use "
                        f"{self.__name__}.remote(...), or {self.__name__}.__wrapped__(...) "
                        f"to run it here")

    def _export(self) -> tuple[bytes, bytes]:
        s = self._shared
        if "blob" not in s:
            blob = dumps_function(self._function)
            s["blob"] = blob
            s["id"] = hashlib.blake2b(blob, digest_size=16).digest()
        return s["id"], s["blob"]

    def options(self, **opts) -> RemoteFunction:
        """A copy with some options changed, e.g. ``f.options(num_cpus=2).remote()``."""
        merged = {k: v for k, v in self._options.items() if v != TASK_OPTIONS[k]}
        merged.update(opts)
        return RemoteFunction(self._function, merged, self._shared)

    def remote(self, *args, **kwargs):
        core = context.core()
        o = self._options
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{self.__name__}.remote(): {e}") from None
        fn_id, blob = self._export()
        resources = {"CPU": float(o["num_cpus"])}
        if o["resources"]:
            resources.update({k: float(v) for k, v in o["resources"].items()})
        retries = o["max_retries"]
        refs = core.submit(fn_id, blob, o["name"] or self.__qualname__, args, kwargs,
                           o["num_returns"], resources,
                           10**9 if retries == -1 else retries,
                           o["retry_exceptions"], self._signature)
        return refs[0] if o["num_returns"] == 1 else refs

    def __repr__(self) -> str:
        return f"<refbook remote function {self.__qualname__}>"


def remote(*args, **options):
    """Decorator: ``@remote`` or ``@remote(num_cpus=..., num_returns=..., ...)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args:
        raise TypeError("use @refbook.remote or @refbook.remote(option=value, ...)")

    def deco(fn):
        return _make(fn, options)
    return deco


def _make(obj, options):
    if inspect.isclass(obj):
        from .actor import ActorClass
        return ActorClass(obj, options)
    if not callable(obj):
        raise TypeError(f"@refbook.remote needs a function, not {type(obj).__name__}")
    return RemoteFunction(obj, options)
