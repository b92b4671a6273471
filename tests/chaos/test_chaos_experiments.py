"""The shipped experiment runs, on a real two-node cluster under load, through `freight chaos run`
and through the stock `chaos run` alike; files that are not valid experiments are refused with
what is wrong (exit 2); `freight chaos discover` and `recover` on the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight import state
from freight.chaos import discover, journal
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.util.process import identity

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BIN = Path(sys.executable).parent
FREIGHT = str(BIN / "freight")
CHAOS = str(BIN / "chaos")
EXPERIMENT = Path(__file__).resolve().parents[2] / "chaos/experiments/kill-worker-under-load.json"
LOAD = 2  # tasks held running: half the cluster's CPUs, the rest left for the canary


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}
    )


@freight.remote(max_retries=3)
def hold(folder: str, i: int) -> int:
    from freight.testing import wait_for_condition

    wait_for_condition(lambda: os.path.exists(os.path.join(folder, "go")), 300, "go")
    return i * i


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster({"num_cpus": 2}, {"num_cpus": 2}) as c:
        yield c


@pytest.mark.parametrize("runner", ["freight", "stock"])
def test_kill_worker_under_load_holds_through_both_runners(
    cluster: Cluster, tmp_path: Path, runner: str
) -> None:
    refs = [hold.remote(str(tmp_path), i) for i in range(LOAD)]
    wait_for_condition(
        lambda: len(state.list_workers([("state", "=", "LEASED")])) == LOAD, 60, "the load running"
    )
    report = tmp_path / "journal.json"
    tail = ["run", str(EXPERIMENT), "--journal-path", str(report)]
    if runner == "freight":
        argv = [FREIGHT, "chaos", *tail]
    else:
        argv = [CHAOS, "--no-version-check", "--no-log-file", *tail]
    out = run(*argv, cwd=tmp_path, env={"FREIGHT_ADDRESS": cluster.address})
    (tmp_path / "go").touch()
    assert out.returncode == 0, out.stdout + out.stderr
    ran = json.loads(report.read_text())
    assert (ran["status"], ran["deviated"]) == ("completed", False)
    (kill,) = ran["run"]
    assert kill["status"] == "succeeded", kill
    assert kill["output"]["result"] == "killed" and kill["output"]["target_kind"] == "worker"
    after = {p["activity"]["name"]: p for p in ran["steady_states"]["after"]["probes"]}
    assert after["nodes-alive"]["output"] == 2
    assert after["all-ended-tasks-succeeded"]["tolerance_met"]
    assert not psutil.pid_exists(kill["output"]["pid"]) or (
        psutil.Process(kill["output"]["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert freight.get(refs, timeout=120) == [i * i for i in range(LOAD)]  # nothing lost


def experiment(method: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", "method": method, **more}


def action(func: str, **arguments: Any) -> dict[str, Any]:
    provider = {"type": "python", "module": "freight.chaos.actions", "func": func}
    return {"type": "action", "name": func, "provider": {**provider, "arguments": arguments}}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("absent.json", None, "absent.json: no such experiment file"),
        ("broken.json", '{"title": ', "is not valid JSON: Expecting value: line 1 column 11"),
        ("list.yaml", "- a\n- b\n", "it holds a list, not a mapping"),
        ("notes.txt", "{}", "only files with json, yaml or yml extensions are supported"),
        ("empty.json", json.dumps({"title": "t"}), "is not a valid experiment: "),
        (
            "nofunc.json",
            json.dumps(experiment([action("kill_everything")])),
            "does not expose a function called 'kill_everything'",
        ),
        (
            "badarg.json",
            json.dumps(experiment([action("kill_worker", colour="red")])),
            "argument 'colour' is not part of the function signature",
        ),
    ],
)
def test_a_file_that_is_not_a_valid_experiment_exits_2_saying_why(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    out = run(FREIGHT, "chaos", "run", name, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("freight chaos: ") and message in out.stderr, out.stderr
    assert not (tmp_path / "journal.json").exists()


def test_discover_lists_every_action_and_probe(tmp_path: Path) -> None:
    out = run(FREIGHT, "chaos", "discover", "--no-system", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["extension"]["name"] == "freight" and found["system"] is None
    assert {(a["type"], a["name"]) for a in found["activities"]} == {
        ("action", "kill_worker"),
        ("action", "kill_actor"),
        ("action", "pause_worker"),
        ("action", "pause_node_agent"),
        ("action", "kill_node_agent"),
        ("action", "kill_head"),
        ("action", "revert_faults"),
        ("action", "partition_node"),
        ("action", "drop_packets"),
        ("action", "limit_bandwidth"),
        ("probe", "nodes_alive"),
        ("probe", "tasks_pending"),
        ("probe", "task_success_ratio"),
        ("probe", "actor_restarts"),
        ("probe", "objects_lost"),
        ("probe", "canary_task_latency"),
        ("action", "fill_object_store"),
        ("action", "pin_objects"),
        ("action", "hog_cpu"),
        ("action", "hog_memory"),
        ("action", "fill_spill_disk"),
        ("probe", "scheduling_latency_p95"),
        ("action", "restart_head"),
        ("probe", "promql"),
        ("probe", "alert_firing"),
        ("probe", "page_received"),
        ("action", "fail_rpc"),
        ("action", "delay_rpc"),
        ("probe", "rpc_faults_in_force"),
        ("action", "kill_driver"),
        ("probe", "held_by_ended_drivers"),
        ("probe", "nodes_gone_unnoticed"),
    }
    pause = next(a for a in found["activities"] if a["name"] == "pause_node_agent")
    assert pause["arguments"][0] == {"name": "duration", "default": 10.0, "type": "number"}


def test_stock_chaos_discover_finds_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "discovery.json"
    out = run(
        CHAOS, "--no-version-check", "--no-log-file", "discover", "--no-install", "--no-system-info",
        "--discovery-path", str(path), "freight", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    stock = {a["name"] for a in json.loads(path.read_text())["activities"]}
    assert stock == {a["name"] for a in discover(False)["activities"]}


@pytest.fixture
def stopped_process() -> Iterator[psutil.Process]:
    """A real process of ours, stopped (SIGSTOP) as a paused agent would be."""
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    os.kill(proc.pid, signal.SIGSTOP)
    p = psutil.Process(proc.pid)
    wait_for_condition(lambda: p.status() == psutil.STATUS_STOPPED, 30, "the process stopped")
    try:
        yield p
    finally:
        proc.kill()
        proc.wait()


def inject(path: Path, process: dict[str, Any]) -> journal.Injection:
    injection = journal.Injection(
        "pause_node_agent", {"kind": "node", "id": "n1", "node_id": "n1"}, process, "SIGSTOP",
        {"kind": "signal", "signal": "SIGCONT"}, 0.0, by=0,
    )  # fmt: skip
    journal.write_injection(str(path), injection)
    return injection


def test_recover_continues_the_recorded_process_once(
    tmp_path: Path, stopped_process: psutil.Process
) -> None:
    path = tmp_path / "faults.jsonl"
    inject(path, identity(stopped_process.pid))
    out = run(FREIGHT, "chaos", "recover", str(path), cwd=tmp_path)
    assert out.returncode == 0 and "sent SIGCONT" in out.stdout and "1 fault(s)" in out.stdout
    wait_for_condition(
        lambda: stopped_process.status() != psutil.STATUS_STOPPED, 30, "the process continued"
    )
    again = run(FREIGHT, "chaos", "recover", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "0 fault(s)" in again.stdout, again.stderr


def test_recover_never_signals_a_process_that_only_shares_the_pid(
    tmp_path: Path, stopped_process: psutil.Process
) -> None:
    path = tmp_path / "faults.jsonl"
    claimed = {**identity(stopped_process.pid), "create_time": stopped_process.create_time() - 60}
    inject(path, claimed)  # the process the journal names ended; another got its pid
    out = run(FREIGHT, "chaos", "recover", str(path), cwd=tmp_path)
    assert out.returncode == 0 and "its process had ended" in out.stdout, out.stderr
    assert stopped_process.status() == psutil.STATUS_STOPPED  # left alone


def test_recover_names_a_damaged_journal_line_and_a_missing_journal(tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    inject(path, {"pid": 1, "create_time": 0.0, "cmdline": ["x"]})
    with open(path, "a") as f:
        f.write("not json\n")
    inject(path, {"pid": 1, "create_time": 0.0, "cmdline": ["x"]})
    out = run(FREIGHT, "chaos", "recover", str(path), cwd=tmp_path)
    assert out.returncode == 1 and f"{path}, line 2: " in out.stderr, out.stderr
    missing = run(FREIGHT, "chaos", "recover", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such fault journal" in missing.stderr


def test_a_run_whose_steady_state_fails_exits_1_with_its_journal(tmp_path: Path) -> None:
    probe = {
        "type": "probe",
        "name": "nodes-alive",
        "tolerance": {"type": "range", "range": [1, 100]},
        "provider": {"type": "python", "module": "freight.chaos.probes", "func": "nodes_alive"},
    }
    hypothesis = {"title": "nodes alive", "probes": [probe]}
    path = tmp_path / "e.json"
    path.write_text(json.dumps(experiment([probe], **{"steady-state-hypothesis": hypothesis})))
    out = run(FREIGHT, "chaos", "run", str(path), "--address", "127.0.0.1:1", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "freight chaos: the experiment failed: see ./journal.json" in out.stderr
    ran = json.loads((tmp_path / "journal.json").read_text())
    assert ran["status"] == "failed" and "did not answer" in json.dumps(ran)
