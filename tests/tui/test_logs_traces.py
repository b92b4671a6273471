"""`freight top`'s Logs and Traces views, driven by Textual's Pilot against a real cluster: `l` on a
task shows what it printed (read from every node through the agents), a line printed after the
view opened arrives while following, `/` highlights what matches and `!` inverts it, a task's and
an actor's detail end with their log lines, and `t` (or `:traces`) shows a task with its child
tasks and their states as a timeline. The Jaeger span parsing is checked against an answer shaped
as Jaeger's query API documents it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pilot import app_for, run, until
from textual.pilot import Pilot

import freight
from freight.testing import (
    Cluster,
    OtlpReceiver,
    ReceivedSpan,
    connected_cluster,
    wait_for_condition,
)
from freight.tui.app import DetailScreen, TopApp, View
from freight.tui.commands import CommandError
from freight.tui.logs import (
    HIGHLIGHT,
    MAX_LINES,
    DetailLogs,
    LineFilter,
    LogsScreen,
    selection,
)
from freight.tui.traces import TracesScreen, jaeger_rows


@freight.remote(resources={"near": 1.0})  # on the head's node
def lt_prints(marker: str) -> str:
    print(marker)
    print(f"{marker} second line")
    return marker


@freight.remote
class LtTalker:
    def say(self, text: str, times: int = 1) -> str:
        for i in range(times):
            print(text if times == 1 else f"{text} {i}")
        return text


@freight.remote
def lt_child(i: int) -> int:
    if i == 2:
        raise ValueError("lt-child-2 fails")
    return i


@freight.remote
def lt_parent() -> list[int | None]:
    out: list[int | None] = []
    for ref in [lt_child.remote(i) for i in range(3)]:
        try:
            out.append(freight.get(ref))
        except freight.exceptions.RayTaskError:
            out.append(None)
    return out


@freight.remote(resources={"far": 1.0})
def lt_prints_far(marker: str) -> str:
    print(marker)
    return freight.get_runtime_context().get_node_id()


MARKER = f"lt-marker-{uuid.uuid4().hex[:8]}"
FAR_MARKER = f"lt-far-{uuid.uuid4().hex[:8]}"
FAR = {"far": 1.0}  # the second node's resource


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Two nodes: lines come from each; the second one's agent is stopped a moment in the last
    # test (the health checks keep their defaults, far longer than that moment).
    env = {"FREIGHT_TASK_ROWS_SAMPLE": "0"}  # every task gets its record
    with connected_cluster(
        {"num_cpus": 2, "resources": {"near": 1.0}}, {"num_cpus": 1, "resources": FAR}, env=env
    ) as c:
        assert freight.get(lt_prints.remote(MARKER)) == MARKER
        assert freight.get(lt_parent.remote()) == [0, 1, None]
        assert freight.get(lt_prints_far.remote(FAR_MARKER)) == c.nodes[1].node_id
        # Owners report their tasks' records in batches: the views read them once they came.
        wait_for_condition(
            lambda: len(freight.state.list_tasks(["state~^(FINISHED|FAILED)$"])) == 6,
            what="the six tasks' records",
        )
        yield c


@pytest.fixture(scope="module")
def talker(cluster: Cluster) -> Any:
    actor = LtTalker.remote()
    assert freight.get(actor.say.remote("lt-talker-ready")) == "lt-talker-ready"
    return actor


def task_id(name: str) -> str:
    (row,) = freight.state.list_tasks([f"name={name}"])
    return str(row["task_id"])


def logs_screen(app: TopApp) -> LogsScreen | None:
    return app.screen if isinstance(app.screen, LogsScreen) else None


async def prompt(pilot: Pilot[None], key: str, text: str) -> None:
    """Type ``text`` into the prompt ``key`` opens, and submit it."""
    await pilot.press(key)
    screen = pilot.app.screen
    box = screen.query_one("#logs-prompt" if isinstance(screen, LogsScreen) else "#prompt")
    await until(pilot, lambda: box.display and screen.focused is box, f"the {key} prompt")
    box.value = text  # type: ignore[attr-defined]
    await pilot.press("enter")


def test_l_on_a_task_shows_what_it_printed_and_the_filter_highlights_or_inverts(
    cluster: Cluster,
) -> None:
    tid = task_id("lt_prints")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: tid in app.shown, "the task's row")
        app.table.focus()
        await pilot.press("l")
        screen = await until(pilot, lambda: logs_screen(app), "the logs view")
        assert screen.title_text == f"logs task_id={tid}"
        await until(pilot, lambda: any(r.endswith(f"| {MARKER}") for r in screen.records), "line")
        second = f"| {MARKER} second line"
        await until(pilot, lambda: any(r.endswith(second) for r in screen.records), "2nd line")
        assert all(f"task={tid}" in r for r in screen.records)
        kept = len(screen.records)

        await prompt(pilot, "/", "sec.nd")
        await until(pilot, lambda: screen.line_filter.text == "sec.nd", "the filter applied")
        (shown,) = screen.shown_lines
        assert shown.plain.endswith(second)
        marked = [shown.plain[s.start : s.end] for s in shown.spans if s.style == HIGHLIGHT]
        assert marked == ["second"]
        assert f"1 of {kept} lines match /sec.nd" in screen.status_text()

        await prompt(pilot, "/", "!sec.nd")
        await until(pilot, lambda: screen.line_filter.invert, "the inverted filter applied")
        assert len(screen.shown_lines) == kept - 1
        assert not any("second" in t.plain for t in screen.shown_lines)
        assert any(t.plain.endswith(f"| {MARKER}") for t in screen.shown_lines)
        assert not any(s.style == HIGHLIGHT for t in screen.shown_lines for s in t.spans)

        await prompt(pilot, "/", "(unclosed")  # refused: the filter before stays
        await until(pilot, lambda: not screen.query_one("#logs-prompt").display, "prompt closed")
        assert screen.line_filter.text == "!sec.nd"
        await pilot.press("escape")
        await until(pilot, lambda: not logs_screen(app), "back to the tasks")
        assert app.view == View("tasks", ("name=lt_prints",))

    app = app_for(cluster, View("tasks", ("name=lt_prints",)))
    notes: list[str] = []
    original = app.notify

    def notify(message: str, **kw: Any) -> None:
        notes.append(message)
        original(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    run(app, body)
    assert any("not a regular expression" in n for n in notes), notes


def test_following_shows_a_line_printed_after_the_view_opened(
    cluster: Cluster, talker: Any
) -> None:
    actor_id = talker._actor_id.hex()
    late = f"lt-late-{uuid.uuid4().hex[:8]}"

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await pilot.press("colon")
        await until(pilot, lambda: app.prompt_mode == ":", "the : prompt")
        app.query_one("#prompt").value = f"logs actor_id={actor_id}"  # type: ignore[attr-defined]
        await pilot.press("enter")
        screen = await until(pilot, lambda: logs_screen(app), "the logs view")
        await until(
            pilot,
            lambda: screen.last is not None and screen.last.caught_up and screen.records,
            "the actor's lines so far",
        )
        assert not any(late in r for r in screen.records)
        assert "following" in screen.status_text()
        # Printed now, after the view opened: more lines than the screen holds.
        ref = talker.say.remote(late, times=60)
        await until(pilot, lambda: any(r.endswith(f"| {late} 59") for r in screen.records), "late")
        assert freight.get(ref) == late
        assert any(t.plain.endswith(f"| {late} 0") for t in screen.shown_lines)
        log = screen.lines_log
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y > 0, "the view at the bottom")

        log.scroll_home(animate=False)  # the user scrolls up to read: new lines leave it there
        await until(pilot, lambda: log.scroll_y == 0, "the view scrolled up")
        assert freight.get(talker.say.remote(f"{late}-more")) == f"{late}-more"
        await until(pilot, lambda: any(r.endswith(f"| {late}-more") for r in screen.records), "+1")
        await pilot.pause()
        assert log.scroll_y == 0 < log.max_scroll_y

        await pilot.press("F")  # follow off, then on: back to the bottom
        assert "paused (F follows)" in screen.status_text() and not screen.following
        await pilot.press("F")
        assert screen.following and "following" in screen.status_text()
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, "the view at the bottom")

    run(app_for(cluster, View("jobs")), body)


def test_a_tasks_and_an_actors_detail_end_with_their_log_lines(
    cluster: Cluster, talker: Any
) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.shown, "the task's row")
        app.table.focus()
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, "the detail"
        )
        logs = screen.query_one(DetailLogs)
        await until(pilot, lambda: logs.done, "the task's log lines")
        assert any(line.endswith(f"| {MARKER}") for line in logs.log_lines)
        text = str(logs.render())
        assert "log lines (the last 50, from every node):" in text and MARKER in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "back")

        said = f"lt-detail-{uuid.uuid4().hex[:8]}"  # the actor's latest line
        assert freight.get(talker.say.remote(said)) == said
        app.open_view(View("actors", ("class_name=LtTalker",)))
        actor_id = talker._actor_id.hex()
        await until(pilot, lambda: actor_id in app.shown, "the actor's row")
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, "the detail"
        )
        logs = screen.query_one(DetailLogs)
        await until(pilot, lambda: logs.done, "the actor's log lines")
        assert any(line.endswith(f"| {said}") for line in logs.log_lines)

    run(app_for(cluster, View("tasks", ("name=lt_prints",))), body)


def test_a_long_history_is_written_in_slices_that_leave_keys_answered(cluster: Cluster) -> None:
    """10,000 lines taken at once are written a slice at a time (the loop free in between), all
    of them in the end, the status saying it is still reading meanwhile."""
    many = [
        {"timestamp": 1.7e9 + i, "level": "INFO", "component": "worker", "message": f"many {i}"}
        for i in range(MAX_LINES)
    ]

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        app.push_screen(LogsScreen(selection(["task_id=ffffffff"])))  # no line has this id
        screen = await until(pilot, lambda: logs_screen(app), "the logs view")
        await until(pilot, lambda: not screen.busy, "the (empty) history read")
        screen.backlog.extend(many)  # as if the source had handed them over in one tick
        screen.drain()
        assert 0 < len(screen.records) < MAX_LINES  # one slice, then keys and repaints
        assert "(reading...)" in screen.status_text()
        await until(pilot, lambda: len(screen.records) == MAX_LINES, "every line written")
        assert not screen.busy and "(reading...)" not in screen.status_text()
        assert screen.shown_lines[-1].plain.endswith(f"| many {MAX_LINES - 1}")

    run(app_for(cluster, View("jobs")), body)


def trace_rows(screen: TracesScreen) -> dict[str, str]:
    """The timeline's task names (indent kept) and states, as the table shows them."""
    table = screen.query_one("#traces-table")
    out = {}
    for key in table.rows:  # type: ignore[attr-defined]
        name, state, *_ = table.get_row(key)  # type: ignore[attr-defined]
        out.setdefault(str(name), str(state))
    return out


def test_the_traces_view_shows_a_task_and_each_child_with_its_state(cluster: Cluster) -> None:
    parent = task_id("lt_parent")

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: parent in app.shown, "the parent's row")
        app.table.focus()
        await pilot.press("t")
        screen = await until(
            pilot, lambda: isinstance(app.screen, TracesScreen) and app.screen, "the traces view"
        )
        await until(pilot, lambda: screen.timeline and screen.timeline.final, "the timeline")
        rows = trace_rows(screen)
        assert rows["lt_parent"] == "FINISHED"
        children = [r for r in screen.timeline.rows if r["name"] == "lt_child"]
        assert len(children) == 3
        assert all(r["depth"] == 1 and r["parent"] == parent for r in children)
        assert sorted(r["state"] for r in children) == ["FAILED", "FINISHED", "FINISHED"]
        assert rows["  lt_child"] in ("FINISHED", "FAILED")  # indented under the parent
        assert all(r["start"] and r["end"] >= r["start"] for r in screen.timeline.rows)
        status = str(screen.query_one("#traces-status").render())
        assert "4 rows from the state transitions" in status
        assert "no trace backend (freight top --traces URL" in status
        failed = next(i for i, r in enumerate(screen.timeline.rows) if r["state"] == "FAILED")
        table = screen.query_one("#traces-table")
        table.move_cursor(row=failed)  # type: ignore[attr-defined]
        await pilot.press("enter")  # the failed child's detail, over the trace
        detail = await until(
            pilot,
            lambda: isinstance(app.screen, DetailScreen) and app.screen.detailed and app.screen,
            "the child's detail",
        )
        assert detail.row["name"] == "lt_child" and "lt-child-2 fails" in detail.row["error"]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "back to the trace")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, TracesScreen), "back")

        # :traces with an id prefix, the same tree
        await pilot.press("colon")
        await until(pilot, lambda: app.prompt_mode == ":", "the : prompt")
        app.query_one("#prompt").value = f"traces {parent[:-4]}"  # type: ignore[attr-defined]
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, TracesScreen) and app.screen, "the traces view"
        )
        await until(pilot, lambda: screen.timeline and screen.timeline.final, "the timeline")
        assert len(screen.timeline.rows) == 4

    run(app_for(cluster, View("tasks", ("name=lt_parent",))), body)


def test_logs_commands_say_what_is_wrong() -> None:
    assert selection(["task=AB12"]).ids == {"task_id": "ab12"}
    assert selection(["component=worker", "job_id=01"]).component == "worker"
    with pytest.raises(CommandError, match=r"'colour=red'.*task_id=.*component=head\|agent"):
        selection(["colour=red"])
    with pytest.raises(CommandError, match="hex id"):
        selection(["task_id=zz"])
    with pytest.raises(CommandError, match="component is one of head, agent, worker"):
        selection(["component=driver"])
    assert LineFilter("!x").invert and LineFilter("").show("a") is not None
    with pytest.raises(ValueError, match="not a regular expression"):
        LineFilter("(")


# An answer of Jaeger's query service to GET /api/traces/{traceID}, shaped as its documented API
# (jaeger-query's HTTP JSON: data[].spans[] with spanID, operationName, references (refType
# CHILD_OF), startTime and duration in microseconds, tags [{key, type, value}], processID, and
# data[].processes {processID: {serviceName, tags}}). No Jaeger server can run in these tests.
JAEGER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
JAEGER_ANSWER: dict[str, Any] = {
    "data": [
        {
            "traceID": JAEGER_TRACE,
            "spans": [
                {
                    "traceID": JAEGER_TRACE,
                    "spanID": "00f067aa0ba902b7",
                    "flags": 1,
                    "operationName": "submit lt_parent",
                    "references": [],
                    "startTime": 1_700_000_000_000_000,
                    "duration": 900_000,
                    "tags": [{"key": "span.kind", "type": "string", "value": "producer"}],
                    "logs": [],
                    "processID": "p1",
                    "warnings": None,
                },
                {
                    "traceID": JAEGER_TRACE,
                    "spanID": "b7ad6b7169203331",
                    "flags": 1,
                    "operationName": "task lt_child",
                    "references": [
                        {
                            "refType": "CHILD_OF",
                            "traceID": JAEGER_TRACE,
                            "spanID": "00f067aa0ba902b7",
                        }
                    ],
                    "startTime": 1_700_000_000_200_000,
                    "duration": 300_000,
                    "tags": [
                        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        {"key": "error", "type": "bool", "value": True},
                    ],
                    "logs": [],
                    "processID": "p2",
                    "warnings": None,
                },
                {
                    "traceID": JAEGER_TRACE,
                    "spanID": "a1b2c3d4e5f60718",
                    "flags": 1,
                    "operationName": "task lt_child",
                    "references": [
                        {
                            "refType": "CHILD_OF",
                            "traceID": JAEGER_TRACE,
                            "spanID": "00f067aa0ba902b7",
                        }
                    ],
                    "startTime": 1_700_000_000_100_000,
                    "duration": 50_000,
                    "tags": [],
                    "logs": [],
                    "processID": "p2",
                    "warnings": None,
                },
            ],
            "processes": {
                "p1": {"serviceName": "freight-driver", "tags": []},
                "p2": {"serviceName": "freight-worker", "tags": []},
            },
            "warnings": None,
        }
    ],
    "total": 0,
    "limit": 0,
    "offset": 0,
    "errors": None,
}


def test_jaeger_spans_become_timeline_rows_parent_first() -> None:
    rows = jaeger_rows(JAEGER_ANSWER)
    assert [(r["name"], r["depth"], r["state"]) for r in rows] == [
        ("submit lt_parent", 0, "OK"),
        ("task lt_child", 1, "OK"),  # the children in time order
        ("task lt_child", 1, "ERROR"),
    ]
    assert rows[2]["start"] == pytest.approx(1_700_000_000.2)
    assert rows[2]["end"] - rows[2]["start"] == pytest.approx(0.3)
    assert rows[1]["service"] == "freight-worker" and rows[1]["parent"] == "00f067aa0ba902b7"
    with pytest.raises(ValueError, match="not a Jaeger trace answer"):
        jaeger_rows({"data": [{"spans": [{"spanID": "x"}]}]})


TRACED_DRIVER = """
import sys, freight

@freight.remote
def lt_traced() -> int:
    return 1

freight.init(address=sys.argv[1])
assert freight.get(lt_traced.remote()) == 1
freight.shutdown()
"""


def as_jaeger(spans: list[ReceivedSpan]) -> dict[str, Any]:
    """Spans an OTLP receiver got, in the shape of Jaeger's ``GET /api/traces/{id}`` answer."""
    processes: dict[str, dict[str, Any]] = {}
    out = []
    for sp in spans:
        service = str(sp.resource.get("service.name", ""))
        pid = next((k for k, v in processes.items() if v["serviceName"] == service), None)
        if pid is None:
            pid = f"p{len(processes) + 1}"
            processes[pid] = {"serviceName": service, "tags": []}
        tags = [{"key": k, "type": "string", "value": str(v)} for k, v in sp.attributes.items()]
        if sp.status == "ERROR":
            tags.append({"key": "error", "type": "bool", "value": True})
        refs = [{"refType": "CHILD_OF", "traceID": sp.trace_id, "spanID": sp.parent_span_id}]
        out.append(
            {
                "traceID": sp.trace_id,
                "spanID": sp.span_id,
                "operationName": sp.name,
                "references": refs if sp.parent_span_id else [],
                "startTime": sp.start_time_ns // 1000,
                "duration": (sp.end_time_ns - sp.start_time_ns) // 1000,
                "tags": tags,
                "logs": [],
                "processID": pid,
                "warnings": None,
            }
        )
    trace = {"traceID": spans[0].trace_id, "spans": out, "processes": processes, "warnings": None}
    return {"data": [trace], "total": 0, "limit": 0, "offset": 0, "errors": None}


class JaegerStandIn:
    """An HTTP server on 127.0.0.1 answering ``GET /api/traces/{id}`` as Jaeger's query service
    does, from the spans an OTLP receiver got (404 with Jaeger's error shape for others)."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        receiver_ = receiver

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                trace_id = self.path.removeprefix("/api/traces/")
                spans = [s for s in receiver_.spans if s.trace_id == trace_id]
                body: dict[str, Any] = (
                    as_jaeger(spans)
                    if spans and self.path.startswith("/api/traces/")
                    else {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}
                )
                data = json.dumps(body).encode()
                self.send_response(200 if spans else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_traced_task_shows_its_spans_from_the_trace_backend(cluster: Cluster) -> None:
    """A driver that traces (its own OTLP settings) submits a task: its record carries the trace
    id, and with ``--traces URL`` the view shows that trace's spans, read over HTTP in Jaeger's
    answer shape from a stand-in serving the spans the driver exported (no Jaeger server can run
    here). A URL that has no such trace gives the state transitions, saying why."""
    with OtlpReceiver() as receiver:
        env = dict(
            os.environ,
            FREIGHT_TOKEN=cluster._token(),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        proc = subprocess.run(
            [sys.executable, "-c", TRACED_DRIVER, cluster.address],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        row = wait_for_condition(
            lambda: next(iter(freight.state.list_tasks(["name=lt_traced"])), None),
            what="the traced task's record",
        )
        record = freight.state.get_state("tasks", row["task_id"])
        assert record and record["trace_id"], record
        trace_id = record["trace_id"]
        spans = receiver.wait_for(
            lambda got: [s for s in got if s.trace_id == trace_id], what="the trace's spans"
        )
        jaeger = JaegerStandIn(receiver)
        try:

            async def body(pilot: Pilot[None]) -> None:
                app = pilot.app
                assert isinstance(app, TopApp)
                await until(pilot, lambda: row["task_id"] in app.shown, "the task's row")
                app.table.focus()
                await pilot.press("t")
                screen = await until(
                    pilot, lambda: isinstance(app.screen, TracesScreen) and app.screen, "traces"
                )
                await until(pilot, lambda: screen.timeline and screen.timeline.final, "spans")
                assert screen.timeline.origin == f"jaeger {jaeger.url}"
                assert {r["name"] for r in screen.timeline.rows} == {s.name for s in spans}
                assert any(r["name"] == "submit lt_traced" for r in screen.timeline.rows)
                assert f"rows from the jaeger {jaeger.url}" in screen.status_text(screen.timeline)

            app = app_for(cluster, View("tasks", ("name=lt_traced",)), traces=jaeger.url)
            run(app, body)
            receiver.clear()  # the stand-in knows the trace no more: the transitions instead

            async def fallback(pilot: Pilot[None]) -> None:
                app = pilot.app
                assert isinstance(app, TopApp)
                app.push_screen(TracesScreen(row["task_id"]))
                screen = await until(
                    pilot, lambda: isinstance(app.screen, TracesScreen) and app.screen, "traces"
                )
                await until(pilot, lambda: screen.timeline and screen.timeline.final, "rows")
                assert screen.timeline.origin == "state transitions"
                assert [r["name"] for r in screen.timeline.rows] == ["lt_traced"]
                status = screen.status_text(screen.timeline)
                assert f"{jaeger.url} gave no spans (HTTP Error 404" in status, status

            run(app_for(cluster, View("tasks"), traces=jaeger.url), fallback)
        finally:
            jaeger.close()


def test_lines_come_from_every_node_and_one_that_does_not_answer_is_named(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last of the cluster's tests: it stops the second node's agent for a few seconds."""
    far = cluster.nodes[1]
    job_id = freight.get_runtime_context().get_job_id()
    monkeypatch.setenv("FREIGHT_STATE_AGENT_TIMEOUT_S", "2")

    def has(screen: LogsScreen, text: str) -> bool:
        return any(r.endswith(f"| {text}") for r in screen.records)

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        app.push_screen(LogsScreen(selection([f"job_id={job_id}"])))
        screen = await until(pilot, lambda: logs_screen(app), "the logs view")
        await until(pilot, lambda: has(screen, FAR_MARKER) and has(screen, MARKER), "both")
        assert not screen.warnings
        await pilot.press("escape")
        await until(pilot, lambda: not logs_screen(app), "the view closed")

        os.kill(far.process.pid, signal.SIGSTOP)
        try:
            app.push_screen(LogsScreen(selection([f"job_id={job_id}"])))
            screen = await until(pilot, lambda: logs_screen(app), "the logs view")
            await until(pilot, lambda: screen.warnings, "the silent node named")
        finally:
            os.kill(far.process.pid, signal.SIGCONT)
        (warning,) = screen.warnings
        assert f"node {far.node_id[:12]}" in warning and "did not answer" in warning
        assert warning in screen.status_text()
        # lt_prints ran on the head's node: its lines show, the far task's are missing
        await until(pilot, lambda: has(screen, MARKER), "the other node's lines")
        assert not has(screen, FAR_MARKER)

    run(app_for(cluster, View("jobs")), body)


def test_freight_top_refuses_a_traces_url_it_cannot_use() -> None:
    cli = str(Path(sys.executable).with_name("freight"))
    bad = subprocess.run([cli, "top", "--traces", "jaeger:16686"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "give the Jaeger query service's URL, like http://HOST:16686" in bad.stderr
