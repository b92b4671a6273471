"""The frame of the inspector's screens that open over the table view and show one source (the
Logs and Traces views): a status line, the screen's body, the footer; esc goes back, q quits.
The source is asked for when the screen opens and let go when it closes; :meth:`tick` takes what
it gathered every ``refresh`` seconds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Static

from .source import Source

# The last keys of every such screen's footer, after its own (each screen lists them after its
# keys: a base class's bindings would come first).
BACK_AND_QUIT = [
    Binding("escape", "back", "back"),
    Binding("q", "app.quit", "quit"),
]


class SourceScreen(ModalScreen[None]):
    """A screen over the table view fed by one source. A subclass names its status line
    (``STATUS_ID``), composes its body (:meth:`body`), opens its source (:meth:`open_source`),
    takes from it in :meth:`tick`, readies its widgets in :meth:`ready`, and ends its
    ``BINDINGS`` with :data:`BACK_AND_QUIT`."""

    DEFAULT_CSS = """
    SourceScreen { background: $background; }
    SourceScreen .status { height: 1; background: $boost; padding: 0 1; }
    SourceScreen .status.warn { background: $error; color: $text; }
    SourceScreen .body { height: 1fr; }
    """
    STATUS_ID = ""
    source: Source | None = None
    ticker: Timer

    def first_status(self) -> str:
        """The status line until the first tick."""
        return ""

    def body(self) -> Iterable[Widget]:
        """The widgets between the status line and the footer (given the class ``body``)."""
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        yield Static(Content(self.first_status()), id=self.STATUS_ID, classes="status")
        yield from self.body()
        yield Footer()

    def open_source(self) -> None:
        """Set :attr:`source`, from the app's ``source()``."""
        raise NotImplementedError

    def ready(self) -> None:
        """After the source is opened: focus, columns..."""

    def tick(self) -> None:
        raise NotImplementedError

    def on_mount(self) -> None:
        app: Any = self.app
        self.open_source()
        self.ticker = self.set_interval(app.refresh_s, self.tick)
        self.ready()

    def on_unmount(self) -> None:
        self.ticker.stop()
        if self.source is not None:
            self.source.stop()

    @property
    def status(self) -> Static:
        return self.query_one(f"#{self.STATUS_ID}", Static)

    def action_back(self) -> None:
        self.app.pop_screen()
