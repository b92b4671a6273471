"""Actor checkpoints: state saved every N calls (or T seconds) survives SIGKILL of the actor's
process, with at most the calls since the last save lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import freight
from freight.testing import local_cluster, short_temp_dir, wait_for_condition


@pytest.fixture(scope="module")
def checkpoints() -> Iterator[Path]:
    with short_temp_dir() as tmp:
        where = tmp / "ckpt"
        with local_cluster({"FREIGHT_ACTOR_CHECKPOINT_DIR": str(where)}, num_cpus=2):
            yield where


def counter(calls: object = 5, interval_s: float = 10.0, saves: bool = True) -> Any:
    """A counting actor class that checkpoints every ``calls`` calls or ``interval_s`` seconds
    (defined here, so that it travels to the workers by value)."""

    class Counter:
        __freight_checkpoint_calls__ = calls
        __freight_checkpoint_interval_s__ = interval_s

        def __init__(self) -> None:
            self.value = 0

        def incr(self) -> int:
            self.value += 1
            return self.value

        def pid(self) -> int:
            return os.getpid()

        def __freight_checkpoint__(self) -> dict[str, int]:
            if not saves:
                raise RuntimeError("no disk today")
            return {"value": self.value}

        def __freight_restore__(self, state: dict[str, int]) -> None:
            self.value = state["value"]

    return freight.remote(Counter)


def _kill(actor) -> None:
    pid = freight.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    wait_for_condition(lambda: not psutil.pid_exists(pid), 30, f"process {pid} to be reaped")


def test_a_counter_survives_sigkill_losing_only_calls_since_the_last_save(
    checkpoints: Path,
) -> None:
    c = counter().options(max_restarts=1).remote()
    assert [freight.get(c.incr.remote()) for _ in range(12)] == list(range(1, 13))
    assert (checkpoints / f"{c._actor_id.hex()}.ckpt").exists()  # in the configured folder
    _kill(c)
    # Saved after calls 5 and 10: calls 11 and 12 are the ones lost.
    assert freight.get(c.incr.remote(), timeout=60) == 11


def test_the_interval_saves_after_every_call_once_it_has_passed(checkpoints: Path) -> None:
    c = counter(1000, 1e-9).options(max_restarts=1).remote()  # always due
    assert [freight.get(c.incr.remote()) for _ in range(3)] == [1, 2, 3]
    _kill(c)
    assert freight.get(c.incr.remote(), timeout=60) == 4


def test_a_failing_save_does_not_fail_the_call(checkpoints: Path) -> None:
    c = counter(1, saves=False).options(max_restarts=1).remote()
    assert freight.get([c.incr.remote() for _ in range(3)]) == [1, 2, 3]
    _kill(c)
    assert freight.get(c.incr.remote(), timeout=60) == 1  # nothing was ever saved


def test_a_bad_rhythm_is_refused_at_creation(checkpoints: Path) -> None:
    c = counter(0).remote()
    with pytest.raises(freight.exceptions.RayActorError, match="__freight_checkpoint_calls__"):
        freight.get(c.incr.remote(), timeout=60)
