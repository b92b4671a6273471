"""Actor lifetimes: a non-detached actor is destroyed once no handle to it is left anywhere.

Handles passed to tasks and actors count (they borrow the creator's reference), and so do calls
still pending; a detached actor lives until it is killed."""

import gc
import os
import uuid

import psutil
import pytest

from freight.testing import wait_for_condition as wait_until

from ._impl import FREIGHT, exc, rt


@rt.remote
class Held:
    def pid(self):
        return os.getpid()

    def ping(self):
        return "pong"


@rt.remote
class Keeper:
    """Holds another actor's handle until told to drop it."""

    def __init__(self, handles=None, gate=None):
        self.held = handles[0] if handles else None

    def keep(self, handles):
        [self.held] = handles
        return rt.get(self.held.pid.remote())

    def call(self):
        return rt.get(self.held.ping.remote())

    def drop(self):
        self.held = None
        return "dropped"


@rt.remote
def call_when_released(handles, release):
    wait_until(lambda: os.path.exists(release), 120, "the test to release the task")
    return rt.get(handles[0].ping.remote())


@rt.remote
def when_released(release):
    wait_until(lambda: os.path.exists(release), 120, "the test to release the task")
    return True


@rt.remote
def make_actor():
    h = Held.remote()
    return [h, rt.get(h.pid.remote())]


def gone(pid):
    return not psutil.pid_exists(pid)


def row(actor_id):
    from freight.state import get_actor

    return get_actor(actor_id)


def wait_destroyed(wait_for, actor_id, pid):
    """The actor's process exits and (freight's state API) it is DEAD with Ray's cause."""
    wait_for(lambda: gone(pid), 60, f"actor process {pid} to exit")
    if FREIGHT:
        wait_for(lambda: row(actor_id)["state"] == "DEAD", 30, "the actor to be DEAD")
        assert "all references to the actor were removed" in row(actor_id)["death_cause"]


def test_deleting_the_last_handle_destroys_the_actor(wait_for):
    h = Held.remote()
    pid = rt.get(h.pid.remote())
    actor_id = h._actor_id.hex()
    del h
    gc.collect()
    wait_destroyed(wait_for, actor_id, pid)


def test_a_call_on_a_handle_nobody_keeps_still_runs():
    assert rt.get(Held.remote().ping.remote(), timeout=60) == "pong"


def test_a_named_actor_goes_with_its_handles(wait_for):
    name = f"held-{uuid.uuid4().hex[:8]}"
    h = Held.options(name=name).remote()
    pid = rt.get(h.pid.remote())
    del h
    gc.collect()
    wait_for(lambda: gone(pid), 60, f"actor process {pid} to exit")
    with pytest.raises(ValueError):
        rt.get_actor(name)


def test_a_handle_passed_to_a_task_keeps_the_actor_until_the_task_drops_it(tmp_path, wait_for):
    kept, control = Held.remote(), Held.remote()
    kept_pid, control_pid = rt.get([kept.pid.remote(), control.pid.remote()])
    kept_id = kept._actor_id.hex()
    release = str(tmp_path / "release")
    # In a list, so the task gets the handle itself (the borrower), not a resolved value.
    call = call_when_released.remote([kept], release)
    del kept, control
    gc.collect()
    # The control actor, dropped at the same moment but borrowed by nobody, goes first.
    wait_for(lambda: gone(control_pid), 60, f"actor process {control_pid} to exit")
    assert not gone(kept_pid)
    open(release, "w").close()
    assert rt.get(call, timeout=60) == "pong"
    del call
    wait_destroyed(wait_for, kept_id, kept_pid)


def test_a_handle_kept_by_another_actor_keeps_the_actor_alive(wait_for):
    kept, control = Held.remote(), Held.remote()
    control_pid = rt.get(control.pid.remote())
    kept_id = kept._actor_id.hex()
    keeper = Keeper.remote()
    kept_pid = rt.get(keeper.keep.remote([kept]))
    del kept, control
    gc.collect()
    wait_for(lambda: gone(control_pid), 60, f"actor process {control_pid} to exit")
    assert rt.get(keeper.call.remote(), timeout=60) == "pong"
    assert rt.get(keeper.drop.remote()) == "dropped"
    wait_destroyed(wait_for, kept_id, kept_pid)
    rt.kill(keeper)


def test_a_borrower_that_dies_no_longer_keeps_the_actor(wait_for):
    kept = Held.remote()
    kept_id = kept._actor_id.hex()
    keeper = Keeper.remote()
    kept_pid = rt.get(keeper.keep.remote([kept]))
    del kept
    gc.collect()
    assert rt.get(keeper.call.remote(), timeout=60) == "pong"
    rt.kill(keeper)  # its process dies holding the handle: the creator sees it go
    wait_destroyed(wait_for, kept_id, kept_pid)


def test_a_handle_given_to_an_actor_constructor_keeps_the_actor_alive(tmp_path, wait_for):
    kept, control = Held.remote(), Held.remote()
    kept_pid, control_pid = rt.get([kept.pid.remote(), control.pid.remote()])
    kept_id = kept._actor_id.hex()
    release = str(tmp_path / "release")
    # The creation waits for its other argument: meanwhile only it holds the handle.
    keeper = Keeper.remote([kept], when_released.remote(release))
    del kept, control
    gc.collect()
    wait_for(lambda: gone(control_pid), 60, f"actor process {control_pid} to exit")
    open(release, "w").close()
    assert rt.get(keeper.call.remote(), timeout=60) == "pong"
    assert rt.get(keeper.drop.remote()) == "dropped"
    wait_destroyed(wait_for, kept_id, kept_pid)
    rt.kill(keeper)


def test_a_handle_returned_by_the_task_that_made_the_actor(wait_for):
    h, pid = rt.get(make_actor.remote(), timeout=60)
    # The task that created it has finished; the driver's handle keeps the actor.
    assert rt.get(h.ping.remote(), timeout=60) == "pong"
    actor_id = h._actor_id.hex()
    del h
    gc.collect()
    wait_destroyed(wait_for, actor_id, pid)


def test_a_detached_actor_outlives_its_handles(wait_for):
    name, control = f"detached-{uuid.uuid4().hex[:8]}", Held.remote()
    control_pid = rt.get(control.pid.remote())
    h = Held.options(name=name, lifetime="detached").remote()
    pid = rt.get(h.pid.remote())
    del h, control
    gc.collect()
    wait_for(lambda: gone(control_pid), 60, f"actor process {control_pid} to exit")
    again = rt.get_actor(name)
    assert rt.get(again.pid.remote(), timeout=60) == pid
    rt.kill(again)
    with pytest.raises(exc.RayActorError):
        rt.get(again.ping.remote(), timeout=60)
