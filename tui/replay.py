"""`freight top --replay FILE`: a recording (:mod:`freight.tui.record`) shown again, no cluster.

:class:`ReplayApp` is the inspector whose :meth:`source` hands out :class:`ReplaySource`\\ s:
each gives the payloads its name recorded whose time is at or before the replay's
:class:`Clock`, as one take (:meth:`~freight.tui.record.Payload.merge`), from the last session
of that name opened at or before the clock (after the session closed: what it showed last, and
the status line says "as last seen"). The clock plays in real time or stands still; the time
slider moves it, and moving it rebuilds the view from the start of its session, so going back
shows the earlier state. A view the recording never showed (or not yet at the clock) stays
empty and says "not recorded".
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib
import json
import time
import types
import typing
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer

from .app import TopApp, View
from .commands import CommandError, parse_command
from .record import FORMAT, open_text, quiet
from .slider import TimeSlider
from .source import Source

S = TypeVar("S", bound=Source)
STEP_S = 10.0  # what < and > move the clock by
SPEEDS = (1, 10, 60)  # play speeds, times real time (+ and - move along them)


class RecordingError(ValueError):
    """A file that cannot be replayed; the message names the line and what to do."""


@dataclass
class Session:
    """One source's life in the recording: opened, the payloads it gave, closed."""

    number: int
    name: str
    opened: float
    closed: float | None = None
    entries: list[tuple[float, Any]] = field(default_factory=list)


@dataclass
class Recording:
    path: Path
    address: str
    id_keys: dict[str, str]
    start: float
    end: float
    sessions: dict[int, Session]

    def named(self, name: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.name == name]


def _payload_type(name: str, where: str) -> type[Any]:
    module, _, qualname = name.partition(":")
    # A recording names the type its payloads are rebuilt as: only freight's own dataclasses.
    if not module.startswith("freight.") or not qualname:
        raise RecordingError(f"{where}: payload type {name!r} is not one of freight's")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        raise RecordingError(
            f"{where}: payload type {name!r} does not exist in this freight (the recording was "
            "made by another version: replay it with that version)"
        ) from None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise RecordingError(f"{where}: payload type {name!r} is not a record type")
    return cls


def build(cls: type[Any], data: Any) -> Any:
    """``data`` (as :func:`freight.tui.record.to_json` wrote it) as a ``cls`` again, with its
    fields that are records (or lists, tuples, dicts of them, or optional ones) rebuilt too."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} needs an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _value(hints.get(k, Any), v) for k, v in data.items()})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and args and isinstance(value, list):
        items = [_value(args[0], v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _value(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        records = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(records) == 1 and isinstance(value, dict):
            return build(records[0], value)
    return value


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        with open_text(path, "r") as f:
            lines: list[tuple[int, str]] = []
            try:
                for number, line in enumerate(f, 1):
                    lines.append((number, line))
            except (EOFError, OSError, zlib.error, UnicodeDecodeError) as e:
                raise RecordingError(
                    f"{path}: unreadable after line {len(lines)} ({e}): the recording was cut "
                    "or is not a freight top recording; a cut .gz keeps its start: "
                    f"`zcat {path} | head -n {len(lines)} > fixed.jsonl` and replay that"
                ) from None
    except FileNotFoundError:
        raise RecordingError(
            f"no recording at {path} (give a file written by 'freight top --record FILE')"
        ) from None
    except IsADirectoryError:
        raise RecordingError(f"{path} is a directory; give a file written by --record") from None
    return lines


def load(path: str | Path) -> Recording:
    """Read and check a whole recording; :class:`RecordingError` names the first bad line."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise RecordingError(f"{path} is empty: nothing was recorded")
    recording: Recording | None = None
    for number, text in lines:
        where = f"{path} line {number}"
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                raise RecordingError(
                    f"{where} is cut short (the recording stopped mid-write): remove that line "
                    "to replay the rest"
                ) from None
            raise RecordingError(f"{where} is not JSON ({e.msg}): not a recording, or edited")
        if not isinstance(line, dict) or not isinstance(line.get("t"), int | float):
            raise RecordingError(f"{where} has no time 't': not a recording, or edited")
        t = float(line["t"])
        if recording is None:
            if line.get("recording") != FORMAT:
                raise RecordingError(
                    f"{where}: not a freight top recording of format {FORMAT} (its first line "
                    "names the format); record one with 'freight top --record FILE'"
                )
            recording = Recording(
                path, str(line.get("address", "")), dict(line.get("id_keys") or {}), t, t, {}
            )
            continue
        recording.end = max(recording.end, t)
        _add(recording, line, t, where)
    assert recording is not None
    return recording


def _add(recording: Recording, line: dict[str, Any], t: float, where: str) -> None:
    if line.get("beat"):
        return
    number = line.get("session")
    if not isinstance(number, int):
        raise RecordingError(f"{where} names no session: not a recording, or edited")
    if line.get("open"):
        recording.sessions[number] = Session(number, str(line.get("source", "")), t)
        return
    session = recording.sessions.get(number)
    if session is None:
        raise RecordingError(f"{where}: session {number} was never opened (lines missing?)")
    if line.get("close"):
        session.closed = t
        return
    if "payload" not in line:
        raise RecordingError(f"{where} carries no payload: not a recording, or edited")
    payload = line["payload"]
    if line.get("type"):
        cls = _payload_type(str(line["type"]), where)
        try:
            payload = build(cls, payload)
        except (TypeError, ValueError) as e:
            raise RecordingError(
                f"{where}: the payload does not fit {line['type']} ({e}): the recording was "
                "made by another version of freight"
            ) from None
    session.entries.append((t, payload))


class Clock:
    """The replay's time: it plays from ``at`` at ``speed`` times real time, or stands still."""

    def __init__(self, start: float, end: float, at: float | None, playing: bool) -> None:
        self.start, self.end = start, end
        self.t = start
        self.seek(start if at is None else at)
        self.playing = playing
        self.speed = 1
        self._last = time.monotonic()

    def faster(self, steps: int) -> None:
        """``steps`` along :data:`SPEEDS` (a long recording is read faster than it happened)."""
        at = SPEEDS.index(self.speed) + steps
        self.speed = SPEEDS[min(max(at, 0), len(SPEEDS) - 1)]

    def seek(self, t: float) -> None:
        self.t = min(max(t, self.start), self.end)

    def advance(self) -> None:
        now = time.monotonic()
        if self.playing:
            self.seek(self.t + (now - self._last) * self.speed)
            if self.t >= self.end:
                self.playing = False
        self._last = now


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


class ReplaySource:
    """What source ``name`` gave at or before the clock (see the module)."""

    def __init__(self, recording: Recording, clock: Clock, name: str, gives: type[Any] | None):
        self.clock, self.name = clock, name
        self.sessions = sorted(recording.named(name), key=lambda s: s.opened)
        self.end = recording.end
        known = [p for s in self.sessions for _, p in s.entries[:1]]
        self.gives = type(known[0]) if known else gives  # the payload type
        self.serving = self.current()
        self._sent = 0
        self._last: Any = None
        self.stopped = False

    def start(self) -> ReplaySource:
        return self

    def stop(self) -> None:
        self.stopped = True

    def current(self) -> Session | None:
        """The last session opened at or before the clock: what was seen then, or last seen."""
        found = None
        for s in self.sessions:
            if s.opened <= self.clock.t:
                found = s
        return found

    def moved(self) -> bool:
        """The clock left the session this source serves: its screen must start again."""
        return self.current() is not self.serving

    @property
    def note(self) -> str:
        """What the replay cannot show at the clock ("" when it shows what was seen then)."""
        s = self.serving
        if s is None and not self.sessions:
            return f"not recorded: the recording never showed {self.name}"
        if s is None:
            return f"not recorded before {_when(self.sessions[0].opened)}"
        if s.closed is not None and s.closed < self.clock.t:
            return f"as last seen at {_when(s.closed)} (not recorded after)"
        return ""

    def _nothing(self) -> Any:
        make = getattr(self.gives, "nothing", None)
        return make(self.note) if callable(make) else None

    @property
    def changes(self) -> bool:
        """Its payloads are changes (merged); otherwise each is the whole state."""
        return callable(getattr(self.gives, "merge", None))

    def take(self) -> Any:
        if not self.changes:
            return self._now()
        s = self.serving
        if s is None:
            return self._nothing()
        new: list[Any] = []
        while self._sent < len(s.entries) and s.entries[self._sent][0] <= self.clock.t:
            new.append(s.entries[self._sent][1])
            self._sent += 1
        if not new:
            return self._nothing() if self._last is None else quiet(self._last)
        self._last = self.gives.merge(new)  # type: ignore[union-attr]
        return self._last

    def _now(self) -> Any:
        """A whole-state payload: the last one at or before the clock, wherever it moved."""
        self.serving = self.current()
        if self.serving is None:
            return self._nothing()
        times = [t for t, _ in self.serving.entries]
        at = bisect.bisect_right(times, self.clock.t)
        return self.serving.entries[at - 1][1] if at else self._nothing()


def _gives(make: Callable[[], Source]) -> type[Any] | None:
    """The payload type a source's ``take()`` is declared to give (building a source starts
    nothing: its threads start at ``start()``)."""
    try:
        hint = typing.get_type_hints(type(make()).take).get("return")
    except Exception:
        return None  # unannotated: a never-recorded view of it then shows nothing at all
    return hint if isinstance(hint, type) else None


def first_view(recording: Recording) -> View | None:
    """The view the recording began with (a replay opens it unless told another)."""
    for s in sorted(recording.sessions.values(), key=lambda s: s.opened):
        try:
            command = parse_command(s.name)
        except CommandError:
            continue  # not a view's source (a record's detail...)
        if not command.quit:
            return View(command.kind, tuple(command.filters))
    return None


class ReplayApp(TopApp):
    """The inspector over a recording: REPLAY and the recorded time in the status line, and a
    time slider (``<`` ``>`` step 10 s, ``p`` play/pause, ``+`` ``-`` speed, ``home`` ``end``)."""

    BINDINGS: ClassVar[list[Any]] = [
        *TopApp.BINDINGS,
        Binding("less_than_sign", "step(-1)", "-10s"),
        Binding("greater_than_sign", "step(1)", "+10s"),
        Binding("p", "play", "play/pause"),
        Binding("plus", "speed(1)", "faster"),
        Binding("minus", "speed(-1)", "slower", show=False),
        # The table scrolls with ctrl+home/ctrl+end still; home and end move the clock.
        Binding("home", "seek_to(0)", "start", show=False, priority=True),
        Binding("end", "seek_to(1)", "end", show=False, priority=True),
    ]

    def __init__(
        self,
        recording: Recording,
        *,
        at: float | None = None,
        playing: bool = True,
        **kw: Any,
    ) -> None:
        # Read-only: an action would reach the recorded cluster, which is not what is shown.
        kw["read_only"] = True
        if kw.get("view") is None:
            kw["view"] = first_view(recording)
        super().__init__(recording.address, recording.id_keys, **kw)
        self.recording = recording
        self.clock = Clock(recording.start, recording.end, at, playing)
        self.handed: weakref.WeakSet[ReplaySource] = weakref.WeakSet()  # sources of changes

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, Footer):
                yield TimeSlider(self.clock, id="slider")
            yield widget

    class Seeked(Message):
        """The clock jumped, or left the session of a source of changes: a screen that holds
        such a source (other than the main view's, which the app rebuilds) asks for it again
        and starts empty. Sources of whole states need nothing: they follow the clock."""

    def source(self, name: str, make: Callable[[], S]) -> S:
        source = ReplaySource(self.recording, self.clock, name, _gives(make))
        if source.changes:
            self.handed.add(source)
        return source  # type: ignore[return-value]

    def tick(self) -> None:
        self.clock.advance()
        moved = [s for s in self.handed if not s.stopped and s.moved()]
        if self.feed in moved:
            self.open_view(self.view, remember=False)
        if any(s is not self.feed for s in moved):
            self._tell_screens()
        super().tick()
        if self.is_running:
            self.query_one(TimeSlider).refresh()

    def _tell_screens(self) -> None:
        for screen in self.screen_stack:
            screen.post_message(self.Seeked())

    def seek(self, t: float) -> None:
        """Move the clock and show the view as it was then, rebuilt from its session's start."""
        self.clock.seek(t)
        self.open_view(self.view, remember=False)
        self._tell_screens()
        self.tick()

    def action_step(self, direction: int) -> None:
        self.seek(self.clock.t + direction * STEP_S)

    def action_seek_to(self, end: int) -> None:
        self.seek(self.clock.end if end else self.clock.start)

    def action_speed(self, steps: int) -> None:
        self.clock.advance()  # the time played so far, at the speed it played at
        self.clock.faster(steps)
        self.query_one(TimeSlider).refresh()

    def action_play(self) -> None:
        if not self.clock.playing and self.clock.t >= self.clock.end:
            self.clock.seek(self.clock.start)  # play again from the start
            self.open_view(self.view, remember=False)
        self.clock.playing = not self.clock.playing
        self.clock.advance()
        self.query_one(TimeSlider).refresh()

    def status_text(self) -> str:
        stamp = datetime.fromtimestamp(self.clock.t).strftime("%Y-%m-%d %H:%M:%S")
        parts = [f"REPLAY {stamp}"]
        feed = self.feed
        if isinstance(feed, ReplaySource) and feed.note:
            parts.append(feed.note)
        return "  |  ".join([*parts, super().status_text()])
