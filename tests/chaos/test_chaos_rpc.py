"""fail_rpc and delay_rpc of freight.chaos.actions against a real two-node cluster: journalled
with their revert before they are switched on, in force for their duration, cleared at expiry
(the action returns then, with the calls it hit), refused for a method nothing serves, planned
without acting in a dry run, and cleared by `freight chaos recover` after a harness that died."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight import actions as admin
from freight import state
from freight.chaos import actions, faults, journal, probes, seed
from freight.chaos.targets import FaultRefused
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BIN = Path(sys.executable).parent
EXPERIMENT = (
    Path(__file__).resolve().parents[2] / "chaos/experiments/heartbeats-fail-for-a-while.json"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}) as c:
        yield c


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    return {"freight_address": cluster.address, "freight_fault_journal": str(tmp_path / "f.jsonl")}


def records(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(journal.read(config["freight_fault_journal"]))


def in_force(cluster: Cluster) -> list[dict[str, Any]]:
    return admin.list_rpc_faults(all_nodes=True, address=cluster.address)[0]


def in_background(fn: Any, **kwargs: Any) -> tuple[threading.Thread, list[dict[str, Any]]]:
    done: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: done.append(fn(**kwargs)))
    thread.start()
    return thread, done


@freight.remote(num_cpus=0.25)
def small() -> int:
    return 1


def test_delay_rpc_holds_the_calls_for_its_duration_then_is_cleared(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    thread, done = in_background(
        actions.delay_rpc,
        method="StateService/List",
        delay=0.5,
        duration=5.0,
        configuration=config,
    )
    wait_for_condition(lambda: in_force(cluster), 30, "the delay to be in force")
    started = time.monotonic()
    state.list_nodes()
    assert time.monotonic() - started >= 0.5  # a lower bound: the call waited
    thread.join(60)
    (result,) = done
    assert (result["method"], result["target_kind"], result["state"]) == (
        "freight.v1.StateService/List",
        "head",
        "expired",
    )
    assert result["hits"] >= 1 and result["seconds"] >= 5.0
    inject, end = records(config)
    assert inject["signal"] == "rpc" and inject["undo"] == {
        "kind": "rpc",
        "address": cluster.address,
        "node_id": "",
        "fault_id": result["fault_id"],
    }
    assert end["op"] == "end" and end["result"].startswith("expired: hit")
    assert in_force(cluster) == [] and probes.rpc_faults_in_force(configuration=config) == 0


def test_delay_rpc_on_a_data_plane_kind_delays_a_nodes_lease_requests(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    """The driver's lease requests go to the head node's agent: a task of a new shape needs
    one, and waits the delay."""
    node = cluster.nodes[0]
    thread, done = in_background(
        actions.delay_rpc,
        method="data/RequestLease",
        delay=0.5,
        duration=5.0,
        node_id=node.node_id,
        configuration=config,
    )
    wait_for_condition(lambda: in_force(cluster), 30, "the delay to be in force")
    started = time.monotonic()
    assert freight.get(small.remote(), timeout=60) == 1
    assert time.monotonic() - started >= 0.5
    thread.join(60)
    (result,) = done
    assert (result["target_kind"], result["target_node_id"]) == ("node", node.node_id)
    assert result["hits"] >= 1 and in_force(cluster) == []


def test_fail_rpc_on_heartbeats_the_nodes_ride_it_out(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    result = actions.fail_rpc(method="HeadService/Heartbeat", duration=2.5, configuration=config)
    assert result["code"] == "UNAVAILABLE" and result["hits"] == result["calls"] >= 2
    assert in_force(cluster) == []
    wait_for_condition(
        lambda: all(
            n["last_heartbeat"] > time.time() - 5
            for n in state.list_nodes([("state", "=", "ALIVE")])
        ),
        30,
        "every node's heartbeats accepted again",
    )
    assert probes.nodes_alive(configuration=config) == 2


def test_a_seeded_fraction_is_recorded_and_follows_the_runs_seed(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    def fault_seed(run_seed: int) -> int:
        seed.reset()  # a run starts: its streams begin again
        result = actions.fail_rpc(
            method="HeadService/KVDel",
            fraction=0.5,
            duration=0.2,
            configuration={**config, "freight_seed": run_seed},
        )
        assert result["fraction"] == 0.5
        return int(result["seed"])

    first = fault_seed(11)
    assert fault_seed(11) == first != fault_seed(12)  # the run's seed decides the fault's
    assert records(config)[0]["target"]["kind"] == "head"


def test_unknown_methods_are_refused_naming_what_exists(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    with pytest.raises(FaultRefused, match=r"no RPC method.*freight\.v1\.HeadService/Heartbeat"):
        actions.fail_rpc(method="HeadService/Hartbeat", duration=1, configuration=config)
    with pytest.raises(FaultRefused, match="served by the head"):
        actions.fail_rpc(method="HeadService/Heartbeat", target="node", configuration=config)
    with pytest.raises(ValueError, match="fraction is of the calls"):
        actions.fail_rpc(method="HeadService/KVDel", fraction=2, configuration=config)
    assert records(config) == [] and in_force(cluster) == []


def test_a_node_fault_on_the_last_healthy_node_is_refused(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    """With the other node held by a fault in flight (an open injection of the journal), a
    fault on the head node's calls would leave no healthy node: refused, nothing switched."""
    other, head_node = cluster.nodes[1], cluster.nodes[0]
    held = {"kind": "node", "id": other.node_id, "node_id": other.node_id}
    undo = {"kind": "signal", "signal": "SIGCONT"}
    path = config["freight_fault_journal"]
    journal.write_injection(
        path, journal.Injection("pause_node_agent", held, {}, "SIGSTOP", undo, time.time() + 60)
    )
    with pytest.raises(FaultRefused, match="last healthy node"):
        actions.fail_rpc(
            method="data/RequestLease", node_id=head_node.node_id, configuration=config
        )
    assert len(records(config)) == 1 and in_force(cluster) == []


def test_a_second_fault_on_a_method_is_refused_by_the_runtime_and_journalled_over(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    thread, done = in_background(
        actions.fail_rpc, method="HeadService/KVDel", duration=3.0, configuration=config
    )
    try:
        wait_for_condition(lambda: in_force(cluster), 30, "the first fault in force")
        with pytest.raises(ValueError, match="already has a fault in force"):
            actions.delay_rpc(method="HeadService/KVDel", delay=1, configuration=config)
        (first,) = in_force(cluster)  # the refused one cleared nothing of the first
    finally:
        thread.join(60)
    assert done[0]["fault_id"] == first["fault_id"]
    ends = [r["result"] for r in records(config) if r["op"] == "end"]
    assert ends[0].startswith("not switched on") and "not in force on the head" in ends[0]
    assert journal.open_injections(config["freight_fault_journal"]) == []


def test_a_dry_run_plans_without_acting(cluster: Cluster, config: dict[str, Any]) -> None:
    config = {**config, "freight_dry_run": True}
    plan = actions.delay_rpc(
        method="NodeAgentService/ListWorkers", delay=1, node_id=cluster.nodes[1].node_id,
        configuration=config,
    )  # fmt: skip
    assert plan["dry_run"] is True and plan["target_node_id"] == cluster.nodes[1].node_id
    assert plan["method"] == "freight.v1.NodeAgentService/ListWorkers"
    assert records(config) == [] and in_force(cluster) == []


def test_recover_clears_a_fault_whose_harness_died(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    code = (
        "import sys, json; from freight.chaos import actions; "
        "actions.fail_rpc(method='HeadService/KVDel', duration=120, "
        "configuration=json.loads(sys.argv[1]))"
    )
    harness = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)], env={**os.environ})
    try:
        wait_for_condition(lambda: in_force(cluster), 60, "the harness's fault in force")
    finally:
        harness.send_signal(signal.SIGKILL)
        harness.wait(30)
    (open_,) = journal.open_injections(config["freight_fault_journal"])
    (recovered,) = faults.recover(config["freight_fault_journal"])
    assert recovered.injection.id == open_.id and recovered.result == "cleared"
    assert in_force(cluster) == []
    assert faults.recover(config["freight_fault_journal"]) == []  # nothing left open
    # And once more by hand, on the same injection: it says the fault was over.
    assert faults.reverts.undo(open_) == "already cleared"


@pytest.mark.parametrize("runner", ["freight", "stock"])
def test_the_shipped_heartbeat_experiment_holds_through_both_runners(
    cluster: Cluster, tmp_path: Path, runner: str
) -> None:
    report = tmp_path / "journal.json"
    tail = ["run", str(EXPERIMENT), "--journal-path", str(report)]
    if runner == "freight":
        argv = [str(BIN / "freight"), "chaos", *tail]
    else:
        argv = [str(BIN / "chaos"), "--no-version-check", "--no-log-file", *tail]
    env = {**os.environ, "FREIGHT_ADDRESS": cluster.address}
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    ran = json.loads(report.read_text())
    assert (ran["status"], ran["deviated"]) == ("completed", False)
    (fail,) = ran["run"]
    assert fail["status"] == "succeeded", fail
    output = fail["output"]
    assert (output["method"], output["state"]) == ("freight.v1.HeadService/Heartbeat", "expired")
    assert output["hits"] == output["calls"] >= 2
    after = {p["activity"]["name"]: p["output"] for p in ran["steady_states"]["after"]["probes"]}
    assert (after["nodes-alive"], after["no-rpc-fault-in-force"]) == (2, 0)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@freight.remote(max_retries=10)
def held(folder: str) -> str:
    from freight.testing import wait_for_condition

    wait_for_condition(lambda: os.path.exists(os.path.join(folder, "go")), 300, "go")
    return freight.get_runtime_context().get_node_id()


def test_fail_rpc_on_a_data_plane_kind_closes_worker_connections_and_the_task_is_retried(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    """Every worker of the second node reports to its agent each second; with those reports
    failing for 2.5 s, each loses its connection and exits (the worker running a task among
    them), and the runtime retries the task there: nothing is lost."""
    node = cluster.nodes[1]
    pinned = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    ref = held.options(scheduling_strategy=pinned).remote(str(tmp_path))
    (running,) = wait_for_condition(
        lambda: state.list_workers([("node_id", "=", node.node_id), ("state", "=", "LEASED")]),
        60,
        "the task running on the second node",
    )
    result = actions.fail_rpc(
        method="data/Telemetry", node_id=node.node_id, duration=2.5, configuration=config
    )
    assert result["hits"] >= 1 and result["state"] == "expired" and in_force(cluster) == []
    wait_for_condition(lambda: gone(running["pid"]), 30, "the worker to exit")
    (tmp_path / "go").touch()
    assert freight.get(ref, timeout=120) == node.node_id  # retried there, its result whole
