"""freight.observe.logging: JSON-lines files whose records carry the ids that apply."""

from __future__ import annotations

import contextvars
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from freight.observe.logging import IdPatcher, configure_logging


@pytest.fixture(autouse=True)
def restore_loguru() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


_task: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("task", default=None)


def test_records_carry_component_fixed_and_current_ids(tmp_path: Path) -> None:
    path = Path(
        configure_logging(
            str(tmp_path),
            "worker-abc",
            "worker",
            static_ids={"node_id": "n1", "worker_id": "w1", "empty": ""},
            current_ids=_task.get,
        )
    )
    assert path == tmp_path / "logs" / "worker-abc.log"
    logger.info("between tasks")
    token = _task.set({"job_id": "j1", "task_id": "t1", "actor_id": ""})
    try:
        logger.info("inside a task")
        logger.info("explicit ids win", job_id="other")
    finally:
        _task.reset(token)
    logger.debug("below the level")

    between, inside, explicit = records(path)
    assert between["extra"] == {"component": "worker", "node_id": "n1", "worker_id": "w1"}
    assert inside["extra"] == {
        "component": "worker",
        "node_id": "n1",
        "worker_id": "w1",
        "job_id": "j1",
        "task_id": "t1",
    }
    assert inside["message"] == "inside a task"
    assert explicit["extra"]["job_id"] == "other"
    assert explicit["extra"]["task_id"] == "t1"


def test_a_failing_id_source_is_switched_off_and_logging_goes_on(tmp_path: Path) -> None:
    calls = []

    def broken() -> dict[str, str]:
        calls.append(1)
        raise RuntimeError("no ids today")

    path = Path(configure_logging(str(tmp_path), "head", "head", current_ids=broken))
    logger.info("first")
    logger.info("second")
    first, second = records(path)
    assert calls == [1]
    assert "no ids today" in first["extra"]["log_ids_error"]
    assert second["extra"] == {"component": "head"}


def test_trace_ids_come_from_the_trace_source() -> None:
    patcher = IdPatcher("worker", trace_ids=lambda: {"trace_id": "ab" * 16, "span_id": "cd" * 8})
    record: dict[str, Any] = {"extra": {}}
    patcher(record)
    assert record["extra"] == {"component": "worker", "trace_id": "ab" * 16, "span_id": "cd" * 8}


def test_tracebacks_do_not_show_local_variables(tmp_path: Path) -> None:
    path = Path(configure_logging(str(tmp_path), "head", "head"))

    def fail(secret_token: str) -> None:
        raise ValueError("bad request")

    secret = "-".join(["s3cr3t", "t0ken", "value"])  # not in the source the traceback quotes
    try:
        fail(secret)
    except ValueError:
        logger.exception("it failed")
    line = json.loads(path.read_text().splitlines()[0])
    assert "ValueError: bad request" in line["text"]
    assert "fail(secret)" in line["text"]
    assert secret not in path.read_text()


def test_files_are_rotated_and_bounded(tmp_path: Path) -> None:
    path = Path(configure_logging(str(tmp_path), "agent-x", "agent", rotation=4000, retention=2))
    for i in range(200):
        logger.info("line {} {}", i, "x" * 100)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert "agent-x.log" in files
    assert 2 <= len(files) <= 3, files  # the live file and at most two rotated ones
    assert all(p.stat().st_size < 8000 for p in (tmp_path / "logs").iterdir())
    assert records(path)[-1]["message"].startswith("line 199 ")


def test_a_path_in_the_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid log name"):
        configure_logging(str(tmp_path), "../escape", "head")
