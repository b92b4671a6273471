"""The harness's safety on a real two-node cluster: the watchdog continues an agent that a
SIGKILLed harness left paused, with nobody calling recover; `freight chaos halt` ends a run's
pause in another process early, reverts, and refuses runs until cleared."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight import state
from freight.chaos import journal, probes
from freight.testing import Cluster, connected_cluster, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))
cloudpickle.register_pickle_by_value(sys.modules[__name__])


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
        halting = time.monotonic()
        halted = chaos("halt", path, "--reason", "game day called off")
        assert halted.returncode == 0, halted.stderr
        assert "(game day called off); 1 fault(s)" in halted.stdout
        assert f"pause_node_agent on node {node.node_id} (pid {agent}): sent SIGCONT" in (
            halted.stdout
        )
        out, err = harness.communicate(timeout=60)
        print(f"halted run ended {time.monotonic() - halting:.3f} s after the halt began")
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


def method_of(*actions: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "action",
            "name": f"{func}-{i}",
            "provider": {
                "type": "python",
                "module": "freight.chaos.actions",
                "func": func,
                "arguments": arguments,
            },
        }
        for i, (func, arguments) in enumerate(actions)
    ]


def write_experiment(tmp_path: Path, name: str, config: dict[str, Any], **more: Any) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps({"title": name, "description": "d", "configuration": config, **more})
    )
    return path


def picks(report: Path) -> list[str]:
    steps = json.loads(report.read_text())["run"]
    failed = [line for s in steps for line in s.get("exception") or []]
    assert all(s["status"] == "succeeded" for s in steps), "".join(failed)
    return [step["output"]["target_id"] for step in steps]


def indexes(seed: int, n: int, picks: int) -> list[int]:
    """The choices `freight chaos run --seed` makes among ``n`` targets sorted by id."""
    stream = random.Random(f"freight.chaos/{seed}/targets")
    return [stream.randrange(n) for _ in range(picks)]


def test_one_seed_picks_the_same_targets_in_the_same_order_and_replay_repeats_them(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    nodes = sorted(n.node_id for n in cluster.nodes)
    # A seed whose picks are not all the same node: "the first match" could not give them.
    seed = next(s for s in range(100) if len(set(indexes(s, len(nodes), 3))) > 1)
    expected = [nodes[i] for i in indexes(seed, len(nodes), 3)]
    experiment = write_experiment(
        tmp_path,
        "three-pauses",
        config,
        method=method_of(*[("pause_node_agent", {"duration": 0.2})] * 3),
    )
    first, replayed, planned = (tmp_path / n for n in ("1.json", "2.json", "3.json"))
    ran = chaos("run", str(experiment), "--seed", str(seed), "--journal-path", str(first))
    assert ran.returncode == 0, ran.stderr
    assert f"seed {seed}" in ran.stderr
    assert picks(first) == expected
    assert json.loads(first.read_text())["freight"]["seed"] == seed

    again = chaos("replay", str(first), "--journal-path", str(replayed))
    assert again.returncode == 0, again.stderr
    assert picks(replayed) == expected
    injected = [r for r in journal.read(config["freight_fault_journal"]) if r["op"] == "inject"]
    assert [r["target"]["id"] for r in injected] == expected * 2

    # A dry run with that seed names the same targets and does nothing.
    dry = chaos(
        "run", str(experiment), "--seed", str(seed), "--dry-run", "--journal-path", str(planned)
    )
    assert dry.returncode == 0, dry.stderr
    assert picks(planned) == expected
    assert dry.stdout.count("freight chaos run: plan: pause_node_agent on node ") == 3
    assert len(list(journal.read(config["freight_fault_journal"]))) == 4 * 3  # nothing more


@freight.remote
class Holder:
    def node(self) -> str:
        import freight

        return freight.get_runtime_context().get_node_id()


def test_a_dry_run_plans_each_fault_with_its_blast_radius_and_does_nothing(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    holder = Holder.options(name="holder").remote()
    node = freight.get(holder.node.remote())
    (actor,) = state.list_actors([("name", "=", "holder"), ("state", "=", "ALIVE")])
    agent = next(n.process.pid for n in cluster.nodes if n.node_id == node)
    experiment = write_experiment(
        tmp_path,
        "plan",
        config,
        method=method_of(
            ("kill_node_agent", {"node_id": node}),
            ("kill_actor", {"name": "holder"}),
            ("kill_head", {"allow_head": True}),
            ("pause_node_agent", {"node_id": cluster.nodes[0].node_id, "duration": 5}),
        ),
    )
    held = freight.put(b"x" * 1_000_000)  # its primary copy is on this driver's node, the first
    (row,) = state.list_objects([("object_id", "=", held.hex())])
    report = tmp_path / "j.json"
    out = chaos("run", str(experiment), "--dry-run", "--journal-path", str(report))
    assert out.returncode == 0, out.stderr
    plans = [s["output"] for s in json.loads(report.read_text())["run"]]
    node_plan, actor_plan, head_plan, driver_node_plan = plans
    assert row["node_id"] == cluster.nodes[0].node_id
    assert held.hex() in driver_node_plan["blast_radius"]["objects"]["ids"]
    assert driver_node_plan["blast_radius"]["object_bytes"] >= 1_000_000
    assert driver_node_plan["duration"] == 5.0
    assert node_plan["dry_run"] is True and node_plan["signal"] == "SIGKILL"
    assert actor["actor_id"] in node_plan["blast_radius"]["actors"]["ids"]
    assert node_plan["blast_radius"]["workers"]["count"] >= 1
    assert actor_plan["blast_radius"]["actors"]["ids"] == [actor["actor_id"]]
    assert head_plan["target_kind"] == "head"
    assert head_plan["blast_radius"]["nodes"]["count"] == 2
    assert head_plan["blast_radius"]["actors"]["count"] >= 1
    assert f"kill_actor on actor {actor['actor_id']} on node {node} [signal=SIGKILL]" in out.stdout
    assert list(journal.read(config["freight_fault_journal"])) == []
    assert psutil.pid_exists(agent) and freight.get(holder.node.remote()) == node
    freight.kill(holder)


def stop_experiment(tmp_path: Path, config: dict[str, Any], node_id: str) -> Path:
    breach = tmp_path / "breach"
    control = {
        "name": "stop-conditions",
        "provider": {
            "type": "python",
            "module": "freight.chaos.controls",
            "arguments": {
                "every": 0.2,
                "stop_when": [
                    {
                        "type": "probe",
                        "name": "no-breach-file",
                        "tolerance": False,
                        "provider": {
                            "type": "python",
                            "module": "os.path",
                            "func": "exists",
                            "arguments": {"path": str(breach)},
                        },
                    }
                ],
            },
        },
    }
    method = method_of(
        ("pause_node_agent", {"duration": 300, "node_id": node_id}),
        ("pause_worker", {"duration": 300}),
    )
    return write_experiment(tmp_path, "stop", config, method=method, controls=[control])


@pytest.mark.parametrize("runner", ["freight", "stock"])
def test_a_breached_stop_condition_aborts_the_run_and_reverts_its_faults(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path, runner: str
) -> None:
    node = cluster.nodes[1]
    agent = node.process.pid
    experiment = stop_experiment(tmp_path, config, node.node_id)
    report = tmp_path / "j.json"
    tail = ["run", str(experiment), "--journal-path", str(report)]
    if runner == "freight":
        argv = [FREIGHT, "chaos", *tail]
    else:
        argv = [
            str(Path(sys.executable).with_name("chaos")),
            "--no-version-check",
            "--no-log-file",
            *tail,
        ]
    harness = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        wait_for_condition(lambda: stopped(agent), 60, "the run to pause the agent")
        (tmp_path / "breach").touch()
        breached = time.monotonic()
        wait_for_condition(lambda: not stopped(agent), 60, "the breach to continue the agent")
        print(f"{runner}: agent continued {time.monotonic() - breached:.3f} s after the breach")
        out, err = harness.communicate(timeout=60)
    finally:
        harness.kill()
        harness.communicate()
    assert harness.returncode == 1, out + err
    ran = json.loads(report.read_text())
    assert ran["status"] == "interrupted"
    assert ran["freight"]["stopped_by"].startswith("stop condition 'no-breach-file' breached")
    assert ran["freight"]["stop_condition_checks"] >= 1
    injected = [
        r["fault"] for r in journal.read(config["freight_fault_journal"]) if r["op"] == "inject"
    ]
    assert injected == ["pause_node_agent"]  # the second fault never ran
    assert journal.open_injections(config["freight_fault_journal"]) == []
    answers(cluster, node.node_id)


def test_bad_stop_conditions_and_bad_journals_are_usage_errors(
    config: dict[str, Any], tmp_path: Path
) -> None:
    experiment = stop_experiment(tmp_path, config, "n")
    data = json.loads(experiment.read_text())
    data["controls"][0]["provider"]["arguments"]["every"] = 0
    experiment.write_text(json.dumps(data))
    out = chaos("run", str(experiment), "--journal-path", str(tmp_path / "j.json"))
    assert out.returncode == 2 and "every must be a number of seconds above 0" in out.stderr
    del data["controls"][0]["provider"]["arguments"]["stop_when"][0]["tolerance"]
    data["controls"][0]["provider"]["arguments"]["every"] = 1
    experiment.write_text(json.dumps(data))
    out = chaos("run", str(experiment), "--journal-path", str(tmp_path / "j.json"))
    assert out.returncode == 2 and "no-breach-file: it has no tolerance" in out.stderr

    out = chaos("replay", str(tmp_path / "nothing.json"))
    assert out.returncode == 2 and "no such journal" in out.stderr
    out = chaos("replay", str(experiment))
    assert out.returncode == 2 and "is not a Chaos Toolkit journal" in out.stderr
    (tmp_path / "cut.json").write_text('{"experiment": {')
    out = chaos("replay", str(tmp_path / "cut.json"))
    assert out.returncode == 2 and "not JSON" in out.stderr
    out = chaos("run", str(experiment), "--seed", "x")
    assert out.returncode == 2 and "invalid int value" in out.stderr
