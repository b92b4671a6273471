"""A job runs while its workers are SIGKILLed at random: retries make every result arrive, and
arrive right."""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import freight
from freight.state import list_events
from freight.testing import local_cluster, wait_for_condition

TASKS = 1_000
WAVE = 100  # ten waves (as with 2,000 in waves of 200), each after the first once a kill landed


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with local_cluster(num_cpus=2) as info:
        yield info


@freight.remote
def square(i: int) -> int:
    x = 0
    for _ in range(20_000):  # a few milliseconds of work, so that kills land mid-task
        x += 1
    return i * i + x - 20_000


def _workers(session_dir: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "freight.worker" in cmd and any(session_dir in a for a in cmd):
            found.append(p)
    return found


def _more(killed: list[int], than: int) -> bool:
    return len(killed) > than


def test_a_job_survives_workers_killed_every_few_hundred_ms(cluster: dict[str, Any]) -> None:
    session = cluster["session_dir"]
    rng = random.Random(7)
    stop = threading.Event()
    killed: list[int] = []

    def killer() -> None:
        while not stop.wait(rng.uniform(0.2, 0.4)):  # the pace of the chaos, not a sync
            victims = _workers(session)
            if victims:
                victim = rng.choice(victims)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.append(victim.pid)
                except ProcessLookupError:
                    pass

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    refs: list[Any] = []
    try:
        # In waves: the job lasts until kills have landed between them, however fast this
        # machine runs the tasks (a kill during a wave, or else one before the next wave).
        before = 0
        for start in range(0, TASKS, WAVE):
            if start:
                wait_for_condition(functools.partial(_more, killed, before), 30, "a kill")
            before = len(killed)
            refs += [square.remote(i) for i in range(start, start + WAVE)]
        results = freight.get(refs, timeout=600)
    finally:
        stop.set()
        chaos.join(timeout=10)
    assert results == [i * i for i in range(TASKS)]
    assert len(killed) >= 3, f"only {len(killed)} workers were killed: the run proves little"
    crashes = [e for e in list_events() if e["kind"] == "WORKER_CRASHED"]
    assert crashes, "the kills were not recorded as worker crashes"
    print(f"\n{TASKS} tasks, {len(killed)} workers killed, every result right")
