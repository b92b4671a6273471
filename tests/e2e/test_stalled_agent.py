"""A node agent stalls (SIGSTOP) while a task stores a return value too large to travel inline:
the attempt fails as the runtime's failure, not the task's, and runs again once the agent is
back. No RayTaskError reaches the caller."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

import freight
from freight.exceptions import RaySystemError, RayTaskError
from freight.observe.recorder import RECORDER
from freight.testing import Cluster, connected_cluster, wait_for_condition

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESERVE_TIMEOUT_S = "1"
SIZE = 300 * 1024  # over FREIGHT_INLINE_MAX_BYTES: stored through the agent


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {"FREIGHT_OBJECT_RESERVE_TIMEOUT_S": RESERVE_TIMEOUT_S}
    with connected_cluster({"num_cpus": 1}, env=env) as c:
        yield c


def _wait_for_file(path: Path) -> None:
    wait_for_condition(path.exists, 120, f"{path.name} to appear")


def produce(folder: str) -> bytes:
    """Count the attempt, wait until told to return, return a value stored through the agent."""
    where = Path(folder)
    with open(where / "attempts", "a") as f:
        f.write("attempt\n")
    _wait_for_file(where / "go")  # the agent is stopped by now
    return b"r" * SIZE


@freight.remote(max_retries=3)
def large(folder: str) -> bytes:
    return produce(folder)


@freight.remote(max_restarts=0, max_task_retries=2)
class Holder:
    def ready(self) -> bool:
        return True

    def large(self, folder: str) -> bytes:
        return produce(folder)


def system_retries(name: str) -> float:
    """Attempts of ``name`` this driver retried after a system error (its own metrics: the
    agent that exports them is stopped)."""
    counters = RECORDER.snapshot()["c"]
    return sum(
        v
        for (metric, labels), v in counters.items()
        if metric == "freight_task_retries_total" and labels == (name, "system")
    )


def stall_the_agent_while_it_stores(
    cluster: Cluster, folder: Path, name: str, ref: freight.ObjectRef
) -> float:
    """Stop the agent once the task runs, let the task return, and continue the agent only
    after the store step gave up and the task was retried (or, wrongly, failed)."""
    agent = cluster.head_node.process.pid
    retried = system_retries(name)
    wait_for_condition((folder / "attempts").exists, 60, "the task to start")
    os.kill(agent, signal.SIGSTOP)
    try:
        (folder / "go").touch()
        wait_for_condition(
            lambda: system_retries(name) > retried or freight.wait([ref], timeout=0)[0],
            60,
            "the attempt whose result could not be stored to be retried",
        )
    finally:
        os.kill(agent, signal.SIGCONT)
    return time.monotonic()  # when the agent went on


def test_a_task_whose_return_cannot_be_stored_during_an_agent_stall_runs_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    ref = large.remote(str(tmp_path))
    continued = stall_the_agent_while_it_stores(cluster, tmp_path, "large", ref)
    assert freight.get(ref, timeout=120) == b"r" * SIZE  # no RayTaskError(TimeoutError)
    print(f"\nthe value arrived {time.monotonic() - continued:.2f} s after SIGCONT")
    assert (tmp_path / "attempts").read_text().count("attempt") >= 2


def test_an_actor_call_whose_return_cannot_be_stored_is_retried_under_max_task_retries(
    cluster: Cluster, tmp_path: Path
) -> None:
    holder = Holder.remote()
    freight.get(holder.ready.remote(), timeout=60)
    ref = holder.large.remote(str(tmp_path))
    stall_the_agent_while_it_stores(cluster, tmp_path, "Holder.large", ref)
    assert freight.get(ref, timeout=120) == b"r" * SIZE
    assert (tmp_path / "attempts").read_text().count("attempt") >= 2


def test_without_retries_the_caller_gets_a_system_error_not_the_tasks_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    ref = large.options(max_retries=0).remote(str(tmp_path))
    agent = cluster.head_node.process.pid
    wait_for_condition((tmp_path / "attempts").exists, 60, "the task to start")
    os.kill(agent, signal.SIGSTOP)
    try:
        (tmp_path / "go").touch()
        wait_for_condition(lambda: freight.wait([ref], timeout=0)[0], 60, "the attempt to fail")
    finally:
        os.kill(agent, signal.SIGCONT)
    with pytest.raises(RaySystemError, match="could not store the return value") as failed:
        freight.get(ref, timeout=60)
    assert not isinstance(failed.value, RayTaskError)
    assert "FREIGHT_OBJECT_RESERVE_TIMEOUT_S" in str(failed.value)
