"""`freight gameday run` on a real three-node cluster: a two-step plan runs end to end with
--yes and writes the Chaos Toolkit journals, the Markdown report, JUnit XML and the SVG chart;
a broken hypothesis exits 1 with a JUnit failure; 'n' at the go/no-go prompt on a real terminal
skips the step; a note from another process shows in the report; Ctrl-C mid-step reverts the
fault and still reports. The shipped game days that use the process faults hold, on a cluster
of their own."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import psutil
import pytest

from freight.chaos import journal
from freight.testing import Cluster, patched_environ, short_temp_dir, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))
ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "chaos/experiments"
GAMEDAYS = ROOT / "chaos/gamedays"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None),
        Cluster() as c,
    ):
        for _ in range(3):
            c.add_node(num_cpus=2)
        yield c


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def experiment(path: Path, method: list[dict[str, Any]], probes: list[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "title": path.stem,
                "description": "a test's own",
                "configuration": {
                    "freight_address": {"type": "env", "key": "FREIGHT_ADDRESS", "default": ""}
                },
                "steady-state-hypothesis": {"title": "h", "probes": probes},
                "method": method,
            }
        )
    )
    return path


def nodes_alive(at_least: int) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": f"at-least-{at_least}-nodes",
        "tolerance": {"type": "range", "range": [at_least, 10000]},
        "provider": {"type": "python", "module": "freight.chaos.probes", "func": "nodes_alive"},
    }


def pause_agent(node_id: str, duration: float) -> dict[str, Any]:
    return {
        "type": "action",
        "name": "pause-an-agent",
        "provider": {
            "type": "python",
            "module": "freight.chaos.actions",
            "func": "pause_node_agent",
            "arguments": {"duration": duration, "node_id": node_id},
        },
    }


def plan(path: Path, *steps: str) -> Path:
    path.write_text("title: a test's game day\nsteps:\n" + "".join(steps))
    return path


def step(name: str, experiment: Path, workload: str = "null", **more: Any) -> str:
    text = f"  - name: {name}\n    experiment: {experiment}\n    hypothesis: {name} holds\n"
    text += f"    workload: {workload}\n"
    return text + "".join(f"    {k}: {v}\n" for k, v in more.items())


def start(plan: Path, out: Path, cluster: Cluster, *extra: str, **kw: Any) -> subprocess.Popen:
    argv = [FREIGHT, "gameday", "run", str(plan), "-o", str(out), "--address", cluster.address]
    return subprocess.Popen([*argv, *extra], text=True, **kw)


def junit(out: Path) -> list[ET.Element]:
    root = ET.parse(out / "report.xml").getroot()
    (suite,) = root.findall("testsuite")
    return suite.findall("testcase")


def test_a_two_step_plan_runs_end_to_end_and_writes_every_report(
    cluster: Cluster, tmp_path: Path
) -> None:
    spare = cluster.nodes[-1]
    gray = experiment(tmp_path / "gray.json", [pause_agent(spare.node_id, 1.0)], [nodes_alive(3)])
    work = "{kind: tasks, concurrency: 2, task_seconds: 1.0}"  # a worker stays LEASED
    p = plan(
        tmp_path / "plan.yaml",
        step("kill", EXPERIMENTS / "kill-worker-under-load.json", work, recovery_within=60),
        step("gray", gray, work, recovery_within=60),
    )
    out = tmp_path / "out"
    run = start(p, out, cluster, "--yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stdout + stderr
    assert "2 of 2 hypotheses held" in stdout
    assert "| kill " in stdout and "| kill_worker " in stdout  # the summary table

    kill_journal = json.loads((out / "journals/01-kill.json").read_text())  # chaoslib's own
    assert (kill_journal["status"], kill_journal["run"][0]["output"]["result"]) == (
        "completed",
        "killed",
    )
    assert json.loads((out / "journals/02-gray.json").read_text())["status"] == "completed"

    report = json.loads((out / "gameday.json").read_text())
    for s in report["steps"]:
        assert (s["status"], s["lost"]) == ("held", {})
        assert s["submitted"] > 0 and s["answered"] == s["submitted"]
        assert s["recovery_s"] is not None
        print(f"{s['name']}: recovered {s['recovery_s']:.2f} s after the fault ended")
    assert [f["fault"] for s in report["steps"] for f in s["faults"]] == [
        "kill_worker",
        "pause_node_agent",
    ]
    records = list(journal.read(str(out / "faults.jsonl")))
    assert [r["op"] for r in records] == ["inject", "end", "inject", "end"]

    markdown = (out / "report.md").read_text()
    assert "| step " in markdown and "recovery" in markdown
    assert "inject pause_node_agent (SIGSTOP)" in markdown and "continued" in markdown
    assert "## Closing note" in markdown

    cases = junit(out)
    assert [c.get("name") for c in cases] == ["kill", "gray"]
    assert all(c.find("failure") is None and c.find("skipped") is None for c in cases)

    svg = ET.parse(out / "timeline.svg").getroot()
    series = {e.get("data-series") for e in svg.iter(f"{SVG}polyline")}
    assert {"nodes_alive", "tasks_pending", "results_per_s"} <= series
    assert {e.get("data-step") for e in svg.iter(f"{SVG}rect") if e.get("class") == "fault"} == {
        "kill",
        "gray",
    }


def test_a_broken_hypothesis_exits_1_with_a_junit_failure(cluster: Cluster, tmp_path: Path) -> None:
    """The steady state cannot hold (100 nodes): the step is broken, nothing was done."""
    impossible = experiment(tmp_path / "impossible.json", [nodes_alive(1)], [nodes_alive(100)])
    p = plan(tmp_path / "plan.yaml", step("impossible", impossible))
    out = tmp_path / "out"
    run = start(p, out, cluster, "--yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stdout + stderr
    assert "not every hypothesis held" in stderr
    (case,) = junit(out)
    failure = case.find("failure")
    assert failure is not None and "impossible holds" in failure.get("message", "")
    assert "did not hold before the fault (at-least-100-nodes)" in (failure.text or "")


def read_until(fd: int, wanted: str, timeout: float) -> str:
    seen = ""

    def more() -> bool:
        nonlocal seen
        if not select.select([fd], [], [], 0.1)[0]:
            return False  # nothing yet: the deadline of wait_for_condition bounds the wait
        try:
            seen += os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the terminal closed: the program ended
            raise AssertionError(f"{wanted!r} never came; the terminal showed: {seen}") from None
        return wanted in seen

    wait_for_condition(more, timeout, f"{wanted!r} on the terminal")
    return seen


def test_n_at_the_go_no_go_prompt_on_a_terminal_skips_the_step(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Asked on a real terminal (a pty); the step, which would break, is skipped."""
    impossible = experiment(tmp_path / "impossible.json", [nodes_alive(1)], [nodes_alive(100)])
    p = plan(tmp_path / "plan.yaml", step("impossible", impossible))
    out = tmp_path / "out"
    main, terminal = pty.openpty()
    try:
        run = start(p, out, cluster, stdin=terminal, stdout=terminal, stderr=terminal)
        os.close(terminal)
        shown = read_until(main, "go? [y/N]", 60)
        assert "hypothesis: impossible holds" in shown
        assert "does: probe at-least-1-nodes: nodes_alive()" in shown
        os.write(main, b"n\n")
        shown = read_until(main, "report:", 60)
        assert run.wait(60) == 0, shown
    finally:
        os.close(main)
    assert "skipped" in shown
    (case,) = junit(out)
    assert case.find("skipped") is not None and case.find("failure") is None
    assert list(journal.read(str(out / "faults.jsonl"))) == []


def test_a_note_from_another_process_shows_in_the_report(cluster: Cluster, tmp_path: Path) -> None:
    spare = cluster.nodes[-1]
    # Paused long enough for the note to be written meanwhile, on a loaded machine too.
    gray = experiment(tmp_path / "gray.json", [pause_agent(spare.node_id, 8.0)], [nodes_alive(3)])
    p = plan(tmp_path / "plan.yaml", step("gray", gray))
    out = tmp_path / "out"
    run = start(p, out, cluster, "--yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_condition(lambda: stopped(spare.process.pid), 120, "the step to pause the agent")
        note = subprocess.run(
            [FREIGHT, "gameday", "note", "the", "agent is stopped"], capture_output=True, text=True
        )
        assert note.returncode == 0, note.stderr
        assert "added at" in note.stdout and "a test's game day" in note.stdout
    finally:
        stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stdout + stderr
    markdown = (out / "report.md").read_text()
    assert "note: the agent is stopped" in markdown
    timeline = [e["event"] for e in json.loads((out / "gameday.json").read_text())["timeline"]]
    noted = timeline.index("note: the agent is stopped")
    assert timeline[noted - 1].startswith("inject pause_node_agent")  # while it held
    svg = ET.parse(out / "timeline.svg").getroot()
    assert [e.get("class") for e in svg.iter(f"{SVG}line")].count("note") == 1


def test_ctrl_c_mid_step_reverts_the_fault_and_writes_the_report(
    cluster: Cluster, tmp_path: Path
) -> None:
    spare = cluster.nodes[-1]
    long = experiment(tmp_path / "long.json", [pause_agent(spare.node_id, 300)], [nodes_alive(3)])
    p = plan(tmp_path / "plan.yaml", step("long", long))
    out = tmp_path / "out"
    run = start(p, out, cluster, "--yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_condition(lambda: stopped(spare.process.pid), 120, "the step to pause the agent")
        interrupted = time.monotonic()
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    print(f"the run ended {time.monotonic() - interrupted:.2f} s after SIGINT")
    assert run.returncode == 1, stdout + stderr
    assert not stopped(spare.process.pid)
    assert journal.open_injections(str(out / "faults.jsonl")) == []
    assert "interrupted" in stdout
    (case,) = junit(out)
    failure = case.find("failure")
    assert failure is not None
    report = json.loads((out / "gameday.json").read_text())
    assert report["interrupted"] is True
    (fault,) = report["steps"][0]["faults"]
    assert (fault["fault"], fault["ended"] is not None) == ("pause_node_agent", True)
    wait_for_condition(lambda: cluster.alive_node_ids() == {n.node_id for n in cluster.nodes}, 60)


SHIPPED = (
    "worker-kill-under-load",
    "actor-state-loss",
    "gray-failure",
    "node-loss-mid-job",
    "driver-crash",
    "head-crash",
)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_shipped_game_days_of_process_faults_hold(tmp_path: Path) -> None:
    """The six shipped game days whose faults are process faults, in the order all.yaml runs
    them, on a cluster the plan brings (started and stopped by the run). The partition and the
    object store pressure need the network and resource faults."""
    p = tmp_path / "six.yaml"
    includes = "".join(f"  - {GAMEDAYS / name}.yaml\n" for name in SHIPPED)
    p.write_text(
        f"title: six shipped game days\ncluster: {{nodes: 4, cpus: 2}}\ninclude:\n{includes}"
    )
    out = tmp_path / "out"
    with short_temp_dir() as tmp, patched_environ(FREIGHT_TEMP_DIR=str(tmp)):
        run = subprocess.run(
            [FREIGHT, "gameday", "run", str(p), "--yes", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=1100,
        )
        left = [
            proc.pid
            for proc in psutil.process_iter(["cmdline"])
            if str(tmp) in " ".join(proc.info["cmdline"] or [])
        ]
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 of 6 hypotheses held" in run.stdout
    assert left == []  # the cluster, the head started again and the drivers all stopped
    report = json.loads((out / "gameday.json").read_text())
    assert [s["name"] for s in report["steps"]] == list(SHIPPED)
    for s in report["steps"]:
        assert s["lost"] == {}, s["name"]
    (driver_crash,) = [s for s in report["steps"] if s["name"] == "driver-crash"]
    assert driver_crash["abandoned"]  # what the killed driver had in flight went with it
