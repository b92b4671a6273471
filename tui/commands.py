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
ALIASES.update(overview="overview", ov="overview")  # a screen of its own, not a kind
QUIT = ("q", "quit", "q!")

_HAS_OP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|!=|!~|==|=|~|>|<)")
# `!field=value` and `!field~re`: the rows that do not match (the state API's != and !~).
_NEGATE = {"=": "!=", "==": "!=", "~": "!~", "!=": "=", "!~": "~"}


class Command(NamedTuple):
    """A parsed ``:`` command: open ``kind`` with ``filters``, or quit."""

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
    if kind == "overview" and len(words) > 1:
        raise CommandError(f"the overview takes no filters, got {words[1]!r}; type :overview")
    return Command(kind, parse_filters(kind, words[1] if len(words) > 1 else ""))
