"""Each process fault of freight.chaos.actions against a real two-node cluster: it took effect on
the process the state API named, and it was reverted (a paused process runs again and its agent
answers; a killed one is gone and the runtime replaced it). The refusals: the head without
allow_head, the last healthy node."""

from __future__ import annotations

import json
import os
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
from freight import state
from freight.chaos import actions, journal, probes
from freight.chaos.targets import FaultRefused
from freight.testing import Cluster, connected_cluster, kill_chaos_watchdogs, wait_for_condition

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}) as c:
        yield c


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    return {"freight_address": cluster.address, "freight_fault_journal": str(tmp_path / "f.jsonl")}


def records(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(journal.read(config["freight_fault_journal"]))


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@freight.remote
def my_pid() -> int:
    import os

    return os.getpid()


@freight.remote(max_restarts=1)
class Victim:
    def pid(self) -> int:
        import os

        return os.getpid()


def test_kill_worker_kills_the_worker_the_state_api_names_and_it_is_replaced(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    pid = freight.get(my_pid.remote())
    (row,) = state.list_workers([("pid", "=", str(pid))])
    result = actions.kill_worker(worker_id=row["worker_id"], configuration=config)
    assert (result["pid"], result["result"], result["signal"]) == (pid, "killed", "SIGKILL")
    assert gone(pid)
    ops = [(r["op"], r.get("fault"), r.get("undo")) for r in records(config)]
    assert ops == [("inject", "kill_worker", None), ("end", None, None)]
    assert freight.get(my_pid.remote(), timeout=60) != pid  # the pool started another


def test_kill_actor_kills_its_process_and_it_restarts(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    victim = Victim.options(name="victim").remote()
    pid = freight.get(victim.pid.remote())
    assert probes.actor_restarts(name="victim", configuration=config) == 0
    result = actions.kill_actor(name="victim", signal="SIGTERM", configuration=config)
    assert result["pid"] == pid and result["target_kind"] == "actor"
    assert gone(pid)
    wait_for_condition(
        lambda: probes.actor_restarts(name="victim", configuration=config) == 1,
        60,
        "the actor to restart",
    )
    assert freight.get(victim.pid.remote(), timeout=60) != pid


def test_pause_node_agent_stops_it_for_the_duration_and_it_answers_again(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1]
    agent = node.process.pid
    done: list[dict[str, Any]] = []
    pausing = threading.Thread(
        target=lambda: done.append(
            actions.pause_node_agent(duration=1.0, node_id=node.node_id, configuration=config)
        )
    )
    pausing.start()
    wait_for_condition(lambda: stopped(agent), 30, "the agent to be stopped")
    (inject,) = records(config)
    assert (inject["signal"], inject["undo"], inject["process"]["pid"]) == (
        "SIGSTOP",
        {"kind": "signal", "signal": "SIGCONT"},
        agent,
    )
    pausing.join(60)
    continued = time.monotonic()
    assert done and done[0]["result"] == "continued" and not stopped(agent)
    assert [r["op"] for r in records(config)] == ["inject", "end"]
    # It answers again: its node lists its workers to the head, whole.
    wait_for_condition(
        lambda: not state.list_workers([("node_id", "=", node.node_id)]).partial,
        60,
        "the paused agent to answer the head again",
    )
    print(f"agent answered {time.monotonic() - continued:.3f} s after SIGCONT")
    assert probes.nodes_alive(configuration=config) == 2


@freight.remote
def hold_until(path: str) -> int:
    while not os.path.exists(path):  # a task that runs until the test lets it end
        time.sleep(0.05)
    return os.getpid()


def test_a_worker_the_harness_itself_leases_is_never_a_target(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    """The harness is a driver (its canary): a worker leased to it is no pick for a fault that
    names no worker, or its next canary would run on the worker it just killed."""
    done = tmp_path / "done"
    ref = hold_until.remote(str(done))
    rows = wait_for_condition(
        lambda: [w for w in state.list_workers([("state", "=", "LEASED")]) if w["lease_holder"]],
        30,
        "a worker leased to this driver",
    )
    try:
        with pytest.raises(FaultRefused, match="no worker matches state=LEASED"):
            actions.kill_worker(state="LEASED", configuration=config)
    finally:
        done.touch()
    assert freight.get(ref, timeout=60) in {r["pid"] for r in rows}  # it was never killed
    assert records(config) == []


def test_pause_worker_stops_it_and_continues_it(cluster: Cluster, config: dict[str, Any]) -> None:
    pid = freight.get(my_pid.remote())
    (row,) = state.list_workers([("pid", "=", str(pid))])
    done: list[dict[str, Any]] = []
    pausing = threading.Thread(
        target=lambda: done.append(
            actions.pause_worker(duration=0.5, worker_id=row["worker_id"], configuration=config)
        )
    )
    pausing.start()
    wait_for_condition(lambda: stopped(pid), 30, "the worker to be stopped")
    pausing.join(60)
    assert done[0]["result"] == "continued" and not stopped(pid)
    assert freight.get(my_pid.remote(), timeout=60) > 0


def test_the_last_healthy_node_is_refused(cluster: Cluster, config: dict[str, Any]) -> None:
    """With one node held paused by a fault in flight, the other is the last healthy one: a
    fault on it is refused and nothing is signalled."""
    other, head_node = cluster.nodes[1], cluster.nodes[0]
    pausing = threading.Thread(
        target=actions.pause_node_agent,
        kwargs={"duration": 1.0, "node_id": other.node_id, "configuration": config},
    )
    pausing.start()
    try:
        wait_for_condition(lambda: stopped(other.process.pid), 30, "the other agent paused")
        with pytest.raises(FaultRefused, match="last healthy node"):
            actions.kill_node_agent(node_id=head_node.node_id, configuration=config)
        with pytest.raises(FaultRefused, match="last healthy node"):
            actions.pause_node_agent(duration=1.0, node_id=head_node.node_id, configuration=config)
    finally:
        pausing.join(60)
    assert not gone(head_node.process.pid) and not stopped(other.process.pid)
    assert [r["fault"] for r in records(config) if r["op"] == "inject"] == ["pause_node_agent"]


def test_kill_head_is_refused_without_allow_head(cluster: Cluster, config: dict[str, Any]) -> None:
    head = json.loads((Path(cluster.session_dir) / "head.json").read_text())["pid"]
    with pytest.raises(FaultRefused, match="allow_head"):
        actions.kill_head(configuration=config)
    with pytest.raises(FaultRefused, match="allow_head"):
        actions.kill_head(allow_head="yes", configuration=config)  # type: ignore[arg-type]
    assert not gone(head) and records(config) == []


def test_bad_arguments_are_refused_before_anything_happens(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    with pytest.raises(FaultRefused, match="no worker matches worker_id=nope"):
        actions.kill_worker(worker_id="nope", configuration=config)
    with pytest.raises(ValueError, match="signal must be one of SIGKILL, SIGTERM"):
        actions.kill_node_agent(
            node_id=cluster.nodes[1].node_id, signal="SIGHUP", configuration=config
        )
    with pytest.raises(ValueError, match="duration must be more than 0"):
        actions.pause_node_agent(duration=0, node_id=cluster.nodes[1].node_id, configuration=config)
    assert [r for r in records(config) if r["op"] == "inject"] == []


def test_kill_node_agent_kills_it(cluster: Cluster, config: dict[str, Any]) -> None:
    extra = cluster.add_node(num_cpus=1)
    agent = extra.process.pid
    result = actions.kill_node_agent(node_id=extra.node_id, configuration=config)
    cluster.nodes.remove(extra)
    extra.process.wait()
    assert (result["pid"], result["result"]) == (agent, "killed")
    assert gone(agent)


def test_kill_head_with_allow_head_kills_it(tmp_path: Path) -> None:
    """Its own cluster: the head stays dead after."""
    with Cluster() as own:
        own.add_node(num_cpus=0)
        head = json.loads((Path(own.session_dir) / "head.json").read_text())["pid"]
        config = {"freight_address": own.address, "freight_fault_journal": str(tmp_path / "f")}
        result = actions.kill_head(allow_head=True, configuration=config)
        assert (result["pid"], result["target_kind"]) == (head, "head")
        wait_for_condition(lambda: own._head_proc.poll() is not None, 30, "the head to exit")


FREIGHT = str(Path(sys.executable).with_name("freight"))
HARNESS = """
import json, sys
from freight.chaos import actions
actions.pause_node_agent(duration=300, node_id=sys.argv[2], configuration=json.loads(sys.argv[1]))
"""


def test_recover_continues_an_agent_that_a_killed_harness_left_paused(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    """The harness and its watchdog killed both (a crash that took the whole session)."""
    node = cluster.nodes[1]
    agent = node.process.pid
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, json.dumps(config), node.node_id])
    try:
        wait_for_condition(lambda: stopped(agent), 60, "the harness to pause the agent")
        kill_chaos_watchdogs(config["freight_fault_journal"])
    finally:
        harness.kill()
        harness.wait()
    assert stopped(agent)  # the harness died mid-pause: nothing continued the agent
    (left,) = journal.open_injections(config["freight_fault_journal"])
    assert (left.process["pid"], left.undo) == (agent, {"kind": "signal", "signal": "SIGCONT"})

    path = config["freight_fault_journal"]
    out = subprocess.run([FREIGHT, "chaos", "recover", path], capture_output=True, text=True)
    recovered = time.monotonic()
    assert out.returncode == 0, out.stderr
    assert f"pause_node_agent on node {node.node_id} (pid {agent}): sent SIGCONT" in out.stdout
    assert "1 fault(s)" in out.stdout
    assert not stopped(agent)
    wait_for_condition(
        lambda: not state.list_workers([("node_id", "=", node.node_id)]).partial,
        60,
        "the recovered agent to answer the head again",
    )
    print(f"agent answered {time.monotonic() - recovered:.3f} s after recover")

    again = subprocess.run([FREIGHT, "chaos", "recover", path], capture_output=True, text=True)
    assert again.returncode == 0 and "0 fault(s)" in again.stdout, again.stderr
    assert journal.open_injections(path) == []
    assert probes.nodes_alive(configuration=config) == 2


def test_a_run_stopped_with_sigterm_mid_pause_continues_the_agent(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    node = cluster.nodes[1]
    agent = node.process.pid
    pause = {
        "type": "action",
        "name": "pause-the-agent",
        "provider": {
            "type": "python",
            "module": "freight.chaos.actions",
            "func": "pause_node_agent",
            "arguments": {"duration": 300, "node_id": node.node_id},
        },
    }
    path = tmp_path / "pause.json"
    path.write_text(
        json.dumps({"title": "t", "description": "d", "method": [pause], "configuration": config})
    )
    harness = subprocess.Popen(
        [FREIGHT, "chaos", "run", str(path), "--journal-path", str(tmp_path / "j.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_condition(lambda: stopped(agent), 60, "the run to pause the agent")
        harness.terminate()
        harness.wait(60)
    finally:
        harness.kill()
        harness.communicate()
    assert not stopped(agent)
    ends = [r["result"] for r in records(config) if r["op"] == "end"]
    assert ends == ["continued"]
    assert journal.open_injections(config["freight_fault_journal"]) == []


@freight.remote(resources={"no_such_thing": 1})
def never_placed() -> None:
    return None


def test_probes_count_what_the_cluster_holds(cluster: Cluster, config: dict[str, Any]) -> None:
    ref = never_placed.remote()
    try:
        wait_for_condition(
            lambda: probes.tasks_pending(name="never_placed", configuration=config) == 1,
            60,
            "the unplaceable task to be listed pending",
        )
        assert probes.tasks_pending(name="my_pid", configuration=config) == 0
    finally:
        freight.cancel(ref)
    assert probes.task_success_ratio(name="my_pid", configuration=config) == 1.0
    assert probes.objects_lost(configuration=config) == 0
    assert probes.canary_task_latency(timeout=60, configuration=config) > 0
