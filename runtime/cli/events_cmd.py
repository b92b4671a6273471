"""`freight events`: the cluster's events (node joined/dead, worker crashed, ...) from the head.

Events are read through the state service (``StateService.List`` with kind ``events``) and shown
oldest first, or as JSON (one list, or with --follow one event per line); ``--since`` and
``--filter`` narrow them on the head. --follow then prints
each new event as the head records it (a watch of the state service), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from freight.client import access
from freight.core.events import KINDS, SEVERITIES
from freight.core.filters import normalize, parse_time

from . import common

COLUMNS = ("time", "severity", "source", "kind", "message", "ids")
ID_KEYS = ("node_id", "job_id", "actor_id", "worker_id", "task_id")
_BASE = {"event_id", "time", "severity", "source", "kind", "message"}


class EventsPage(NamedTuple):
    """What :func:`fetch_events` found: rows newest first, and how many matched in all."""

    rows: list[dict[str, Any]]
    matched: int
    dropped: int  # events evicted by the head's retention, ever
    warnings: list[str]


def severity_filter(severity: str) -> tuple[str, str, str]:
    """The filter keeping events of ``severity`` or above (``severity~^(WARNING|ERROR)$``)."""
    at_least = SEVERITIES[SEVERITIES.index(severity) :]
    return ("severity", "~", f"^({'|'.join(at_least)})$")


def fetch_events(
    target: access.Target, filters: Sequence[tuple[str, str, str]], limit: int
) -> EventsPage:
    """The newest ``limit`` events passing ``filters`` (key, op, value), newest first, paged
    through :func:`freight.state.list_state`.

    Raises what :func:`freight.client.access.rpc_error` maps a failed call to.
    """
    from freight import state

    rows = state.list_state(
        "events", list(filters), limit=limit, newest_first=True, address=target, timeout=10
    )
    # "showing the newest N of M" says it in the command's words.
    warnings = [w for w in rows.warnings if not w.startswith("truncated")]
    return EventsPage(list(rows), rows.matched, rows.dropped, warnings)


def _when(row: dict[str, Any]) -> str:
    return datetime.fromtimestamp(float(row["time"])).strftime("%Y-%m-%d %H:%M:%S")


def _ids(row: dict[str, Any]) -> str:
    parts = [f"{k.removesuffix('_id')}={str(row[k])[:12]}" for k in ID_KEYS if row.get(k)]
    parts += [f"{k}={v}" for k, v in row.items() if k not in _BASE and k not in ID_KEYS and v]
    return " ".join(parts)


def render(rows: list[dict[str, Any]], fmt: str) -> None:
    """Print events (in the order given) as a table, or one JSON (or YAML) document each (what
    ``--follow`` streams)."""
    if common.is_structured(fmt):
        for row in rows:
            if fmt == "json":
                common.dump_line(row)
            else:
                common.dump([row], fmt)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    colors = {"ERROR": "red", "WARNING": "yellow", "DEBUG": "dim"}
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows:
        color = colors.get(row["severity"], "")
        severity = f"[{color}]{row['severity']}[/]" if color else row["severity"]
        cells = (_when(row), row["source"], row["kind"], row["message"], _ids(row))
        table.add_row(cells[0], severity, *(escape(c) for c in cells[1:]))
    common.console().print(table)


def cmd_events(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise access.UsageError(f"--limit must be at least 1, not {args.limit}")
    target = common.target(args)
    filters: list[tuple[str, str, str]] = []
    if args.severity:
        filters.append(severity_filter(args.severity))
    if args.kind:
        filters.append(("kind", "=", args.kind))
    if args.since:
        filters.append(("time", ">=", repr(parse_time(args.since))))
    for text in args.filter or ():
        f = normalize(text)
        filters.append((f.key, f.op, f.value))
    fmt = common.chosen(args)
    page = fetch_events(target, filters, args.limit)
    notes = list(page.warnings)
    if page.matched > len(page.rows):
        notes.append(
            f"showing the newest {len(page.rows)} of {page.matched} matching events "
            "(--limit N to see more)"
        )
    if page.dropped:
        notes.append(f"{page.dropped} older events were evicted (FREIGHT_EVENTS_MAX)")
    if common.is_structured(fmt) and not args.follow:
        items = page.rows[::-1]
        common.dump(
            common.envelope(
                "events", items, matched=page.matched, dropped=page.dropped, warnings=notes
            ),
            fmt,
        )
        return 0
    render(page.rows[::-1], fmt)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.flush()
    if args.follow:
        from freight.cli.watch_cmd import follow_events

        try:
            follow_events(target, filters, page.rows, render, fmt)
        except KeyboardInterrupt:
            return 0
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "events",
        help="cluster events: nodes joined/dead, workers crashed, jobs started/finished, ...",
        description=(
            "The cluster's events (node joined/dead, worker crashed, ...) from the head.\n\n"
            "Events are read through the head's state service and shown oldest first (-o json\n"
            "or yaml: one list). --follow then prints each new event as the head records it,\n"
            "until Ctrl-C (-o json: one JSON document per line). Actions people took (cancel,\n"
            "kill, drain, stop) are OPERATOR_ACTION events naming the role, caller and reason."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--severity",
        type=str.upper,
        choices=SEVERITIES,
        default=None,
        help="only events of this severity or above",
    )
    p.add_argument(
        "--kind",
        type=str.upper,
        choices=sorted(KINDS),
        default=None,
        metavar="KIND",
        help="only events of this kind: " + ", ".join(sorted(KINDS)),
    )
    p.add_argument(
        "--since", default=None, metavar="TIME", help="only events since: -5m, 2h, ISO-8601, unix"
    )
    p.add_argument("--filter", action="append", metavar="KEY=VALUE",
                   help="keep events matching: = != ~(RE2 regex) !~ > < >= <= ; repeatable "
                        "(e.g. action=cancel_task)")  # fmt: skip
    p.add_argument("--limit", type=int, default=100, help="the newest N events (default 100)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    common.add_output_option(p)
    common.add_address_option(p)
    p.set_defaults(func=cmd_events)
