"""The game day's report from a run's record: the summary table (the closing note) with the
alert and page columns filled from what the on-call pack saw, JUnit XML with a failure per
broken hypothesis and a skip per no-go, and an SVG whose probe lines break where a probe went
unanswered. No cluster: the record is made here."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from freight.chaos.gameday import report
from freight.chaos.gameday.notes import Note
from freight.chaos.gameday.plan import Plan
from freight.chaos.gameday.record import Fault, Run, StepResult
from freight.chaos.gameday.watch import Sample, runbook_url

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_800_000_000.0


def a_run(tmp_path: Path) -> Run:
    plan = Plan.model_validate({"title": "drill", "steps": []})
    run = Run(plan, str(tmp_path), "127.0.0.1:6390", T0, T0 + 100)
    head = StepResult("head-crash", "The head crashes", "h.json", "the head comes back", "held")
    head.started, head.ended = T0 + 1, T0 + 40
    head.faults = [
        Fault(
            "i1",
            "kill_head",
            {"kind": "head", "id": "x"},
            42,
            "SIGKILL",
            T0 + 2,
            T0 + 2.5,
            "killed",
        )
    ]
    head.fault_ended, head.recovered = T0 + 2.5, T0 + 6.0
    head.alert, head.page, head.watched = "FreightHeadDown", True, True
    head.alert_fired, head.page_received = T0 + 30.0, T0 + 33.5
    head.page_runbook = "https://runbooks.example/FreightHeadDown.md"
    node = StepResult("node-loss", "A node lost", "n.json", "nothing lost", "broken")
    node.started, node.ended = T0 + 41, T0 + 90
    node.submitted, node.answered = 10, 8
    node.lost = {"task 3": "WorkerCrashedError: gone", "task 7": "no result came back"}
    node.reasons = ["2 result(s) lost: task 3, task 7"]
    skipped = StepResult("gray", "A paused agent", "g.json", "nothing lost", "skipped")
    run.steps = [head, node, skipped]
    run.samples = [
        Sample(T0 + 1, {"nodes_alive": 3.0, "tasks_pending": 0.0}),
        Sample(T0 + 3, {"nodes_alive": None, "tasks_pending": None}),  # the head is away
        Sample(T0 + 5, {"nodes_alive": 3.0, "tasks_pending": 1.0}),
        Sample(T0 + 7, {"nodes_alive": 3.0, "tasks_pending": 0.0}),
    ]
    run.notes = [Note(T0 + 3.0, "paged on my phone", "operator")]
    return run


def test_the_summary_table_fills_the_alert_and_page_columns(tmp_path: Path) -> None:
    table = report.summary_table(a_run(tmp_path)).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == list(report.COLUMNS)
    head, node, gray = (line.split("|")[1:-1] for line in table[2:])
    assert [c.strip() for c in head] == [
        "head-crash",
        "kill_head",
        "3.5 s",
        "nothing",
        "FreightHeadDown / fired at +28.0 s",
        "31.5 s",
        "held",
    ]
    assert [c.strip() for c in node][2:4] == ["-", "2 of 10"]
    assert [c.strip() for c in gray][-1] == "skipped"


def test_junit_has_a_failure_per_broken_hypothesis_and_a_skip_per_no_go(tmp_path: Path) -> None:
    suite = ET.fromstring(report.junit(a_run(tmp_path))).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    head, node, gray = suite.findall("testcase")
    assert head.find("failure") is None and head.find("skipped") is None
    failure = node.find("failure")
    assert failure is not None and "task 3, task 7" in (failure.text or "")
    assert gray.find("skipped") is not None


def test_the_markdown_lists_what_was_lost_and_the_timeline_in_order(tmp_path: Path) -> None:
    text = report.markdown(a_run(tmp_path))
    assert "- Lost: task 3 (WorkerCrashedError: gone), task 7 (no result came back)" in text
    assert "The page's runbook: https://runbooks.example/FreightHeadDown.md" in text
    events = [e for _, e in report.timeline(a_run(tmp_path))]
    assert events[:4] == [
        "inject kill_head (SIGKILL) on head x, pid 42",
        "end of kill_head on head x: killed",
        "note: paged on my phone",
        "head-crash recovered (3.5 s)",
    ]


def test_the_svg_breaks_a_probe_line_where_the_probe_went_unanswered(tmp_path: Path) -> None:
    svg = ET.fromstring(report.svg(a_run(tmp_path)))
    lines = [e for e in svg.iter(f"{SVG}polyline") if e.get("data-series") == "nodes_alive"]
    assert [len(e.get("points", "").split()) for e in lines] == [1, 2]
    shaded = [e.get("data-step") for e in svg.iter(f"{SVG}rect") if e.get("class") == "fault"]
    assert shaded == ["head-crash"]  # the others had no fault
    assert [e.get("class") for e in svg.iter(f"{SVG}line")].count("note") == 1


def test_the_runbook_link_is_read_from_the_page() -> None:
    page = {"payload": {"custom_details": {"runbook_url": "https://x/FreightHeadDown.md"}}}
    assert runbook_url(page) == "https://x/FreightHeadDown.md"
    assert runbook_url({"payload": {}}) == "" and runbook_url(None) == ""
