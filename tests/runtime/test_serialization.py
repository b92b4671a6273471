"""Serialization: round trips, zero-copy buffers, contained refs, packed-layout validation."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import mmap
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.objects.serialization import (
    ALIGNMENT,
    SerializedObject,
    deserialize,
    note_contained_ref,
    pack,
    pack_into,
    packed_pieces,
    serialize,
    unpack,
)

MAGIC = b"FRGT"
HEADER = struct.Struct("<4sHHIQ")


def roundtrip(value: Any) -> Any:
    return unpack(pack(serialize(value)))


def module_function(x: int) -> int:
    return x + 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Color(enum.Enum):
    RED = 1


PLAIN_VALUES = [
    0,
    -1,
    2**100,
    1.5,
    float("inf"),
    1 + 2j,
    "",
    "héllo wörld ✓",
    b"",
    b"\x00\xff" * 1000,
    bytearray(b"abc"),
    None,
    True,
    False,
    (),
    (1, "a", None),
    [1, 2, 3],
    list(range(1000)),
    {"a": 1, "b": [1, 2, {"c": (3,)}]},
    {(1, 2): "tuple key", 3: 4.0},
    {1, 2, 3},
    frozenset({"x"}),
    range(5, 50, 3),
    slice(1, 10, 2),
    Ellipsis,
    Point(1, 2),
    Color.RED,
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    decimal.Decimal("1.10"),
    fractions.Fraction(3, 7),
    uuid.UUID(int=12345),
    collections.OrderedDict(a=1),
    collections.Counter("hello"),
    ValueError("bad", 3),
    [[[[[1]]]]],
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=lambda v: type(v).__name__)
def test_roundtrip_preserves_value_and_type(value: Any) -> None:
    out = roundtrip(value)
    assert type(out) is type(value)
    if isinstance(value, BaseException):
        assert out.args == value.args
    else:
        assert out == value


def test_roundtrip_functions_lambdas_closures_and_local_classes() -> None:
    offset = 10

    def closure(x: int) -> int:
        return x + offset

    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

        def double(self) -> int:
            return self.v * 2

    fns = roundtrip([module_function, lambda x: x * 3, closure, functools.partial(pow, 2)])
    assert [f(2) for f in fns] == [3, 6, 12, 4]
    cls, inst = roundtrip((Local, Local(21)))
    assert cls(5).double() == 10
    assert inst.double() == 42


def test_functions_defined_in_main_work_in_another_process(tmp_path: Any) -> None:
    # A function and a class defined in a script's __main__ pickle by reference with plain
    # pickle, which would fail here; they must travel by value.
    out_file = tmp_path / "packed.bin"
    script = textwrap.dedent(
        f"""
        from freight.objects.serialization import pack, serialize

        def triple(x):
            return x * 3

        class Box:
            def __init__(self, v):
                self.v = v
            def get(self):
                return self.v

        with open({str(out_file)!r}, "wb") as f:
            f.write(pack(serialize([triple, Box(7), Box])))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    triple, box, box_cls = unpack(out_file.read_bytes())
    assert triple(4) == 12
    assert box.get() == 7
    assert box_cls(8).get() == 8


def test_numpy_arrays_travel_out_of_band_without_copy() -> None:
    arr = np.arange(1000, dtype=np.float64)
    obj = serialize(arr)
    assert len(obj.buffers) == 1
    assert obj.buffers[0].nbytes == arr.nbytes
    assert np.shares_memory(np.asarray(obj.buffers[0]), arr)
    assert len(obj.data) < 300  # only the array's metadata is in the pickle stream


def test_numpy_from_read_only_buffer_is_zero_copy_read_only_and_aligned() -> None:
    value: dict[str, np.ndarray] = {
        "a": np.arange(12, dtype=np.int32).reshape(3, 4),
        "b": np.ones(7, dtype=np.uint8),
    }
    obj = serialize(value)
    mm = mmap.mmap(-1, obj.total_size)
    assert pack_into(obj, memoryview(mm)) == obj.total_size
    view = memoryview(mm).toreadonly()
    out = unpack(view)
    backing = np.frombuffer(view, dtype=np.uint8)
    for key in value:
        assert np.array_equal(out[key], value[key])
        assert out[key].dtype == value[key].dtype
        assert not out[key].flags.writeable
        assert np.shares_memory(out[key], backing)
        assert out[key].ctypes.data % ALIGNMENT == 0


def test_unpack_of_bytes_gives_read_only_arrays() -> None:
    out = roundtrip(np.arange(100))
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0] = 1


def test_unpack_of_writable_buffer_gives_writable_shared_arrays() -> None:
    buf = bytearray(pack(serialize(np.zeros(10))))
    out = unpack(buf)
    out[3] = 5.0
    assert np.frombuffer(buf, dtype=np.uint8).any()
    assert np.shares_memory(out, np.frombuffer(buf, dtype=np.uint8))


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24.0).reshape(4, 6)[:, ::2],  # not contiguous: pickled in-band
        np.asfortranarray(np.arange(24).reshape(4, 6)),
        np.array(3.5),
        np.zeros((0, 3)),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array(["x", "yz"]),
        np.array([1, "a", None], dtype=object),
    ],
    ids=["strided", "fortran", "0d", "empty", "structured", "unicode", "object"],
)
def test_numpy_array_kinds_roundtrip(arr: np.ndarray) -> None:
    out = roundtrip(arr)
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    assert np.array_equal(out, arr) if arr.dtype != object else list(out) == list(arr)


def test_many_buffers_roundtrip_and_pack_matches_pack_into() -> None:
    value = [np.full(n, n % 256, dtype=np.uint8) for n in (1, 63, 64, 65, 1000)] + [
        bytearray(b"xy")
    ]
    obj = serialize(value)
    assert len(obj.buffers) == 5  # the C pickler writes a bytearray in-band
    packed = pack(obj)
    assert len(packed) == obj.total_size
    target = bytearray(obj.total_size + 10)
    assert pack_into(obj, memoryview(target)) == obj.total_size
    assert bytes(target[: obj.total_size]) == packed
    out = unpack(packed)
    for a, b in zip(out[:-1], value[:-1], strict=True):
        assert np.array_equal(a, b)
    assert out[-1] == bytearray(b"xy")


def test_packed_pieces_describe_the_packed_layout() -> None:
    obj = serialize([np.arange(10), "x", np.arange(3.0)])
    packed = bytearray(obj.total_size)
    for offset, piece in packed_pieces(obj):
        raw = memoryview(piece).cast("B")
        packed[offset : offset + raw.nbytes] = raw
    assert bytes(packed) == pack(obj)


def test_deserialize_inverts_serialize() -> None:
    value: dict[str, Any] = {"k": np.arange(5), "f": module_function}
    obj = serialize(value)
    out = deserialize(obj.data, obj.buffers)
    assert np.array_equal(out["k"], value["k"])
    assert out["f"](1) == 2


def test_pack_into_rejects_small_or_read_only_targets() -> None:
    obj = serialize(np.arange(10))
    with pytest.raises(ValueError, match="needs"):
        pack_into(obj, memoryview(bytearray(obj.total_size - 1)))
    with pytest.raises(ValueError, match="writable"):
        pack_into(obj, memoryview(bytes(obj.total_size)))


# --- contained refs -------------------------------------------------------------------------


class FakeRef:
    """Stands in for ObjectRef: notes itself when pickled."""

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __reduce__(self) -> Any:
        note_contained_ref(self)
        return (FakeRef, (self.ident,))


class Envelope:
    """Serializes its payload separately while being pickled (a nested serialize call)."""

    inner_refs: list[Any] = []

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __reduce__(self) -> Any:
        inner = serialize(self.payload)
        Envelope.inner_refs = inner.contained_refs
        return (_open_envelope, (pack(inner),))


def _open_envelope(packed: bytes) -> Envelope:
    return Envelope(unpack(packed))


def ids(refs: list[Any]) -> list[int]:
    return [r.ident for r in refs]


def test_contained_refs_are_collected() -> None:
    obj = serialize({"a": FakeRef(1), "b": [FakeRef(2), (FakeRef(3),)]})
    assert sorted(ids(obj.contained_refs)) == [1, 2, 3]
    assert ids(serialize(FakeRef(4)).contained_refs) == [4]
    assert serialize([1, 2, 3]).contained_refs == []


def test_nested_serialize_records_refs_separately() -> None:
    obj = serialize([FakeRef(1), Envelope([FakeRef(2), FakeRef(3)]), FakeRef(4)])
    assert ids(obj.contained_refs) == [1, 4]
    assert ids(Envelope.inner_refs) == [2, 3]
    out = unpack(pack(obj))
    assert ids(out[1].payload) == [2, 3]


def test_refs_are_not_duplicated_when_cloudpickle_takes_over() -> None:
    # The lambda makes the C pickler fail after it already noted the ref once.
    obj = serialize([FakeRef(1), lambda: 0])
    assert ids(obj.contained_refs) == [1]


def test_note_contained_ref_outside_serialize_is_a_no_op() -> None:
    note_contained_ref(FakeRef(1))
    assert pickle.loads(pickle.dumps(FakeRef(2))).ident == 2
    assert serialize([FakeRef(3)]).contained_refs[0].ident == 3


def test_contained_refs_are_per_thread() -> None:
    barrier = threading.Barrier(2, timeout=30)

    class MeetingRef(FakeRef):
        def __reduce__(self) -> Any:
            note_contained_ref(self)
            barrier.wait()  # both threads are inside serialize() at this point
            return (FakeRef, (self.ident,))

    results: dict[int, SerializedObject] = {}

    def work(ident: int) -> None:
        results[ident] = serialize([MeetingRef(ident), FakeRef(ident * 10)])

    threads = [threading.Thread(target=work, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(ids(results[1].contained_refs)) == [1, 10]
    assert sorted(ids(results[2].contained_refs)) == [2, 20]


def test_serialize_errors_propagate_and_leave_no_active_list() -> None:
    with pytest.raises(TypeError):
        serialize([threading.Lock()])
    # Nothing of the failed call is left active: a ref pickled now is not recorded anywhere.
    note_contained_ref(FakeRef(1))
    assert serialize([FakeRef(2)]).contained_refs[0].ident == 2


# --- malformed input ------------------------------------------------------------------------


def header(n: int, data_len: int, version: int = 1, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    return HEADER.pack(magic, version, flags, n, data_len)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "shorter"),
        (b"FRGT\x01\x00", "shorter"),
        (header(0, 3, magic=b"XXXX") + b"abc", "bad magic"),
        (header(0, 3, version=9) + b"abc", "version"),
        (header(0, 3, flags=1) + b"abc", "flags"),
        (header(0, 100) + b"abc", "only"),
        (header(2**32 - 1, 0), "only"),
        (header(0, 2**64 - 1), "only"),
        (header(0, 5) + b"\xff\xff\xff\xff\xff", "corrupt pickle"),
        (header(0, 2) + pickle.dumps(1)[:2], "corrupt pickle"),
    ],
)
def test_malformed_input_raises_value_error(blob: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unpack(blob)
    with pytest.raises(ValueError, match=match):
        unpack(memoryview(bytearray(blob)))


def test_buffer_beyond_end_raises_value_error() -> None:
    packed = pack(serialize(np.arange(100)))
    with pytest.raises(ValueError, match="beyond"):
        unpack(packed[:-1])
    n = HEADER.unpack_from(packed)[3]
    lengths = struct.pack(f"<{n}Q", *([2**63] * n))
    forged = packed[: HEADER.size] + lengths + packed[HEADER.size + 8 * n :]
    with pytest.raises(ValueError, match="beyond"):
        unpack(forged)


def test_missing_out_of_band_buffer_raises_value_error() -> None:
    obj = serialize(np.arange(10))
    forged = header(0, len(obj.data)) + obj.data
    with pytest.raises(ValueError, match="corrupt pickle"):
        unpack(forged)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_value_error(blob: bytes) -> None:
    try:
        unpack(blob)
    except ValueError:
        pass


_GOOD = pack(serialize({"a": np.arange(50, dtype=np.int16), "b": "text", "c": np.ones(3)}))
_GOOD_STREAM_START = HEADER.size + 8 * HEADER.unpack_from(_GOOD)[3]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_GOOD)),
    st.lists(st.tuples(st.integers(0, _GOOD_STREAM_START - 1), st.integers(0, 255)), max_size=4),
    st.binary(max_size=64),
)
def test_corrupted_framing_only_raises_value_error(
    cut: int, flips: list[tuple[int, int]], tail: bytes
) -> None:
    # Truncate a good packed object, or append junk to it, and overwrite bytes of its header
    # (magic, version, flags, stream length, buffer lengths; the buffer count stays, so the
    # pickle stream, which is not checksummed, is never garbage).
    blob = bytearray(_GOOD[:cut])
    for pos, byte in flips:
        if pos < len(blob) and not 8 <= pos < 12:
            blob[pos] = byte
    if cut == len(_GOOD):
        blob += tail
    try:
        unpack(bytes(blob))
    except ValueError:
        pass


def test_total_size_matches_pack_for_plain_values() -> None:
    for value in PLAIN_VALUES:
        obj = serialize(value)
        assert obj.total_size == len(pack(obj))


def test_values_that_mention_main_still_roundtrip() -> None:
    value = {"module": "__main__", "pid": os.getpid(), "f": module_function}
    assert roundtrip(value)["module"] == "__main__"
