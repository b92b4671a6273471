"""Draining a node: what runs there goes on, new work goes elsewhere or waits, and undraining
lets it run there again; recorded, refused with the read-only token, shown in every view.

One cluster for the module: the head node (where this test's driver runs) and a second node.
The tests run in order: the second node is drained and undrained first, then the head node is
drained; the second node is removed near the end, to see work wait for a drained node, and the
head is restarted last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import freight
from freight import actions, state
from freight.client import access
from freight.testing import (
    Cluster,
    head_counter,
    patched_environ,
    short_temp_dir,
    wait_for_condition,
)
from freight.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

FREIGHT = str(Path(sys.executable).with_name("freight"))
REASON = "kernel upgrade"
WAITING_FOR_DRAINED = "waiting: every feasible node is draining"  # the pending reason shown


@freight.remote
def hold(started: str, release: str) -> str:
    """Run until the test creates ``release`` (a condition the test controls, not a delay)."""
    Path(started).touch()
    while not os.path.exists(release):
        time.sleep(0.02)
    return freight.get_runtime_context().get_node_id()


@freight.remote
def where() -> str:
    return freight.get_runtime_context().get_node_id()


@freight.remote
class Where:
    def node(self) -> str:
        return freight.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None),
        Cluster() as c,
    ):
        head = c.add_node(num_cpus=4)
        other = c.add_node(num_cpus=2)
        freight.init(address=c.address)
        # Once this runs, the head node's agent has the other node in its view (a heartbeat
        # reply after it joined), and chooses between the two.
        on_other = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        assert freight.get(where.options(scheduling_strategy=on_other).remote()) == other.node_id
        try:
            yield {"tmp": tmp, "cluster": c, "head": head.node_id, "other": other}
        finally:
            freight.shutdown()
            state.close()


def cli(cluster: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FREIGHT_TEMP_DIR": str(cluster["tmp"]), "COLUMNS": "200", **env},
        stdin=subprocess.DEVNULL,
    )


def node_row(cluster: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The node's row as `freight list nodes` gives it (the same state API call, from this
    process: without starting a command each time)."""
    (row,) = [n for n in state.list_nodes() if n["node_id"] == node_id]
    return dict(row)


def test_other_nodes_send_no_new_work_to_a_drained_node(cluster: dict[str, Any]) -> None:
    head, other = cluster["head"], cluster["other"].node_id
    tmp = Path(cluster["tmp"])
    # The head node three quarters busy: its agent sends this driver's next requests to the
    # other node.
    on_head = hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
    busy = [on_head.remote(str(tmp / f"busy{i}"), str(tmp / "done")) for i in range(3)]
    wait_for_condition(
        lambda: all((tmp / f"busy{i}").exists() for i in range(3)), 60, "the head node busy"
    )
    assert freight.get(where.options(num_cpus=0.5).remote(), timeout=60) == other
    # Drained, the other node gets none: from the head node's agent's next view on, and before
    # that (a request sent on an old view) from the drained node itself, which sends it back.
    assert actions.drain_node(other, reason="rack move").changed
    assert set(freight.get([where.remote() for _ in range(2)], timeout=60)) == {head}
    (tmp / "done").touch()
    assert freight.get(busy, timeout=60) == [head] * 3
    assert actions.undrain_node(other).changed


def test_a_drained_node_finishes_its_work_and_takes_no_new_work(cluster: dict[str, Any]) -> None:
    head, other = cluster["head"], cluster["other"].node_id
    tmp = Path(cluster["tmp"])
    # Open, the head node takes this driver's work first: it is mostly idle (packing).
    assert freight.get(where.remote(), timeout=60) == head
    assert freight.get(Where.remote().node.remote(), timeout=60) == head
    running = hold.remote(str(tmp / "started"), str(tmp / "release"))
    wait_for_condition((tmp / "started").exists, 60, "the long task to start")

    drained = cli(cluster, "drain", head[:10], "--reason", REASON)
    assert drained.returncode == 0, drained.stderr
    assert f"node {head[:12]} is draining" in drained.stdout, drained.stdout
    assert "1 task" in drained.stdout, drained.stdout  # the long one, which goes on

    # New tasks and a new actor go to the other node only, while the long task still runs.
    assert set(freight.get([where.remote() for _ in range(4)], timeout=60)) == {other}
    actor = Where.remote()
    assert freight.get(actor.node.remote(), timeout=60) == other
    freight.kill(actor)
    group = placement_group([{"CPU": 1}])
    assert group.wait(60)
    assert placement_group_table(group)["bundles_to_node_id"] == {0: other}
    remove_placement_group(group)
    # Three more long tasks: the other node (two CPUs) runs two, the third waits for them. When
    # the first long task ends, its worker on the drained node is given back, not reused.
    later = [hold.remote(str(tmp / f"started{i}"), str(tmp / "release2")) for i in range(3)]
    wait_for_condition(
        lambda: sum((tmp / f"started{i}").exists() for i in range(3)) == 2,
        60,
        "two later tasks to start",
    )
    assert not (tmp / "release").exists()
    (tmp / "release").touch()
    assert freight.get(running, timeout=60) == head  # it ran to its end where it was
    (tmp / "release2").touch()
    assert freight.get(later, timeout=60) == [other] * 3


def test_the_node_shows_as_draining(cluster: dict[str, Any]) -> None:
    head = cluster["head"]
    row = node_row(cluster, head)
    assert (row["state"], row["draining"], row["drain_reason"]) == ("DRAINING", True, REASON)
    assert node_row(cluster, cluster["other"].node_id)["state"] == "ALIVE"
    got = cli(cluster, "get", "node", head[:8], "-o", "json")
    assert json.loads(got.stdout)["state"] == "DRAINING", got.stdout + got.stderr
    status = cli(cluster, "status")
    assert status.returncode == 0, status.stderr
    assert "DRAINING" in status.stdout and f"node {head[:12]} is draining" in status.stdout
    nodes = json.loads(cli(cluster, "status", "-o", "json").stdout)["nodes"]
    assert {n["node_id"]: n["state"] for n in nodes}[head] == "DRAINING"


def test_draining_twice_changes_nothing_and_says_so(cluster: dict[str, Any]) -> None:
    again = actions.drain_node(cluster["head"], reason="another")
    assert again.draining and not again.changed and again.reason == REASON
    assert again.open_nodes == 1


def test_the_read_only_token_cannot_drain(cluster: dict[str, Any]) -> None:
    session = Path(cluster["cluster"].session_dir)
    readonly = (session / "token.readonly").read_text().strip()
    other = cluster["other"].node_id
    refused_before = head_counter(session, "freight_auth_refused_total")
    proc = cli(cluster, "drain", other, FREIGHT_TOKEN=readonly)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "read-only token" in proc.stderr and "admin token" in proc.stderr, proc.stderr
    assert node_row(cluster, other)["state"] == "ALIVE"
    assert head_counter(session, "freight_auth_refused_total") >= refused_before + 1


def test_an_unknown_node_is_an_error(cluster: dict[str, Any]) -> None:
    proc = cli(cluster, "drain", "ffffffffffff")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no node 'ffffffffffff'" in proc.stderr and "freight list nodes" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(access.NotFound):
        actions.undrain_node("ffffffffffff")


def test_a_node_id_that_is_not_hexadecimal_is_a_usage_error(cluster: dict[str, Any]) -> None:
    """As for cancel and kill: a mistyped id is the caller's usage error (exit 2), not a
    failed search (exit 1)."""
    proc = cli(cluster, "drain", "node-1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "hexadecimal" in proc.stderr and "freight list nodes" in proc.stderr, proc.stderr
    with pytest.raises(access.UsageError):
        actions.undrain_node("node-1")


def test_with_only_drained_nodes_new_work_waits_until_undrained(cluster: dict[str, Any]) -> None:
    c, head = cluster["cluster"], cluster["head"]
    other = cluster["other"]
    c.remove_node(other)
    c.wait_for_nodes()
    ref = where.remote()
    actor = Where.remote()
    group = placement_group([{"CPU": 1}])

    def waiting_task() -> Any:
        rows = state.list_tasks([("name", "=", "where"), ("state", "~", "^PENDING")])
        return [r for r in rows if r["pending_reason"] == WAITING_FOR_DRAINED]

    wait_for_condition(waiting_task, 60, "the new task to wait for the drained node")
    wait_for_condition(
        lambda: [a for a in state.list_actors() if a["pending_reason"] == WAITING_FOR_DRAINED],
        60,
        "the new actor to wait for the drained node",
    )
    wait_for_condition(
        lambda: placement_group_table(group)["pending_reason"] == WAITING_FOR_DRAINED,
        60,
        "the new placement group to wait for the drained node",
    )
    status = cli(cluster, "status")
    assert WAITING_FOR_DRAINED in status.stdout, status.stdout
    # The removed node is dead: it can be neither drained nor undrained.
    dead = cli(cluster, "undrain", other.node_id)
    assert dead.returncode == 1 and "is dead" in dead.stderr, dead.stderr

    undrained = cli(cluster, "undrain", head[:10], "--reason", "upgrade done")
    assert undrained.returncode == 0, undrained.stderr
    assert f"node {head[:12]} undrained" in undrained.stdout
    assert freight.get(ref, timeout=60) == head
    assert freight.get(actor.node.remote(), timeout=60) == head
    assert group.wait(60) and placement_group_table(group)["bundles_to_node_id"] == {0: head}
    assert node_row(cluster, head)["state"] == "ALIVE"
    freight.kill(actor)
    remove_placement_group(group)

    # Draining the only node is allowed, with a warning that nothing else takes new work.
    alone = cli(cluster, "drain", head)
    assert alone.returncode == 0 and "no other alive node takes new work" in alone.stderr


def test_each_drain_and_undrain_is_an_operator_action_event(cluster: dict[str, Any]) -> None:
    def actions_recorded() -> Any:
        events = [
            e
            for e in state.list_events([("kind", "=", "OPERATOR_ACTION")])
            if e.get("node_id") == cluster["head"]
        ]
        return events if len(events) >= 3 else None

    events = wait_for_condition(actions_recorded, 30, "the drain events")
    by_action: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: e["time"]):
        by_action.setdefault(e["action"], []).append(e)
    first, alone = by_action["drain_node"][:2]
    assert (first["role"], first["reason"]) == ("admin", REASON)
    assert first["by"].startswith("freight drain"), first
    assert not alone.get("reason")  # none given
    (undrain,) = by_action["undrain_node"]
    assert (undrain["role"], undrain["reason"]) == ("admin", "upgrade done")


def test_a_drain_outlives_a_head_restart(cluster: dict[str, Any]) -> None:
    c, head = cluster["cluster"], cluster["head"]
    c.kill_head()
    c.restart_head()
    wait_for_condition(
        lambda: cli(cluster, "list", "nodes", "-o", "json").returncode == 0, 60, "the head"
    )
    assert node_row(cluster, head)["state"] == "DRAINING"
    ref = where.remote()  # the node still takes no new work
    wait_for_condition(
        lambda: [
            r
            for r in state.list_tasks([("name", "=", "where"), ("state", "~", "^PENDING")])
            if r["pending_reason"] == WAITING_FOR_DRAINED
        ],
        60,
        "the task to wait for the drained node after the head restarted",
    )
    actions.undrain_node(head)
    assert freight.get(ref, timeout=60) == head
