"""``@refbook.remote`` on a class: actors, their handles and method calls."""

from __future__ import annotations

import inspect

from ..data.serialization import record_ref
from ..processes import context
from .definition import Definition, check_num_cpus

ACTOR_OPTIONS = {"num_cpus": 0, "resources": None, "name": None, "max_restarts": 0,
                 "max_task_retries": 0, "max_concurrency": 1, "num_gpus": 0,
                 "memory": None, "lifetime": None}


def _check(opts: dict) -> None:
    for k in ("max_restarts", "max_task_retries"):
        v = opts.get(k, 0)
        if not isinstance(v, int) or v < -1:
            raise ValueError(f"{k} must be an integer >= -1 (-1: no limit), not {v!r}")
    c = opts.get("max_concurrency", 1)
    if not isinstance(c, int) or c < 1:
        raise ValueError(f"max_concurrency must be a positive integer, not {c!r}")
    check_num_cpus(opts, 0)
    name = opts.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    if opts.get("lifetime") not in (None, "non_detached"):
        raise ValueError("detached actors are not supported: an actor lives as long as a "
                         "handle to it does")


def method(*, num_returns: int = 1):
    """Decorator for actor methods: ``@refbook.method(num_returns=2)``."""
    if not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive integer, not {num_returns!r}")

    def deco(fn):
        fn.__refbook_num_returns__ = num_returns
        return fn
    return deco


class ActorClass(Definition):
    """``Cls.remote(*args)`` starts an actor and returns its handle at once."""

    DEFAULTS = ACTOR_OPTIONS
    KIND = "actor"
    _check = staticmethod(_check)

    def __init__(self, cls, options: dict, _shared=None):
        super().__init__(cls, options, _shared)
        methods, params = {}, {}
        for name, member in inspect.getmembers(cls):
            if name.startswith("__") or not callable(member):
                continue
            methods[name] = getattr(member, "__refbook_num_returns__", 1)
            spec = _param_spec(cls, name, member)
            if spec is not None:
                params[name] = spec
        self._methods = methods
        self._params = params

    def __getattr__(self, name: str):
        """The class's own attributes (``Counter.LIMIT``, ``Counter.helper()``), as in
        Ray: inside its methods, the class's name is this wrapper."""
        target = self.__dict__.get("_target")
        if target is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"actor class {self.__name__} has no attribute "
                                 f"{name!r}") from None

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly; use "
                        f"{self.__name__}.remote(...)")

    def remote(self, *args, **kwargs) -> ActorHandle:
        core = context.core()
        o = dict(self._options)
        name = o.get("name")
        if name is not None and core.query(core.head_address, ("actor_named", name)) is not None:
            raise ValueError(f"an actor named {name!r} already exists; use "
                             f"refbook.get_actor({name!r}) to get a handle to it")
        self._bind(args, kwargs)
        class_id, blob = self._export()
        prepared = core.prepare_args(f"{self.__name__}.__init__", args, kwargs,
                                     self._signature)
        actor_id = core.ids.put_id()
        meta = {"class_name": self.__name__, "name": name, "methods": self._methods,
                "max_task_retries": o["max_task_retries"], "params": self._params}
        o["_meta"] = meta
        core.actors.create(actor_id, self.__name__, class_id, blob, prepared, o)
        return ActorHandle(actor_id, core.me, meta, core)

    def __repr__(self) -> str:
        return f"<refbook actor class {self.__qualname__}>"


class ActorHandle:
    """A handle to an actor: a ref, so it can be passed to tasks and other actors.  The
    actor lives while any handle to it does."""

    __slots__ = ("_id", "_owner", "_meta", "_core", "__weakref__")

    def __init__(self, actor_id: bytes, owner: str, meta: dict, core):
        self._id = actor_id
        self._owner = owner
        self._meta = meta
        self._core = core

    def __getattr__(self, name: str):
        methods = self._meta["methods"]
        if name in methods:
            return ActorMethod(self, name, methods[name])
        raise AttributeError(f"actor {self._meta['class_name']} has no method {name!r}")

    def hex(self) -> str:
        return self._id.hex()

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._id == self._id

    def __repr__(self) -> str:
        return f"ActorHandle({self._meta['class_name']}, {self._id.hex()})"

    def __reduce__(self):
        record_ref(self._id, self._owner)
        return (_rebuild_handle, (self._id, self._owner, self._meta))

    def __del__(self):
        core = self._core
        if core is not None:
            core.release_soon(self._id)


def _param_spec(cls, name: str, member) -> list | None:
    """The parameters of method ``name`` as plain data (they travel with every handle):
    ``[(name, kind, has_default)]``, without ``self`` or ``cls``; None if unknown."""
    try:
        sig = inspect.signature(member)       # bound for a classmethod: no ``cls``
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if not isinstance(inspect.getattr_static(cls, name, None), (staticmethod, classmethod)):
        first = params[0].kind if params else None
        if first in (inspect.Parameter.POSITIONAL_ONLY,
                     inspect.Parameter.POSITIONAL_OR_KEYWORD):
            params = params[1:]               # self
        elif first is not inspect.Parameter.VAR_POSITIONAL:
            return None
    return [(p.name, p.kind.name, p.default is not p.empty) for p in params]


_SIGNATURES: dict[int, tuple] = {}     # id(spec) -> (spec, Signature, fast check)
_POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")


def _compiled(spec: list) -> tuple:
    hit = _SIGNATURES.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit
    sig = inspect.Signature([inspect.Parameter(
        n, getattr(inspect.Parameter, k), default=None if d else inspect.Parameter.empty)
        for n, k, d in spec])
    # positional arguments only: how many fit (max None: any number), if nothing else
    # is required (a required keyword-only parameter needs the full check)
    fast = None
    if not any(k == "KEYWORD_ONLY" and not d for _, k, d in spec):
        pos = [d for _, k, d in spec if k in _POSITIONAL]
        more = any(k == "VAR_POSITIONAL" for _, k, _d in spec)
        fast = (sum(1 for d in pos if not d), None if more else len(pos))
    if len(_SIGNATURES) > 4096:
        _SIGNATURES.clear()
    hit = _SIGNATURES[id(spec)] = (spec, sig, fast)
    return hit


def _check_args(spec: list, args: tuple, kwargs: dict) -> None:
    """Raise TypeError if ``args, kwargs`` do not fit ``spec`` (an actor call is hot:
    plain positional calls are checked without binding)."""
    _, sig, fast = _compiled(spec)
    if fast is not None and not kwargs and len(args) >= fast[0] and \
            (fast[1] is None or len(args) <= fast[1]):
        return
    sig.bind(*args, **kwargs)


def _rebuild_handle(actor_id: bytes, owner: str, meta: dict) -> ActorHandle:
    core = context.current()
    if core is None:
        return ActorHandle(actor_id, owner, meta, None)
    core.register_deserialized(actor_id, owner)     # we hold it, like any ref
    return ActorHandle(actor_id, owner, meta, core)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods are called with .remote(): "
                        f"handle.{self._name}.remote(...)")

    def options(self, num_returns: int | None = None, **unsupported) -> ActorMethod:
        if unsupported:
            raise TypeError(f"unknown actor method option(s) {', '.join(sorted(unsupported))}")
        return ActorMethod(self._handle, self._name,
                           self._num_returns if num_returns is None else num_returns)

    def remote(self, *args, **kwargs):
        h = self._handle
        core = h._core
        if core is None or not core.alive:
            core = context.core()
        label = h._meta["name"] or h._meta["class_name"]
        spec = h._meta.get("params", {}).get(self._name)
        if spec is not None:               # checked here, in the caller, as Ray does
            try:
                _check_args(spec, args, kwargs)
            except TypeError as e:
                raise TypeError(f"{h._meta['class_name']}.{self._name}.remote(): {e}") \
                    from None
        prepared = core.prepare_args(f"{label}.{self._name}", args, kwargs)
        refs = core.actors.submit_call(h._id, h._owner, label, h._meta["class_name"],
                                       h._meta["max_task_retries"], self._name, prepared,
                                       self._num_returns)
        return refs[0] if self._num_returns == 1 else refs
