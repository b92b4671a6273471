"""The harness's safety on a real two-node cluster: the watchdog continues an agent that a
SIGKILLed harness left paused, with nobody calling recover; `freight chaos halt` ends a run's
pause in another process early, reverts, and refuses runs until cleared."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight import state
from freight.chaos import journal, probes
from freight.testing import Cluster, connected_cluster, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 1}, {"num_cpus": 1}) as c:
        yield c


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    return {"freight_address": cluster.address, "freight_fault_journal": str(tmp_path / "f.jsonl")}


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def ends(config: dict[str, Any]) -> list[str]:
    return [r["result"] for r in journal.read(config["freight_fault_journal"]) if r["op"] == "end"]


def pause_experiment(tmp_path: Path, config: dict[str, Any], node_id: str, duration: float) -> Path:
    pause = {
        "type": "action",
        "name": "pause-the-agent",
        "provider": {
            "type": "python",
            "module": "freight.chaos.actions",
            "func": "pause_node_agent",
            "arguments": {"duration": duration, "node_id": node_id},
        },
    }
    path = tmp_path / f"pause-{duration:g}.json"
    experiment = {"title": "t", "description": "d", "method": [pause], "configuration": config}
    path.write_text(json.dumps(experiment))
    return path


def chaos(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FREIGHT, "chaos", *argv], capture_output=True, text=True)


def answers(cluster: Cluster, node_id: str) -> None:
    wait_for_condition(
        lambda: not state.list_workers([("node_id", "=", node_id)]).partial,
        60,
        "the agent to answer the head again",
    )
    assert probes.nodes_alive(configuration={"freight_address": cluster.address}) == 2


def test_the_watchdog_continues_an_agent_a_sigkilled_run_left_paused(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    node = cluster.nodes[1]
    agent = node.process.pid
    experiment = pause_experiment(tmp_path, config, node.node_id, 300)
    harness = subprocess.Popen(
        [FREIGHT, "chaos", "run", str(experiment), "--journal-path", str(tmp_path / "j.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_condition(lambda: stopped(agent), 60, "the run to pause the agent")
    finally:
        harness.kill()
        harness.wait()
    killed = time.monotonic()
    wait_for_condition(lambda: not stopped(agent), 60, "the watchdog to continue the agent")
    print(f"agent continued {time.monotonic() - killed:.3f} s after the harness's SIGKILL")
    assert ends(config) == ["watchdog (its harness is gone): sent SIGCONT"]
    assert journal.open_injections(config["freight_fault_journal"]) == []
    answers(cluster, node.node_id)


def test_halt_ends_a_pause_held_by_another_run_and_refuses_runs_until_cleared(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    node = cluster.nodes[1]
    agent = node.process.pid
    path = config["freight_fault_journal"]
    long = pause_experiment(tmp_path, config, node.node_id, 300)
    report = tmp_path / "j.json"
    harness = subprocess.Popen(
        [FREIGHT, "chaos", "run", str(long), "--journal-path", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_condition(lambda: stopped(agent), 60, "the run to pause the agent")
        halted = chaos("halt", path, "--reason", "game day called off")
        assert halted.returncode == 0, halted.stderr
        assert "(game day called off); 1 fault(s)" in halted.stdout
        assert f"pause_node_agent on node {node.node_id} (pid {agent}): sent SIGCONT" in (
            halted.stdout
        )
        out, err = harness.communicate(timeout=60)
    finally:
        harness.kill()
        harness.communicate()
    assert not stopped(agent)
    assert harness.returncode == 0, out + err
    (pause,) = json.loads(report.read_text())["run"]
    assert pause["output"]["ended"].startswith("halted: halted by")
    # The halt's revert and the run's own (its pause ended early) both end the fault.
    assert ends(config)[0].startswith("recovered: ")
    assert journal.open_injections(path) == []

    status = chaos("status", path)
    assert status.returncode == 0 and "halted: yes, halted by" in status.stdout
    short = pause_experiment(tmp_path, config, node.node_id, 0.2)
    refused = chaos("run", str(short), "--journal-path", str(report))
    assert refused.returncode == 1
    assert "halted by" in refused.stderr and "(game day called off)" in refused.stderr
    assert f"freight chaos halt --clear {path}" in refused.stderr
    assert not stopped(agent) and len(ends(config)) == 2  # nothing was injected

    again = chaos("halt", path)
    assert again.returncode == 2 and "already halted" in again.stderr
    assert chaos("halt", "--clear", path).returncode == 0
    ran = chaos("run", str(short), "--journal-path", str(report))
    assert ran.returncode == 0, ran.stderr
    assert chaos("status", path).stdout.splitlines()[1:2] == ["halted: no"]
    assert chaos("status", path).stdout.splitlines()[3:] == ["open faults: 0"]
    answers(cluster, node.node_id)


def test_clearing_a_harness_that_is_not_halted_is_a_usage_error(tmp_path: Path) -> None:
    out = chaos("halt", "--clear", str(tmp_path / "f.jsonl"))
    assert out.returncode == 2 and "is not halted" in out.stderr
    out = chaos("halt", "--clear", "--reason", "x", str(tmp_path / "f.jsonl"))
    assert out.returncode == 2 and "--reason goes with a halt" in out.stderr
