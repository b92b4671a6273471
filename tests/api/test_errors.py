"""Remote failures keep their type and traceback; the exception classes keep Ray's names."""

import os

import pytest

from ._impl import exc, rt


def raise_value_error_deep_inside(x):
    raise ValueError(f"bad value {x}")


@rt.remote
def failing_task(x):
    raise_value_error_deep_inside(x)


class CustomError(Exception):
    pass


@rt.remote
def raise_custom():
    raise CustomError("custom")


@rt.remote
def identity(x):
    return x


def get_error(ref):
    with pytest.raises(exc.RayError) as info:
        rt.get(ref, timeout=120)
    return info.value


def test_task_error_is_value_error():
    assert isinstance(get_error(failing_task.remote(1)), ValueError)


def test_task_error_is_ray_task_error():
    assert isinstance(get_error(failing_task.remote(1)), exc.RayTaskError)


def test_task_error_carries_remote_traceback():
    text = str(get_error(failing_task.remote(1)))
    assert "raise_value_error_deep_inside" in text
    assert "bad value 1" in text


def test_custom_exception_type_is_kept():
    assert isinstance(get_error(raise_custom.remote()), CustomError)


def test_error_propagates_through_dependent_task():
    err = get_error(identity.remote(failing_task.remote(2)))
    assert isinstance(err, ValueError)


def test_cluster_keeps_serving_after_task_error():
    get_error(failing_task.remote(3))
    assert rt.get(identity.remote("still here")) == "still here"


def test_actor_method_error_keeps_type_and_actor_survives():
    @rt.remote
    class Fragile:
        def boom(self):
            raise KeyError("missing")

        def ok(self):
            return "ok"

    a = Fragile.remote()
    assert isinstance(get_error(a.boom.remote()), KeyError)
    assert rt.get(a.ok.remote()) == "ok"


def test_actor_constructor_error_fails_calls_with_actor_error():
    @rt.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("cannot start")

        def ping(self):
            return "pong"

    b = Broken.remote()
    assert isinstance(get_error(b.ping.remote()), exc.RayActorError)


def test_actor_process_exit_raises_actor_error():
    @rt.remote
    class Doomed:
        def die(self):
            os._exit(1)

    d = Doomed.remote()
    assert isinstance(get_error(d.die.remote()), exc.RayActorError)


@pytest.mark.parametrize(
    "name",
    [
        "RayError",
        "RayTaskError",
        "RayActorError",
        "GetTimeoutError",
        "TaskCancelledError",
        "ObjectLostError",
        "OwnerDiedError",
        "ObjectStoreFullError",
        "WorkerCrashedError",
        "OutOfMemoryError",
    ],
)
def test_exception_class_exists_under_rays_name(name):
    cls = getattr(exc, name)
    assert issubclass(cls, exc.RayError)


def test_owner_died_is_an_object_lost_error():
    assert issubclass(exc.OwnerDiedError, exc.ObjectLostError)


def test_get_timeout_error_is_a_timeout_error():
    assert issubclass(exc.GetTimeoutError, TimeoutError)
