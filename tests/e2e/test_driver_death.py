"""A driver that dies without shutting down: its actors go with it, its detached actors stay,
its job ends, and the cluster records the disconnect."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import freight
from freight.state import list_actors, list_events, list_jobs
from freight.testing import (
    Cluster,
    connected_cluster,
    wait_for_condition,
)

DRIVER = """
    import os, sys, threading
    import freight

    freight.init(address=sys.argv[2], namespace="lost")

    @freight.remote
    class Holder:
        def pid(self):
            return os.getpid()

    @freight.remote
    def block(marker):
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        threading.Event().wait()

    owned = Holder.options(name="owned").remote()
    kept = Holder.options(name="kept", lifetime="detached").remote()
    pids = freight.get([owned.pid.remote(), kept.pid.remote()])
    running = block.remote(sys.argv[1] + ".task")
    while not os.path.exists(sys.argv[1] + ".task"):
        threading.Event().wait(0.01)  # the task is running once its worker wrote this
    with open(sys.argv[1] + ".task") as f:
        pids.append(int(f.read()))
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(" ".join(map(str, pids)) + " " + freight.get_runtime_context().get_job_id())
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    threading.Event().wait()
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 2}) as c:
        yield c


def _actor(name: str) -> dict:
    rows = [a for a in list_actors(filters=[("name", "=", name)])]
    return max(rows, key=lambda a: a["start_time"])


def test_a_killed_driver_takes_its_actors_but_not_its_detached_ones(
    cluster: Cluster, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(ready), cluster.address],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_condition(
            lambda: ready.exists() or driver.poll() is not None, 60, "the driver's actors"
        )
        assert driver.poll() is None, driver.communicate()[1].decode(errors="replace")[-4000:]
        owned_pid, kept_pid, task_pid, job_id = ready.read_text().split()
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        wait_for_condition(
            lambda: _actor("owned")["state"] == "DEAD", 30, "the driver's actor to be killed"
        )
        wait_for_condition(lambda: not psutil.pid_exists(int(owned_pid)), 30, "its process to exit")
        assert "driver" in _actor("owned")["death_cause"]
        # The task it left running is stopped: nobody is left to take its result.
        wait_for_condition(
            lambda: not psutil.pid_exists(int(task_pid)), 30, "the driver's task to be stopped"
        )
        # The detached actor lives on, and answers.
        kept = freight.get_actor("kept", namespace="lost")
        assert freight.get(kept.pid.remote(), timeout=60) == int(kept_pid)
        assert _actor("kept")["state"] == "ALIVE"
        job = next(j for j in list_jobs() if j["job_id"] == job_id)
        assert job["state"] == "FAILED" and job["end_time"]
        kinds = {e["kind"] for e in list_events(filters=[("job_id", "=", job_id)])}
        assert "DRIVER_DISCONNECTED" in kinds
        freight.kill(kept)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
