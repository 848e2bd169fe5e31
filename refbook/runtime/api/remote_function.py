"""``@refbook.remote`` on a function."""

from __future__ import annotations

import inspect

from ..processes import context
from .definition import Definition, check_num_cpus

TASK_OPTIONS = {"num_cpus": 1, "num_returns": 1, "max_retries": 3,
                "retry_exceptions": False, "resources": None, "name": None,
                "num_gpus": 0, "memory": None, "scheduling_strategy": None}


def _check(opts: dict) -> None:
    n = opts.get("num_returns", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_returns must be a positive integer, not {n!r}")
    check_num_cpus(opts, 1)
    r = opts.get("max_retries", 3)
    if not isinstance(r, int) or r < -1:
        raise ValueError(f"max_retries must be an integer >= -1, not {r!r}")
    res = opts.get("resources") or {}
    if not isinstance(res, dict) or any(not isinstance(v, (int, float)) or v < 0
                                        for v in res.values()):
        raise ValueError(f"resources must map names to non-negative numbers, not {res!r}")
    if "CPU" in res:
        raise ValueError("use num_cpus=, not resources={'CPU': ...}")


class RemoteFunction(Definition):
    """A function that runs as a task: ``f.remote(*args)`` returns ObjectRef(s) at once."""

    DEFAULTS = TASK_OPTIONS
    KIND = "task"

    def __init__(self, fn, options: dict, _shared=None):
        super().__init__(fn, options, _shared)
        self.__wrapped__ = fn

    _check = staticmethod(_check)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly; use "
                        f"{self.__name__}.remote(...), or {self.__name__}.__wrapped__(...) "
                        f"to run it here")

    def remote(self, *args, **kwargs):
        core = context.core()
        o = self._options
        self._bind(args, kwargs)
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
