"""`freight top` driven by Textual's Pilot against a real cluster: every view shows the cluster's
rows, `:` commands and `/` filters (evaluated by the head, a bad one refused and the view kept),
rows changed by id in place, "showing N of M", the detail of a failed task, help, and the head's
loss shown as stale then cleared after a restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pilot import app_for, run, until
from textual.pilot import Pilot

import freight
from freight.testing import Cluster, connected_cluster, short_temp_dir, wait_for_condition
from freight.tui.app import DetailScreen, HelpScreen, TopApp, View


@freight.remote
def tui_square(x: int) -> int:
    return x * x


@freight.remote
def tui_fails() -> None:
    raise RuntimeError("tui-boom: the failure the detail must show")


@freight.remote
class TuiCounter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {
        "FREIGHT_TASK_ROWS_SAMPLE": "0",  # every task gets its record
        "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
        "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "2",
    }
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        assert freight.get([tui_square.remote(i) for i in range(12)]) == [i * i for i in range(12)]
        with pytest.raises(freight.exceptions.RayTaskError):
            freight.get(tui_fails.remote())
        yield c


@pytest.fixture(scope="module")
def actor(cluster: Cluster) -> Any:
    counter = TuiCounter.options(name="tui-counter").remote()
    assert freight.get(counter.add.remote()) == 1
    return counter


def names(app: TopApp) -> set[str]:
    return {str(r.get("name")) for r in app.rows.values()}


async def command(pilot: Pilot[None], text: str, key: str = ":") -> None:
    await pilot.press(key)
    app = pilot.app
    assert isinstance(app, TopApp)
    await until(pilot, lambda: app.prompt_mode == key, f"the {key} prompt")
    prompt = app.query_one("#prompt")
    prompt.value = text  # type: ignore[attr-defined]
    await pilot.press("enter")


def test_every_view_shows_the_clusters_rows(cluster: Cluster, actor: Any) -> None:
    node_ids = {n["node_id"] for n in freight.state.list_nodes()}
    actor_id = actor._actor_id.hex()

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: "tui_square" in names(app), "the tasks view's rows")
        assert app.table.row_count == len(app.shown) >= 13
        expect = {
            "nodes": lambda: node_ids <= set(app.shown),
            "actors": lambda: actor_id in app.shown,
            "jobs": lambda: len(app.shown) >= 1,
            "events": lambda: len(app.shown) >= 1,
            "workers": lambda: len(app.shown) >= 1,
            "objects": lambda: app.last is not None and app.last.synced,
            "placement_groups": lambda: app.last is not None and app.last.synced,
        }
        for kind, shows in expect.items():
            await command(pilot, kind)
            assert app.view == View(kind)
            await until(pilot, shows, f"the {kind} view's rows")
            assert app.table.row_count == len(app.shown)
            assert kind in app.status_text() and " row" in app.status_text()
        await command(pilot, "a state=ALIVE")  # an alias, with a filter
        assert app.view == View("actors", ("state=ALIVE",))
        await until(pilot, lambda: actor_id in app.shown, "the alive actor")
        assert {r["state"] for r in app.rows.values()} == {"ALIVE"}
        await pilot.press("escape")  # back to the view before
        assert app.view == View("placement_groups")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")
        await pilot.press("q")

    app = app_for(cluster)
    run(app, body)
    assert app.return_code == 0


def test_filters_are_evaluated_by_the_head_and_a_bad_one_is_refused(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: "tui_square" in names(app), "the tasks")
        await command(pilot, "state=FAILED", key="/")
        assert app.view == View("tasks", ("state=FAILED",))
        await until(pilot, lambda: app.last and app.last.synced and app.rows, "failed tasks")
        assert names(app) == {"tui_fails"}
        await command(pilot, "^tui_sq", key="/")  # a bare word: a regex on the task name
        assert app.view == View("tasks", ("name~^tui_sq",))
        await until(pilot, lambda: app.last and app.last.synced and app.rows, "the squares")
        assert names(app) == {"tui_square"}
        await command(pilot, "no_such_field=1", key="/")
        await until(pilot, lambda: app.view == View("tasks", ("name~^tui_sq",)), "the way back")
        assert "no_such_field" in app.refused or app.refused == ""  # reset by the view reopened
        await command(pilot, "tasks")
        await pilot.press("f")  # failures only, then all again
        assert app.view == View("tasks", ("state=FAILED",))
        await until(pilot, lambda: app.last and app.last.synced and app.rows, "failed tasks")
        assert names(app) == {"tui_fails"}
        await pilot.press("f")
        assert app.view == View("tasks")
        await until(pilot, lambda: "tui_square" in names(app), "every task again")
        await command(pilot, "nonsense")
        assert app.view == View("tasks")  # an unknown command changes nothing

    app = app_for(cluster)
    notes: list[str] = []
    original = app.notify

    def notify(message: str, **kw: Any) -> None:
        notes.append(message)
        original(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    run(app, body)
    assert any("no_such_field" in n for n in notes), notes
    assert any("unknown command 'nonsense'" in n for n in notes), notes


def test_rows_change_in_place_by_id_and_a_partial_view_says_so(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.last and app.last.synced, "the actors listing")
        counter = TuiCounter.remote()
        assert freight.get(counter.add.remote()) == 1
        key = counter._actor_id.hex()
        await until(pilot, lambda: app.rows.get(key, {}).get("state") == "ALIVE", "the actor")
        index = app.table.get_row_index(key)
        others = [k for k in app.shown if k != key]
        freight.kill(counter)
        await until(pilot, lambda: app.rows[key]["state"] == "DEAD", "the actor's death")
        assert app.table.get_row_index(key) == index  # the same row, changed in place
        assert app.table.get_row(key)[3] == "DEAD"
        assert [k for k in app.shown if k != key] == others

    run(app_for(cluster, View("actors")), body)

    async def sorted_(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: {"tui_square", "tui_fails"} <= names(app), "the tasks")
        await pilot.press("s", "s")  # the second column: the task's name
        assert "sorted by name" in app.status_text()

        def column() -> list[str]:
            return [str(app.table.get_row_at(i)[1]) for i in range(app.table.row_count)]

        assert column() == sorted(column()) and column() != sorted(column(), reverse=True)
        await pilot.press("S")
        assert "sorted by name (reversed)" in app.status_text()
        assert column() == sorted(column(), reverse=True)

    run(app_for(cluster, View("tasks")), sorted_)

    async def partial(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: "showing 5 of" in app.status_text(), "showing 5 of M")
        assert app.table.row_count == 5
        matched = int(app.status_text().split("showing 5 of ")[1].split()[0])
        assert matched >= 13

    run(app_for(cluster, View("tasks"), max_rows=5), partial)


def test_enter_describes_a_failed_task(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.shown, "the failed task")
        app.table.focus()
        await pilot.press("enter")
        screen = await until(
            pilot,
            lambda: isinstance(app.screen, DetailScreen) and app.screen.detailed and app.screen,
            "the task's detail",
        )
        text = str(screen.query_one("#detail").render())
        assert "tui-boom" in text and "Traceback" in text and "RuntimeError" in text
        assert "state transitions" in text and "FAILED" in text and "SUBMITTED_TO_WORKER" in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "back to the list")
        await pilot.press("c")  # its id, copied
        assert app.clipboard == raw_key()
        await pilot.press("y")  # the raw record: JSON as the state API gives it
        screen = await until(
            pilot,
            lambda: isinstance(app.screen, DetailScreen) and app.screen.detailed and app.screen,
            "the raw record",
        )
        raw = json.loads(str(screen.query_one("#detail").render()))
        assert raw["name"] == "tui_fails" and raw["state"] == "FAILED" and raw["transitions"]
        assert raw["task_id"] == app.clipboard
        await pilot.press("escape")

    def raw_key() -> str:
        (failed,) = freight.state.list_tasks(["state=FAILED", "name=tui_fails"])
        return str(failed["task_id"])

    run(app_for(cluster, View("tasks", ("state=FAILED",))), body)


def test_the_cli_refuses_what_it_cannot_use(cluster: Cluster) -> None:
    cli = str(Path(sys.executable).with_name("freight"))
    env = dict(os.environ, FREIGHT_TOKEN=cluster._token())
    gone = subprocess.run(
        [cli, "top", "--address", "127.0.0.1:1"], capture_output=True, text=True, env=env
    )
    assert gone.returncode == 3, gone.stderr
    assert "127.0.0.1:1" in gone.stderr
    bad = subprocess.run([cli, "top", "--refresh", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "positive number of seconds" in bad.stderr
    view = subprocess.run(
        [cli, "top", "nosuchview", "--address", cluster.address],
        capture_output=True,
        text=True,
        env=env,
    )
    assert view.returncode == 2 and "unknown command 'nosuchview'" in view.stderr
    pipe = subprocess.run(
        [cli, "top", "--address", cluster.address], capture_output=True, text=True, env=env
    )
    assert pipe.returncode == 2 and "needs a terminal" in pipe.stderr


class Tmux:
    """A private tmux server running one command in a 160x40 terminal: keys in, screen out."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            if os.environ.get("CI") == "true":
                pytest.fail(
                    "tmux is missing; CI must run this test: scripts/install-system-deps.sh"
                )
            pytest.skip("tmux is not installed (scripts/install-system-deps.sh installs it)")
        self.server = [
            tmux,
            "-L",
            f"freight-top-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "-f",
            "/dev/null",
        ]
        flags = [f"-e{k}={v}" for k, v in {"TERM": "xterm-256color", **env}.items()]
        # The pane stays after the command ends, so its last screen can still be read.
        self.run(
            *("new-session", "-d", "-s", "top", "-x", "160", "-y", "40", *flags, command),
            *(";", "set-option", "-t", "top", "remain-on-exit", "on"),
        )

    def run(self, *args: str) -> str:
        return subprocess.run(
            [*self.server, *args], check=True, capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def shows(self, *texts: str) -> bool:
        shown = self.screen()
        return all(t in shown for t in texts)

    def wait_shows(self, what: str, *texts: str, timeout: float = 30) -> None:
        try:
            wait_for_condition(lambda: self.shows(*texts), timeout, what)
        except TimeoutError as e:
            raise AssertionError(f"{e}; the screen:\n{self.screen()}") from None

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", "top", *(["-l"] if literal else []), *keys)

    def prompt(self, key: str) -> None:
        """Open the ':' or '/' prompt and wait until it has the keyboard (the status line names
        it, and the footer lists the prompt's keys, not the list's): keys typed sooner may reach
        the list."""
        self.keys(key)
        self.wait_shows(f"the {key} prompt", "prompt: enter runs, esc cancels")
        wait_for_condition(lambda: not self.shows(": command"), 30, f"the {key} prompt's keys")

    def close(self) -> None:
        subprocess.run([*self.server, "kill-server"], capture_output=True)


def test_freight_top_in_a_real_terminal(cluster: Cluster, actor: Any, tmp_path: Path) -> None:
    """The real command in tmux: the tasks on screen, `:` to the actors with a filter, `/` to
    filter them, esc back, enter to describe, esc, q to quit with exit code 0."""
    cli = Path(sys.executable).with_name("freight")
    rc = tmp_path / "rc"
    top = f"{cli} top --address {cluster.address} --refresh 0.2; echo $? > {rc}"
    term = Tmux(top, {"FREIGHT_TOKEN": cluster._token()})
    try:
        term.wait_shows("the tasks on screen", "tui_square", " rows")
        term.prompt(":")
        term.keys("actors state=ALIVE", literal=True)
        term.keys("Enter")
        # The footer lists the list's keys again once the prompt has let go of the keyboard.
        term.wait_shows("the actors", "TuiCounter", "state=ALIVE", ": command")
        term.prompt("/")
        term.keys("NoSuchClass", literal=True)
        term.keys("Enter")
        term.wait_shows("the filter", "state=ALIVE class_name~NoSuchClass", "0 rows", ": command")
        term.keys("Escape")
        term.wait_shows("esc back", "TuiCounter", "state=ALIVE  |")
        term.keys("Enter")
        term.wait_shows("the actor's detail", "class_name", "num_restarts")
        term.keys("Escape")
        wait_for_condition(lambda: not term.shows("num_restarts"), 30, "the list again")
        term.keys("q")
        wait_for_condition(lambda: rc.exists() and rc.read_text().strip(), 30, "the end")
        assert rc.read_text().strip() == "0"
    finally:
        term.close()


def test_make_run_opens_the_inspector_on_a_terminal(tmp_path: Path) -> None:
    """`freight demo` (what `make run` runs) on a terminal: the workload, then the inspector on
    its cluster; q quits and the cluster stops, leaving no process behind."""
    cli = Path(sys.executable).with_name("freight")
    rc, out = tmp_path / "rc", tmp_path / "out"
    with short_temp_dir() as temp:
        demo = f"{cli} demo --num-cpus 2; echo $? > {rc}"
        term = Tmux(demo, {"FREIGHT_TEMP_DIR": str(temp)})
        try:
            term.wait_shows("the inspector on the demo's tasks", "square", "tasks  |", timeout=120)
            term.keys("q")
            wait_for_condition(lambda: rc.exists() and rc.read_text().strip(), 60, "the end")
            out.write_text(term.screen())
            assert rc.read_text().strip() == "0", out.read_text()
            assert "cluster stopped" in out.read_text()
            wait_for_condition(
                lambda: (
                    not any(
                        str(temp) in " ".join(p.info["cmdline"] or ())
                        for p in psutil.process_iter(["cmdline", "name"])
                        if not (p.info["name"] or "").startswith("tmux")  # it names the folder
                    )
                ),
                30,
                "the demo's processes to end",
            )
        finally:
            term.close()


def test_a_lost_head_shows_as_stale_until_it_is_back(cluster: Cluster, actor: Any) -> None:
    actor_id = actor._actor_id.hex()

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: actor_id in app.shown, "the actor")
        await asyncio.to_thread(cluster.kill_head)
        await until(pilot, lambda: app.stale, "the stale marker")
        assert "STALE since" in app.status_text()
        assert actor_id in app.shown  # the rows stay, as last seen
        await asyncio.to_thread(cluster.restart_head)
        await until(pilot, lambda: not app.stale, "the marker cleared")
        await until(pilot, lambda: actor_id in app.shown, "the actor listed again")

    run(app_for(cluster, View("actors")), body)
