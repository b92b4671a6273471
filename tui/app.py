"""`freight top`: the terminal inspector (Textual), keyboard-first as k9s.

One view at a time: a table of one kind's rows, fed by a :class:`~freight.tui.feed.Feed` whose
threads talk to the head, so no key ever waits on the network. Every ``refresh`` seconds the
screen takes the feed's batch and changes the table row by row, by id: only the cells that
changed are redrawn. A view shows one page of at most ``max_rows`` rows, listed by the head,
and says which ("showing 1,000 of 100,000 (rows 1,001-2,000)"); ``]`` and ``[`` page on and back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static
from textual.widgets.data_table import ColumnKey, RowKey

from freight.cli.state_cmd import _cell
from freight.core.order import Sorting, sort_items

from . import actions, jumps, logs, traces
from .commands import ALIASES, SCREENS, CommandError, parse_command, parse_filters, selection
from .feed import Batch, Feed
from .feed import id_keys as id_keys  # where callers have found it
from .lookup import Get
from .objects import COLUMNS, ObjectFeed
from .overview import OVERVIEW, OverviewScreen
from .source import Source

S = TypeVar("S", bound=Source)

# What "failures only" (f) adds to a view's filters: the rows an on-call engineer looks at first.
FAILURES = {
    "nodes": "state=DEAD",
    "jobs": "state=FAILED",
    "tasks": "state=FAILED",
    "actors": "state~^(DEAD|RESTARTING)$",
    "placement_groups": "state=PENDING",
    "events": "severity~^(WARNING|ERROR)$",
}
LOOKUP_POLL_S = 0.05  # how often the detail screen looks whether its record came
MAX_ROWS = 1000  # rows a page holds; beyond them the view says "showing N of M" and pages
FIRST_TICK_S = 0.05  # how often a view waiting for its first rows looks for them
VIEWS = ("nodes", "jobs", "tasks", "actors", "objects", "workers", "placement_groups", "events")
# Columns the head cannot order: the inspector joins them in (objects' holders), or the state API
# has no field for them (a placement group's bundle nodes). They sort the page shown only.
LOCAL_SORT = frozenset({"pinned", "reference_types", "holders", "bundle_nodes"})
HEAD_SORT = {"bundles": "num_bundles"}  # columns the head orders by another field


@dataclass(frozen=True)
class View:
    """What the main screen shows: a kind and its filters (state-API filter strings)."""

    kind: str
    filters: tuple[str, ...] = ()

    def title(self) -> str:
        return " ".join((self.kind, *self.filters))


MAX_COLUMN_WIDTH = 60  # a longer cell is cut; `d` and `y` show it whole


class Cell(Text):
    """A table cell: its text as it is. (DataTable reads a ``str`` cell as markup: a name with
    brackets would be mangled, and parsing and measuring 1,000 rows of markup takes most of a
    second on a page change.) It equals its text, as the ``str`` cells it replaces did."""

    def __init__(self, text: str) -> None:
        super().__init__(text, no_wrap=True, end="")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.plain == other
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.plain)


class Table(DataTable[Any]):
    """The view's table. Its columns have the widths :meth:`TopApp.fit_columns` gives them, so
    it does not measure the cells of new rows for widths it would not use: DataTable measures
    each cell through Rich (a console query per cell), about 0.2 s of the 0.4 s a page of 1,000
    rows took to show after the rows were added."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        if self.columns and not any(c.auto_width for c in self.columns.values()):
            new_rows = ()  # the rows are one line high: no height to learn from them either
        super()._update_dimensions(new_rows)


def cells(kind: str, row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(_cell(row, key, how) for _, key, how in COLUMNS[kind])


def head_sort_field(kind: str, column: int) -> str | None:
    """The field the state service orders a view's ``column`` by (None: it cannot)."""
    key = COLUMNS[kind][column][1]
    return None if key in LOCAL_SORT else HEAD_SORT.get(key, key)


def _rows(n: int) -> str:
    return "1 row" if n == 1 else f"{n} rows"


def _sort_key(cell: Any) -> tuple[int, float, str]:
    """Numbers (and durations like 0.5s) before text, each in its own order."""
    text = str(cell)
    try:
        return (0, float(text.removesuffix("s")), "")
    except ValueError:
        return (1, 0.0, text)


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


class TopApp(actions.Acting, jumps.Jumping, App[None]):
    """The inspector. ``address`` is a resolved head address, ``id_keys`` from :func:`id_keys`."""

    TITLE = "freight top"
    CSS = """
    #status { height: 1; background: $boost; padding: 0 1; }
    #status.stale { background: $error; color: $text; }
    #prompt { display: none; }
    #prompt.open { display: block; }
    DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[Any]] = [
        Binding("colon", "command", "command"),
        Binding("slash", "filter", "filter"),
        Binding("enter", "describe", "describe", show=True, priority=False),
        Binding("d", "describe", "describe", show=False),
        # In the help (?), not the footer: a view's actions and jumps need its width.
        Binding("y", "raw", "raw record", show=False),
        Binding("c", "copy_id", "copy id", show=False),
        Binding("l", "logs", "logs"),
        Binding("t", "trace", "trace"),
        Binding("escape", "go_back", "back"),
        Binding("f", "failures", "failures only"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse", "reverse", show=False),
        Binding("right_square_bracket,ctrl+f", "next_page", "next page"),
        Binding("left_square_bracket,ctrl+b", "previous_page", "previous page", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        *actions.BINDINGS,
        *jumps.BINDINGS,
    ]

    def __init__(
        self,
        address: str,
        id_keys: dict[str, str],
        *,
        view: View | None = None,
        read_only: bool = False,
        refresh: float = 1.0,
        max_rows: int = MAX_ROWS,
        alertmanager: str = "",
        traces: str = "",
    ) -> None:
        super().__init__()
        self.traces_url = traces  # a Jaeger query service ("": a task's state transitions)
        self.address = address
        self.id_keys = id_keys
        self.read_only = read_only
        self.refresh_s = refresh
        self.max_rows = max_rows
        self.alertmanager = alertmanager  # the overview's; "" : the one monitoring up runs
        self.view = view or View("tasks")
        self.history: list[View] = []
        self.feed: Feed | None = None
        self.rows: dict[str, dict[str, Any]] = {}  # every row the feed sent, by id
        self.shown: dict[str, tuple[str, ...]] = {}  # the table's rows, by id: their cells
        self.last: Batch | None = None
        self.prompt_mode = ""  # ":" or "/" while the prompt is open
        self.refused = ""  # why the head refused the last view asked for
        self.sort_column: int | None = None  # the column the rows are sorted by (None: as listed)
        self.sort_reverse = False
        self.marks: set[str] = set()  # the ids marked (space) in this view
        self.pages: list[str | None] = [None]  # where each page up to this one starts
        self.order: tuple[str, bool] = ("", False)  # the feed's: head field ("": its own), desc
        self.resync = False  # the table holds the last feed's rows until the new one lists
        self.first_ticker: Timer | None = None

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Input(id="prompt", select_on_focus=False)
        yield Table(id="table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)  # every key of a view fits 160 columns

    def on_mount(self) -> None:
        first = self.view
        if first.kind in SCREENS:  # the overview opens over the nodes, logs and traces over tasks
            self.view = View("nodes" if first.kind == OVERVIEW else "tasks")
        self.open_view(self.view, remember=False)
        if first.kind in SCREENS:
            self.open_view(first)
        # Now, not later: Widget.focus() is a callback that can land after ':' has given the
        # prompt the keyboard (the first rows come within 50 ms), sending its keys to the table.
        self.table.screen.set_focus(self.table)
        self.ticker = self.set_interval(self.refresh_s, self.tick)

    def on_unmount(self) -> None:
        self.ticker.stop()
        if self.feed is not None:
            self.feed.stop()

    @property
    def table(self) -> DataTable[Any]:  # cells are Cell (Text)
        return self.query_one("#table", DataTable)

    # -- views --------------------------------------------------------------------------------

    def source(self, name: str, make: Callable[[], S]) -> S:
        """A started source for what ``name`` says (see :mod:`freight.tui.source`): every
        screen gets its data here, so that one place decides where data comes from."""
        return make().start()  # type: ignore[return-value]

    def open_view(self, view: View, *, remember: bool = True) -> None:
        """Show ``view`` (a new feed, an empty table); ``remember``: esc comes back here."""
        if view.kind in SCREENS:  # a screen of its own, over the table view; esc pops it
            self.push_screen(self.screen_for(view))
            return
        if remember and view != self.view:
            self.history.append(self.view)
        self.view, self.refused, self.pages = view, "", [None]
        self.marks = set()
        if view.kind != getattr(self, "_sorted_kind", view.kind):
            self.sort_column, self.sort_reverse = None, False
        self._sorted_kind = view.kind
        table = self.table
        table.clear(columns=True)
        for i, (title, _, _) in enumerate(COLUMNS[view.kind]):
            table.add_column(title, key=str(i))
        self.refresh_bindings()  # the footer shows this view's actions and jumps
        self.follow()

    def screen_for(self, view: View) -> Screen[None]:
        """The screen of a :data:`~freight.tui.commands.SCREENS` command (its arguments checked
        by :func:`~freight.tui.commands.parse_command`)."""
        if view.kind == "logs":
            return logs.LogsScreen(selection(list(view.filters)))
        if view.kind == "traces":
            return traces.TracesScreen(view.filters[0])
        return OverviewScreen()

    def follow(self, keep: bool = False) -> None:
        """Follow the view's current page (``self.pages[-1]``) in ``self.head_order()``: a new
        feed, an empty table; ``keep``: the table keeps its rows until the new feed lists them
        (the same rows in another order: the whole set was in the window)."""
        if self.feed is not None:
            self.feed.stop()
        view, cursor = self.view, self.pages[-1]
        self.order = sort_by, descending = self.head_order()
        self.resync = keep
        if not keep:
            self.rows, self.shown, self.last = {}, {}, None
            self.table.clear()
        name = view.title() + (f" after={cursor}" if cursor else "")
        name += f" sort={sort_by}{' desc' if descending else ''}" if sort_by else ""
        self.feed = self.source(
            name,
            lambda: (ObjectFeed if view.kind == "objects" else Feed)(
                view.kind,
                list(view.filters),
                address=self.address,
                id_key=self.id_keys.get(view.kind, f"{view.kind[:-1]}_id"),
                refresh=self.refresh_s,
                limit=self.max_rows,
                cursor=cursor,
                sort_by=sort_by,
                descending=descending,
            ),
        )
        # The first rows are shown as soon as they come, not at the next tick.
        if self.first_ticker is not None:
            self.first_ticker.stop()
        self.first_ticker = self.set_interval(FIRST_TICK_S, self.first_tick)
        self.render_status()

    def first_tick(self) -> None:
        if self.last is not None and (self.last.synced or self.last.error):
            if self.first_ticker is not None:
                self.first_ticker.stop()
        else:
            self.tick()

    def page_start(self) -> int:
        """The position of the first row shown among the rows that match (from 1)."""
        return self.last.first if self.last is not None else 1

    def action_next_page(self) -> None:
        if self.last is None or not self.last.synced:
            self.notify("this page is still being listed", timeout=3)
            return
        if not self.last.next_cursor:
            self.notify("this is the last page", timeout=3)
            return
        self.pages.append(self.last.next_cursor)
        self.follow()

    def action_previous_page(self) -> None:
        if len(self.pages) == 1:
            self.notify("this is the first page", timeout=3)
            return
        self.pages.pop()
        self.follow()

    def tick(self) -> None:
        """Apply what the feed gathered since the last tick: row by row, by id."""
        if self.feed is None or not self.is_running:
            return
        batch = self.feed.take()
        if batch.error and not self.refused:
            self.refused = batch.error
            self.notify(f"{self.view.title()}: {batch.error}", severity="error", timeout=10)
            if self.history:  # a refused filter or view: back to the one that worked
                self.open_view(self.history.pop(), remember=False)
                return
        if self.resync and batch.synced:  # the new feed's first listing: the rows now
            self.resync = False
            batch.changes.update({k: None for k in self.rows if k not in batch.changes})
        self.apply(batch.changes)
        if batch.changes and self.sort_column is not None:
            self.sort_rows()
        self.last = batch
        self.render_status()

    def apply(self, changes: dict[str, dict[str, Any] | None]) -> None:
        table, kind = self.table, self.view.kind
        for key, row in changes.items():
            if row is None:
                self.rows.pop(key, None)
                if self.shown.pop(key, None) is not None:
                    table.remove_row(key)
                continue
            self.rows[key] = row
            new = cells(kind, row)
            old = self.shown.get(key)
            if old is not None:
                for i, (a, b) in enumerate(zip(old, new, strict=True)):
                    if a != b:
                        table.update_cell(key, str(i), Cell(b))
                self.shown[key] = new
            elif len(self.shown) < self.max_rows:
                table.add_row(*map(Cell, new), key=key)
                self.shown[key] = new
        if len(self.shown) < min(self.max_rows, len(self.rows)):  # room freed: fill it
            for key, row in self.rows.items():
                if len(self.shown) >= self.max_rows:
                    break
                if key not in self.shown:
                    self.shown[key] = cells(kind, row)
                    table.add_row(*map(Cell, self.shown[key]), key=key)
        if changes:
            self.fit_columns()
            self.rows_changed(changes)

    def fit_columns(self) -> None:
        """Size each column to the widest cell shown, now. (DataTable's own fitting happens
        when the app is idle, and leaves the rows it rendered in between cut at the old widths
        until a cell changes: a row that never changes would stay cut.)"""
        table, titles = self.table, [title for title, _, _ in COLUMNS[self.view.kind]]
        widths = [len(t) for t in titles]
        for row in self.shown.values():
            for i, text in enumerate(row):
                widths[i] = max(widths[i], min(len(text), MAX_COLUMN_WIDTH))
        for i, width in enumerate(widths):
            column = table.columns.get(ColumnKey(str(i)))
            if column is not None and (column.auto_width or column.width != width):
                column.auto_width, column.width = False, width

    # -- the status line ----------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        return self.last is not None and self.last.stale_since is not None

    def counts(self) -> str:
        """``showing N of M (rows A-B)`` when the table holds part of what matches; ``N rows``
        otherwise."""
        b = self.last
        shown = len(self.shown)
        matched = max(len(self.rows), b.matched if b and b.matched is not None else 0)
        if b is None or not b.synced:
            return f"{_rows(shown)} (listing...)"
        if shown < matched:
            text = f"showing {shown:,} of {matched:,}"
            text += f" (rows {b.first:,}\u2013{b.first + shown - 1:,})" if shown else " (none here)"
        else:
            text = _rows(shown)
        if b.total is not None and self.view.filters:
            text += f" ({b.total:,} in all)"
        return text

    def status_text(self) -> str:
        # What matters first comes first: a narrow terminal cuts the end of the line.
        parts = [self.view.title(), self.counts()]
        if self.prompt_mode:  # which prompt has the keyboard
            what = "command" if self.prompt_mode == ":" else "filter"
            parts.insert(0, f"{what} prompt: enter runs, esc cancels")
        if self.last is not None and self.last.stale_since is not None:
            parts.append(
                f"STALE since {_when(self.last.stale_since)}: {self.last.stale_reason} "
                "(reconnecting)"
            )
        if self.sort_column is not None:
            title = COLUMNS[self.view.kind][self.sort_column][0]
            parts.append(f"sorted by {title}{' (reversed)' if self.sort_reverse else ''}")
            partial = self.last is not None and len(self.shown) < (self.last.matched or 0)
            if partial and not self.order[0]:
                # A column the head cannot order by: the sort orders this page's rows.
                parts[-1] += ", this page only"
        if self.marks:
            parts.append(f"{len(self.marks)} marked")
        if self.read_only:
            parts.append("read-only")
        parts.append(f"freight top {self.address}")
        return "  |  ".join(parts)

    def render_status(self) -> None:
        status = self.query_one("#status", Static)
        text = Content(self.status_text())
        if text != getattr(self, "_status_shown", None):  # an update lays the screen out again
            self._status_shown = text
            status.update(text)
        status.set_class(self.stale, "stale")

    # -- keys ---------------------------------------------------------------------------------

    def _open_prompt(self, mode: str, value: str = "") -> None:
        self.prompt_mode = mode
        prompt = self.query_one("#prompt", Input)
        prompt.placeholder = (
            "view and filters: tasks, actors state=ALIVE, q (enter to run, esc to cancel)"
            if mode == ":"
            else f"filters: field=value, field~regex, or a regex on {self.view.kind}' text"
        )
        prompt.value = value
        prompt.cursor_position = len(value)
        prompt.add_class("open")
        # Focus now, not at the next idle moment: the keys typed right after ':' are the
        # command's (Widget.focus() would leave them to the table).
        prompt.display = True
        self.screen.set_focus(prompt)
        self.render_status()

    def _close_prompt(self) -> None:
        self.prompt_mode = ""
        prompt = self.query_one("#prompt", Input)
        prompt.remove_class("open")
        prompt.display = False
        self.screen.set_focus(self.table)
        self.render_status()

    def action_command(self) -> None:
        self._open_prompt(":")

    def action_filter(self) -> None:
        # The view's filters, ready to be added to or edited.
        self._open_prompt("/", "".join(f"{f} " for f in self.view.filters))

    def action_go_back(self) -> None:
        if self.prompt_mode:
            self._close_prompt()
        elif self.history:
            self.open_view(self.history.pop(), remember=False)

    def action_failures(self) -> None:
        """Toggle the view's "failures only" filter (kinds without failures: a note)."""
        failure = FAILURES.get(self.view.kind)
        if failure is None:
            self.notify(f"{self.view.kind} have no failure state to show alone", timeout=5)
            return
        filters = self.view.filters
        if failure in filters:
            filters = tuple(f for f in filters if f != failure)
        else:
            filters = (*filters, failure)
        self.open_view(View(self.view.kind, filters))

    def head_order(self) -> tuple[str, bool]:
        """The order to ask the head for: the sort column's field ("": the head's own order,
        for a column it cannot order by) and whether descending."""
        if self.sort_column is None:
            return "", False
        field = head_sort_field(self.view.kind, self.sort_column)
        return (field, self.sort_reverse) if field else ("", False)

    def sort_rows(self) -> None:
        """Order the table's rows by the sort column: as the head orders them (by the field's
        value, missing values last) when it can, else by the cells (numbers as numbers)."""
        if self.sort_column is None:
            return
        how = COLUMNS[self.view.kind][self.sort_column][2]
        field = head_sort_field(self.view.kind, self.sort_column)
        if field is None:
            self.table.sort(str(self.sort_column), key=_sort_key, reverse=self.sort_reverse)
            return
        rows, table = self.rows, self.table

        def get(row_key: str) -> Any:
            return rows[row_key].get(field)

        # Equal values keep the order the rows came in: the head's, for the first listing.
        sorting = Sorting(field, get, how == "time", self.sort_reverse)
        order = sort_items([k for k in rows if k in self.shown], sorting, get)
        # DataTable sorts by cells: the first column's cell of each row stands for the row.
        rank = {id(table.get_cell(k, "0")): i for i, k in enumerate(order)}
        table.sort("0", key=lambda cell: rank[id(cell)])

    def reorder(self) -> None:
        """Apply a new sort column or direction: the head lists in that order from the first
        page when it can order by the column (the rows stay on screen, sorted here, while it
        lists when the window holds every matching row), and the table is sorted now."""
        if self.head_order() != self.order:
            b = self.last
            whole = (
                b is not None
                and b.synced
                and len(self.pages) == 1
                and len(self.shown) >= (b.matched or 0)
            )
            self.pages = [None]  # a cursor pages through one order only
            self.follow(keep=whole)
        self.sort_rows()
        self.render_status()

    def action_sort(self) -> None:
        """Sort by the next column (after the last: as listed)."""
        n = len(COLUMNS[self.view.kind])
        column = 0 if self.sort_column is None else self.sort_column + 1
        self.sort_column = column if column < n else None
        self.sort_reverse = False
        self.reorder()

    def action_reverse(self) -> None:
        if self.sort_column is not None:
            self.sort_reverse = not self.sort_reverse
            self.reorder()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_describe(self, raw: bool = False) -> None:
        table = self.table
        if not self.shown or table.cursor_row < 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is not None:
            row = self.rows.get(key)
            self.push_screen(DetailScreen(self.address, self.view.kind, key, row, raw=raw))

    def action_copy_id(self) -> None:
        """``c``: the row's id to the terminal's clipboard (OSC 52), for a command line."""
        table = self.table
        if not self.shown or table.cursor_row < 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is not None:
            self.copy_to_clipboard(key)
            self.notify(f"copied {key}", timeout=3)

    def _selected(self) -> str | None:
        table = self.table
        if not self.shown or table.cursor_row < 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_logs(self) -> None:
        """``l``: the log lines of the selected task, actor, job, worker or node."""
        key = self._selected()
        if key is not None:
            try:
                self.push_screen(logs.row_screen(self.view.kind, key))
            except CommandError as e:
                self.notify(str(e), severity="error", timeout=5)

    def action_trace(self) -> None:
        """``t``: the selected task and its children as a timeline."""
        key = self._selected()
        if key is None:
            return
        if self.view.kind != "tasks":
            self.notify("t shows a task's trace: press it on a row of :tasks", timeout=5)
            return
        self.push_screen(traces.TracesScreen(key))

    def action_raw(self) -> None:
        """``y``: the record as the state API gives it (JSON), as ``freight get -o json``."""
        self.action_describe(raw=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_describe()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        mode, text = self.prompt_mode, event.value
        if not mode:
            return
        self._close_prompt()
        if mode == "/":
            self.open_view(View(self.view.kind, tuple(parse_filters(self.view.kind, text))))
            return
        try:
            command = parse_command(text)
        except CommandError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        if command.quit:
            self.exit()
        else:
            self.open_view(View(command.kind, tuple(command.filters)))


class HelpScreen(ModalScreen[None]):
    """``?``: the keys and the commands."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("escape,question_mark,q", "dismiss", "close"),
    ]
    CSS = "HelpScreen { align: center middle; } #help { width: 80; height: auto; border: round $accent; padding: 1 2; background: $surface; }"

    def compose(self) -> ComposeResult:
        names: dict[str, list[str]] = {}
        for name, kind in ALIASES.items():
            if name != kind:
                names.setdefault(kind, []).append(name)
        views = "\n".join(f"  :{k:<17} also :{', :'.join(names.get(k, []))}" for k in VIEWS)
        yield Static(
            Content(
                "freight top: keys\n\n"
                "  :        command: a view and filters (:actors state=ALIVE), :q quits\n"
                "  /        filter this view: field=value, field~regex, field>n, !=, <=...;\n"
                "           a bare word is a regex on the kind's main text (task names...)\n"
                "           a leading ! inverts: !train, !state=FAILED, !name~^tr\n"
                "  f        failures only: failed tasks and jobs, dead nodes, dead or\n"
                "           restarting actors, pending placement groups, warnings and errors\n"
                "  s / S    sort by the next column (then as listed) / reverse the order:\n"
                "           the head orders every matching row and pages in that order\n"
                "  ] / [    next / previous page (also ctrl+f / ctrl+b)\n"
                "  c        copy the row's id to the clipboard\n"
                "  l        the row's logs (task, actor, job, worker, node), live from\n"
                "           every node; there F: follow or not, /: regex (!: inverted)\n"
                "  t        a task and its child tasks on a timeline (enter: their detail)\n"
                "  :logs    task_id=.. actor_id=.. job_id=.. node_id=.. worker_id=..\n"
                "           component=head|agent|worker (also :log, :l)\n"
                "  :traces  TASK_ID (also :trace, :tr)\n"
                "  y        the row's raw record (JSON, with detail)\n"
                "  enter    describe the row: every field; a task's transitions and error\n"
                "  esc      back: close the prompt, a detail, or return to the last view\n"
                "  ?        this help;   q  quit\n\n"
                f"views:\n{views}\n"
                "  :overview          also :ov: nodes' meters, rates, SLOs, alerts, events\n\n"
                "Filters are evaluated by the head; a view shows one page of rows and says\n"
                "which: 'showing N of M (rows A-B)'. STALE in the status line: the head\n"
                "does not answer; the rows are as last seen, and the view reconnects by\n"
                "itself.\n\n" + actions.more_help(getattr(self.app, "read_only", False))
            ),
            id="help",
        )


def describe(kind: str, row: dict[str, Any]) -> str:
    """A record as text: its fields, then for a task its transitions, pending reason and
    error with traceback."""
    long_keys = ("transitions", "attempts", "traceback", "error")
    width = max((len(k) for k in row), default=0)
    lines = []
    for key, value in row.items():
        if key in long_keys and kind == "tasks":
            continue
        if isinstance(value, float) and (
            key.endswith("_time") or key in ("time", "last_heartbeat")
        ):
            shown = f"{datetime.fromtimestamp(value).isoformat(sep=' ', timespec='milliseconds')}"
            shown = shown if value else "-"
        else:
            shown = str(value) if value not in (None, "") else "-"
        lines.append(f"{key:<{width}}  {shown}")
    if kind == "tasks":
        lines.append("")
        transitions = row.get("transitions") or []
        lines.append(f"state transitions ({len(transitions)}):")
        first = transitions[0]["time"] if transitions else 0.0
        for t in transitions:
            when = datetime.fromtimestamp(t["time"]).strftime("%H:%M:%S.%f")[:-3]
            cause = f"  ({t['cause']})" if t.get("cause") else ""
            lines.append(f"  {when}  +{t['time'] - first:8.3f}s  {t['state']}{cause}")
        if row.get("pending_reason"):
            lines += ["", f"pending reason: {row['pending_reason']}"]
        if row.get("error"):
            lines += ["", f"error ({row.get('error_type') or '-'}): {row['error']}"]
        if row.get("traceback"):
            lines += ["", "traceback:", row["traceback"].rstrip()]
    return "\n".join(lines)


class DetailScreen(Screen[None]):
    """Enter on a row: the record with every field, read again with detail from the head (in a
    thread); the row the table holds is shown until it comes."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("q", "app.quit", "quit"),
    ]
    CSS = "#detail-title { height: 1; background: $boost; padding: 0 1; }"

    def __init__(
        self,
        address: str,
        kind: str,
        key: str,
        row: dict[str, Any] | None,
        *,
        raw: bool = False,
    ) -> None:
        super().__init__()
        self.raw = raw
        self.address, self.kind, self.key = address, kind, key
        self.row = row or {}
        self.detailed = False
        self.error = ""

    def compose(self) -> ComposeResult:
        yield Static(Content(f"{self.kind[:-1]} {self.key}"), id="detail-title")
        with VerticalScroll():
            yield Static(Content(self.text()), id="detail")
            if self.kind in ("tasks", "actors") and not self.raw:
                yield logs.DetailLogs(self.kind, self.key)
        yield Footer()

    def on_mount(self) -> None:
        app = self.app
        assert isinstance(app, TopApp)
        kind, key, address = self.kind, self.key, self.address
        self.lookup = app.source(f"get {kind} {key}", lambda: Get(kind, key, address=address))
        self.waiting = self.set_interval(LOOKUP_POLL_S, self._load)

    def on_unmount(self) -> None:
        self.lookup.stop()

    def _load(self) -> None:
        got = self.lookup.take()
        if not got.done:
            return
        self.waiting.stop()
        if got.error:
            self._show(None, f"{got.error} (showing the row as last listed)")
            return
        self._show(got.row, "" if got.row else "no longer in the cluster")

    def text(self) -> str:
        if self.raw:
            return json.dumps(self.row, indent=2, default=str)
        return describe(self.kind, self.row)

    def _show(self, row: dict[str, Any] | None, error: str) -> None:
        self.error = error
        if row is not None:
            self.row, self.detailed = row, True
        text = self.text()
        if error:
            text = f"note: {error}\n\n{text}"
        self.query_one("#detail", Static).update(Content(text))
