"""The memory monitor kills a memory hog and leaves the rest alone (a real agent, real memory).

The threshold is the node's real memory use when the module starts plus a margin, as a fraction
(how production measures it, with a threshold this machine can reach without running out): the
hog allocates in steps until it is killed, a calm task started before it must live on, and the
hog's owner gets OutOfMemoryError listing the node's top memory users (after its retries). An
actor is killed only when no task runs, and the head records why it died.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from prometheus_client.parser import text_string_to_metric_families

import freight
from freight import state
from freight.exceptions import OutOfMemoryError, RayActorError
from freight.node.memory_monitor import memory_usage
from freight.testing import patched_environ, short_temp_dir
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

GiB = 1 << 30
CHUNK = 100 << 20
# Above the node's use at the start: the cluster's own processes (a few hundred MiB) and about
# a GiB for the hog. Other processes of the machine may move the baseline meanwhile; the hog
# allocates until it is killed, up to HOG_MAX, which stays far below the machine's memory.
MARGIN = 3 * GiB // 2
HOG_MAX = 6 * GiB
# Moves the machine's memory use by a GiB or more, or measures it: one such file at a time.
pytestmark = pytest.mark.xdist_group("memory")


def hog(limit: int) -> int:
    """Allocate (and touch) memory in 100 MiB steps until killed, or up to ``limit``."""
    chunks = []
    while len(chunks) * CHUNK < limit:
        chunks.append(b"\x01" * CHUNK)
    return len(chunks)


def calm(started: str, release: str) -> int:
    """Say it runs, then wait for the test to release it."""
    from freight.testing import wait_for_condition

    Path(started).write_text(str(os.getpid()))
    wait_for_condition(lambda: os.path.exists(release), 60, "the test's release file")
    return os.getpid()


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    if freight.is_initialized():
        freight.shutdown()  # another module's shared cluster: this module needs its own
    usage = memory_usage()
    # The figure the agent reads, so the message's 3-digit rounding of it is the test's too.
    threshold = float(f"{(usage.used + MARGIN) / usage.total:.4f}")
    with short_temp_dir() as temp_dir:
        with patched_environ(
            FREIGHT_TEMP_DIR=str(temp_dir),
            FREIGHT_MEMORY_USAGE_THRESHOLD=f"{threshold:.4f}",
            FREIGHT_MEMORY_MONITOR_REFRESH_MS="100",
        ):
            freight.init(num_cpus=2)  # the agent inherits the settings
        try:
            yield {"temp_dir": temp_dir, "threshold": threshold}
        finally:
            freight.shutdown()


def kills() -> float:
    """freight_memory_monitor_kills_total{kind="task"} of the node's agent."""
    (node,) = state.list_nodes(["state=ALIVE"])
    with urllib.request.urlopen(f"http://{node['metrics_address']}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "freight_memory_monitor_kills_total" and s.labels.get("kind") == "task"
    )


def oom_events(pid: str) -> list[dict[str, Any]]:
    return [e for e in state.list_events(["kind=TASK_OOM_KILLED"]) if e.get("pid") == pid]


def test_the_hog_is_killed_and_the_calm_task_lives_on(cluster: dict[str, Any]) -> None:
    before = kills()
    started = cluster["temp_dir"] / "calm-started"
    release = cluster["temp_dir"] / "calm-release"
    calm_ref = freight.remote(max_retries=0)(calm).remote(str(started), str(release))
    wait_until(started.exists, 30, "the calm task to start")
    calm_pid = int(started.read_text())

    hog_ref = freight.remote(max_retries=0)(hog).remote(HOG_MAX)
    with pytest.raises(OutOfMemoryError) as caught:
        freight.get(hog_ref, timeout=60)

    message = str(caught.value)
    assert re.search(
        r"Task '\S*hog' failed: its worker was killed because the node ran low", message
    )
    assert "(1 attempt(s); max_retries=0)" in message
    assert f"above the threshold {cluster['threshold']:.3f}" in message
    assert "chosen as the most recently started task" in message
    top = message.split("Top memory users of node", 1)[1].splitlines()
    killed = [line for line in top if line.endswith("(killed)")]
    assert len(killed) == 1 and re.search(r"task \S*hog", killed[0]), message
    assert float(killed[0].split()[1]) > 0.1  # its RSS, in GiB

    # The calm task's worker was left alone: it is still running, on the same process.
    ready, _ = freight.wait([calm_ref], timeout=0)
    assert ready == []
    release.write_text("")
    assert freight.get(calm_ref, timeout=30) == calm_pid

    hog_pid = killed[0].split()[0]
    (event,) = wait_until(lambda: oom_events(hog_pid), 30, "a TASK_OOM_KILLED event")
    assert event["message"] == message.split("\n", 1)[1]  # the agent's reason, as the owner got it
    wait_until(lambda: kills() >= before + 1, 10, "the kill counted in the agent's metrics")
    assert kills() == before + 1


def test_a_retriable_hog_is_retried_then_fails(cluster: dict[str, Any]) -> None:
    before = kills()
    hog_ref = freight.remote(max_retries=1)(hog).remote(HOG_MAX)
    with pytest.raises(OutOfMemoryError) as caught:
        freight.get(hog_ref, timeout=60)
    message = str(caught.value)
    assert "(2 attempt(s); max_retries=1)" in message
    assert "chosen as the most recently started retriable task" in message
    wait_until(lambda: kills() >= before + 2, 10, "both kills counted")
    assert kills() == before + 2


class Hog:
    def grow(self, limit: int) -> int:
        return hog(limit)


def test_with_no_task_running_an_actor_is_killed_and_its_death_says_why(
    cluster: dict[str, Any],
) -> None:
    actor = freight.remote(Hog).remote()
    with pytest.raises(RayActorError):
        freight.get(actor.grow.remote(HOG_MAX), timeout=60)
    (row,) = wait_until(
        lambda: [
            a for a in state.list_actors(["class_name=Hog"], detail=True) if a["state"] == "DEAD"
        ],
        30,
        "the actor to be recorded dead",
    )
    assert row["death_cause"].startswith("its worker was killed because the node ran low on memory")
    assert "chosen as the most recently started actor" in row["death_cause"]
