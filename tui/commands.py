"""What the inspector's prompts mean: ``:`` commands with their aliases, and ``/`` filters.

Both are parsed here, without the screen, so they are tested on their own. Filters are passed to
the state service as they are typed (it evaluates them, and refuses a bad one with a message);
a word without an operator searches the kind's main text field as a regular expression.
"""

from __future__ import annotations

import re
from typing import NamedTuple

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
QUIT = ("q", "quit", "q!")

_HAS_OP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|!=|==|=|~|>|<)")


class Command(NamedTuple):
    """A parsed ``:`` command: open ``kind`` with ``filters``, or quit."""

    kind: str
    filters: list[str]
    quit: bool = False


class CommandError(ValueError):
    """A command the inspector does not know; the message says what it knows."""


def parse_filters(kind: str, text: str) -> list[str]:
    """The state-API filters of a ``/`` line: ``field=value`` (any operator of the state API)
    as it is, a bare word as a regular expression on the kind's main text field."""
    out = []
    for word in text.split():
        out.append(word if _HAS_OP.match(word) else f"{TEXT_FIELD[kind]}~{word}")
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
            "(optionally followed by filters), :logs, :traces TASK_ID, or :q to quit; "
            "? lists the keys"
        )
    return Command(kind, parse_filters(kind, words[1] if len(words) > 1 else ""))
