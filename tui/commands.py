"""What the inspector's prompts mean: ``:`` commands with their aliases, and ``/`` filters.

Both are parsed here, without the screen, so they are tested on their own; ``freight top VIEW``
takes the same commands. Filters are passed to the state service as they are typed (it evaluates
them, and refuses a bad one with a message); a word without an operator searches the kind's main
text field as a regular expression.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from freight.core.logs import COMPONENTS, ID_KEYS, Selection
from freight.state import KINDS

from .feed import TEXT_FIELD

# `:name` -> kind; the plural, the singular and k9s-like short forms.
ALIASES: dict[str, str] = {}
for _kind, _short in (
    ("nodes", ("no", "node")),
    ("jobs", ("j", "job")),
    ("tasks", ("t", "task")),
    ("actors", ("a", "actor")),
    ("objects", ("o", "obj", "object")),
    ("workers", ("w", "worker")),
    ("placement_groups", ("pg", "pgs", "placement_group", "placementgroups")),
    ("events", ("ev", "event")),
):
    ALIASES[_kind] = _kind
    for _name in _short:
        ALIASES[_name] = _kind
# Screens of their own over the table view, not kinds: `:overview`, `:logs task_id=..`,
# `:traces TASK_ID`.
ALIASES.update(overview="overview", ov="overview")
ALIASES.update(logs="logs", log="logs", l="logs")
ALIASES.update(traces="traces", trace="traces", tr="traces")
SCREENS = ("overview", "logs", "traces")
QUIT = ("q", "quit", "q!")

_HAS_OP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|!=|!~|==|=|~|>|<)")
# `!field=value` and `!field~re`: the rows that do not match (the state API's != and !~).
_NEGATE = {"=": "!=", "==": "!=", "~": "!~", "!=": "=", "!~": "~"}


class Command(NamedTuple):
    """A parsed ``:`` command: open ``kind`` with ``filters``, or quit. For the screens of
    :data:`SCREENS`, ``filters`` are their arguments: ``logs`` its ids and component as
    ``key=value`` (:func:`selection` reads them), ``traces`` the task id."""

    kind: str
    filters: list[str]
    quit: bool = False


class CommandError(ValueError):
    """A command the inspector does not know; the message says what it knows."""


def parse_filters(kind: str, text: str) -> list[str]:
    """The state-API filters of a ``/`` line: ``field=value`` (any operator of the state API)
    as it is, a bare word as a regular expression on the kind's main text field. A leading
    ``!`` inverts: ``!word`` is ``TEXTFIELD!~word``, ``!field=value`` is ``field!=value``,
    ``!field~re`` is ``field!~re`` (the head evaluates them as any other filter)."""
    out = []
    for word in text.split():
        negate = word.startswith("!") and len(word) > 1
        body = word[1:] if negate else word
        found = _HAS_OP.match(body)
        if not found:
            out.append(f"{TEXT_FIELD[kind]}{'!~' if negate else '~'}{body}")
        elif negate and found.group(1) in _NEGATE:
            op = found.group(1)
            out.append(f"{body[: found.start(1)]}{_NEGATE[op]}{body[found.end(1) :]}")
        else:
            out.append(word)  # !attempt>0 and the like: the head says what it cannot parse
    return out


def parse_command(text: str) -> Command:
    """``tasks``, ``actors state=ALIVE``, ``q``: what a ``:`` line asks for."""
    words = text.strip().split(maxsplit=1)
    if not words:
        raise CommandError("type a view (:tasks, :actors state=ALIVE) or :q to quit")
    name = words[0].lower()
    if name in QUIT:
        return Command("", [], quit=True)
    kind = ALIASES.get(name)
    if kind is None:
        raise CommandError(
            f"unknown command {words[0]!r}: open a view with :{', :'.join(KINDS)} "
            "(optionally followed by filters), :overview, :logs, :traces TASK_ID, or :q to "
            "quit; ? lists the keys"
        )
    rest = words[1].split() if len(words) > 1 else []
    if kind == "overview" and rest:
        raise CommandError(f"the overview takes no filters, got {words[1]!r}; type :overview")
    if kind == "logs":
        return Command(kind, selection_words(selection(rest)))
    if kind == "traces":
        return Command(kind, [trace_task(rest)])
    return Command(kind, parse_filters(kind, " ".join(rest)))


def selection(words: list[str]) -> Selection:
    """The ids and component of ``:logs task_id=ab12 component=worker``; a CommandError saying
    what is accepted otherwise."""
    ids: dict[str, str] = {}
    component = None
    for word in words:
        key, eq, value = word.partition("=")
        key = key.lower()
        if key != "component" and not key.endswith("_id"):
            key += "_id"  # task=ab12 as task_id=ab12
        if not eq or not value or key not in ("component", *ID_KEYS):
            raise CommandError(
                f"{word!r}: logs are filtered by {'=.., '.join(ID_KEYS)}=.. or "
                f"component={'|'.join(COMPONENTS)} (:logs task_id=ab12)"
            )
        if key == "component":
            component = value
        else:
            ids[key] = value
    try:
        return Selection.checked(ids, component)
    except ValueError as e:
        raise CommandError(str(e).replace("--", "")) from None


def selection_words(sel: Selection) -> list[str]:
    """``sel`` as :func:`selection` reads it: ``["task_id=ab12", "component=worker"]``."""
    words = [f"{k}={v}" for k, v in sel.ids.items()]
    return words + ([f"component={sel.component}"] if sel.component else [])


def trace_task(words: list[str]) -> str:
    """The task id of ``:traces TASK_ID`` (or ``:traces task_id=..``, as its source is named)."""
    if len(words) != 1:
        raise CommandError("give one task id: :traces TASK_ID (or press t on a task row)")
    key, eq, value = words[0].partition("=")
    if eq and (key.lower() not in ("task", "task_id") or not value):
        raise CommandError(f"{words[0]!r}: a trace is a task's: :traces TASK_ID")
    return value if eq else words[0]
