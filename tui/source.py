"""What the inspector's screens read from: sources, each with its threads, taken on each tick.

Every piece of live data a screen shows (a view's rows, the overview's figures, log lines, a
record's detail) comes from a :class:`Source`: it starts threads that talk to the cluster and
gathers what they learn; the screen calls :meth:`Source.take` on Textual's loop, which never
blocks, and gets a JSON-able value (a dataclass of plain fields, or plain data). Screens never
build a source themselves: they ask :meth:`freight.tui.app.TopApp.source` with a name that says
what the source reads (``"tasks state=FAILED"``, ``"overview"``), so one place decides where the
data comes from: the live cluster, or a recording being replayed.
"""

from __future__ import annotations

from typing import Any, Protocol


class Source(Protocol):
    """A live feed of one thing the screens show."""

    def start(self) -> Source:
        """Start the threads; returns the source."""
        ...

    def stop(self) -> None:
        """Let the threads go (they end at their next round)."""
        ...

    def take(self) -> Any:
        """What was gathered since the last call, and the source's state now (never blocks)."""
        ...
