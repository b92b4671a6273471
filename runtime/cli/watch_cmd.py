"""`freight list KIND --watch` and `freight events --follow`: live views over ``freight.state.watch``.

``list --watch`` prints the table of the rows as they are, then one line per change (ADDED,
MODIFIED, DELETED) in the table's columns; as JSON, one object per line (``type``, ``row``,
``cursor``). When the head asks the watcher to list again (it restarted, or this terminal fell
too far behind) a note says so and the table comes again. ``events --follow`` prints each new
event as it is recorded. Both run until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from freight import state
from freight.client import access

from . import common

SEEN_EVENTS = 20_000  # event ids remembered, so a listing again repeats none already shown


def _print(line: str) -> None:
    print(line, flush=True)


def cmd_list_watch(args: argparse.Namespace) -> int:
    """The handler of ``freight list KIND --watch``."""
    from freight.cli.state_cmd import COLUMNS, _cell

    fmt = common.chosen(args)
    columns = COLUMNS.get(state._kind(args.kind), [])
    widths = [max(len(title), 16) for title, _, _ in columns]  # ids cut to 12, states to 16

    def cells(row: dict[str, Any]) -> str:
        shown = (_cell(row, key, how) for _, key, how in columns)
        return "  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip()

    listing: list[dict[str, Any]] = []
    synced = False
    try:
        address = common.target(args)
        for ev in state.watch(args.kind, args.filter or None, address=address):
            if common.is_structured(fmt):
                _print(json.dumps({"type": ev.type, "row": ev.row, "cursor": ev.cursor}))
            elif ev.type == state.RESYNC:
                _print(f"note: {ev.message}; listing again")
                listing, synced = [], False
            elif ev.type == state.SYNCED:
                _print(
                    "         "
                    + "  ".join(t.ljust(w) for (t, _, _), w in zip(columns, widths, strict=True))
                )
                for row in listing:
                    _print(f"{'':9}{cells(row)}")
                listing, synced = [], True
            elif not synced:
                listing.append(ev.row or {})
            else:
                _print(f"{ev.type:<9}{cells(ev.row or {})}")
    except KeyboardInterrupt:
        return 0
    return 0


def follow_events(
    address: str | access.Target | None,
    filters: list[tuple[str, str, str]],
    shown: list[dict[str, Any]],
    render: Callable[[list[dict[str, Any]], str], None],
    fmt: str,
) -> None:
    """Print each new event as the head records it, until interrupted. Events already
    ``shown`` (and, after a listing again, every event printed before) are not repeated;
    a listing's older events are not printed either."""
    seen: OrderedDict[str, None] = OrderedDict((r["event_id"], None) for r in shown)
    since = max((float(r["time"]) for r in shown), default=0.0)
    synced = False
    for ev in state.watch("events", filters, address=address):
        if ev.type == state.RESYNC:
            synced = False
            continue
        if ev.type == state.SYNCED:
            synced = True
            continue
        row = ev.row or {}
        if ev.type != state.ADDED or row.get("event_id") in seen:
            continue
        if not synced and float(row.get("time", 0)) < since:
            continue  # older than what was shown: part of the listing, not news
        seen[row["event_id"]] = None
        if len(seen) > SEEN_EVENTS:
            seen.popitem(last=False)
        since = max(since, float(row.get("time", 0)))
        render([row], fmt)
        sys.stdout.flush()
