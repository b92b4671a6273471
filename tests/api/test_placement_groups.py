"""Placement groups seen from the tasks inside them: child-task capture, blocked parents."""

import contextlib
import importlib
import os
import time

import pytest

from freight.testing import wait_for_condition as wait_until

from ._impl import rt

pgs = importlib.import_module(f"{rt.__name__}.util.placement_group")
strategies = importlib.import_module(f"{rt.__name__}.util.scheduling_strategies")


def group_id_here():
    pg = pgs.get_current_placement_group()
    return pg.id if pg is not None else None


@rt.remote(num_cpus=1)
def child():
    return group_id_here()


@rt.remote(num_cpus=1)
def parent(child_options):
    # Blocked in get on its child: a 1-CPU bundle runs the child only if the parent gives the
    # bundle's CPU back while it waits.
    return group_id_here(), rt.get(child.options(**child_options).remote())


@rt.remote(num_cpus=1)
class Captain:
    def child_group(self):
        return rt.get(child.remote())


@rt.remote(num_cpus=1)
def occupy(marker, other_marker=None, hold_s=0.0):
    """Run from start to end; with ``other_marker``, hold the CPU until that task has started
    too (which it must not while this holds the group's only CPU), for at most ``hold_s``."""
    start = time.time()
    open(marker, "w").close()
    if other_marker is not None:
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: os.path.exists(other_marker), hold_s, "the other task")
    return start, time.time()


@pytest.fixture
def one_cpu_group():
    pg = pgs.placement_group([{"CPU": 1}])
    rt.get(pg.ready(), timeout=60)
    yield pg
    pgs.remove_placement_group(pg)


def in_group(pg, capture):
    return strategies.PlacementGroupSchedulingStrategy(
        pg, placement_group_capture_child_tasks=capture
    )


def test_parent_blocked_on_its_captured_child_in_a_one_cpu_bundle_completes(one_cpu_group):
    pg = one_cpu_group
    ref = parent.options(scheduling_strategy=in_group(pg, True)).remote({})
    assert rt.get(ref, timeout=60) == (pg.id, pg.id)


def test_a_child_with_its_own_strategy_leaves_the_group(one_cpu_group):
    pg = one_cpu_group
    ref = parent.options(scheduling_strategy=in_group(pg, True)).remote(
        {"scheduling_strategy": "DEFAULT"}
    )
    assert rt.get(ref, timeout=60) == (pg.id, None)


def test_children_are_not_captured_by_default(one_cpu_group):
    pg = one_cpu_group
    ref = parent.options(scheduling_strategy=in_group(pg, None)).remote({})
    assert rt.get(ref, timeout=60) == (pg.id, None)


def test_an_actor_in_a_capturing_group_runs_its_children_there():
    pg = pgs.placement_group([{"CPU": 2}])
    rt.get(pg.ready(), timeout=60)
    captain = Captain.options(scheduling_strategy=in_group(pg, True)).remote()
    assert rt.get(captain.child_group.remote(), timeout=60) == pg.id
    rt.kill(captain)
    pgs.remove_placement_group(pg)


def test_the_driver_is_in_no_group():
    assert group_id_here() is None


def test_one_bundle_and_any_bundle_share_the_groups_cpu(one_cpu_group, tmp_path, wait_for):
    pg = one_cpu_group
    first_marker, second_marker = str(tmp_path / "first"), str(tmp_path / "second")
    on_bundle_0 = strategies.PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    first = occupy.options(scheduling_strategy=on_bundle_0).remote(first_marker, second_marker, 3)
    wait_for(lambda: os.path.exists(first_marker), what="the first task to hold the bundle")
    # The group has one CPU: a task on any of its bundles waits for the first to finish.
    second = occupy.options(scheduling_strategy=in_group(pg, None)).remote(second_marker)
    (_, first_end), (second_start, _) = rt.get([first, second], timeout=60)
    assert second_start >= first_end
