"""freight.core.logs: reading a session folder's logs, as a node agent and `--session-dir` do.

Real files written by :func:`freight.observe.logging.configure_logging` (the writer every
process uses) and a worker's ``.out`` file; no cluster.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from freight.cli.main import main
from freight.core.logs import OutputReader, Reader, Selection, open_reader
from freight.observe.logging import configure_logging

WORKER = "00000000deadbeef"


@pytest.fixture(autouse=True)
def restore_loguru() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)


@pytest.fixture
def session(tmp_path: Path) -> Path:
    configure_logging(str(tmp_path), f"worker-{WORKER}", "worker", static_ids={"worker_id": WORKER})
    logger.info("first", task_id="aa01")
    logger.info("second", task_id="bb02")
    logger.complete()
    (tmp_path / "logs" / f"worker-{WORKER}.out").write_text("first\nFatal Python error: x\n")
    return tmp_path


def test_a_selection_keeps_matching_lines_and_says_what_is_wrong(session: Path) -> None:
    reader = Reader(str(session), Selection.checked({"task_id": "BB"}, None))
    assert [r["message"] for r in reader.history(0)] == ["second"]
    assert reader.new_records() == []  # nothing written since
    with pytest.raises(ValueError, match="--task expects a hex id"):
        Selection.checked({"task_id": "x!"}, None)
    with pytest.raises(ValueError, match="--component is one of head, agent, worker"):
        Selection.checked({}, "driver")
    later = Selection.checked({}, None, since=float("inf"))
    assert list(Reader(str(session), later).history(0)) == []


def test_a_workers_own_output_needs_the_worker_and_only_it(session: Path) -> None:
    reader = open_reader(str(session), Selection.checked({"worker_id": "0000"}, None), True)
    assert isinstance(reader, OutputReader)
    assert [r["message"] for r in reader.history(0)] == ["first", "Fatal Python error: x"]
    assert [r["message"] for r in reader.history(1)] == []  # read once: the rest is new lines
    with open(session / "logs" / f"worker-{WORKER}.out", "a") as f:
        f.write("later\n")
    assert [(r["message"], r["worker_id"]) for r in reader.new_records()] == [("later", WORKER)]
    for ids, component in (({}, None), ({"worker_id": "00", "task_id": "aa"}, None)):
        with pytest.raises(ValueError, match="--worker ID"):
            open_reader(str(session), Selection.checked(ids, component), True)


def test_session_dir_reads_a_folder_without_a_cluster(
    session: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["logs", "--session-dir", str(session), "--worker", WORKER[:8]]
    assert main([*args, "--process-output"]) == 0
    assert capsys.readouterr().out.splitlines() == ["first", "Fatal Python error: x"]
    assert main([*args, "--task", "aa", "-o", "json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"] == "first"
    assert main([*args, "--task", "aa", "--process-output"]) == 2
    assert "--worker ID" in capsys.readouterr().err
