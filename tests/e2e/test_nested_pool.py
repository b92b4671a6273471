"""Nested tasks on a one-CPU node: blocked workers lend their CPU, and the pool shrinks back."""

import psutil
import pytest

import freight
from freight.testing import wait_for_condition


def _workers(session_dir: str) -> int:
    n = 0
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "freight.worker" in cmd and session_dir in cmd:
            n += 1
    return n


@pytest.fixture(scope="module")
def one_cpu_cluster():
    mp = pytest.MonkeyPatch()
    mp.setenv("FREIGHT_WORKER_IDLE_TIMEOUT_S", "2")
    freight.init(num_cpus=1)
    try:
        yield freight._api._worker.session_dir
    finally:
        freight.shutdown()
        mp.undo()


@freight.remote
def leaf(x):
    return x


@freight.remote
def middle(n):
    return sum(freight.get([leaf.remote(i) for i in range(n)]))


@freight.remote
def top(n):
    return freight.get(middle.remote(n))


def test_three_levels_of_nested_tasks_finish_on_one_cpu(one_cpu_cluster):
    # Three parents blocked in get() at once would deadlock a pool capped at one worker.
    assert freight.get([top.remote(4) for _ in range(3)], timeout=60) == [6, 6, 6]


def test_pool_shrinks_back_to_the_cpu_count_after_idling(one_cpu_cluster):
    freight.get([top.remote(2) for _ in range(3)], timeout=60)
    assert _workers(one_cpu_cluster) > 1
    wait_for_condition(lambda: _workers(one_cpu_cluster) == 1, what="the pool to shrink to 1")
    # The remaining worker still runs tasks.
    assert freight.get(leaf.remote(7), timeout=30) == 7
