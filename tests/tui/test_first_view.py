"""`freight top VIEW` takes every `:` command as the first view: `'logs task_id=..'` opens a task's
log lines and `'traces ID'` its timeline, each over the tasks view (esc goes back to it), and a
bad command is refused before the screen opens with the words the `:` prompt gives."""

from __future__ import annotations

import argparse

import pytest
from pilot import app_for, run, until
from textual.pilot import Pilot

import freight
from freight.cli.top_cmd import add_parsers
from freight.client import access
from freight.testing import Cluster, wait_for_condition
from freight.tui.app import TopApp, View
from freight.tui.commands import Command, CommandError, parse_command
from freight.tui.logs import LogsScreen
from freight.tui.traces import TracesScreen

MARKER = "fv-marker-line"


@freight.remote
def fv_prints() -> None:
    print(MARKER)


@pytest.fixture(scope="module")
def printed(cluster: Cluster) -> str:
    """The id of a task that printed :data:`MARKER`, once the head has its finished record."""
    freight.get(fv_prints.remote())
    wait_for_condition(
        lambda: freight.state.list_tasks(["name=fv_prints", "state=FINISHED"]),
        what="fv_prints' record",
    )
    (row,) = freight.state.list_tasks(["name=fv_prints"])
    return str(row["task_id"])


def first_view(text: str) -> View:
    """The view ``freight top TEXT`` opens first."""
    command = parse_command(text)
    return View(command.kind, tuple(command.filters))


def test_logs_and_traces_commands_parse_as_the_other_views() -> None:
    assert parse_command("logs task=AB12 component=worker") == Command(
        "logs", ["task_id=ab12", "component=worker"]
    )
    assert parse_command("l") == Command("logs", [])
    assert parse_command("tr ab12") == Command("traces", ["ab12"])
    assert parse_command("traces task_id=ab12") == Command("traces", ["ab12"])
    with pytest.raises(CommandError, match="give one task id"):
        parse_command("traces")
    with pytest.raises(CommandError, match="a trace is a task's"):
        parse_command("traces actor_id=ab12")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("logs colour=red", r"'colour=red': logs are filtered by job_id=\.\., task_id"),
        ("logs task_id=zz", "task expects a hex id"),
        ("traces a b", "give one task id"),
        ("taks", "unknown command 'taks'"),
    ],
)
def test_freight_top_refuses_a_bad_first_view_as_the_prompt_does(text: str, says: str) -> None:
    with pytest.raises(CommandError, match=says) as prompt:
        parse_command(text)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["top", text])
    # A UsageError: the CLI prints it and exits with 2, before it looks for a cluster.
    with pytest.raises(access.UsageError) as cli:
        args.func(args)
    assert str(cli.value) == str(prompt.value)


def test_a_first_view_of_logs_opens_over_the_tasks(cluster: Cluster, printed: str) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the logs view"
        )
        assert screen.title_text == f"logs task_id={printed}"
        await until(pilot, lambda: any(MARKER in r for r in screen.records), "the task's line")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, LogsScreen), "back")
        assert app.view == View("tasks")
        await until(pilot, lambda: printed in app.shown, "the tasks view's rows")

    run(app_for(cluster, first_view(f"logs task_id={printed}")), body)


def test_a_first_view_of_traces_opens_over_the_tasks(cluster: Cluster, printed: str) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        screen = await until(
            pilot, lambda: isinstance(app.screen, TracesScreen) and app.screen, "the traces view"
        )
        await until(pilot, lambda: screen.timeline and screen.timeline.final, "the timeline")
        assert [(r["name"], r["state"]) for r in screen.timeline.rows] == [
            ("fv_prints", "FINISHED")
        ]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, TracesScreen), "back")
        assert app.view == View("tasks")

    run(app_for(cluster, first_view(f"traces {printed}")), body)
