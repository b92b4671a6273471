"""freight: a task/actor runtime for Python with Ray core's API, fully instrumented.

``import freight as ray`` runs a Ray-core program.
"""

from __future__ import annotations

from typing import Any

from freight import exceptions
from freight._api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
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

__version__ = "0.1.0"


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
    if isinstance(obj, type):
        return ActorClass(obj, options)
    if callable(obj):
        return RemoteFunction(obj, options)
    raise TypeError(f"remote() expects a function or a class, got {type(obj).__name__}.")


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
