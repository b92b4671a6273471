"""The suite's own conftest under pytest-xdist: a session root per worker, a file per worker.

A real ``pytest -n 2 --dist loadgroup`` (two worker processes) runs small test files beside a
copy of ``tests/conftest.py``; each test writes down its worker and the FREIGHT_TEMP_DIR it sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
QUIET = ("-p", "no:cacheprovider", "-p", "no:randomly")  # nothing written beside the files

# Each test appends one JSON line: which file, which worker, which session root.
PROBE = """
import json, os

import pytest


@pytest.mark.parametrize("n", range(4))
def test_probe(n):
    line = {{
        "file": "{name}",
        "worker": os.environ["PYTEST_XDIST_WORKER"],
        "root": os.environ["FREIGHT_TEMP_DIR"],
    }}
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps(line) + "\\n")
"""

GROUPED = """
import pytest

pytestmark = pytest.mark.xdist_group("together")
"""


def _run(tmp_path: Path, files: dict[str, str]) -> list[dict[str, str]]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST.read_text())
    for name, extra in files.items():
        (suite / f"{name}.py").write_text(extra + PROBE.format(name=name))
    out = tmp_path / "probe.jsonl"
    env = {**os.environ, "PROBE_OUT": str(out), "FREIGHT_TEMP_DIR": str(tmp_path / "root")}
    env.pop("PYTEST_XDIST_WORKER", None)  # this test may itself run in a worker
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            *QUIET,
            str(suite),
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_a_session_root_per_worker_a_worker_per_file_and_per_group(tmp_path: Path) -> None:
    files = {"test_a": GROUPED, "test_b": GROUPED, **{f"test_{c}": "" for c in "cdef"}}
    lines = _run(tmp_path, files)
    assert len(lines) == 6 * 4
    workers_of: dict[str, set[str]] = defaultdict(set)
    roots_of: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        workers_of[line["file"]].add(line["worker"])
        roots_of[line["worker"]].add(line["root"])
    # A file's module-scoped fixtures (its cluster) are made once: its tests share a worker.
    assert all(len(w) == 1 for w in workers_of.values()), dict(workers_of)
    # So do the files of one xdist_group, which must not run beside each other.
    assert workers_of["test_a"] == workers_of["test_b"], dict(workers_of)
    # address="auto" and `freight stop` look under the root: no worker sees another's sessions.
    assert roots_of == {w: {f"{tmp_path / 'root'}-{w}"} for w in roots_of}, dict(roots_of)
