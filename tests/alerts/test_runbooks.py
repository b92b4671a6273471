"""Every `freight ...` command a runbook tells on-call to type is one the CLI accepts.

The commands are parsed by the CLI's own parser (placeholders such as ID and HEAD filled in), so
an unknown subcommand, flag or choice fails here rather than during an incident. Running them
against a live cluster is the live monitoring test's part.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from alertfiles import RUNBOOKS
from promql_lint import undeclared

from freight.cli.main import build_parser

PLACEHOLDERS = {"ID": "0123abcd", "HEAD": "127.0.0.1:6380"}
_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
_INLINE = re.compile(r"`(freight [^`]*)`")
_PROMQL = re.compile(r"PromQL:\n\n```promql\n(.*?)```", re.S)


def runbook_commands() -> list[tuple[str, str]]:
    out = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        text = page.read_text()
        lines = [ln for b in _BLOCK.findall(text) for ln in b.splitlines() if ln.strip()]
        lines += _INLINE.findall(text)
        out += [(page.stem, ln) for ln in lines if ln.startswith("freight ")]
    return out


def test_runbooks_give_commands() -> None:
    pages = {page for page, _ in runbook_commands()}
    assert pages == {p.stem for p in RUNBOOKS.glob("Freight*.md")}


@pytest.mark.parametrize(("page", "line"), runbook_commands())
def test_runbook_command_parses(page: str, line: str) -> None:
    argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(line)[1:]]
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as e:  # argparse's way to say the command is wrong
        pytest.fail(f"runbooks/{page}.md: `{line}` does not parse (exit {e.code})")


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
