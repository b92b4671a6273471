"""put/get, inline and shared-memory objects, zero-copy reads."""

import numpy as np

from ._impl import rt

INLINE_LIMIT = 100 * 1024


@rt.remote
def echo(x):
    return x


@rt.remote
def describe(arr):
    return arr.shape, arr.dtype.str, float(arr[-1]), bool(arr.flags.writeable)


def test_put_returns_object_ref():
    assert isinstance(rt.put(1), rt.ObjectRef)


def test_put_get_small_value():
    value = {"a": [1, 2, 3], "b": ("x", None)}
    assert rt.get(rt.put(value)) == value


def test_get_list_of_put_refs():
    refs = [rt.put(i) for i in range(10)]
    assert rt.get(refs) == list(range(10))


def test_value_just_under_inline_limit_round_trips():
    data = b"a" * (INLINE_LIMIT - 1024)
    assert bytes(rt.get(rt.put(data))) == data


def test_value_just_over_inline_limit_round_trips():
    data = b"b" * (INLINE_LIMIT + 1024)
    assert bytes(rt.get(rt.put(data))) == data


def test_large_numpy_put_get_is_equal_and_read_only():
    arr = np.arange(1024 * 1024, dtype=np.float64)  # 8 MiB
    out = rt.get(rt.put(arr))
    assert np.array_equal(out, arr)
    assert not out.flags.writeable


def test_large_numpy_as_task_argument_round_trips():
    arr = np.arange(1024 * 1024, dtype=np.float64)
    out = rt.get(echo.remote(arr))
    assert np.array_equal(out, arr)
    assert not out.flags.writeable


def test_large_numpy_task_argument_is_read_only_in_task():
    arr = np.arange(1024 * 1024, dtype=np.float64)
    shape, dtype, last, writeable = rt.get(describe.remote(arr))
    assert (shape, dtype, last) == (arr.shape, arr.dtype.str, float(arr[-1]))
    assert writeable is False


def test_large_numpy_ref_argument_is_resolved():
    arr = np.ones(1024 * 1024, dtype=np.float64)
    shape, _, last, _ = rt.get(describe.remote(rt.put(arr)))
    assert shape == arr.shape
    assert last == 1.0


def test_big_bytes_round_trips():
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    assert bytes(rt.get(rt.put(data))) == data


def test_big_bytes_through_task_round_trips():
    data = bytes(range(256)) * (16 * 1024)
    assert bytes(rt.get(echo.remote(data))) == data


def test_same_ref_can_be_read_many_times():
    ref = rt.put(np.zeros(1024 * 1024, dtype=np.uint8))
    assert all(rt.get(ref).sum() == 0 for _ in range(5))


def test_task_returns_large_array():
    @rt.remote
    def make():
        return np.full(1024 * 1024, 3, dtype=np.int64)

    out = rt.get(make.remote())
    assert out.shape == (1024 * 1024,)
    assert int(out.sum()) == 3 * 1024 * 1024
