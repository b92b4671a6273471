"""What ``freight top`` does to the cluster: a view's action on its marked rows (or the row under
the cursor), confirmed in a dialog first, run in a thread through :mod:`freight.actions`, each
id's outcome told as a notification.

An action is what the CLI does (``freight cancel``, ``freight kill actor``, ``freight job stop``,
``freight drain``), with the same admin-token check and the same ``OPERATOR_ACTION`` event,
whose reason says it came from the inspector and who ran it. A read-only token (or
``--read-only``) hides the action keys; an action the cluster refuses to such a token says so.
"""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Static

from freight import actions
from freight.client import access
from freight.util.tokens import READONLY_TOKEN_FILE, TOKEN_FILE, readonly_token

if TYPE_CHECKING:
    from textual.widgets import DataTable

    from .app import View
    from .source import Source

    S = TypeVar("S", bound=Source)

READ_ONLY_REFUSAL = "this token may only read (exit 4 in the CLI)"
SHOWN_IDS = 12  # ids listed by name in the dialog; more are counted
NOTIFIED_ONE_BY_ONE = 5  # up to this many ids each get a notification; more get a summary
MARK_STYLE = "bold reverse"


def _drained(d: actions.Drain) -> str:
    if not d.changed:
        return f"node {d.node_id} was {'draining' if d.draining else 'open'} already"
    if d.draining:
        return (
            f"node {d.node_id} draining: it takes no new work; {d.running_tasks} task(s) and "
            f"{d.running_actors} actor(s) there go on"
        )
    return f"node {d.node_id} open again: it takes new work"


@dataclass(frozen=True)
class Action:
    """One action of a view: ``key`` runs it on the view's ``kind``; ``does`` says in the dialog
    what will happen; ``run(id, reason, address)`` returns the sentence of what it did."""

    name: str  # the binding's action: action_<name> on the app
    kind: str
    key: str
    verb: str
    does: str
    run: Callable[[str, str, str], str]


ACTIONS: tuple[Action, ...] = (
    Action(
        "cancel_tasks",
        "tasks",
        "x",
        "cancel",
        "A pending task never runs; a running one gets TaskCancelledError; the tasks it "
        "submitted are cancelled too.",
        lambda i, r, a: actions.cancel_task(i, reason=r, address=a).message,
    ),
    Action(
        "kill_actors",
        "actors",
        "x",
        "kill",
        "Its calls in flight and later calls raise ActorDiedError; it does not restart.",
        lambda i, r, a: actions.kill_actor(i, no_restart=True, reason=r, address=a).message,
    ),
    Action(
        "stop_jobs",
        "jobs",
        "x",
        "stop",
        "Its driver gets SIGTERM, then SIGKILL after the grace period.",
        lambda i, r, a: actions.stop_job(i, reason=r, address=a).message,
    ),
    Action(
        "drain_nodes",
        "nodes",
        "x",
        "drain",
        "It takes no new tasks, actors or bundles; what runs there goes on (u undrains).",
        lambda i, r, a: _drained(actions.drain_node(i, reason=r, address=a)),
    ),
    Action(
        "undrain_nodes",
        "nodes",
        "u",
        "undrain",
        "It takes new work again; what waited for it starts there.",
        lambda i, r, a: _drained(actions.undrain_node(i, reason=r, address=a)),
    ),
)
BY_NAME = {a.name: a for a in ACTIONS}


def for_view(kind: str) -> list[Action]:
    return [a for a in ACTIONS if a.kind == kind]


def reason() -> str:
    """What the action's cluster event records as its reason."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"freight top by {user}"


def token_is_read_only(address: str) -> bool:
    """Whether the token this process would send to ``address`` is the cluster's read-only one,
    as far as this machine can tell (its session folder's token files, when readable)."""
    try:
        target = access.resolve(address)
    except (ConnectionError, PermissionError, ValueError, OSError):
        return False
    if not target.session_dir or not target.token:
        return False
    for name, derive in ((READONLY_TOKEN_FILE, False), (TOKEN_FILE, True)):
        try:
            with open(os.path.join(target.session_dir, name), encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return target.token == (readonly_token(text) if derive else text)
    return False


# -- running an action ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one id: ``status`` is done, refused (the cluster said no, and why) or
    failed (it could not be asked)."""

    target: str
    status: str
    message: str


@dataclass
class Progress:
    """What a :class:`Run` took since the last ``take()``: the outcomes, and whether it ended."""

    outcomes: list[Outcome] = field(default_factory=list)
    finished: bool = False


def _outcome(action: Action, target: str, address: str, why: str) -> Outcome:
    try:
        return Outcome(target, "done", action.run(target, why, address))
    except access.AccessDenied as e:
        return Outcome(
            target, "refused", READ_ONLY_REFUSAL if "read-only token" in str(e) else str(e)
        )
    except (access.CommandFailed, access.NotFound, access.UsageError) as e:
        return Outcome(target, "refused", str(e))
    except ConnectionError as e:
        return Outcome(target, "failed", str(e))
    except Exception as e:  # a failure of one id does not stop the others
        return Outcome(target, "failed", f"{type(e).__name__}: {e}")


class Run:
    """A source (:mod:`freight.tui.source`): ``action`` on ``targets``, one after the other in a
    thread of its own; ``take()`` gives the outcomes as they come."""

    def __init__(self, action: Action, targets: list[str], *, address: str) -> None:
        self.action, self.targets, self.address = action, list(targets), address
        self._lock = threading.Lock()
        self._progress = Progress()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Run:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # the ids not yet acted on are left alone

    def take(self) -> Progress:
        with self._lock:
            taken, self._progress = self._progress, Progress(finished=self._progress.finished)
            return taken

    def _run(self) -> None:
        why = reason()
        for target in self.targets:
            if self._stop.is_set():
                break
            outcome = _outcome(self.action, target, self.address, why)
            with self._lock:
                self._progress.outcomes.append(outcome)
        with self._lock:
            self._progress.finished = True


def summary(action: Action, outcomes: list[Outcome]) -> tuple[str, Severity]:
    """The closing notification of a run on many ids, and its severity: which ids were not
    acted on, and why."""
    done = [o for o in outcomes if o.status == "done"]
    other = [o for o in outcomes if o.status != "done"]
    text = f"{action.verb}: {len(done)} of {len(outcomes)} {action.kind} done"
    if other:
        text += "; not done: " + "; ".join(f"{o.target} ({o.status}: {o.message})" for o in other)
    return text, ("information" if not other else "warning" if done else "error")


Severity = Literal["information", "warning", "error"]


def severity(outcome: Outcome) -> Severity:
    return (
        "information"
        if outcome.status == "done"
        else "warning"
        if outcome.status == "refused"
        else "error"
    )


# -- the dialog and the marks ----------------------------------------------------------------


def dialog_text(action: Action, targets: list[str]) -> str:
    noun = action.kind[:-1] if len(targets) == 1 else action.kind
    listed = [f"  {t}" for t in targets[:SHOWN_IDS]]
    if len(targets) > SHOWN_IDS:
        listed.append(f"  ... and {len(targets) - SHOWN_IDS} more")
    return "\n".join(
        [
            f"{action.verb} {len(targets)} {noun}?",
            "",
            *listed,
            "",
            action.does,
            f"Recorded as an OPERATOR_ACTION event, reason: {reason()!r}.",
            "",
            "y / enter: do it      n / esc: leave them",
        ]
    )


class ConfirmScreen(ModalScreen[bool]):
    """Says what will happen to which ids; y or enter confirms, n or esc cancels."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("y,enter", "answer(True)", "do it"),
        Binding("n,escape", "answer(False)", "leave them"),
    ]
    CSS = (
        "ConfirmScreen { align: center middle; } "
        "#confirm { width: 90; height: auto; border: thick $warning; padding: 1 2; "
        "background: $surface; }"
    )

    def __init__(self, action: Action, targets: list[str]) -> None:
        super().__init__()
        self.action, self.targets = action, targets

    def compose(self) -> ComposeResult:
        yield Static(Content(dialog_text(self.action, self.targets)), id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def marked(cells: tuple[str, ...]) -> list[Text]:
    """A marked row's cells, as the table shows them."""
    return [Text(c, style=MARK_STYLE) for c in cells]


def help_lines(kind_actions: dict[str, list[Action]], read_only: bool) -> str:
    """The help screen's lines for marks and actions (none when read-only)."""
    lines = ["  space    mark / unmark the row (actions apply to the marked rows)"]
    if read_only:
        return "\n".join([*lines, "  (read-only: no action on the cluster is offered)"])
    for kind, acts in kind_actions.items():
        keys = ", ".join(f"{a.key} {a.verb}" for a in acts)
        lines.append(f"  {kind:<8} {keys} (after a confirmation)")
    return "\n".join(lines)


# -- the app's side: marks, the action keys, read-only ----------------------------------------

# The app's keys that work on the table's rows, and those of them a row's detail keeps.
TABLE_KEYS = frozenset(
    ("act", "jump", "toggle_mark", "trace", "logs", "failures", "sort", "reverse", "raw",
     "copy_id", "filter", "describe", "next_page", "previous_page")
)  # fmt: skip
DETAIL_KEYS = frozenset(("act", "trace", "logs", "copy_id", "raw"))

BINDINGS: list[Binding] = [
    Binding("space", "toggle_mark", "mark"),
    *(Binding(a.key, f"act('{a.name}')", a.verb) for a in ACTIONS),
]


class Screenful(App[None]):
    """What the inspector's key handlers below use of :class:`freight.tui.app.TopApp`."""

    address: str
    view: View
    rows: dict[str, dict[str, Any]]
    shown: dict[str, tuple[str, ...]]
    marks: set[str]  # the ids marked (space) in the view, cleared when the view changes
    read_only: bool

    @property
    def table(self) -> DataTable[str]:
        raise NotImplementedError

    def source(self, name: str, make: Callable[[], S]) -> S:
        raise NotImplementedError

    def open_view(self, view: View, *, remember: bool = True) -> None:
        raise NotImplementedError

    def render_status(self) -> None:
        raise NotImplementedError

    # Where esc from a jump puts the cursor back: the view jumped from, and the row.
    come_back: tuple[View, str] | None = None

    def return_cursor(self, changes: dict[str, Any]) -> None:
        """Back in the view a jump left, the cursor on the row it left from, once listed."""
        if self.come_back is None:
            return
        view, key = self.come_back
        if self.view == view and key in changes and key in self.shown:
            self.table.move_cursor(row=self.table.get_row_index(key))
            self.come_back = None

    def cursor_key(self) -> str | None:
        """The id of the row under the cursor (None: the table is empty)."""
        table = self.table
        if not self.shown or table.cursor_row < 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


class Acting(Screenful):
    """Marks and actions, mixed into :class:`freight.tui.app.TopApp`."""

    def paint_mark(self, key: str) -> None:
        """Draw the row ``key`` as marked or not, as ``self.marks`` says."""
        cells = self.shown.get(key)
        if cells is None:
            return
        shown: list[Any] = marked(cells) if key in self.marks else list(cells)
        for i, cell in enumerate(shown):
            self.table.update_cell(key, str(i), cell)

    def rows_changed(self, changes: dict[str, Any]) -> None:
        """After the table applied ``changes`` (by id)."""
        self.repaint_marks(changes)
        self.return_cursor(changes)

    def repaint_marks(self, changes: dict[str, Any]) -> None:
        """After rows changed: the marked ones among them drawn as marked again; a marked row
        that left the view is no longer marked."""
        for key, row in changes.items():
            if key not in self.marks:
                continue
            if row is None:
                self.marks.discard(key)
            else:
                self.paint_mark(key)

    def action_toggle_mark(self) -> None:
        key = self.cursor_key()
        if key is None:
            return
        self.marks.symmetric_difference_update({key})
        self.paint_mark(key)
        row = self.table.cursor_row
        if row + 1 < self.table.row_count:
            self.table.move_cursor(row=row + 1)  # as k9s: mark the next one with the next space
        self.render_status()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Show (and run) only the current view's actions and jumps; no action when read-only.
        Over the table (the overview, a detail) the table's keys are off: they would act on
        rows not on screen. A detail keeps those that concern the row it describes."""
        if action in TABLE_KEYS and len(self.screen_stack) > 1:
            from .app import DetailScreen

            if not (isinstance(self.screen, DetailScreen) and action in DETAIL_KEYS):
                return False
        if action == "act":
            a = BY_NAME.get(str(parameters[0]))
            return a is not None and a.kind == self.view.kind and not self.read_only
        if action == "jump":
            from .jumps import find

            jump = find(self.view.kind, str(parameters[0]))
            return jump is not None and jump.name == parameters[1]
        if action == "trace":  # t on a task: its trace; elsewhere t is a jump to tasks
            return self.view.kind == "tasks"
        return True

    def on_key(self, event: Any) -> None:
        """An action key in a read-only inspector: say why nothing happens."""
        if self.read_only and any(a.key == event.key for a in for_view(self.view.kind)):
            event.stop()
            self.notify("read-only: no action on the cluster is offered", timeout=4)

    def action_act(self, name: str) -> None:
        action = BY_NAME[name]
        if self.read_only:  # a key typed before the bindings were refreshed
            self.notify("read-only: no action on the cluster is offered", timeout=4)
            return
        key = self.cursor_key()
        targets = [k for k in self.shown if k in self.marks] or ([key] if key else [])
        if not targets:
            self.notify(f"no {action.kind} to {action.verb}: the view is empty", timeout=4)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.start_run(action, targets)

        self.push_screen(ConfirmScreen(action, targets), answered)

    def start_run(self, action: Action, targets: list[str]) -> None:
        run = self.source(
            f"action {action.name} {' '.join(targets)}",
            lambda: Run(action, targets, address=self.address),
        )
        outcomes: list[Outcome] = []
        for key in [k for k in targets if k in self.marks]:  # acted on: no longer marked
            self.marks.discard(key)
            self.paint_mark(key)
        self.render_status()

        def poll() -> None:
            progress = run.take()
            for o in progress.outcomes:
                outcomes.append(o)
                if len(targets) <= NOTIFIED_ONE_BY_ONE:
                    self.notify(f"{action.verb}: {o.status}: {o.message}", severity=severity(o))
                if o.message == READ_ONLY_REFUSAL and not self.read_only:
                    self.read_only = True  # the token may only read: hide the action keys
                    self.refresh_bindings()
                    self.render_status()
            if progress.finished:
                timer.stop()
                if len(targets) > 1:
                    text, level = summary(action, outcomes)
                    self.notify(text, severity=level, timeout=10)

        timer: Timer = self.set_interval(0.1, poll)


def more_help(read_only: bool) -> str:
    """The help screen's lines for marks, actions and jumps."""
    from .jumps import help_lines as jump_lines

    acts: dict[str, list[Action]] = {}
    for a in ACTIONS:
        acts.setdefault(a.kind, []).append(a)
    return (
        f"marks and actions:\n{help_lines(acts, read_only)}\n\n"
        f"jumps to related rows (esc comes back):\n{jump_lines()}"
    )
