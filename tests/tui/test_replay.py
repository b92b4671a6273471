"""`freight top --replay`: the committed recording (``recordings/session.jsonl``) replayed with no
cluster: the slider moves the clock and the view is rebuilt as it was then, views the recording
never showed say so, bad files are refused naming the line, and the command's usage errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import make_recording
import pytest
import shots
from pilot import until
from textual.pilot import Pilot
from textual.screen import Screen

from freight.tui.app import TopApp, View
from freight.tui.feed import Batch
from freight.tui.lookup import Lookup
from freight.tui.record import Recorder, RecordingSource, to_json
from freight.tui.replay import RecordingError, ReplayApp, ReplaySource, build, load
from freight.tui.slider import TimeSlider

T0 = make_recording.T0


@dataclass
class Meter:
    name: str
    used: float


@dataclass
class Figures:
    """A payload with records within it, as a view's figures may be."""

    meters: list[Meter]
    by_node: dict[str, Meter]
    worst: Meter | None
    spans: tuple[Meter, ...] = ()


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    with shots.utc():
        yield


def replay(body: Callable[[Pilot[None]], Awaitable[None]], **kw: Any) -> ReplayApp:
    kw.setdefault("playing", False)
    app = ReplayApp(load(shots.RECORDING), refresh=0.05, **kw)

    async def main() -> None:
        async with app.run_test(size=(160, 40)) as pilot:
            await body(pilot)

    asyncio.run(main())
    return app


def state_of(app: TopApp, task_id: str) -> str | None:
    row = app.rows.get(task_id)
    return None if row is None else str(row["state"])


def test_the_slider_moves_the_clock_and_going_back_shows_the_earlier_state() -> None:
    running = make_recording.TASK_RUN

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ReplayApp)
        await until(pilot, lambda: state_of(app, running) == "FINISHED", "train_step finished")
        assert "REPLAY 2026-01-01 12:01:00" in app.status_text()
        assert len(app.rows) == 7
        for _ in range(5):
            await pilot.press("less_than_sign")  # back 10 s each
        assert app.clock.t == T0 + 10
        await until(pilot, lambda: state_of(app, running) == "SUBMITTED_TO_WORKER", "running")
        assert len(app.rows) == 6  # `evaluate` came at T0+45: not yet
        assert "REPLAY 2026-01-01 12:00:10" in app.status_text()
        await pilot.press("greater_than_sign", "greater_than_sign")
        await until(pilot, lambda: state_of(app, running) == "FINISHED", "finished again")
        assert app.clock.t == T0 + 30
        await pilot.press("end")
        await until(
            pilot, lambda: state_of(app, f"{make_recording.TASKS}{6:016x}") == "FINISHED", "the end"
        )
        assert app.clock.t == T0 + 90
        await pilot.press("home")  # the start: before the first listing, nothing yet
        await until(pilot, lambda: app.clock.t == T0 and not app.rows, "the start")
        assert "listing" in app.status_text()
        await pilot.press("p")  # play, in real time, from the start
        assert app.clock.playing
        await until(pilot, lambda: len(app.rows) == 6, "the first listing, played")
        await pilot.press("p")
        assert not app.clock.playing
        await pilot.press("plus", "plus", "plus")  # 10x, 60x, and no faster
        assert app.clock.speed == 60
        assert "⏸ 60x 12:00:00" in str(app.query_one(TimeSlider).render())
        await pilot.press("minus", "minus", "minus")
        assert app.clock.speed == 1

    replay(body, at=T0 + 60)


def test_a_view_the_recording_never_showed_says_so_and_stays_empty() -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ReplayApp)
        await until(pilot, lambda: app.rows, "the tasks")
        await pilot.press("f")  # failures only: a view (tasks state=FAILED) never recorded
        assert app.view == View("tasks", ("state=FAILED",))
        await until(pilot, lambda: "not recorded" in app.status_text(), "the note")
        assert "the recording never showed tasks state=FAILED" in app.status_text()
        assert not app.rows and app.table.row_count == 0
        await pilot.press("f")
        await until(pilot, lambda: len(app.rows) == 7, "the tasks again")
        assert "not recorded" not in app.status_text()

    replay(body, at=T0 + 60)


def test_a_closed_session_shows_what_it_showed_last_and_says_so(tmp_path: Path) -> None:
    # The detail read at T0+50 and closed at T0+55: at T0+60 it is what was read then.
    recording = load(shots.RECORDING)
    app = ReplayApp(recording, at=T0 + 60, playing=False)
    name = f"get tasks {make_recording.TASK_FAILED}"
    source = ReplaySource(recording, app.clock, name, None)
    got = source.take()
    assert got.done and got.row["transitions"][-1]["state"] == "FAILED"
    assert source.note == "as last seen at 12:00:55 (not recorded after)"
    app.clock.seek(T0 + 20)
    before = ReplaySource(recording, app.clock, name, None)
    assert before.note == "not recorded before 12:00:50"
    # A whole-state payload follows the clock wherever it moves, the same source.
    assert source.take() == Lookup(done=True, error="not recorded before 12:00:50")
    app.clock.seek(T0 + 50.01)  # opened, the answer not in yet
    assert source.take() == Lookup(done=False)
    app.clock.seek(T0 + 80)
    assert source.take() == got


def write(tmp_path: Path, lines: list[str], name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


def good_lines() -> list[str]:
    return shots.RECORDING.read_text().splitlines(keepends=True)


def test_a_bad_recording_is_refused_naming_the_line(tmp_path: Path) -> None:
    lines = good_lines()
    with pytest.raises(RecordingError, match=r"no recording at .*missing\.jsonl \(give a file"):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(RecordingError, match="is empty"):
        load(write(tmp_path, []))
    cut = write(tmp_path, [*lines[:5], lines[5][:40]])
    with pytest.raises(RecordingError, match=r"line 6 is cut short .*remove that line"):
        load(cut)
    garbled = write(tmp_path, [*lines[:3], "{not json\n", *lines[3:]])
    with pytest.raises(RecordingError, match=r"line 4 is not JSON"):
        load(garbled)
    with pytest.raises(RecordingError, match=r"line 1: not a freight top recording"):
        load(write(tmp_path, lines[1:]))
    foreign = json.loads(lines[2])
    foreign["type"] = "os:system"
    with pytest.raises(RecordingError, match=r"line 3: payload type 'os:system' is not one of"):
        load(write(tmp_path, [*lines[:2], json.dumps(foreign) + "\n", *lines[3:]]))
    changed = json.loads(lines[2])
    changed["payload"]["rows"] = changed["payload"].pop("changes")
    with pytest.raises(RecordingError, match=r"line 3: the payload does not fit .*Batch"):
        load(write(tmp_path, [*lines[:2], json.dumps(changed) + "\n", *lines[3:]]))
    with pytest.raises(RecordingError, match=r"line 2: session 99 was never opened"):
        load(write(tmp_path, [lines[0], '{"t": 1.0, "session": 99, "close": true}\n']))
    # A compressed recording cut short keeps its start, and the message says how to use it.
    data = gzip.compress("".join(lines).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match=r"unreadable after line \d+ .*zcat"):
        load(tmp_path / "cut.jsonl.gz")


def test_recording_writes_changes_only_and_a_heartbeat_in_quiet_stretches(
    tmp_path: Path,
) -> None:
    def lines_of(path: Path) -> list[dict[str, Any]]:
        with gzip.open(path, "rt") as f:
            return [json.loads(line) for line in f]

    quiet = tmp_path / "quiet.jsonl.gz"
    recorder = Recorder(quiet, address="h:1", id_keys={}, heartbeat_s=3600)
    source = RecordingSource(recorder, "things", Constant()).start()
    for _ in range(50):
        source.take()
    source.stop()
    recorder.close()
    kinds = [next(k for k in ("recording", "open", "payload", "close", "beat") if k in x)
             for x in lines_of(quiet)]  # fmt: skip
    assert kinds == ["recording", "open", "payload", "close"]  # 49 empty takes: not written
    assert lines_of(quiet)[2]["payload"]["changes"] == {"a": {"id": "a"}}

    beating = tmp_path / "beating.jsonl"
    recorder = Recorder(beating, address="h:1", id_keys={}, heartbeat_s=0)
    source = RecordingSource(recorder, "things", Constant()).start()
    for _ in range(3):
        source.take()
    recorder.close()
    beats = [json.loads(x) for x in beating.read_text().splitlines() if '"beat"' in x]
    assert len(beats) == 2  # each quiet take, as the heartbeat is due every time here
    assert load(beating).end == beats[-1]["t"]  # the timeline runs to the last heartbeat


FREIGHT = [str(Path(sys.executable).with_name("freight"))]


def cli(*args: str, command: list[str] = FREIGHT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FREIGHT_TEMP_DIR": str(Path("/nonexistent-freight-sessions"))}
    env.pop("FREIGHT_ADDRESS", None)
    return subprocess.run(
        [*command, "top", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_the_command_refuses_missing_bad_and_contradictory_arguments(tmp_path: Path) -> None:
    for command in (FREIGHT, [sys.executable, "-m", "freight"]):
        missing = cli("--replay", str(tmp_path / "missing"), command=command)
        assert missing.returncode == 2, missing.stderr
        assert "no recording at" in missing.stderr and "freight top --record" in missing.stderr
    both = cli("--record", str(tmp_path / "r.jsonl"), "--replay", str(shots.RECORDING))
    assert both.returncode == 2 and "--record and --replay go apart" in both.stderr
    bad = cli("--replay", str(write(tmp_path, [*good_lines()[:3], "{\n", *good_lines()[3:]])))
    assert bad.returncode == 2 and "bad.jsonl line 4 is not JSON" in bad.stderr, bad.stderr
    # A good recording needs no cluster (none runs here): only the terminal is missing.
    good = cli("--replay", str(shots.RECORDING))
    assert good.returncode == 2 and "needs a terminal" in good.stderr, good.stderr


def test_a_payload_with_records_within_comes_back_as_it_was_written() -> None:
    figures = Figures([Meter("cpu", 0.5)], {"n1": Meter("mem", 0.25)}, None, (Meter("gpu", 1.0),))
    again = build(Figures, json.loads(json.dumps(to_json(figures))))
    assert again == figures
    worst = build(Figures, {**to_json(figures), "worst": {"name": "cpu", "used": 0.9}})
    assert worst.worst == Meter("cpu", 0.9)
    with pytest.raises(TypeError):
        build(Figures, {"meters": []})  # fields missing: refused, not half-built


class ChangesScreen(Screen[None]):
    """A screen of its own that reads a source of changes, as a later view would."""

    def __init__(self) -> None:
        super().__init__()
        self.seeked = 0

    def on_mount(self) -> None:
        app = self.app
        assert isinstance(app, TopApp)
        self.events = app.source("events", lambda: Constant())

    def on_replay_app_seeked(self, message: ReplayApp.Seeked) -> None:
        self.seeked += 1


class Constant:
    """A source whose every take is the same batch: one change, then none."""

    def __init__(self) -> None:
        self.changes: dict[str, dict[str, Any] | None] = {"a": {"id": "a"}}

    def start(self) -> Constant:
        return self

    def stop(self) -> None:
        pass

    def take(self) -> Batch:
        changes, self.changes = self.changes, {}
        return Batch(changes, True, 1, 1, None, "", "")


def test_a_screen_with_a_source_of_changes_is_told_when_the_clock_jumps() -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ReplayApp)
        screen = ChangesScreen()
        await app.push_screen(screen)
        await until(pilot, lambda: hasattr(screen, "events"), "the screen's source")
        assert screen.events.take().changes  # the events as listed at T0+1
        assert screen.seeked == 0
        await pilot.press("less_than_sign")
        await until(pilot, lambda: screen.seeked == 1, "the screen told")

    replay(body, at=T0 + 60)


def test_a_recording_that_cannot_be_written_stops_without_stopping_the_inspector(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"cannot record to /dev/full: No space left on device"):
        Recorder("/dev/full", address="h:1", id_keys={})
    path = tmp_path / "r.jsonl"
    recorder = Recorder(path, address="h:1", id_keys={})
    source = RecordingSource(recorder, "things", Constant()).start()
    recorder._file.close()
    recorder._file = open("/dev/full", "w")  # the disk fills up mid-session  # noqa: SIM115
    assert source.take().changes == {"a": {"id": "a"}}  # the screen still gets its data
    assert recorder.failed == "No space left on device"
    source.take()
    recorder.close()
    assert len(load(path).sessions) == 1  # what was written before stays readable


def test_a_replay_opens_the_view_the_recording_began_with(tmp_path: Path) -> None:
    path = tmp_path / "actors.jsonl"
    recorder = Recorder(path, address="h:1", id_keys={})
    RecordingSource(recorder, f"get tasks {make_recording.TASK_FAILED}", Constant()).start()
    RecordingSource(recorder, "actors state=ALIVE", Constant()).start()
    RecordingSource(recorder, "tasks", Constant()).start()
    recorder.close()
    assert ReplayApp(load(path)).view == View("actors", ("state=ALIVE",))
    assert ReplayApp(load(path), view=View("tasks")).view == View("tasks")
