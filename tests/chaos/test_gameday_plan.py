"""Game day plans that are not valid are refused before anything runs (exit 2, the file, the
YAML path of what is wrong and what to do); a note needs a game day running; the ledger says
exactly which results were lost. No cluster: nothing here gets that far."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from freight.chaos.gameday import workload
from freight.testing import short_temp_dir

FREIGHT = str(Path(sys.executable).with_name("freight"))
EXPERIMENTS = Path(__file__).resolve().parents[2] / "chaos/experiments"
GOOD_STEP = f"""
  - name: kill
    experiment: {EXPERIMENTS / "kill-worker-under-load.json"}
    hypothesis: nothing lost
"""


def gameday(*argv: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    with short_temp_dir() as tmp:
        env = {**os.environ, "FREIGHT_TEMP_DIR": str(tmp)}
        return subprocess.run(
            [FREIGHT, "gameday", *argv], capture_output=True, text=True, env=env, stdin=stdin
        )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "title: t\nsteps:\n  - name: kill\n    experiment: x.json\n    hypotesis: h\n",
            [
                "steps[0].hypotesis: Extra inputs are not permitted",
                "steps[0].hypothesis: Field required",
            ],
        ),
        (
            "title: t\nsteps:\n  - name: kill\n    experiment: nope.json\n    hypothesis: h\n",
            ["steps[0].experiment: no such file", "nope.json", "relative to the plan's folder"],
        ),
        ("title: t\nsteps: [\n  - name: kill\n", ["not valid YAML", "line "]),
        (
            f"title: t\nsteps:{GOOD_STEP}    alert: FreightHeadGone\n",
            [
                "steps[0].alert",
                "'FreightHeadGone' is no alert of the on-call pack",
                "FreightHeadDown",
            ],
        ),
        (f"title: t\ncluster: {{nodes: 1}}\nsteps:{GOOD_STEP}", ["cluster.nodes"]),
        (
            f"title: t\nmonitoring: {{time_scale: 0.5}}\nsteps:{GOOD_STEP}",
            ["monitoring.time_scale"],
        ),
        ("- just\n- a list\n", ["a plan is a mapping with a title and steps"]),
        (f"title: t\nsteps:{GOOD_STEP}{GOOD_STEP}", ["kill appear more than once"]),
    ],
    ids=[
        "unknown-key",
        "missing-experiment",
        "bad-yaml",
        "unknown-alert",
        "one-node",
        "slower-than-production",
        "list",
        "twice",
    ],
)
def test_a_bad_plan_exits_2_naming_the_path_and_what_to_do(
    tmp_path: Path, text: str, says: list[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    out = gameday("run", str(plan), "--yes", "-o", str(tmp_path / "out"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(plan) in out.stderr
    for words in says:
        assert words in out.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_an_experiment_that_is_not_one_is_named_with_its_step(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"title": "t", "description": "d"}))  # no method
    plan = tmp_path / "plan.yaml"
    plan.write_text("title: t\nsteps:\n  - name: s\n    experiment: bad.json\n    hypothesis: h\n")
    out = gameday("run", str(plan), "--yes")
    assert out.returncode == 2
    assert "steps[0].experiment" in out.stderr and "is not a valid experiment" in out.stderr


def test_without_a_terminal_and_without_yes_it_asks_for_yes(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"title: t\nsteps:{GOOD_STEP}")
    out = gameday("run", str(plan))
    assert out.returncode == 2
    assert "no terminal to ask go/no-go on" in out.stderr and "pass --yes" in out.stderr


def test_a_note_with_no_game_day_running_says_so() -> None:
    out = gameday("note", "the head is back")
    assert out.returncode == 2
    assert "no game day is running here" in out.stderr
    assert "freight gameday run PLAN.yaml" in out.stderr


def test_the_ledger_says_exactly_which_results_were_lost(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    lines = [
        {"op": "start", "t": 1.0, "pid": 7, "job_id": "01"},
        *({"op": "submit", "t": 2.0 + i, "i": i} for i in range(5)),
        {"op": "ok", "t": 3.0, "i": 0},
        {"op": "wrong", "t": 4.0, "i": 1, "got": 2, "want": 1},
        {"op": "error", "t": 5.0, "i": 2, "error": "WorkerCrashedError: gone"},
        {"op": "ok", "t": 9.0, "i": 4},
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"op": "ok", "i"')  # cut short
    outcome = workload.read_ledger(str(path))
    assert (outcome.pid, outcome.job_id, outcome.ended) == (7, "01", False)
    assert outcome.lost() == {
        1: "wrong result 2 (want 1)",
        2: "WorkerCrashedError: gone",
        3: "no result came back",
    }
    assert outcome.first_ok_after(5.5) == 9.0  # task 4, submitted at 6.0
    assert outcome.first_ok_after(6.5) is None
