"""`freight top`'s marks, actions and jumps, driven by Textual's Pilot against a real cluster:
marked tasks cancelled after a confirmation (and nothing done when it is declined), an actor
killed, a node drained and undrained, `--read-only` and a read-only token, the `!` inverse filter,
jumps to related rows, and an object's holders in the objects view."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pilot import REFRESH, confirm, run, until
from rich.text import Text
from test_top import Tmux, command
from textual.pilot import Pilot
from textual.widgets import Input, Static

import freight
import freight.actions
import freight.state
from freight.testing import Cluster, wait_for_condition
from freight.tui.actions import MARK_STYLE, READ_ONLY_REFUSAL, ConfirmScreen, token_is_read_only
from freight.tui.app import HelpScreen, TopApp, View, id_keys
from freight.util.tokens import readonly_token

FREIGHT = str(Path(sys.executable).with_name("freight"))


@freight.remote(resources={"tui_never": 1})
def tui_stuck(i: int) -> int:  # no node has tui_never: it waits, pending, until cancelled
    return i


@freight.remote
def tui_double(x: int) -> int:
    return 2 * x


@freight.remote
class TuiVictim:
    def ping(self) -> str:
        return "pong"


class Recording(TopApp):
    """The inspector, keeping what it told the user (notifications) to be read by the tests."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.said: list[str] = []

    def notify(self, message: str, **kw: Any) -> None:  # type: ignore[override]
        self.said.append(message)
        super().notify(message, **kw)


@pytest.fixture(scope="module")
def cluster(cluster: Cluster) -> Cluster:
    """The inspector's shared cluster (conftest.py: one node, every task gets its record), with
    three tasks of this file finished."""
    assert freight.get([tui_double.remote(i) for i in range(3)]) == [0, 2, 4]
    return cluster


def app_for(cluster: Cluster, view: View | None = None, **kw: Any) -> Recording:
    return Recording(cluster.address, id_keys(cluster.address), view=view, refresh=REFRESH, **kw)


def closed(app: TopApp) -> Callable[[], bool]:
    """A predicate: no confirmation dialog is open."""
    return lambda: not isinstance(app.screen, ConfirmScreen)


def said(app: Recording, text: str) -> Callable[[], bool]:
    """A predicate: the app has told the user something containing ``text``."""
    return lambda: any(text in s for s in app.said)


def task_state(task_id: str) -> str:
    row = freight.state.get_state("tasks", task_id)
    return str(row["state"]) if row else ""


def action_events(action: str) -> list[dict[str, Any]]:
    rows = freight.state.list_state("events", ["kind=OPERATOR_ACTION"], limit=1000)
    return [r for r in rows if r.get("action") == action]


REFS: list[Any] = []  # the stuck tasks' results, kept: a dropped ref might cancel its task


def stuck_tasks(n: int, tag: str) -> list[str]:
    """The ids of ``n`` new tasks that wait for a resource no node has."""
    name = f"tui_stuck_{tag}"
    REFS.extend(tui_stuck.options(name=name).remote(i) for i in range(n))

    def listed() -> list[dict[str, Any]]:
        return list(freight.state.list_state("tasks", [f"name={name}"]))

    wait_for_condition(lambda: len(listed()) == n, timeout=30)
    return [r["task_id"] for r in listed()]


def one(kind: str, *filters: str) -> dict[str, Any]:
    """The first row of ``kind`` passing ``filters``, once its owner has reported it."""
    rows = wait_for_condition(
        lambda: list(freight.state.list_state(kind, list(filters), limit=1)), timeout=30
    )
    return dict(rows[0])


async def cursor_to(pilot: Pilot[None], key: str) -> None:
    app = pilot.app
    assert isinstance(app, TopApp)
    await until(pilot, lambda: key in app.shown, f"the row {key}")
    app.table.move_cursor(row=app.table.get_row_index(key))
    await pilot.pause()


def test_two_marked_tasks_are_cancelled_after_confirming(cluster: Cluster) -> None:
    ids = stuck_tasks(2, "both")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await until(pilot, lambda: set(ids) <= set(app.shown), "the stuck tasks")
        await cursor_to(pilot, ids[0])
        await pilot.press("space")  # marks it and moves to the next row
        await cursor_to(pilot, ids[1])
        await pilot.press("space")
        assert app.marks == set(ids) and "2 marked" in app.status_text()
        await pilot.press("s")  # sorted, the marks stay with their rows
        assert app.marks == set(ids) and all(drawn_marked(app, t) for t in ids)
        text = await confirm(
            pilot,
            "x",
            asks="cancel 2 tasks?",
            done=lambda: sum("cancel: done" in s for s in app.said) == 2,
            what="two cancels done",
        )
        assert all(i in text for i in ids), text
        assert not app.marks and "marked" not in app.status_text()
        await until(
            pilot,
            lambda: all(task_state(t) in ("CANCELLED", "FAILED") for t in ids),
            "both tasks ended",
        )
        await until(pilot, lambda: any("2 of 2 tasks done" in s for s in app.said), "summary")

    run(app_for(cluster, View("tasks", ("name=tui_stuck_both",))), body)
    events = {e["task_id"]: e for e in action_events("cancel_task")}
    for tid in ids:
        assert events[tid]["reason"] == f"freight top by {getpass.getuser()}"
        assert events[tid]["role"] == "admin"


def test_a_partial_result_names_the_ids_not_done(cluster: Cluster) -> None:
    (stuck,) = stuck_tasks(1, "partial")
    ended = one("tasks", "name=tui_double", "state=FINISHED")["task_id"]

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        for key in (stuck, ended):
            await cursor_to(pilot, key)
            await pilot.press("space")
        assert app.marks == {stuck, ended}
        await confirm(pilot, "x", done=said(app, "1 of 2 tasks done"), what="summary")
        (summary,) = [s for s in app.said if "1 of 2 tasks done" in s]
        assert f"not done: {ended} (refused: " in summary and stuck not in summary, summary
        assert any(s.startswith("cancel: done") and stuck in s for s in app.said), app.said

    view = View("tasks", ("name~^tui_(double|stuck_partial)$",))
    run(app_for(cluster, view), body)


def drawn_marked(app: TopApp, key: str) -> bool:
    """Whether the table draws the row ``key`` as marked (every cell in the mark's style)."""
    cells = app.table.get_row(key)
    return all(isinstance(c, Text) and c.style == MARK_STYLE for c in cells)


def test_marks_stay_on_rows_that_change_and_go_with_the_view(cluster: Cluster) -> None:
    (tid,) = stuck_tasks(1, "repaint")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)
        await pilot.press("space")
        assert app.marks == {tid} and drawn_marked(app, tid) and "1 marked" in app.status_text()
        freight.actions.cancel_task(tid, address=cluster.address)  # its row changes
        await until(
            pilot, lambda: app.rows[tid]["state"] in ("CANCELLED", "FAILED"), "the row changed"
        )
        assert app.shown[tid] != () and drawn_marked(app, tid) and app.marks == {tid}
        await cursor_to(pilot, tid)
        await pilot.press("space")  # unmarked: drawn plain again
        assert not app.marks and not drawn_marked(app, tid)
        await pilot.press("space")
        await pilot.press("slash")  # in the prompt, space is a space
        await until(pilot, lambda: app.prompt_mode == "/", "the filter prompt")
        assert app.status_text().startswith("filter prompt: enter runs, esc cancels")
        await pilot.press("a", "space", "b")
        assert app.query_one("#prompt", Input).value.endswith("a b") and app.marks == {tid}
        await pilot.press("escape")
        assert "prompt" not in app.status_text()  # closed: the status line no longer names it
        await command(pilot, "actors")
        assert not app.marks and "marked" not in app.status_text()
        await pilot.press("escape")
        await cursor_to(pilot, tid)
        assert not app.marks and not drawn_marked(app, tid)

    run(app_for(cluster, View("tasks", ("name=tui_stuck_repaint",))), body)


def test_a_marked_row_that_leaves_the_view_is_no_longer_marked(cluster: Cluster) -> None:
    (tid,) = stuck_tasks(1, "leaves")
    waiting = task_state(tid)

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)
        await pilot.press("space")
        assert app.marks == {tid}
        freight.actions.cancel_task(tid, address=cluster.address)  # it leaves the view
        await until(pilot, lambda: tid not in app.shown, "the row gone")
        assert not app.marks and "marked" not in app.status_text()

    run(app_for(cluster, View("tasks", ("name=tui_stuck_leaves", f"state={waiting}"))), body)


def test_a_declined_cancel_changes_nothing(cluster: Cluster) -> None:
    (tid,) = stuck_tasks(1, "declined")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)
        # No mark: the row under the cursor.
        await confirm(
            pilot, "x", "n", asks=f"cancel 1 task?\n\n  {tid}", done=closed(app), what="closed"
        )
        await confirm(pilot, "x", "escape", done=closed(app), what="dialog closed")
        assert not any("cancel:" in s for s in app.said)

    run(app_for(cluster, View("tasks", ("name=tui_stuck_declined",))), body)
    # Declining starts nothing, so there is nothing to wait for.
    assert task_state(tid) not in ("CANCELLED", "FAILED", "FINISHED")
    assert not [e for e in action_events("cancel_task") if e["task_id"] == tid]
    freight.actions.cancel_task(tid, address=cluster.address)  # it would wait forever


def test_kill_an_actor(cluster: Cluster) -> None:
    victim = TuiVictim.options(name="tui-victim").remote()
    assert freight.get(victim.ping.remote()) == "pong"
    aid = victim._actor_id.hex()

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, aid)
        await confirm(
            pilot, "x", "enter", asks="kill 1 actor?", done=said(app, "kill: done"), what="killed"
        )
        await until(pilot, lambda: app.rows[aid]["state"] == "DEAD", "the actor shown dead")

    run(app_for(cluster, View("actors", ("name=tui-victim",))), body)


def test_stop_a_submitted_job(cluster: Cluster) -> None:
    code = "import signal; signal.pause()"
    submit = [FREIGHT, "job", "submit", "--no-wait", "--address", cluster.address, "--"]
    proc = subprocess.run(
        [*submit, sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await until(pilot, lambda: app.rows.get(job_id, {}).get("state") == "RUNNING", "running")
        await cursor_to(pilot, job_id)
        await confirm(
            pilot,
            "x",
            asks=f"stop 1 job?\n\n  {job_id}",
            done=said(app, "stop: done"),
            what="stopped",
        )
        await until(pilot, lambda: app.rows[job_id]["state"] == "STOPPED", "shown stopped")

    run(app_for(cluster, View("jobs", (f"job_id={job_id}",))), body)


def test_drain_then_undrain_a_node(cluster: Cluster) -> None:
    (node,) = [n["node_id"] for n in freight.state.list_nodes()]

    def draining() -> bool:
        return bool(freight.state.get_state("nodes", node)["draining"])

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, node)
        await confirm(pilot, "x", asks="drain 1 node?", done=said(app, "draining"), what="drained")
        assert draining()
        await confirm(pilot, "u", done=said(app, "open again"), what="undrained")
        assert not draining()

    try:
        run(app_for(cluster, View("nodes")), body)
    finally:
        if draining():
            freight.actions.undrain_node(node, address=cluster.address)


def _footer_keys(app: TopApp) -> set[str]:
    return {key for key, b in app.active_bindings.items() if b.enabled and b.binding.show}


def test_read_only_hides_the_action_keys_and_refuses_them(cluster: Cluster) -> None:
    (tid,) = stuck_tasks(1, "readonly")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)
        assert "x" not in _footer_keys(app) and "space" in _footer_keys(app)
        await pilot.press("x")
        await until(pilot, lambda: any(s.startswith("read-only") for s in app.said), "refusal")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        text = str(app.screen.query_one("#help", Static).render())
        assert "read-only: no action" in text and "x cancel" not in text
        await pilot.press("escape")

    run(app_for(cluster, View("tasks", ("name=tui_stuck_readonly",)), read_only=True), body)

    async def admin(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)
        assert {"x", "space"} <= _footer_keys(app)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        assert "x cancel" in str(app.screen.query_one("#help", Static).render())

    run(app_for(cluster, View("tasks", ("name=tui_stuck_readonly",))), admin)
    assert task_state(tid) not in ("CANCELLED", "FAILED")
    assert not [e for e in action_events("cancel_task") if e["task_id"] == tid]
    freight.actions.cancel_task(tid, address=cluster.address)  # it would wait forever


def test_a_read_only_token_is_refused_clearly(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tid,) = stuck_tasks(1, "token")
    assert not token_is_read_only(cluster.address)
    admin = (Path(cluster.session_dir) / "token").read_text().strip()
    monkeypatch.setenv("FREIGHT_TOKEN", readonly_token(admin))
    assert token_is_read_only(cluster.address)  # freight top starts read-only with it

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await cursor_to(pilot, tid)  # the read-only token reads
        await confirm(pilot, "x", done=said(app, READ_ONLY_REFUSAL), what="refused")
        assert "cancel: refused: this token may only read (exit 4 in the CLI)" in app.said
        assert app.read_only and "x" not in _footer_keys(app)  # known now: the keys go

    run(app_for(cluster, View("tasks", ("name=tui_stuck_token",))), body)
    monkeypatch.delenv("FREIGHT_TOKEN")
    assert task_state(tid) not in ("CANCELLED", "FAILED")
    freight.actions.cancel_task(tid, address=cluster.address)


def test_the_bang_filter_shows_the_rows_that_do_not_match(cluster: Cluster) -> None:
    other = TuiVictim.options(name="tui-bang").remote()
    assert freight.get(other.ping.remote()) == "pong"  # a task not named tui_double

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, Recording)
        await until(pilot, lambda: any(r["name"] == "tui_double" for r in app.rows.values()), "")
        await command(pilot, "!tui_double", key="/")
        assert app.view == View("tasks", ("name!~tui_double",))
        await until(pilot, lambda: app.last is not None and app.last.synced, "the listing")
        await until(
            pilot,
            lambda: any(r["name"] == "TuiVictim.ping" for r in app.rows.values()),
            "the rows not named tui_double",
        )
        assert "tui_double" not in {r["name"] for r in app.rows.values()}
        await command(pilot, "!name=tui_double", key="/")
        assert app.view == View("tasks", ("name!=tui_double",))

    run(app_for(cluster, View("tasks")), body)
    proc = subprocess.run(
        [
            FREIGHT,
            "list",
            "tasks",
            "--filter",
            "name!~tui_double",
            "--address",
            cluster.address,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"tui_double"' not in proc.stdout and '"task_id"' in proc.stdout


def test_jumps_land_on_the_related_rows(cluster: Cluster) -> None:
    victim = TuiVictim.options(name="tui-jumps").remote()
    assert freight.get(victim.ping.remote()) == "pong"
    aid = victim._actor_id.hex()
    call = one("tasks", f"actor_id={aid}", "name=TuiVictim.ping")
    double = one("tasks", "name=tui_double", "state=FINISHED")

    async def jump(pilot: Pilot[None], key: str, view: View, row: str | None = None) -> None:
        """``key`` on the row last chosen lands on ``view`` (showing ``row``); esc returns."""
        app = pilot.app
        assert isinstance(app, TopApp)
        before, start = app.view, app.cursor_key()
        assert start is not None
        await cursor_to(pilot, start)  # the view was opened again: its rows listed again
        await pilot.press(key)
        assert app.view == view, (key, app.view)
        if row is not None:
            await until(pilot, lambda: row in app.shown, f"{row} in {view}")
        await pilot.press("escape")
        assert app.view == before
        await until(pilot, lambda: app.cursor_key() == start, "the cursor back on its row")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await cursor_to(pilot, double["task_id"])
        assert {"n", "w", "j", "a", "o"} <= _footer_keys(app)
        await jump(pilot, "n", View("nodes", (f"node_id={double['node_id']}",)), double["node_id"])
        await jump(pilot, "w", View("workers", (f"worker_id={double['worker_id']}",)))
        await jump(pilot, "j", View("jobs", (f"job_id={double['job_id']}",)), double["job_id"])
        await jump(pilot, "o", View("jobs", (f"job_id={double['job_id']}",)))  # the driver
        await pilot.press("a")  # not an actor task: said, and the view stays
        assert app.view == View("tasks") and any("not an actor task" in s for s in app.said)

        await cursor_to(pilot, call["task_id"])
        await jump(pilot, "a", View("actors", (f"actor_id={aid}",)), aid)

        await command(pilot, "actors name=tui-jumps")
        await cursor_to(pilot, aid)
        assert {"n", "w", "t", "e"} <= _footer_keys(app) and "o" not in _footer_keys(app)
        await jump(pilot, "t", View("tasks", (f"actor_id={aid}",)), call["task_id"])
        await jump(pilot, "e", View("events", (f"actor_id={aid}",)))
        row = app.rows[aid]
        await jump(pilot, "w", View("workers", (f"worker_id={row['worker_id']}",)))
        await jump(pilot, "n", View("nodes", (f"node_id={row['node_id']}",)))

        await command(pilot, f"workers actor_id={aid}")
        await cursor_to(pilot, row["worker_id"])
        await jump(pilot, "a", View("actors", (f"actor_id={aid}",)), aid)

    run(app_for(cluster, View("tasks")), body)


def test_the_objects_view_shows_a_pinned_object_and_its_holder(cluster: Cluster) -> None:
    big = freight.put(b"x" * 2_000_000)  # in the store, held by this driver
    oid = big.hex()
    me = f"driver pid={os.getpid()}"

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(
            pilot, lambda: me in str(app.rows.get(oid, {}).get("holders")), "the object's holder"
        )
        row = app.rows[oid]
        assert row["pinned"] is True and "LOCAL_REFERENCE" in row["reference_types"]
        assert row["holders"] == f"{me} (owner)"
        cells = app.shown[oid]
        assert "True" in cells and f"{me} (owner)" in cells and "LOCAL_REFERENCE" in cells
        await cursor_to(pilot, oid)
        assert {"o", "h", "n"} <= _footer_keys(app)
        await pilot.press("h")
        assert app.view == View("jobs", (f"driver_pid={os.getpid()}",))
        await until(pilot, lambda: app.rows, "the driver's job")
        await pilot.press("escape")
        await cursor_to(pilot, oid)  # the objects listed again
        await pilot.press("o")
        assert app.view == View("jobs", (f"driver_pid={os.getpid()}",))

    run(app_for(cluster, View("objects", (f"object_id={oid}",))), body)
    del big


def test_freight_top_with_the_read_only_token_starts_read_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The real command in tmux, given the read-only token, starts read-only (the status line
    says so; what read-only hides and says is tested with Pilot above)."""
    stuck_tasks(1, "terminal")
    rc = tmp_path / "rc"
    top = f"{FREIGHT} top 'tasks name=tui_stuck_terminal' --address {cluster.address}"
    term = Tmux(
        f"{top} --refresh 0.2; echo $? > {rc}", {"FREIGHT_TOKEN": readonly_token(cluster._token())}
    )
    try:
        term.wait_shows("the task, read-only", "tui_stuck_terminal", "|  read-only  |")
        term.keys("q")
        wait_for_condition(lambda: rc.exists() and rc.read_text().strip(), 30, "the end")
        assert rc.read_text().strip() == "0"
    finally:
        term.close()
