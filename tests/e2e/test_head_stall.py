"""The head stalls and comes back: it judges its nodes only by time it saw go by.

A SIGSTOPped head (or one whose event loop a long GC or disk stall holds) resumes with the
heartbeats and health-check answers of its stall still queued. It must not read that silence
as the nodes' death: no node is marked dead, no actor is restarted or killed, and every actor
process (detached too) serves on. Nor may a state-API filter stall the head: a regular
expression that backtracks for minutes in Python's engine runs in linear time.

The cluster runs with quick health checks (period 0.2 s, timeout 0.3 s, 3 in a row: a node
that stops answering is found dead within 1.1 s) and a 3 s heartbeat timeout, and the head is
stopped for 8 s: far longer than either.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import freight
from freight import state
from freight.testing import Cluster, connected_cluster, wait_for_condition

QUICK = {
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.2",
    "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "0.3",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    "FREIGHT_NODE_TIMEOUT_S": "3",
}
STALL_S = 8.0  # how long the head stays stopped: well beyond the heartbeat timeout
HEARD_AGAIN_S = 1.5  # and heartbeats this long after SIGCONT, so that the head judged them
# Tasks named like this make Python's backtracking engine take 2**40 steps on the filter.
CATASTROPHIC = ("a" * 40, "name~^(a+)+b")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}, env=QUICK) as c:
        yield c


@freight.remote(num_cpus=0)
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


@freight.remote
def named() -> int:
    return 1


def head_pid(cluster: Cluster) -> int:
    return int(json.loads((Path(cluster.session_dir) / "head.json").read_text())["pid"])


def events(kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    return [e for e in state.list_events(limit=10_000) if e["kind"] in kinds]


def all_heard_since(when: float) -> bool:
    """Every node has sent a heartbeat the head took after ``when`` (or one is DEAD: then the
    assertions below say so)."""
    nodes = state.list_nodes()
    return any(n["state"] != "ALIVE" for n in nodes) or all(
        n["last_heartbeat"] > when for n in nodes
    )


def test_a_stopped_head_marks_no_node_dead_and_keeps_every_actor(cluster: Cluster) -> None:
    actors = [
        Counter.remote(),
        Counter.options(max_restarts=3).remote(),
        Counter.options(name="stall-detached", lifetime="detached").remote(),
    ]
    try:
        pids = freight.get([a.pid.remote() for a in actors], timeout=60)
        assert freight.get([a.add.remote() for a in actors], timeout=60) == [1, 1, 1]
        before = len(events(("NODE_DEAD", "ACTOR_RESTARTED", "ACTOR_DEAD")))
        pid = head_pid(cluster)

        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STALL_S)  # the stall itself: how long the head stays stopped
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed, resumed_wall = time.monotonic(), time.time()

        # Nothing lost: the same processes answer, with the state they had.
        assert freight.get([a.add.remote() for a in actors], timeout=60) == [2, 2, 2]
        wait_for_condition(
            lambda: all_heard_since(resumed_wall), 30, "every node's heartbeat after SIGCONT"
        )
        healthy = time.monotonic() - resumed
        # The head has judged the nodes several times since, with their heartbeats read.
        wait_for_condition(
            lambda: all_heard_since(resumed_wall + HEARD_AGAIN_S),
            30,
            "every node's heartbeats after SIGCONT",
        )

        assert {n["state"] for n in state.list_nodes()} == {"ALIVE"}
        assert len(state.list_nodes()) == 2
        assert events(("NODE_DEAD", "ACTOR_RESTARTED", "ACTOR_DEAD"))[before:] == []
        assert freight.get([a.pid.remote() for a in actors], timeout=60) == pids
        rows = {r["actor_id"]: r for r in state.list_actors(detail=True)}
        for a in actors:
            row = rows[a._actor_id.hex()]
            assert (row["state"], row["num_restarts"]) == ("ALIVE", 0)
        print(
            f"\nhead stopped {STALL_S:g} s; healthy with nothing lost {healthy:.2f} s after SIGCONT"
        )
    finally:
        for a in actors:
            freight.kill(a)


def test_a_catastrophic_regex_filter_neither_stalls_the_head_nor_hangs_the_caller(
    cluster: Cluster,
) -> None:
    name, evil = CATASTROPHIC
    assert freight.get([named.options(name=name).remote() for _ in range(3)], timeout=60) == [1] * 3
    wait_for_condition(
        lambda: len(state.list_tasks(filters=[f"name={name}"])) == 3, 60, "the task rows"
    )
    answers: dict[str, Any] = {}

    def filtered() -> None:
        try:
            answers["rows"] = state.list_tasks(filters=[evil], timeout=60)
        except Exception as exc:
            answers["error"] = exc

    caller = threading.Thread(target=filtered)
    caller.start()
    served = 0
    while caller.is_alive() or not served:  # the head answers other calls meanwhile
        assert state.list_nodes(timeout=10)
        served += 1
    caller.join()

    assert "error" not in answers, answers.get("error")
    assert len(answers["rows"]) == 0
    assert len(state.list_tasks(filters=["name~^(a+)+$"])) >= 3  # the engine does match
    with pytest.raises(ValueError, match=r"bad regular expression.*RE2 syntax"):
        state.list_tasks(filters=[r"name~(a)\1"])  # a backreference: not RE2, said so
    assert state.list_nodes(timeout=10)


def test_init_names_a_stopped_head_as_not_answering_and_a_missing_one_as_not_listening(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head that is there but does not answer (stopped, overloaded) is not reported as absent:
    the refused connection and the deadline get different words."""
    from freight import _api

    monkeypatch.setattr(_api, "INIT_PING_TIMEOUT_S", 1.0)  # the head is stopped: no need for 15 s
    pid = head_pid(cluster)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ConnectionError, match="did not answer within 1 s") as e:
            _api._resolve_address(cluster.address)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "no freight head is listening" not in str(e.value)
    assert "freight status" in str(e.value)

    with pytest.raises(
        ConnectionError, match=re.escape("no freight head is listening at 127.0.0.1:9")
    ):
        _api._resolve_address("127.0.0.1:9")  # the discard port: nothing listens there
    assert {n["state"] for n in state.list_nodes()} == {"ALIVE"}  # the short stall cost nothing
