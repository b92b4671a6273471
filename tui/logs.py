"""The inspector's Logs view, and the log lines under a task's or an actor's detail.

Lines come from every node as ``freight logs`` reads them (:class:`freight.client.logs.
ClusterLogs`: each alive node's agent streams the lines of its own folder that match the ids), in
a :class:`LogSource` whose thread does the reading; the screen takes the new lines each tick. The
view keeps the last :data:`MAX_LINES` lines, follows new ones (staying at the bottom unless the
user scrolled up; ``F`` toggles), and filters them with ``/``: a regular expression on the line,
the match highlighted, ``!`` in front to keep the lines that do not match. A node that does not
answer is named in the status line; the other nodes' lines still show.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Input, RichLog, Static

from freight.client import access
from freight.client.logs import ClusterLogs, render_text
from freight.core.logs import Selection

from .commands import CommandError, selection, selection_words
from .modal import BACK_AND_QUIT, SourceScreen

MAX_LINES = 10_000  # lines the view keeps; older ones leave as new ones come
DETAIL_TAIL = 50  # a task's or an actor's last lines under its detail
RETRY_S = 2.0  # the head did not answer: how long before asking again
POLL_S = 0.5  # how long one wait for new lines lasts (the source's stop is seen this often)
LOG_KINDS = ("tasks", "actors", "jobs", "workers", "nodes")  # `l` on a row of these
HIGHLIGHT = "bold black on yellow"
WRITE_BUDGET_S = 0.03  # the longest the view writes lines before letting keys in
WRITE_CHUNK = 50  # lines written between two looks at the clock


def title(sel: Selection) -> str:
    """The source's name and the view's title: ``logs task_id=ab12 component=worker``."""
    return " ".join(("logs", *selection_words(sel)))


@dataclass
class LogBatch:
    """What a :class:`LogSource` gathered since the last ``take()``: the new records (as
    ``freight logs -o json`` gives them), sentences naming the nodes that did not answer, and
    the source's state now."""

    lines: list[dict[str, Any]]
    warnings: list[str]
    caught_up: bool  # every node's history has come (the lines since are new)
    done: bool  # the source has nothing more to give (not following, or no node is left)
    error: str  # why no line can come now (the head is away...); empty when reading

    # New lines are changes (freight.tui.record.Payload): a replay hands each line out once.
    def quiet(self) -> LogBatch:
        return replace(self, lines=[], warnings=[])

    @classmethod
    def merge(cls, batches: list[LogBatch]) -> LogBatch:
        lines = [line for b in batches for line in b.lines]
        warnings = [w for b in batches for w in b.warnings]
        return replace(batches[-1], lines=lines, warnings=warnings)

    @classmethod
    def nothing(cls, note: str) -> LogBatch:
        return cls([], [], False, False, note)


@dataclass
class _Shared:
    lines: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    warnings: list[str] = field(default_factory=list)
    caught_up: bool = False
    done: bool = False
    error: str = ""


class LogSource:
    """The lines of ``sel`` on every node of the cluster at ``address``: the last ``tail``,
    then, with ``follow``, the new ones as they are written."""

    def __init__(self, address: str, sel: Selection, *, tail: int, follow: bool) -> None:
        self.address, self.selection, self.tail, self.follow = address, sel, tail, follow
        self._lock = threading.Lock()
        self._shared = _Shared()
        self._stop = threading.Event()
        self._logs: ClusterLogs | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="top-logs")

    def start(self) -> LogSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        logs = self._logs
        if logs is not None:
            logs.interrupt()

    def take(self) -> LogBatch:
        with self._lock:
            s = self._shared
            batch = LogBatch(list(s.lines), s.warnings, s.caught_up, s.done, s.error)
            s.lines.clear()
            s.warnings = []
            return batch

    def _put(self, lines: Any = (), warnings: list[str] | None = None, **state: Any) -> None:
        with self._lock:
            self._shared.lines.extend(lines)
            self._shared.warnings += warnings or []
            for key, value in state.items():
                setattr(self._shared, key, value)

    def _run(self) -> None:
        try:
            self._connect_and_read()
        except Exception as e:  # a bug: the screen says so, its traceback goes to the hook
            self._put(error=f"the log reader stopped: {type(e).__name__}: {e}", done=True)
            raise

    def _connect_and_read(self) -> None:
        while not self._stop.is_set():
            try:
                logs = ClusterLogs(
                    access.resolve(self.address), self.selection, tail=self.tail, follow=self.follow
                )
            except (ConnectionError, PermissionError, access.UsageError) as e:
                self._put(error=f"{e} (asking again)" if self.follow else str(e))
                if not self.follow:
                    self._put(done=True)
                    return
                self._stop.wait(RETRY_S)
                continue
            self._logs = logs
            try:
                self._read(logs)
            finally:
                logs.close()
            return

    def _read(self, logs: ClusterLogs) -> None:
        self._put(error="")
        chunk: list[dict[str, Any]] = []
        for rec in logs.history():
            chunk.append(rec)
            if len(chunk) >= 500:  # a long history shows as it comes
                self._put(chunk)
                chunk = []
            if self._stop.is_set():
                return
        self._put(chunk, logs.warnings(), caught_up=True)
        while self.follow and not self._stop.is_set():
            self._put(logs.poll(POLL_S), logs.warnings())
            if logs.ended:
                self._put(error="no node is left to follow")
                break
        self._put(done=True)


class LineFilter:
    """``/`` in the Logs view: a regular expression on the line; ``!`` in front keeps the lines
    that do not match. ``ValueError`` for a bad expression, saying what is wrong."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.invert = self.text.startswith("!")
        pattern = self.text[1:] if self.invert else self.text
        try:
            self.regex = re.compile(pattern) if pattern else None
        except re.error as e:
            raise ValueError(f"/{self.text}: not a regular expression ({e})") from None

    def show(self, line: str) -> Text | None:
        """The line as shown (the matches highlighted), or None if the filter hides it."""
        text = Text(line)
        if self.regex is None:
            return text
        if (self.regex.search(line) is not None) == self.invert:
            return None
        if not self.invert:
            for m in self.regex.finditer(line):
                text.stylize(HIGHLIGHT, m.start(), m.end())
        return text


class LogsScreen(SourceScreen):
    """``:logs ...`` or ``l`` on a row: the lines of every node matching the ids, live."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("F", "follow", "follow on/off"),
        Binding("slash", "filter", "filter"),
        *BACK_AND_QUIT,
    ]
    CSS = """
    #logs-prompt { display: none; }
    #logs-prompt.open { display: block; }
    """
    STATUS_ID = "logs-status"

    def __init__(self, sel: Selection) -> None:
        super().__init__()
        self.selection = sel
        self.title_text = title(sel)
        self.records: deque[str] = deque(maxlen=MAX_LINES)  # every line kept, as text
        self.shown_lines: deque[Text] = deque(maxlen=MAX_LINES)  # the lines shown, as written
        self.line_filter = LineFilter("")
        self.following = True
        self.warnings: list[str] = []
        self.last: LogBatch | None = None
        self.source: LogSource | None = None
        self.backlog: deque[dict[str, Any]] = deque(maxlen=MAX_LINES)  # taken, not yet written
        self.rewrite: deque[str] = deque()  # kept lines to write again (a new filter)
        self._drain_timer: Any = None

    def body(self) -> Iterable[Widget]:
        yield Input(id="logs-prompt", select_on_focus=False)
        yield RichLog(id="logs-lines", classes="body", max_lines=MAX_LINES, auto_scroll=False)

    @property
    def lines_log(self) -> RichLog:
        return self.query_one("#logs-lines", RichLog)

    def ready(self) -> None:
        self.lines_log.focus()
        self.render_status()

    def on_replay_app_seeked(self, _message: Any) -> None:
        """A replay's clock jumped: the lines as of then, from the start."""
        if self.source is not None:
            self.source.stop()
        self.records.clear()
        self.shown_lines.clear()
        self.backlog.clear()
        self.rewrite.clear()
        self.warnings = []
        self.lines_log.clear()
        self.open_source()

    def open_source(self) -> None:
        app: Any = self.app
        address, sel = app.address, self.selection
        self.source = app.source(
            self.title_text, lambda: LogSource(address, sel, tail=MAX_LINES, follow=True)
        )

    def tick(self) -> None:
        if self.source is None:
            return
        batch = self.source.take()
        self.warnings += batch.warnings
        self.last = batch
        self.backlog.extend(batch.lines)
        self.drain()

    def drain(self) -> None:
        """Write what waits, for at most :data:`WRITE_BUDGET_S`, then let keys and repaints in
        and go on soon after: 10,000 lines (a long history, a new filter) written at once would
        hold the screen for seconds."""
        self._drain_timer = None
        rewriting = bool(self.rewrite)
        deadline = time.monotonic() + WRITE_BUDGET_S
        while (self.rewrite or self.backlog) and time.monotonic() < deadline:
            if self.rewrite:
                n = min(WRITE_CHUNK, len(self.rewrite))
                self.write([self.rewrite.popleft() for _ in range(n)])
            else:
                n = min(WRITE_CHUNK, len(self.backlog))
                lines = [render_text(self.backlog.popleft()) for _ in range(n)]
                self.records.extend(lines)
                self.write(lines)
        if rewriting and not self.rewrite and self.following:  # a new filter's lines, all out
            self.lines_log.scroll_end(animate=False, immediate=False, x_axis=False)
        if (self.rewrite or self.backlog) and self._drain_timer is None:
            self._drain_timer = self.set_timer(0.01, self.drain)
        self.render_status()

    def write(self, lines: list[str]) -> None:
        """Lines written when the filter shows them; the view scrolls with them when following
        and at the bottom (a user who scrolled up reads on undisturbed)."""
        log = self.lines_log
        at_end = log.scroll_y >= log.max_scroll_y
        for line in lines:
            shown = self.line_filter.show(line)
            if shown is not None:
                self.shown_lines.append(shown)
                log.write(shown, scroll_end=False)
        if self.following and at_end:
            log.scroll_end(animate=False, immediate=False, x_axis=False)

    def refilter(self) -> None:
        """Write the kept lines again through the filter (a new filter), from the top."""
        self.lines_log.clear()
        self.shown_lines.clear()
        self.rewrite = deque(self.records)
        self.lines_log.scroll_home(animate=False, immediate=True)
        self.drain()

    @property
    def busy(self) -> bool:
        """Lines wait to be written (or read)."""
        return bool(self.rewrite or self.backlog) or self.last is None or not self.last.caught_up

    def status_text(self) -> str:
        parts = [self.title_text]
        kept = len(self.records)
        if self.line_filter.regex is not None:
            parts.append(f"{len(self.shown_lines)} of {kept} lines match /{self.line_filter.text}")
        else:
            parts.append(f"{kept} lines" if kept != 1 else "1 line")
        if self.busy:
            parts[-1] += " (reading...)"
        parts.append("following" if self.following else "paused (F follows)")
        if self.last is not None and self.last.error:
            parts.append(self.last.error)
        parts += self.warnings
        return "  |  ".join(parts)

    def render_status(self) -> None:
        status = self.status
        status.update(Content(self.status_text()))
        status.set_class(bool(self.warnings or (self.last and self.last.error)), "warn")

    # -- keys ---------------------------------------------------------------------------------

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.lines_log.scroll_end(animate=False, immediate=False, x_axis=False)
        self.render_status()

    def action_filter(self) -> None:
        prompt = self.query_one("#logs-prompt", Input)
        prompt.placeholder = "a regex on the line; !regex keeps the lines without it (esc: cancel)"
        prompt.value = self.line_filter.text
        prompt.cursor_position = len(prompt.value)
        prompt.add_class("open")
        prompt.display = True
        self.set_focus(prompt)

    def _close_prompt(self) -> None:
        prompt = self.query_one("#logs-prompt", Input)
        prompt.remove_class("open")
        prompt.display = False
        self.set_focus(self.lines_log)

    @property
    def prompt_open(self) -> bool:
        return self.query_one("#logs-prompt", Input).display

    def action_back(self) -> None:
        if self.prompt_open:
            self._close_prompt()
        else:
            super().action_back()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._close_prompt()
        try:
            self.line_filter = LineFilter(event.value)
        except ValueError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        self.refilter()
        self.render_status()


def row_screen(kind: str, key: str) -> LogsScreen:
    """``l`` on a row: the logs of that task, actor, job, worker or node."""
    if kind not in LOG_KINDS:
        raise CommandError(f"{kind} have no logs of their own: press l on {', '.join(LOG_KINDS)}")
    return LogsScreen(selection([f"{kind[:-1]}_id={key}"]))


class DetailLogs(Static):
    """Under a task's or an actor's detail: its last :data:`DETAIL_TAIL` lines from every node,
    read once in the source's thread."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(Content("log lines: reading..."), id="detail-logs")
        self.selection = selection([f"{kind[:-1]}_id={key}"])
        self.log_lines: list[str] = []
        self.warnings: list[str] = []
        self.error = ""
        self.done = False
        self.source: LogSource | None = None

    def on_mount(self) -> None:
        app: Any = self.app
        address, sel = app.address, self.selection
        self.source = app.source(
            f"{title(sel)} tail={DETAIL_TAIL}",
            lambda: LogSource(address, sel, tail=DETAIL_TAIL, follow=False),
        )
        self.ticker = self.set_interval(app.refresh_s, self.tick)

    def on_unmount(self) -> None:
        self.ticker.stop()
        if self.source is not None:
            self.source.stop()

    def tick(self) -> None:
        if self.source is None or self.done:
            return
        batch = self.source.take()
        self.log_lines = (self.log_lines + [render_text(r) for r in batch.lines])[-DETAIL_TAIL:]
        self.warnings += batch.warnings
        self.error = batch.error or self.error
        if batch.done:
            self.done = True
            self.ticker.stop()
        head = f"log lines (the last {DETAIL_TAIL}, from every node):"
        if not self.done:
            head += " reading..."
        notes = [f"note: {w}" for w in ([self.error] if self.error else []) + self.warnings]
        body = self.log_lines or (["(none)"] if self.done else [])
        self.update(Content("\n".join(["", head, *notes, *body])))
