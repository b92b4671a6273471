"""alerts/rules: promtool accepts and unit-tests them, and they keep the pack's conventions.

Conventions (docs/decisions/0044-alert-rules-and-slos.md): CamelCase names prefixed Freight;
severity critical | warning | info (none for the watchdog only); a static summary, a templated
description and a runbook_url <base>/<AlertName>.md with one base for every alert; no ids in
labels; only metrics and labels the catalogue declares. Every alert has promtool unit tests
(quiet, firing, resolved), a runbook page, and every recording rule a unit test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from alertfiles import RULE_FILES, RUNBOOKS, UNIT_TEST_FILES, alerts, records, unit_tests
from promql_lint import promql_names, undeclared

ALERT_LABELS = {"severity", "long", "short"}  # the rules' own labels: all bounded enums
SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Escalation")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    out = _run([promtool, "check", "rules", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", UNIT_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(promtool: str, path: Path) -> None:
    out = subprocess.run(
        [promtool, "test", "rules", path.name],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=path.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ---- the PromQL metric lint ----------------------------------------------------------------


def test_promql_names_reads_selectors_functions_and_groupings() -> None:
    names, selectors, grouped = promql_names(
        'histogram_quantile(0.99, sum by (cluster, le) (rate(x_bucket{le="0.1", a=~"b|c"}[5m])))'
        ' > 0.1 and on (cluster) y offset 10m or vector(1) unless z{job="j"} - w[30m:1m]'
    )
    assert names == {"x_bucket", "y", "z", "w"}
    assert ("x_bucket", {"le", "a"}) in selectors and ("z", {"job"}) in selectors
    assert grouped == {"cluster", "le"}


def test_lint_flags_an_undeclared_metric() -> None:
    assert undeclared('rate(freight_tasks_finsihed_total{error_kind="system"}[5m])') == [
        "freight_tasks_finsihed_total is not in observe/catalogue.py"
    ]
    assert undeclared('sum by (node) (freight_nodes{status="DEAD"})') == [
        "freight_nodes has no label status",
        "grouping by node: no metric has that label",
    ]
    assert undeclared('up{job="freight-agents"}') == ["job freight-agents is not scraped"]


@pytest.mark.parametrize("rule", [r.get("alert") or r["record"] for r in alerts() + records()])
def test_rules_name_only_catalogued_metrics(rule: str) -> None:
    (expr,) = [
        r["expr"] for r in alerts() + records() if rule in (r.get("alert"), r.get("record"))
    ][:1]
    assert undeclared(expr) == []


# ---- conventions ---------------------------------------------------------------------------


def test_alert_conventions() -> None:
    bases = set()
    for a in alerts():
        name = a["alert"]
        assert re.fullmatch(r"Freight(?:[A-Z][a-z0-9]*|OOM)+", name), name
        severity = a["labels"]["severity"]
        assert severity in (
            {"none"} if name == "FreightWatchdog" else {"critical", "warning", "info"}
        )
        assert set(a["labels"]) <= ALERT_LABELS, f"{name}: labels beyond {ALERT_LABELS}"
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in ann["summary"] and ann["summary"].endswith("."), name
        assert ann["summary"].count(". ") == 0, f"{name}: the summary is one sentence"
        if name != "FreightWatchdog":
            assert "{{ $labels.cluster }}" in ann["description"], name
        base, _, page = ann["runbook_url"].rpartition("/")
        assert page == f"{name}.md", name
        bases.add(base)
    assert len(bases) == 1, f"every runbook_url shares one base, not {bases}"
    assert bases.pop().endswith("/runbooks")


def test_every_alert_has_a_runbook() -> None:
    for name in sorted({a["alert"] for a in alerts()}):
        page = RUNBOOKS / f"{name}.md"
        assert page.is_file(), f"no runbook {page.relative_to(RUNBOOKS.parent)} for {name}"
        text = page.read_text()
        assert text.startswith(f"# {name}\n"), page
        for section in SECTIONS:
            assert section in text, f"{page.name} has no {section!r} section"
    index = (RUNBOOKS / "README.md").read_text()
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == {a["alert"] for a in alerts()}, "a runbook page without its alert"
    for name in pages:
        assert f"({name}.md)" in index, f"runbooks/README.md does not list {name}"


def test_every_alert_is_unit_tested_quiet_firing_and_resolved() -> None:
    assert alerts() and unit_tests(), "alerts/rules and alerts/tests are empty"
    seen: dict[str, list[bool]] = {}
    for group in unit_tests():
        for case in group.get("alert_rule_test", []):
            seen.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for name in sorted({a["alert"] for a in alerts()}):
        states = seen.get(name)
        assert states, f"{name} has no promtool unit test in alerts/tests"
        assert True in states, f"{name} is never tested firing"
        if name == "FreightWatchdog":
            continue  # it always fires
        firing = states.index(True)
        assert False in states[:firing], f"{name} is not tested quiet before it fires"
        assert False in states[firing:], f"{name} is not tested resolved after it fires"
    # every severity variant of a multi-rule alert fires in some test
    fired = {
        (c["alertname"], e["exp_labels"]["severity"], e["exp_labels"].get("long"))
        for g in unit_tests()
        for c in g.get("alert_rule_test", [])
        for e in c.get("exp_alerts", [])
    }
    for a in alerts():
        key = (a["alert"], a["labels"]["severity"], a["labels"].get("long"))
        assert key in fired, f"{key} never fires in a unit test"


def test_every_recording_rule_is_unit_tested() -> None:
    tested = {case["expr"].strip() for g in unit_tests() for case in g.get("promql_expr_test", [])}
    for r in records():
        assert r["record"] in tested, f"{r['record']} has no promql_expr_test in alerts/tests"
