"""Bad input gives a clear error and the cluster keeps serving."""

import threading
import uuid

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


# -- option values: the wrong type is a TypeError, a value out of range a ValueError, as in Ray --

# (options, exception, same in Ray): rows Ray decides otherwise run against freight only (Ray
# takes a bool where an int is asked, a string num_returns, an empty name, other runtime_envs).
TASK_OPTION_CASES = [
    ({"num_cpus": "1"}, TypeError, True),
    ({"num_gpus": -0.5}, ValueError, True),
    ({"memory": "1GB"}, TypeError, True),
    ({"resources": ["custom"]}, TypeError, True),
    ({"resources": {"custom": -1}}, ValueError, True),
    ({"resources": {"CPU": 1}}, ValueError, True),
    ({"max_retries": "3"}, TypeError, True),
    ({"max_retries": -2}, ValueError, True),
    ({"retry_exceptions": "yes"}, TypeError, True),
    ({"retry_exceptions": [int]}, ValueError, True),
    ({"name": 5}, TypeError, True),
    ({"scheduling_strategy": 5}, TypeError, True),
    ({"runtime_env": "env"}, TypeError, True),
    ({"num_cpus": float("nan")}, ValueError, False),
    ({"num_returns": "two"}, TypeError, False),
    ({"num_returns": -1}, ValueError, False),
    ({"max_retries": True}, TypeError, False),
    ({"name": ""}, ValueError, False),
    ({"runtime_env": {"pip": ["requests"]}}, ValueError, False),
]
ACTOR_OPTION_CASES = [
    ({"max_pending_calls": -7}, ValueError, True),
    ({"max_pending_calls": "10"}, TypeError, True),
    ({"get_if_exists": "yes"}, TypeError, True),
    ({"get_if_exists": True}, ValueError, True),  # without a name
    ({"max_concurrency": "2"}, TypeError, True),
    ({"max_restarts": -2}, ValueError, True),
    ({"max_task_retries": 1.5}, TypeError, True),
    ({"lifetime": 1}, TypeError, True),
    ({"lifetime": "forever"}, ValueError, True),
    ({"namespace": 1}, TypeError, True),
    ({"name": 1}, TypeError, True),
    ({"num_cpus": "1"}, TypeError, True),
    ({"max_concurrency": 0}, ValueError, False),
    ({"max_restarts": False}, TypeError, False),
]


def _runs_here(same_in_ray):
    if not (FREIGHT or same_in_ray):
        pytest.skip("Ray decides this value otherwise")


def _ids(cases):
    return [f"{k}={v!r}" for options, _, _ in cases for k, v in options.items()]


@pytest.mark.parametrize(
    ("options", "error", "same_in_ray"), TASK_OPTION_CASES, ids=_ids(TASK_OPTION_CASES)
)
def test_a_bad_task_option_names_itself(options, error, same_in_ray):
    _runs_here(same_in_ray)
    (key,) = options
    with pytest.raises(error, match=key if FREIGHT or key != "resources" else None):
        ok.options(**options).remote()
    with pytest.raises(error):
        rt.remote(**options)(lambda: 1)


@pytest.mark.parametrize(
    ("options", "error", "same_in_ray"), ACTOR_OPTION_CASES, ids=_ids(ACTOR_OPTION_CASES)
)
def test_a_bad_actor_option_names_itself(options, error, same_in_ray):
    _runs_here(same_in_ray)
    (key,) = options
    with pytest.raises(error, match=key):
        Plain.options(**options).remote()
    with pytest.raises(error):
        rt.remote(**options)(type("Other", (), {}))


def test_max_calls_must_be_a_count_set_in_the_decorator():
    with pytest.raises(TypeError, match="max_calls"):
        rt.remote(max_calls="abc")(lambda: 1)
    with pytest.raises(ValueError, match="max_calls"):
        rt.remote(max_calls=-1)(lambda: 1)
    with pytest.raises(ValueError, match="max_calls"):
        ok.options(max_calls=2)


class _Undecorated:
    def ping(self):
        return "pong"


def test_get_if_exists_with_a_name_from_the_decorator_is_accepted():
    name = f"decorated-{uuid.uuid4().hex[:8]}"
    named = rt.remote(name=name, namespace=name)(_Undecorated)
    first = named.options(get_if_exists=True).remote()
    second = named.options(get_if_exists=True).remote()
    assert rt.get(second.ping.remote(), timeout=60) == "pong"
    assert first._actor_id.hex() == second._actor_id.hex()
    rt.kill(first)


# -- timeouts -------------------------------------------------------------------------------------


def test_get_with_a_nan_timeout_raises_value_error():
    with pytest.raises(ValueError, match="timeout" if FREIGHT else None):
        rt.get(ok.remote(), timeout=float("nan"))


def test_wait_with_a_nan_or_negative_timeout_raises_value_error():
    ref = ok.remote()
    for bad in (float("nan"), -1):
        with pytest.raises(ValueError, match="timeout" if FREIGHT else None):
            rt.wait([ref], timeout=bad)


@pytest.mark.skipif(not FREIGHT, reason="Ray raises OverflowError for an infinite timeout")
def test_an_infinite_timeout_waits_as_long_as_it_takes():
    assert rt.get(ok.remote(3), timeout=float("inf")) == 3
    assert rt.get(ok.remote(4), timeout=1e300) == 4
    ready, not_ready = rt.wait([ok.remote(5)], timeout=float("inf"))
    assert len(ready) == 1 and not not_ready


@pytest.mark.skipif(not FREIGHT, reason="Ray's own wording and types for these")
def test_get_with_a_negative_or_non_number_timeout_says_what_to_pass():
    with pytest.raises(ValueError, match=r"timeout must be None .* >= 0, got -1"):
        rt.get(ok.remote(), timeout=-1)
    with pytest.raises(TypeError, match="timeout must be None or a number"):
        rt.get(ok.remote(), timeout="5")


@pytest.mark.skipif(not FREIGHT, reason="Ray's own rules for placement-group waits")
def test_placement_group_wait_refuses_a_nan_timeout_and_takes_inf_as_no_limit():
    from freight.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1}])
    try:
        with pytest.raises(ValueError, match="timeout"):
            pg.wait(timeout_seconds=float("nan"))
        assert pg.wait(timeout_seconds=float("inf"))
    finally:
        remove_placement_group(pg)
