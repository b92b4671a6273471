"""The replay's time slider: a bar from the recording's start to its end, the clock on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from rich.text import Text
from textual.widget import Widget


class Timeline(Protocol):
    start: float
    end: float
    t: float
    playing: bool
    speed: int


def _hms(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _span(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class TimeSlider(Widget):
    """``▶ 10:00:00 ━━━━━━●──── 10:01:30  +0:35 of 1:30`` (the keys are in the footer)."""

    DEFAULT_CSS = "TimeSlider { height: 1; background: $boost; padding: 0 1; }"

    def __init__(self, clock: Timeline, **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock

    def render(self) -> Text:
        c = self.clock
        mark = ("▶" if c.playing else "⏸") + (f" {c.speed}x" if c.speed != 1 else "")
        span = max(c.end - c.start, 0.0)
        left = f"{mark} {_hms(c.start)} "
        right = f" {_hms(c.end)}  +{_span(c.t - c.start)} of {_span(span)}"
        width = max(self.size.width - len(left) - len(right) - 2, 10)
        at = round((c.t - c.start) / span * (width - 1)) if span else 0
        text = Text(left)
        text.append("━" * at, style="bold")
        text.append("●", style="bold reverse")
        text.append("─" * (width - 1 - at), style="dim")
        text.append(right)
        return text
