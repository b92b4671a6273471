"""freight: a task/actor runtime for Python with Ray core's API, fully instrumented.

``import freight as ray`` runs a Ray-core program.

The public names below load their modules on first use (PEP 562): the head, node agent and
worker processes import ``freight.<subsystem>`` modules, which imports this package first, and
they need none of the driver API; a driver pays for each part when it first touches it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); the attribute None means the module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "exceptions": ("freight.exceptions", None),
    "available_resources": ("freight._api", "available_resources"),
    "cancel": ("freight._api", "cancel"),
    "cluster_resources": ("freight._api", "cluster_resources"),
    "get": ("freight._api", "get"),
    "get_actor": ("freight._api", "get_actor"),
    "get_gpu_ids": ("freight._api", "get_gpu_ids"),
    "init": ("freight._api", "init"),
    "is_initialized": ("freight._api", "is_initialized"),
    "kill": ("freight._api", "kill"),
    "nodes": ("freight._api", "nodes"),
    "put": ("freight._api", "put"),
    "shutdown": ("freight._api", "shutdown"),
    "wait": ("freight._api", "wait"),
    "RuntimeContext": ("freight._context", "RuntimeContext"),
    "get_runtime_context": ("freight._context", "get_runtime_context"),
    "ActorClass": ("freight._remote", "ActorClass"),
    "ActorHandle": ("freight._remote", "ActorHandle"),
    "RemoteFunction": ("freight._remote", "RemoteFunction"),
    "method": ("freight._remote", "method"),
    "ObjectRef": ("freight.client.refs", "ObjectRef"),
}

if TYPE_CHECKING:
    from freight import exceptions
    from freight._api import (
        available_resources,
        cancel,
        cluster_resources,
        get,
        get_actor,
        get_gpu_ids,
        init,
        is_initialized,
        kill,
        nodes,
        put,
        shutdown,
        wait,
    )
    from freight._context import RuntimeContext, get_runtime_context
    from freight._remote import ActorClass, ActorHandle, RemoteFunction, method
    from freight.client.refs import ObjectRef


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'freight' has no attribute {name!r}")
    module = importlib.import_module(where[0])
    value = module if where[1] is None else getattr(module, where[1])
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def remote(*args: Any, **options: Any) -> Any:
    """Turn a function into a remote function, or a class into an actor class.

    Use as ``@remote`` or ``@remote(num_cpus=2, ...)``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "remote() takes a function or class, or only keyword options: "
            "use @freight.remote or @freight.remote(num_cpus=1, ...)."
        )
    return lambda fn_or_cls: _make_remote(fn_or_cls, options)


def _make_remote(obj: Any, options: dict[str, Any]) -> Any:
    from freight._remote import ActorClass, RemoteFunction

    if isinstance(obj, type):
        return ActorClass(obj, options)
    if callable(obj):
        return RemoteFunction(obj, options)
    raise TypeError(f"remote() expects a function or a class, got {type(obj).__name__}.")


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Chaos Toolkit's discovery of freight's chaos extension, :func:`freight.chaos.discover`:
    `chaos discover freight` looks for a ``discover`` in the top-level package of the
    distribution it is given. Not part of the Ray API (not in ``__all__``)."""
    from freight.chaos import discover as discover_extension

    return discover_extension(discover_system)


__all__ = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "RemoteFunction",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
]
