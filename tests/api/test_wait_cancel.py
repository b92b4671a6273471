"""get timeouts, wait, cancel."""

import contextlib
import os
import time

import pytest

from ._impl import FREIGHT, INIT_KWARGS, exc, rt
from .conftest import wait_until


@rt.remote
def quick(x):
    return x


@rt.remote
def sleeper(seconds, marker=None):
    if marker:
        with open(marker, "w") as f:
            f.write("started")
    time.sleep(seconds)
    return "woke"


@pytest.fixture
def slow_refs():
    """Refs of long sleeps; cancelled at the end so they do not hold CPUs."""
    refs = [sleeper.remote(600) for _ in range(2)]
    yield refs
    for ref in refs:
        rt.cancel(ref, force=True)
    # Wait for the cancellations to land so the next test finds its CPUs free.
    for ref in refs:
        with contextlib.suppress(exc.RayError):
            rt.get(ref, timeout=60)
    wait_until(
        lambda: rt.available_resources().get("CPU", 0) == INIT_KWARGS["num_cpus"],
        what="every CPU to be free after cancelling the sleeping tasks",
    )


def test_get_with_timeout_raises_get_timeout_error(slow_refs):
    with pytest.raises(exc.GetTimeoutError):
        rt.get(slow_refs[0], timeout=0.5)


def test_get_timeout_error_is_catchable_as_timeout_error(slow_refs):
    with pytest.raises(TimeoutError):
        rt.get(slow_refs[0], timeout=0.1)


def test_wait_num_returns_splits_ready_and_not_ready(slow_refs):
    fast = [quick.remote(i) for i in range(2)]
    ready, not_ready = rt.wait(fast + slow_refs, num_returns=2, timeout=60)
    assert set(ready) == set(fast)
    assert set(not_ready) == set(slow_refs)


def test_wait_timeout_returns_what_is_ready(slow_refs):
    fast = [quick.remote(i) for i in range(2)]
    rt.get(fast)
    ready, not_ready = rt.wait(fast + slow_refs, num_returns=4, timeout=0.5)
    assert set(ready) == set(fast)
    assert set(not_ready) == set(slow_refs)


def test_wait_zero_timeout_with_nothing_ready(slow_refs):
    ready, not_ready = rt.wait(slow_refs, num_returns=1, timeout=0)
    assert ready == []
    assert set(not_ready) == set(slow_refs)


def test_wait_defaults_to_one_ready():
    refs = [quick.remote(i) for i in range(3)]
    ready, not_ready = rt.wait(refs)
    assert len(ready) == 1
    assert len(not_ready) == 2


def test_wait_all_ready():
    refs = [quick.remote(i) for i in range(5)]
    ready, not_ready = rt.wait(refs, num_returns=5, timeout=60)
    assert sorted(rt.get(ready)) == list(range(5))
    assert not_ready == []


def test_wait_without_fetch_local_gives_same_split(slow_refs):
    fast = [quick.remote(i) for i in range(2)]
    ready, not_ready = rt.wait(fast + slow_refs, num_returns=2, timeout=60, fetch_local=False)
    assert set(ready) == set(fast)
    assert set(not_ready) == set(slow_refs)


def start_sleeper(tmp_path, wait_for):
    marker = str(tmp_path / "started")
    ref = sleeper.remote(600, marker)
    wait_for(lambda: os.path.exists(marker), what="the task to start")
    return ref


@pytest.mark.skipif(
    not FREIGHT, reason="Ray 2.60 does not interrupt a sleeping task without force=True"
)
def test_cancel_running_task_then_get_raises_task_cancelled(tmp_path, wait_for):
    ref = start_sleeper(tmp_path, wait_for)
    rt.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(ref, timeout=60)


def test_force_cancel_running_task_then_get_raises_task_cancelled(tmp_path, wait_for):
    ref = start_sleeper(tmp_path, wait_for)
    rt.cancel(ref, force=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(ref, timeout=60)


def test_cancel_queued_task_then_get_raises_task_cancelled(tmp_path, wait_for):
    holder = start_sleeper(tmp_path, wait_for)
    # The holder takes one of the four CPUs, so a four-CPU request waits in the queue.
    queued = sleeper.options(num_cpus=4).remote(600)
    rt.cancel(queued)
    rt.cancel(holder, force=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(queued, timeout=60)


def test_cluster_serves_after_cancel(tmp_path, wait_for):
    ref = start_sleeper(tmp_path, wait_for)
    rt.cancel(ref, force=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(ref, timeout=60)
    assert rt.get([quick.remote(i) for i in range(8)]) == list(range(8))


@rt.remote
def start_sleeper_inside(marker):
    # The sleeper's ref is owned by this task's worker, not by the driver that cancels it. It
    # returns once the sleeper runs: the sleeper is then in another worker (an idle owner could
    # otherwise be leased its own task, and a forced cancel would kill the owner with it).
    ref = sleeper.remote(600, marker)
    wait_until(lambda: os.path.exists(marker), 120, "the sleeper to start")
    return [ref]


@rt.remote
def wait_on_sleeper(marker):
    return rt.get(sleeper.remote(600, marker))


@rt.remote
def start_waiter_inside(marker):
    ref = wait_on_sleeper.remote(marker)
    wait_until(lambda: os.path.exists(marker), 120, "the waiter's sleeper to start")
    return [ref]


def started_inside(starter, tmp_path, wait_for):
    """A ref of a long task that another worker submitted (and owns), once it runs."""
    marker = str(tmp_path / "started")
    [ref] = rt.get(starter.remote(marker), timeout=60)
    wait_for(lambda: os.path.exists(marker), what="the task to start")
    return ref


def test_force_cancel_of_a_ref_another_worker_owns(tmp_path, wait_for):
    ref = started_inside(start_sleeper_inside, tmp_path, wait_for)
    rt.cancel(ref, force=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(ref, timeout=60)


@pytest.mark.skipif(
    not FREIGHT, reason="Ray 2.60 does not interrupt a sleeping task without force=True"
)
def test_cancel_of_a_ref_another_worker_owns(tmp_path, wait_for):
    ref = started_inside(start_sleeper_inside, tmp_path, wait_for)
    rt.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(ref, timeout=60)


def test_recursive_cancel_of_a_ref_another_worker_owns_reaches_its_children(tmp_path, wait_for):
    # The waiter runs blocked on a sleeper it started; cancelling the waiter cancels both.
    waiter = started_inside(start_waiter_inside, tmp_path, wait_for)
    rt.cancel(waiter, force=True, recursive=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(waiter, timeout=60)
    wait_for(
        lambda: rt.available_resources().get("CPU", 0) == INIT_KWARGS["num_cpus"],
        what="every CPU to be free: the sleeper was cancelled with the waiter",
    )


@rt.remote
class Desk:
    def hold(self, marker, release):
        open(marker, "w").close()
        wait_until(lambda: os.path.exists(release), 120, "the test to release the call")
        return "held"

    def ping(self):
        return "pong"


def held_desk(tmp_path, wait_for):
    """An actor busy with a call until the test creates the returned release file."""
    desk = Desk.remote()
    marker, release = str(tmp_path / "holding"), str(tmp_path / "release")
    holding = desk.hold.remote(marker, release)
    wait_for(lambda: os.path.exists(marker), what="the actor to start its first call")
    return desk, holding, release


def test_force_cancel_of_an_actor_call_is_refused(tmp_path, wait_for):
    desk, holding, release = held_desk(tmp_path, wait_for)
    waiting = desk.ping.remote()
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        rt.cancel(waiting, force=True)
    open(release, "w").close()
    assert rt.get([holding, waiting], timeout=60) == ["held", "pong"]
    rt.kill(desk)


def test_cancel_of_an_actor_call_that_has_not_started(tmp_path, wait_for):
    desk, holding, release = held_desk(tmp_path, wait_for)
    waiting = desk.ping.remote()
    rt.cancel(waiting)
    open(release, "w").close()
    assert rt.get(holding, timeout=60) == "held"  # the running call is not interrupted
    with pytest.raises(exc.TaskCancelledError):
        rt.get(waiting, timeout=60)
    assert rt.get(desk.ping.remote(), timeout=60) == "pong"
    rt.kill(desk)


@rt.remote
def call_desk(desk, marker, release):
    return rt.get(desk.hold.remote(marker, release))


def test_recursive_force_cancel_spares_the_actor_a_task_was_calling(tmp_path, wait_for):
    desk = Desk.remote()
    marker, release = str(tmp_path / "holding"), str(tmp_path / "release")
    caller = call_desk.remote(desk, marker, release)
    wait_for(lambda: os.path.exists(marker), what="the actor to start the task's call")
    rt.cancel(caller, force=True, recursive=True)
    with pytest.raises(exc.TaskCancelledError):
        rt.get(caller, timeout=60)
    open(release, "w").close()
    assert rt.get(desk.ping.remote(), timeout=60) == "pong"  # force never reaches actor calls
    rt.kill(desk)
