"""Actors that die: max_restarts runs the constructor again, max_task_retries reruns the calls
that were in flight, and an actor out of restarts stays dead. Deaths are real: the actor's
worker process is killed with SIGKILL, or exits in the middle of a call."""

import os
import signal

import psutil
import pytest

from freight.testing import wait_for_condition as wait_until

from ._impl import FREIGHT, exc, rt


@rt.remote
class Life:
    def __init__(self):
        self.calls = 0

    def pid(self):
        return os.getpid()

    def count(self):
        self.calls += 1
        return self.calls

    def exit_once(self, marker):
        """Exit the process the first time (mid-call); answer on the next attempt."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "answered"

    def exit_always(self):
        os._exit(1)


def _gone(pid: int) -> bool:
    # Reaped, not just a zombie: a zombie leader's other threads may still hold its sockets.
    return not psutil.pid_exists(pid)


def _kill(actor) -> int:
    """SIGKILL the actor's process and wait until it is reaped (its sockets are closed), so
    the next call cannot be sent to it: a call it had received would be lost with it."""
    pid = rt.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), 30, f"process {pid} to exit")
    return pid


def _state(actor) -> dict:
    from freight.state import get_actor

    return get_actor(actor._actor_id.hex())


def test_an_actor_with_restarts_left_comes_back_with_a_fresh_constructor(wait_for) -> None:
    a = Life.options(max_restarts=1).remote()
    assert rt.get([a.count.remote() for _ in range(3)]) == [1, 2, 3]
    first = _kill(a)
    # The next call waits for the restart and runs on the new worker, from a fresh state.
    assert rt.get(a.count.remote(), timeout=60) == 1
    assert rt.get(a.pid.remote()) != first
    if FREIGHT:
        row = _state(a)
        assert row["state"] == "ALIVE" and row["num_restarts"] == 1
    _kill(a)  # the one restart is spent: now it is dead for good
    with pytest.raises(exc.RayActorError):
        rt.get(a.count.remote(), timeout=60)
    if FREIGHT:
        wait_for(lambda: _state(a)["state"] == "DEAD", 30, "the actor to be DEAD")


def test_unlimited_restarts(wait_for) -> None:
    a = Life.options(max_restarts=-1).remote()
    pids = set()
    for _ in range(3):
        pids.add(_kill(a))
        assert rt.get(a.count.remote(), timeout=60) == 1
    assert len(pids) == 3


def test_an_actor_without_restarts_dies_with_its_worker() -> None:
    a = Life.remote()
    _kill(a)
    with pytest.raises(exc.RayActorError):
        rt.get(a.count.remote(), timeout=60)


def test_a_call_in_flight_is_retried_with_max_task_retries(tmp_path) -> None:
    a = Life.options(max_restarts=1, max_task_retries=1).remote()
    assert rt.get(a.exit_once.remote(str(tmp_path / "m1")), timeout=60) == "answered"
    # Per call, .options(max_task_retries=0) says not to.
    b = Life.options(max_restarts=1, max_task_retries=1).remote()
    with pytest.raises(exc.RayActorError):
        rt.get(b.exit_once.options(max_task_retries=0).remote(str(tmp_path / "m2")), timeout=60)
    assert rt.get(b.count.remote(), timeout=60) == 1  # and the actor did restart


def test_a_call_in_flight_fails_without_task_retries(tmp_path) -> None:
    a = Life.options(max_restarts=2).remote()
    with pytest.raises(exc.RayActorError) as err:
        rt.get(a.exit_once.remote(str(tmp_path / "m")), timeout=60)
    if FREIGHT:
        assert "died while running" in str(err.value)
    assert rt.get(a.exit_once.remote(str(tmp_path / "m")), timeout=60) == "answered"


def test_retries_end_when_restarts_run_out() -> None:
    a = Life.options(max_restarts=2, max_task_retries=-1).remote()
    with pytest.raises(exc.RayActorError):
        rt.get(a.exit_always.remote(), timeout=60)


def test_kill_with_no_restart_false_restarts_and_true_does_not() -> None:
    a = Life.options(max_restarts=1).remote()
    first = rt.get(a.pid.remote())
    rt.kill(a, no_restart=False)
    wait_until(lambda: _gone(first), 30, f"process {first} to exit")
    assert rt.get(a.pid.remote(), timeout=60) != first
    rt.kill(a)
    with pytest.raises(exc.RayActorError):
        rt.get(a.count.remote(), timeout=60)


@pytest.mark.parametrize(
    ("options", "error"),
    # As in Ray: a value of the wrong type is a TypeError, one out of range a ValueError.
    [
        ({"max_restarts": "2"}, TypeError),
        ({"max_restarts": -2}, ValueError),
        ({"max_task_retries": 1.5}, TypeError),
    ],
)
def test_bad_restart_options_say_what_to_write(options, error) -> None:
    (key,) = options
    with pytest.raises(error, match="integer >= -1" if FREIGHT else key):
        Life.options(**options).remote()
