"""Bad input gives a clear error and the cluster keeps serving."""

import threading

import pytest

from ._impl import FREIGHT, INIT_KWARGS, exc, rt


@rt.remote
def ok(x=1):
    return x


@rt.remote
def takes_guard(guard):
    return guard


@rt.remote
def returns_lock():
    return threading.Lock()


@rt.remote
class Plain:
    def ping(self):
        return "pong"


def test_calling_remote_function_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"\.remote\("):
        ok(1)


def test_get_on_a_non_reference_raises():
    # Ray raises ValueError for a bare non-reference and TypeError inside a list.
    expected = TypeError if FREIGHT else ValueError
    with pytest.raises(expected):
        rt.get(1)


def test_get_on_a_list_with_a_non_reference_raises_type_error():
    with pytest.raises(TypeError):
        rt.get([ok.remote(), "not a ref"])


def test_unpicklable_argument_raises_type_error_naming_it():
    with pytest.raises(TypeError) as info:
        takes_guard.remote(threading.Lock())
    if FREIGHT:
        assert "guard" in str(info.value)
    else:
        assert "lock" in str(info.value)


def test_unpicklable_return_value_fails_the_task():
    with pytest.raises(exc.RayTaskError) as info:
        rt.get(returns_lock.remote(), timeout=120)
    assert "_thread.lock" in str(info.value)


def test_negative_num_cpus_in_options_raises_value_error():
    with pytest.raises(ValueError, match="num_cpus"):
        ok.options(num_cpus=-1)


def test_negative_num_cpus_in_decorator_raises_value_error():
    with pytest.raises(ValueError, match="num_cpus"):
        rt.remote(num_cpus=-1)(lambda: 1)


def test_negative_num_cpus_for_actor_raises_value_error():
    with pytest.raises(ValueError, match="num_cpus"):
        Plain.options(num_cpus=-1)


def test_unknown_option_raises_value_error_listing_valid_ones():
    with pytest.raises(ValueError) as info:
        ok.options(num_cpu=1)
    assert "num_cpu" in str(info.value)
    assert "num_cpus" in str(info.value)
    assert "max_retries" in str(info.value)


def test_unknown_decorator_option_raises_value_error():
    with pytest.raises(ValueError, match="num_cpus"):
        rt.remote(not_an_option=True)(lambda: 1)


def test_unknown_actor_option_raises_value_error():
    with pytest.raises(ValueError, match="max_concurrency"):
        Plain.options(max_concurency=2)


def test_second_init_raises_runtime_error():
    assert rt.is_initialized()
    with pytest.raises(RuntimeError):
        rt.init(**INIT_KWARGS)


def test_second_init_with_ignore_reinit_error_is_allowed():
    rt.init(ignore_reinit_error=True)
    assert rt.is_initialized()
    assert rt.get(ok.remote(2)) == 2


@pytest.mark.skipif(not FREIGHT, reason="Ray keeps retrying an unreachable address for minutes")
def test_init_with_address_where_nothing_listens_raises_connection_error(own_init):
    with pytest.raises(ConnectionError) as info:
        rt.init(address="127.0.0.1:1")
    assert "127.0.0.1:1" in str(info.value)
    assert "listen" in str(info.value).lower()
    assert not rt.is_initialized()


def test_cluster_keeps_serving_after_bad_input():
    for bad in (
        lambda: ok(1),
        lambda: rt.get([ok.remote(), 1]),
        lambda: takes_guard.remote(threading.Lock()),
        lambda: ok.options(num_cpus=-1),
        lambda: ok.options(bogus=1),
    ):
        with pytest.raises((TypeError, ValueError)):
            bad()
    with pytest.raises(exc.RayTaskError):
        rt.get(returns_lock.remote(), timeout=120)
    assert rt.get([ok.remote(i) for i in range(10)]) == list(range(10))
