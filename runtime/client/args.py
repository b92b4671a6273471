"""Packing task arguments: top-level ObjectRefs become placeholders resolved before the task runs."""

from __future__ import annotations

from typing import Any

from freight.objects import serialization as ser

from .refs import ObjectRef


class ArgRef:
    """Stands in for the i-th top-level ObjectRef argument inside the packed arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return ArgRef, (self.i,)


def pack_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], fn_name: str
) -> tuple[bytes, list[tuple[bytes, str]], list[bytes]]:
    """Serialize (args, kwargs); return (packed, top-level refs, ids of refs nested inside)."""
    if not args and not kwargs:
        return EMPTY_ARGS, _NO_REFS, _NO_REFS
    refs: list[tuple[bytes, str]] = []
    if any(type(a) is ObjectRef for a in args):
        new_args = []
        for a in args:
            if type(a) is ObjectRef:
                new_args.append(ArgRef(len(refs)))
                refs.append((a._id, a._owner))
            else:
                new_args.append(a)
        args = tuple(new_args)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        new_kwargs = {}
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                new_kwargs[k] = ArgRef(len(refs))
                refs.append((v._id, v._owner))
            else:
                new_kwargs[k] = v
        kwargs = new_kwargs
    try:
        so = ser.serialize((args, kwargs))
    except Exception as e:
        raise TypeError(_unpicklable_message(args, kwargs, fn_name, e)) from e
    nested = [r._id for r in so.contained_refs] if so.contained_refs else _NO_REFS
    return ser.pack(so), refs or _NO_REFS, nested


EMPTY_ARGS = ser.pack(ser.serialize(((), {})))  # a call without arguments, packed once
# Shared by every call without ref arguments (a million queued tasks need no million lists);
# never appended to.
_NO_REFS: list[Any] = []


def _unpicklable_message(
    args: tuple[Any, ...], kwargs: dict[str, Any], fn_name: str, error: Exception
) -> str:
    culprit = "an argument"
    for i, a in enumerate(args):
        try:
            ser.serialize(a)
        except Exception:
            culprit = f"argument {i} ({type(a).__name__})"
            break
    else:
        for k, v in kwargs.items():
            try:
                ser.serialize(v)
            except Exception:
                culprit = f"keyword argument {k!r} ({type(v).__name__})"
                break
    return (
        f"Could not serialize {culprit} of {fn_name}: {error!r}. Arguments of remote calls "
        "must be picklable (cloudpickle); pass an ObjectRef or create the object inside the task."
    )


def substitute(args: tuple[Any, ...], kwargs: dict[str, Any], values: list[Any]) -> Any:
    """Put the resolved values of top-level refs back in place of their placeholders."""
    if values:
        args = tuple(values[a.i] if type(a) is ArgRef else a for a in args)
        kwargs = {k: values[v.i] if type(v) is ArgRef else v for k, v in kwargs.items()}
    return args, kwargs
