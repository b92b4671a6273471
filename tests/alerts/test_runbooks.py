"""The PromQL each runbook's Diagnosis gives is valid and names catalogued metrics.

The `freight ...` commands of the runbooks are run against a cluster by
tests/e2e/test_runbook_commands.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from alertfiles import RUNBOOKS
from promql_lint import undeclared

_PROMQL = re.compile(r"PromQL:\n\n```promql\n(.*?)```", re.S)


def runbook_queries() -> list[tuple[str, str]]:
    """The PromQL the Diagnosis sections tell on-call to run."""
    out = []
    for page in sorted(RUNBOOKS.glob("Freight*.md")):
        for block in _PROMQL.findall(page.read_text()):
            out += [(page.stem, q) for q in block.splitlines() if q.strip()]
    return out


def test_runbook_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = runbook_queries()
    assert {page for page, _ in queries} == {p.stem for p in RUNBOOKS.glob("Freight*.md")}
    rules = [{"record": f"runbook:query:{i}", "expr": q} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("page", "query"), runbook_queries())
def test_runbook_queries_name_catalogued_metrics(page: str, query: str) -> None:
    # ALERTS is Prometheus' own series of firing alerts
    problems = [p for p in undeclared(query) if not p.startswith("ALERTS ")]
    assert problems == [], f"runbooks/{page}.md: {query}"
