"""Serialization of task arguments, results and ``put`` values.

Values are pickled with protocol 5 and out-of-band buffers: a numpy array (or any object whose
``__reduce_ex__`` hands out a :class:`pickle.PickleBuffer`) is not copied into the pickle stream;
its memory is kept aside as a :class:`memoryview` and written next to the stream by :func:`pack`.
:func:`unpack` hands pickle slices of the packed buffer, so an array read back from shared memory
is a zero-copy view (read-only when the packed buffer is).

Functions and classes are pickled with cloudpickle, so those defined in ``__main__`` or
interactively work in another process. cloudpickle builds a Python-level pickler for every call,
which costs about 4 µs even for an int; on the per-task hot path that is most of the budget. So
:func:`serialize` first tries the C pickler and keeps its output unless it failed or names the
``__main__`` module (the only case where pickling by reference succeeds here and then fails in
another process); otherwise it pickles again with cloudpickle. Both produce ordinary pickle
streams, read back by :func:`pickle.loads`. :func:`dumps_by_value` is the one cloudpickle entry
point: functions and classes shipped to workers keep the file name of their code (cloudpickle
writes ``<dynamic-code>``), so a remote traceback names the user's file and shows its lines.

Packed layout (all integers little-endian)::

    offset 0   magic  b"FRGT"
           4   u16    version (1)
           6   u16    flags (0)
           8   u32    number of out-of-band buffers, n
          12   u64    length of the pickle stream
          20   u64*n  length of each buffer
    20+8n      pickle stream
               each buffer, starting at the next multiple of 64 (zero padding in between)

The same layout is sent inline in messages and written to shared-memory segments.
"""

from __future__ import annotations

import io
import pickle
import struct
import threading
import types
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

import cloudpickle

__all__ = [
    "ALIGNMENT",
    "SerializedObject",
    "deserialize",
    "dumps_by_value",
    "note_contained_ref",
    "pack",
    "pack_into",
    "packed_pieces",
    "serialize",
    "unpack",
]

MAGIC = b"FRGT"
VERSION = 1
ALIGNMENT = 64

_HEADER = struct.Struct("<4sHHIQ")
_HEADER_SIZE = _HEADER.size  # 20
_LEN = struct.Struct("<Q")
_PAD = bytes(ALIGNMENT)

# Values of these exact types contain neither buffers nor references and always pickle the same
# way with the C pickler; they skip every other step.
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})

_PLAIN_MAX_LEN = 16

_dumps = pickle.dumps
_loads = pickle.loads

# The position of co_filename among the code constructor's arguments, as cloudpickle's code
# reducer returns them (argcount, posonlyargcount, kwonlyargcount, nlocals, stacksize, flags,
# code, consts, names, varnames, filename, ...): stable since Python 3.8.
_CO_FILENAME = 10
_cloud_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _code_reduce(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with the code's own file name kept.

    cloudpickle replaces it with ``<dynamic-code>`` to make its output independent of where a
    function was defined; here the name matters more: tracebacks and linecache read it (and
    the line numbers, which cloudpickle keeps) to show the user's file and source lines."""
    make, args = _cloud_code_reduce(code)
    if len(args) > _CO_FILENAME and isinstance(args[_CO_FILENAME], str):
        args = (*args[:_CO_FILENAME], code.co_filename, *args[_CO_FILENAME + 1 :])
    return make, args


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


def dumps_by_value(obj: Any, protocol: int = 5, buffer_callback: Any = None) -> bytes:
    """``cloudpickle.dumps`` keeping code objects' file names (see :func:`_code_reduce`)."""
    with io.BytesIO() as f:
        _Pickler(f, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


_cloud_dumps = dumps_by_value


# Modules registered with cloudpickle.register_pickle_by_value must be pickled by value even though
# the C pickler would pickle them by reference; while any is registered, always use cloudpickle.
# (The registry is a set that cloudpickle mutates in place; if it ever moves, we lose only speed.)
_BY_VALUE_MODULES: Any = getattr(
    getattr(cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES", None
)

# Packed objects without buffers whose stream is at most this long are unpickled from a bytes
# slice: copying a few hundred bytes is cheaper than setting up a memoryview.
_SMALL_STREAM = 2048


@dataclass(slots=True)
class SerializedObject:
    """A pickled value: the pickle stream, its out-of-band buffers and the refs it contains."""

    data: bytes
    buffers: list[memoryview]
    contained_refs: list[Any]

    @property
    def total_size(self) -> int:
        """Size in bytes of the packed layout (what :func:`pack` returns)."""
        if not self.buffers:
            return _HEADER_SIZE + len(self.data)
        end = _HEADER_SIZE + 8 * len(self.buffers) + len(self.data)
        for buf in self.buffers:
            end = -(-end // ALIGNMENT) * ALIGNMENT + buf.nbytes
        return end


class _RefStacks(threading.local):
    def __init__(self) -> None:
        self.stack: list[list[Any]] = []


_local = _RefStacks()


def _plain(value: Any) -> bool:
    """True for a short tuple, list or dict holding only atoms (nothing to track, no buffers)."""
    kind = type(value)
    if kind is tuple or kind is list:
        if len(value) > _PLAIN_MAX_LEN:
            return False
        # A plain loop: about twice as fast as all() over a generator at these sizes.
        for item in value:  # noqa: SIM110
            if type(item) not in _ATOMS:
                return False
        return True
    if kind is dict:
        if len(value) > _PLAIN_MAX_LEN:
            return False
        for key, item in value.items():
            if type(key) not in _ATOMS or type(item) not in _ATOMS:
                return False
        return True
    return False


def note_contained_ref(ref: Any) -> None:
    """Record that ``ref`` is being pickled by the innermost :func:`serialize` in this thread.

    Called from ``ObjectRef.__reduce__``. Does nothing when no ``serialize`` is running (for
    example when a reference is pickled by other code).
    """
    stack = _local.stack
    if stack:
        stack[-1].append(ref)


def serialize(value: Any) -> SerializedObject:
    """Pickle ``value`` (protocol 5, out-of-band buffers) and collect the refs it contains.

    When the C pickler's attempt is discarded, ``__reduce__`` methods run a second time (refs
    noted by the first attempt are dropped), so they must not have other side effects.
    """
    if type(value) in _ATOMS or _plain(value):
        return SerializedObject(_dumps(value, 5), [], [])

    refs: list[Any] = []
    buffers: list[memoryview] = []

    def keep_buffer(pb: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(pb.raw())
        except BufferError:
            # Not contiguous: let pickle copy it in-band instead.
            return True
        return False

    stack = _local.stack
    stack.append(refs)
    try:
        data: bytes | None = None
        if _BY_VALUE_MODULES is not None and not _BY_VALUE_MODULES:
            try:
                data = _dumps(value, 5, buffer_callback=keep_buffer)
            except Exception:
                data = None
            else:
                if b"__main__" in data:
                    data = None
            if data is None:
                refs.clear()
                buffers.clear()
        if data is None:
            data = _cloud_dumps(value, protocol=5, buffer_callback=keep_buffer)
    finally:
        stack.pop()
    return SerializedObject(data, buffers, refs)


def deserialize(data: Any, buffers: Any = ()) -> Any:
    """Unpickle a stream made by :func:`serialize` with its out-of-band buffers."""
    return _loads(data, buffers=buffers)


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def pack(obj: SerializedObject) -> bytes:
    """Return the packed layout of ``obj`` as one bytes object (one copy of the payload)."""
    data = obj.data
    buffers = obj.buffers
    if not buffers:
        return _HEADER.pack(MAGIC, VERSION, 0, 0, len(data)) + data
    n = len(buffers)
    parts: list[Any] = [
        _HEADER.pack(MAGIC, VERSION, 0, n, len(data)),
        struct.pack(f"<{n}Q", *[b.nbytes for b in buffers]),
        data,
    ]
    end = _HEADER_SIZE + 8 * n + len(data)
    for buf in buffers:
        start = _align(end)
        if start != end:
            parts.append(_PAD[: start - end])
        parts.append(buf)
        end = start + buf.nbytes
    return b"".join(parts)


def packed_pieces(obj: SerializedObject) -> list[tuple[int, Any]]:
    """The packed layout of ``obj`` as ``(offset, bytes-like)`` pieces, without copying.

    The gaps between pieces are zero padding. Lets a writer hand each piece straight to the
    kernel (``os.pwrite``) instead of copying it through a mapping.
    """
    data = obj.data
    buffers = obj.buffers
    n = len(buffers)
    header = _HEADER.pack(MAGIC, VERSION, 0, n, len(data))
    if not n:
        return [(0, header), (_HEADER_SIZE, data)]
    pieces: list[tuple[int, Any]] = [
        (0, header + struct.pack(f"<{n}Q", *[b.nbytes for b in buffers])),
        (_HEADER_SIZE + 8 * n, data),
    ]
    end = _HEADER_SIZE + 8 * n + len(data)
    for buf in buffers:
        start = _align(end)
        pieces.append((start, buf))
        end = start + buf.nbytes
    return pieces


def _as_bytes_view(buf: Any) -> memoryview:
    view = buf if type(buf) is memoryview else memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        if not view.c_contiguous:
            raise ValueError("packed object buffer must be contiguous")
        view = view.cast("B")
    return view


def pack_into(obj: SerializedObject, target: Any) -> int:
    """Write the packed layout of ``obj`` into the writable buffer ``target``; return its size.

    ``target`` must hold at least ``obj.total_size`` bytes. Each out-of-band buffer is copied
    exactly once, straight into ``target``.
    """
    view = _as_bytes_view(target)
    if view.readonly:
        raise ValueError("pack_into needs a writable buffer, got a read-only one")
    total = obj.total_size
    if view.nbytes < total:
        raise ValueError(f"pack_into needs {total} bytes, the target holds {view.nbytes}")
    data = obj.data
    buffers = obj.buffers
    n = len(buffers)
    _HEADER.pack_into(view, 0, MAGIC, VERSION, 0, n, len(data))
    offset = _HEADER_SIZE
    if n:
        struct.pack_into(f"<{n}Q", view, offset, *[b.nbytes for b in buffers])
        offset += 8 * n
    view[offset : offset + len(data)] = data
    offset += len(data)
    for buf in buffers:
        start = _align(offset)
        if start != offset:
            view[offset:start] = _PAD[: start - offset]
        offset = start + buf.nbytes
        view[start:offset] = buf
    return offset


def _read_header(buf: Any, size: int) -> tuple[int, int, int]:
    """Validate the fixed header; return (number of buffers, stream start, stream end)."""
    if size < _HEADER_SIZE:
        raise ValueError(
            f"malformed packed object: {size} bytes is shorter than the {_HEADER_SIZE}-byte header"
        )
    magic, version, flags, n, data_len = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError(f"malformed packed object: bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION or flags != 0:
        raise ValueError(
            f"malformed packed object: unsupported version {version} / flags {flags:#x} "
            f"(this freight reads version {VERSION})"
        )
    data_start = _HEADER_SIZE + 8 * n
    data_end = data_start + data_len
    if data_end > size:
        raise ValueError(
            f"malformed packed object: header says {n} buffers and a {data_len}-byte stream "
            f"(at least {data_end} bytes), but only {size} bytes are present"
        )
    return n, data_start, data_end


def _load(stream: Any, buffers: list[memoryview]) -> Any:
    try:
        return _loads(stream, buffers=buffers)
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"malformed packed object: corrupt pickle stream ({exc})") from exc


def unpack(buf: Any) -> Any:
    """Rebuild the value from its packed layout, without copying its out-of-band buffers.

    The buffers given to pickle are slices of ``buf``: numpy arrays and other buffer-backed
    objects share its memory (and are read-only when ``buf`` is). Raises :class:`ValueError`
    when ``buf`` is not a well-formed packed object.
    """
    if type(buf) is bytes:
        n, data_start, data_end = _read_header(buf, len(buf))
        if n == 0 and data_end - data_start <= _SMALL_STREAM:
            return _load(buf[data_start:data_end], [])
        view = memoryview(buf)
    else:
        view = _as_bytes_view(buf)
        n, data_start, data_end = _read_header(view, view.nbytes)
    buffers: list[memoryview] = []
    if n:
        size = view.nbytes
        offset = data_end
        for (length,) in _LEN.iter_unpack(view[_HEADER_SIZE:data_start]):
            start = _align(offset)
            offset = start + length
            if offset > size:
                raise ValueError(
                    f"malformed packed object: buffer {len(buffers)} spans bytes "
                    f"{start}..{offset}, beyond the {size} bytes present"
                )
            buffers.append(view[start:offset])
    return _load(view[data_start:data_end], buffers)
