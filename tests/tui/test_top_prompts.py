"""The inspector's prompts without a screen: `:` commands with aliases, `/` filters, and the text
of a record's detail."""

from __future__ import annotations

import subprocess
import sys

import pytest

from freight.tui.app import describe
from freight.tui.commands import Command, CommandError, parse_command, parse_filters


def test_commands_and_aliases() -> None:
    assert parse_command("tasks") == Command("tasks", [])
    assert parse_command(" t ") == Command("tasks", [])
    assert parse_command("actors state=ALIVE") == Command("actors", ["state=ALIVE"])
    assert parse_command("pg") == Command("placement_groups", [])
    assert parse_command("ev severity=ERROR") == Command("events", ["severity=ERROR"])
    assert parse_command("q").quit and parse_command("quit").quit


def test_an_unknown_command_says_what_is_known() -> None:
    with pytest.raises(CommandError, match=r"unknown command 'taks'.*:tasks.*:q to quit"):
        parse_command("taks")
    with pytest.raises(CommandError, match="type a view"):
        parse_command("  ")


def test_filters_pass_operators_and_make_bare_words_regexes() -> None:
    assert parse_filters("tasks", "state=FAILED attempt>0 name!=x") == [
        "state=FAILED",
        "attempt>0",
        "name!=x",
    ]
    assert parse_filters("tasks", "^train") == ["name~^train"]
    assert parse_filters("actors", "Counter state=ALIVE") == ["class_name~Counter", "state=ALIVE"]
    assert parse_filters("events", "") == []


def test_a_leading_bang_inverts_a_filter() -> None:
    assert parse_filters("tasks", "!train") == ["name!~train"]
    assert parse_filters("tasks", "!state=FAILED !name~^tr") == ["state!=FAILED", "name!~^tr"]
    assert parse_filters("actors", "!Counter name!~x") == ["class_name!~Counter", "name!~x"]
    assert parse_filters("tasks", "!state!=FAILED") == ["state=FAILED"]
    assert parse_command("tasks !tui_sq") == Command("tasks", ["name!~tui_sq"])


def test_a_task_detail_shows_transitions_pending_reason_and_traceback() -> None:
    row = {
        "task_id": "abc",
        "state": "FAILED",
        "submit_time": 1700000000.0,
        "pending_reason": "waiting for 1 GPU",
        "error_type": "RuntimeError",
        "error": "boom",
        "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n",
        "transitions": [
            {"time": 1700000000.0, "state": "PENDING_ARGS_AVAIL", "cause": ""},
            {"time": 1700000000.25, "state": "SUBMITTED_TO_WORKER", "cause": "worker w1"},
            {"time": 1700000001.5, "state": "FAILED", "cause": ""},
        ],
    }
    text = describe("tasks", row)
    assert "state transitions (3):" in text
    assert "+   1.500s  FAILED" in text and "SUBMITTED_TO_WORKER  (worker w1)" in text
    assert "pending reason: waiting for 1 GPU" in text
    assert "error (RuntimeError): boom" in text and text.rstrip().endswith("RuntimeError: boom")
    assert "task_id" in text and "2023-11-14" in text  # every field; times as dates


def test_the_inspector_loads_none_of_the_heads_modules() -> None:
    """The inspector is a client of the state API: nothing of the head's code."""
    script = (
        "import sys, freight.tui.app, freight.tui.feed, freight.cli.top_cmd, freight.tui.record\n"
        "import freight.tui.replay, freight.tui.lookup\n"
        "print(sorted(m for m in sys.modules if m.startswith('freight.head')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
