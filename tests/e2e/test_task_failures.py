"""Debugging a failed task against a real cluster: its traceback in the state API, `freight get
task` and `freight logs --task`, naming the user's file and lines, and the level of what it
logged with the ``logging`` module.

One cluster for the module; one driver script (a file, so its functions travel by value as a
user's ``__main__`` functions do) runs a task that prints, logs a warning and raises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freight import state
from freight.testing import Cluster, patched_environ, short_temp_dir, wait_for_condition

FREIGHT = str(Path(sys.executable).with_name("freight"))

DRIVER = textwrap.dedent(
    """\
    import logging
    import sys

    import freight


    @freight.remote(max_retries=0)
    def boom(x):
        print("about to fail", x)
        logging.getLogger("mine").warning("named logger says %s", x)  # before any basicConfig
        logging.warning("careful with %s", x)
        return helper(x)


    def helper(x):
        raise ValueError(f"bad value {x}")  # the line the traceback must show


    freight.init(address=sys.argv[1])
    ref = boom.remote(7)
    try:
        freight.get(ref)
    except Exception as e:
        print("ERROR", str(e).replace("\\n", "|"))
    """
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    return subprocess.run(
        [FREIGHT, *args], capture_output=True, text=True, timeout=120, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def failed() -> Iterator[dict[str, Any]]:
    """A cluster, and the record of the task the driver script made fail."""
    with (
        short_temp_dir() as tmp,
        patched_environ(FREIGHT_TEMP_DIR=str(tmp), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None),
        Cluster() as cluster,
    ):
        cluster.add_node(num_cpus=1)
        script = tmp / "user_job.py"
        script.write_text(DRIVER)
        run = subprocess.run(
            [sys.executable, str(script), cluster.address],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]

        def record() -> dict[str, Any] | None:
            rows = state.list_tasks(
                [("name", "=", "boom"), ("state", "=", "FAILED")], address=cluster.address
            )
            return rows[0] if rows else None

        row = wait_for_condition(record, 30, "the failed task to reach the head")
        try:
            yield {
                "row": row,
                "script": str(script),
                "driver": run,
                "address": cluster.address,
                "session_dir": cluster.session_dir,
            }
        finally:
            state.close()


def test_the_state_api_keeps_the_full_traceback(failed: dict[str, Any]) -> None:
    got = state.get_task(failed["row"]["task_id"], address=failed["address"])
    assert got is not None
    assert got["error"] == "ValueError: bad value 7"
    tb = got["traceback"]
    assert tb.startswith("Traceback (most recent call last):"), tb
    assert tb.rstrip().endswith("ValueError: bad value 7"), tb


def test_tracebacks_name_the_users_file_and_lines(failed: dict[str, Any]) -> None:
    tb = state.get_task(failed["row"]["task_id"], address=failed["address"])["traceback"]
    script = failed["script"]
    assert "<dynamic-code>" not in tb
    assert f'File "{script}", line 12, in boom' in tb, tb
    assert f'File "{script}", line 16, in helper' in tb, tb
    assert 'raise ValueError(f"bad value {x}")  # the line the traceback must show' in tb
    # The driver's exception shows the same frames.
    assert f'File "{script}", line 16, in helper' in failed["driver"].stdout


def test_get_task_prints_the_traceback(failed: dict[str, Any]) -> None:
    out = cli("get", "task", failed["row"]["task_id"], "--address", failed["address"], "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert f'File "{failed["script"]}", line 16, in helper' in got["traceback"]


def logs_of(failed: dict[str, Any]) -> list[dict[str, Any]]:
    task = failed["row"]["task_id"]
    out = cli("logs", "--task", task, "--session-dir", failed["session_dir"], "-o", "json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_logs_of_a_failed_task_show_its_output_and_traceback(failed: dict[str, Any]) -> None:
    lines = wait_for_condition(
        lambda: (got := logs_of(failed)) and any("Traceback" in r["message"] for r in got) and got,
        30,
        "the failed task's traceback in its worker's log",
    )
    messages = [r["message"] for r in lines]
    assert "about to fail 7" in messages
    (failure,) = [r for r in lines if "Traceback" in r["message"]]
    assert failure["level"] == "ERROR"
    assert failure["task_id"] == failed["row"]["task_id"]
    assert f'File "{failed["script"]}", line 16, in helper' in failure["message"]


def test_logging_records_keep_their_level(failed: dict[str, Any]) -> None:
    lines = logs_of(failed)
    levels = {r["message"]: r["level"] for r in lines}
    assert levels.get("WARNING:root:careful with 7") == "WARNING", levels
    # A logger nobody configured (the last-resort handler) shows its level too.
    assert levels.get("WARNING:mine:named logger says 7") == "WARNING", levels
    printed = failed["driver"].stdout + failed["driver"].stderr
    assert "WARNING:mine:named logger says 7" in printed
    assert "WARNING:root:careful with 7" in printed
