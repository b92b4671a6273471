"""Packing task arguments: top-level ObjectRefs become placeholders resolved before the task runs."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from freight.objects import serialization as ser

from .refs import ObjectRef


class ArgRef:
    """Stands in for the i-th top-level ObjectRef argument inside the packed arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return ArgRef, (self.i,)


class Store(Protocol):
    """Where arguments too large to travel inline go (the caller's core worker)."""

    inline_max: int

    def put_serialized(self, so: ser.SerializedObject, what: str) -> ObjectRef: ...


class PackedArgs(NamedTuple):
    """A call's arguments as sent."""

    data: bytes  # the packed (args, kwargs), top-level references replaced by ArgRefs
    refs: list[tuple[bytes, str]]  # (object id, owner) of each top-level reference, in order
    nested: list[bytes]  # ids of references inside the arguments
    # References to the arguments put in the store for this call: keep them as long as the
    # call may run (again), so the values stay.
    stored: tuple[ObjectRef, ...]


def pack_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], fn_name: str, store: Store | None
) -> PackedArgs:
    """Serialize (args, kwargs). An argument whose value is over the store's inline limit
    (a large array, bytes, or a list or dict holding one) goes through the object store and
    reaches the call as a value, as a reference argument does: it never makes the message that
    carries the call too large. With ``store`` None everything travels inline."""
    if not args and not kwargs:
        return _EMPTY
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
    so = _serialize(args, kwargs, fn_name)
    stored: tuple[ObjectRef, ...] = ()
    if store is not None and so.total_size > store.inline_max:
        args, kwargs, stored = _store_large(args, kwargs, refs, fn_name, store)
        if stored:
            so = _serialize(args, kwargs, fn_name)
    nested = [r._id for r in so.contained_refs] if so.contained_refs else _NO_REFS
    return PackedArgs(ser.pack(so), refs or _NO_REFS, nested, stored)


def _serialize(args: tuple[Any, ...], kwargs: dict[str, Any], fn_name: str) -> Any:
    try:
        return ser.serialize((args, kwargs))
    except Exception as e:
        raise TypeError(_unpicklable_message(args, kwargs, fn_name, e)) from e


def _store_large(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    refs: list[tuple[bytes, str]],
    fn_name: str,
    store: Store,
) -> tuple[tuple[Any, ...], dict[str, Any], tuple[ObjectRef, ...]]:
    """Put each argument whose value is over the inline limit in the store, in place of which
    the call carries a reference (appended to ``refs``). Smaller ones stay: a value the store
    keeps inline would travel in the call all the same, as the reference's value."""
    new_args, new_kwargs = list(args), dict(kwargs)
    stored = []
    for key, value in (*enumerate(args), *kwargs.items()):
        if type(value) is ArgRef:
            continue
        so = ser.serialize(value)  # (the whole call serialized, so each part does too)
        if so.total_size <= store.inline_max:
            continue
        ref = store.put_serialized(so, f"argument of {fn_name}")
        placeholder = ArgRef(len(refs))
        refs.append((ref._id, ref._owner))
        stored.append(ref)
        if isinstance(key, int):
            new_args[key] = placeholder
        else:
            new_kwargs[key] = placeholder
    return tuple(new_args), new_kwargs, tuple(stored)


EMPTY_ARGS = ser.pack(ser.serialize(((), {})))  # a call without arguments, packed once
# Shared by every call without ref arguments (a million queued tasks need no million lists);
# never appended to.
_NO_REFS: list[Any] = []
_EMPTY = PackedArgs(EMPTY_ARGS, _NO_REFS, _NO_REFS, ())


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
