"""The public surface: what `import freight` offers, and that it is Ray core's."""

import freight
from freight import exceptions

RAY_CORE_NAMES = {
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "get",
    "put",
    "wait",
    "cancel",
    "kill",
    "get_actor",
    "method",
    "nodes",
    "cluster_resources",
    "available_resources",
    "get_runtime_context",
    "ObjectRef",
    "ActorHandle",
    "exceptions",
}

RAY_EXCEPTION_NAMES = {
    "RayError",
    "RayTaskError",
    "RayActorError",
    "ActorDiedError",
    "GetTimeoutError",
    "TaskCancelledError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectStoreFullError",
    "WorkerCrashedError",
    "NodeDiedError",
    "OutOfMemoryError",
}


def test_every_ray_core_name_is_exported():
    assert set(freight.__all__) >= RAY_CORE_NAMES


def test_every_exported_name_exists():
    for name in freight.__all__:
        assert hasattr(freight, name), name


def test_nothing_private_is_exported():
    assert not [n for n in freight.__all__ if n.startswith("_")]


def test_exceptions_have_ray_names_and_one_base():
    for name in RAY_EXCEPTION_NAMES:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.RayError), name
    assert set(exceptions.__all__) >= RAY_EXCEPTION_NAMES


def test_task_error_is_also_the_original_type():
    err = exceptions.RayTaskError("f", "Traceback ...", KeyError("k")).as_instanceof_cause()
    assert isinstance(err, KeyError)
    assert isinstance(err, exceptions.RayTaskError)
    assert "Traceback ..." in str(err)


def test_get_timeout_is_a_timeout_error():
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
