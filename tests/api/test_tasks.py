"""Remote functions: submission, options, multiple returns, retries."""

import os

import pytest

from ._impl import exc, rt


@rt.remote
def add(a, b=0):
    return a + b


@rt.remote(num_returns=3)
def three():
    return 1, 2, 3


def test_remote_function_returns_value():
    assert rt.get(add.remote(1, 2)) == 3


def test_keyword_arguments_are_passed():
    assert rt.get(add.remote(1, b=41)) == 42


def test_remote_returns_object_ref():
    assert isinstance(add.remote(1), rt.ObjectRef)


def test_get_list_keeps_order():
    refs = [add.remote(i) for i in range(20)]
    assert rt.get(refs) == list(range(20))


def test_get_with_timeout_returns_value_when_ready():
    assert rt.get(add.remote(5), timeout=60) == 5


def test_decorator_with_options():
    @rt.remote(num_cpus=1, num_gpus=0, memory=10 * 1024 * 1024)
    def one():
        return 1

    assert rt.get(one.remote()) == 1


def test_options_override_on_call():
    assert rt.get(add.options(num_cpus=2).remote(2, 2)) == 4


def test_custom_resource_request_runs():
    assert rt.get(add.options(resources={"custom": 1}).remote(7)) == 7


def test_num_returns_three_gives_three_refs():
    refs = three.remote()
    assert len(refs) == 3
    assert all(isinstance(r, rt.ObjectRef) for r in refs)
    assert rt.get(list(refs)) == [1, 2, 3]


def test_num_returns_via_options():
    @rt.remote
    def pair():
        return "a", "b"

    first, second = pair.options(num_returns=2).remote()
    assert (rt.get(first), rt.get(second)) == ("a", "b")


def test_ref_argument_is_resolved_before_the_task_runs():
    @rt.remote
    def kind(x):
        return type(x).__name__, x

    assert rt.get(kind.remote(rt.put(10))) == ("int", 10)


def test_chained_tasks_pass_results():
    assert rt.get(add.remote(add.remote(1, 2), add.remote(3, 4))) == 10


def test_max_retries_recovers_from_worker_crash(tmp_path):
    marker = str(tmp_path / "crashed-once")

    @rt.remote(max_retries=2)
    def crash_first_time(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("x")
            os._exit(1)
        return "recovered"

    assert rt.get(crash_first_time.remote(marker), timeout=120) == "recovered"


def test_retry_exceptions_retries_application_error(tmp_path):
    attempts = tmp_path / "attempts"

    @rt.remote(max_retries=2, retry_exceptions=True)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            if len(f.read()) < 2:
                raise ValueError("first attempt fails")
        return "ok"

    assert rt.get(flaky.remote(str(attempts)), timeout=120) == "ok"
    assert attempts.read_text() == "xx"


def test_application_error_not_retried_by_default(tmp_path):
    attempts = tmp_path / "attempts"

    @rt.remote(max_retries=2)
    def always_fails(path):
        with open(path, "a") as f:
            f.write("x")
        raise ValueError("no retry for application errors")

    with pytest.raises(ValueError):
        rt.get(always_fails.remote(str(attempts)), timeout=120)
    assert attempts.read_text() == "x"


def test_worker_crash_without_retries_raises_worker_crashed():
    @rt.remote(max_retries=0)
    def die():
        os._exit(1)

    with pytest.raises(exc.WorkerCrashedError):
        rt.get(die.remote(), timeout=120)
