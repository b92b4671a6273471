"""`sort_by` at the state service against a real cluster: tasks, actors and events in the order
asked for, pages that follow it while rows are added, a clear INVALID_ARGUMENT for a field the
kind does not have, and `freight list KIND --sort-by FIELD [--desc]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import freight
from freight import state
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.util.grpc_auth import sync_channel
from freight.util.tokens import read_token

FREIGHT = str(Path(sys.executable).with_name("freight"))
NAMES = ("sorted_c", "sorted_a", "sorted_b")
TASKS = 60
ACTORS = 12


@freight.remote
def sorted_work(i: int) -> int:
    if i % 10 == 0:
        raise ValueError(f"task {i} fails on purpose")
    return i


@freight.remote(num_cpus=0)
class Sorted:
    def ping(self) -> int:
        return 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {"FREIGHT_TASK_ROWS_SAMPLE": "0"}  # every task gets its record
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        refs = [
            sorted_work.options(name=NAMES[i % 3], max_retries=0).remote(i) for i in range(TASKS)
        ]
        for ref in refs:
            try:
                freight.get(ref)
            except freight.exceptions.RayTaskError:
                pass
        wait_for_condition(
            lambda: (
                state.list_state("tasks", ["name~^sorted_", "state~^(FINISHED|FAILED)$"]).matched
                == TASKS
            ),
            what="every task's record ended at the head",
        )
        yield c


def names(rows: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [r[key] for r in rows]


def test_tasks_sorted_by_name_and_error_type(cluster: Cluster) -> None:
    rows = state.list_state("tasks", ["name~^sorted_"], limit=TASKS, sort_by="name")
    assert names(rows) == sorted(names(rows)) and len(rows) == TASKS
    # Equal names: the default order (the order the head first heard of them).
    first = [r["task_id"] for r in state.list_state("tasks", ["name=sorted_a"], limit=TASKS)]
    assert [r["task_id"] for r in rows if r["name"] == "sorted_a"] == first
    down = state.list_state(
        "tasks", ["name~^sorted_"], limit=TASKS, sort_by="name", descending=True
    )
    assert names(down) == sorted(names(rows), reverse=True)
    # The failed ones have an error type, the others none: those come last either way.
    for descending in (False, True):
        by_error = state.list_state(
            "tasks", ["name~^sorted_"], limit=TASKS, sort_by="error_type", descending=descending
        )
        errors = names(by_error, "error_type")
        assert errors[: TASKS // 10] == ["ValueError"] * (TASKS // 10)
        assert set(errors[TASKS // 10 :]) == {""}


def test_sorted_actor_pages_neither_repeat_nor_skip_while_actors_arrive(cluster: Cluster) -> None:
    held = [Sorted.options(name=f"sorted-{i:02d}").remote() for i in range(0, 2 * ACTORS, 2)]
    freight.get([a.ping.remote() for a in held])
    before = {r["actor_id"] for r in state.list_state("actors", ["name~^sorted-"], limit=100)}
    assert len(before) == ACTORS
    for descending in (False, True):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = state.list_state(
                "actors",
                ["name~^sorted-"],
                limit=5,
                cursor=cursor,
                sort_by="name",
                descending=descending,
            )
            seen += page
            # An actor whose name sorts anywhere arrives between pages.
            n = len(held) * 2 + 1
            held.append(Sorted.options(name=f"sorted-{n:02d}").remote())
            freight.get(held[-1].ping.remote())
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        ids = [r["actor_id"] for r in seen]
        assert len(ids) == len(set(ids)), "an actor was listed twice"
        assert before <= set(ids), "an actor that was there all along was skipped"
        assert names(seen) == sorted(names(seen), reverse=descending)
        before = {r["actor_id"] for r in state.list_state("actors", ["name~^sorted-"], limit=100)}


def test_numbers_and_times_sort_as_such(cluster: Cluster) -> None:
    events = state.list_state("events", limit=1000, sort_by="time", descending=True)
    times = names(events, "time")
    assert times == sorted(times, reverse=True) and len(times) > 1
    nodes = state.list_state("nodes", sort_by="num_workers", descending=True)
    workers = names(nodes, "num_workers")
    assert workers == sorted(workers, reverse=True)


def test_a_cursor_pages_only_the_order_it_came_from(cluster: Cluster) -> None:
    page = state.list_state("tasks", ["name~^sorted_"], limit=5, sort_by="name")
    assert page.next_cursor
    with pytest.raises(ValueError, match="this cursor pages through tasks by name"):
        state.list_state("tasks", ["name~^sorted_"], limit=5, cursor=page.next_cursor)
    with pytest.raises(ValueError, match="this cursor pages through tasks by name"):
        state.list_state("tasks", limit=5, cursor=page.next_cursor, sort_by="name", descending=True)


def test_an_unknown_sort_field_is_invalid_argument_and_the_head_keeps_serving(
    cluster: Cluster,
) -> None:
    channel = sync_channel(cluster.address, read_token(cluster.session_dir))
    try:
        stub = pb_grpc.StateServiceStub(channel)
        for kind in ("tasks", "actors"):
            with pytest.raises(grpc.RpcError) as err:
                stub.List(pb.ListStateRequest(kind=kind, sort_by="colour"), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = err.value.details() or ""
            assert f"cannot sort {kind} by 'colour'" in details and "sort by one of" in details
            assert "name" in details and "state" in details
        with pytest.raises(grpc.RpcError) as err:
            stub.List(pb.ListStateRequest(kind="tasks", descending=True), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.List(pb.ListStateRequest(kind="nodes"), timeout=10).matched >= 1
    finally:
        channel.close()


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args, "--address", cluster.address],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="250", NO_COLOR="1"),
        stdin=subprocess.DEVNULL,
    )


def test_cli_list_sort_by(cluster: Cluster) -> None:
    proc = cli(
        cluster, "list", "tasks", "--filter", "name~^sorted_", "--sort-by", "name", "--desc",
        "--limit", "7", "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    got = [r["name"] for r in out["items"]]
    assert got == ["sorted_c"] * 7 and out["remaining"] == TASKS - 7
    proc = cli(cluster, "list", "tasks", "--sort-by", "colour")
    assert proc.returncode != 0
    assert "cannot sort tasks by 'colour'" in proc.stderr and "sort by one of" in proc.stderr
    proc = cli(cluster, "list", "tasks", "--sort-by", "name", "--watch")
    assert proc.returncode != 0 and "--sort-by orders one listing" in proc.stderr
