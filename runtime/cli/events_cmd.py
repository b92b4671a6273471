"""`freight events`: the cluster's events (node joined/dead, worker crashed, ...) from the head.

Events are read through the state service (``StateService.List`` with kind ``events``) and shown
oldest first: a table on a terminal, JSON lines when piped. ``--follow`` then prints each new
event as the head records it (a watch of the state service), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from freight.head.events import KINDS, SEVERITIES

PAGE = 10_000  # rows per List call: the state service's largest page
COLUMNS = ("time", "severity", "source", "kind", "message", "ids")
ID_KEYS = ("node_id", "job_id", "actor_id", "worker_id", "task_id")
_BASE = {"event_id", "time", "severity", "source", "kind", "message"}


class EventsError(Exception):
    """The head could not answer; ``code`` is the exit code to use."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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
    address: str, token: str, filters: Sequence[tuple[str, str, str]], limit: int
) -> EventsPage:
    """The newest ``limit`` events passing ``filters`` (key, op, value), newest first.

    The state service pages oldest first, so this reads every page and keeps the last rows.
    Raises :class:`EventsError` when the head cannot answer.
    """
    import grpc

    from freight.protocol.generated import freight_pb2 as pb
    from freight.protocol.generated import freight_pb2_grpc as pb_grpc
    from freight.util.grpc_auth import sync_channel

    kept: deque[dict[str, Any]] = deque(maxlen=limit)
    cursor = ""
    channel = sync_channel(address, token)
    try:
        stub = pb_grpc.StateServiceStub(channel)
        while True:
            request = pb.ListStateRequest(
                kind="events",
                filters=[pb.Filter(key=k, op=op, value=v) for k, op, v in filters],
                limit=PAGE,
                cursor=cursor,
            )
            reply = stub.List(request, timeout=10)
            kept.extend(json.loads(r) for r in reply.rows)
            if not reply.next_cursor:
                break
            cursor = reply.next_cursor
    except grpc.RpcError as e:
        raise _error(e, address) from None
    finally:
        channel.close()
    warnings = [w for w in reply.warnings if not w.startswith("truncated")]
    return EventsPage(list(reversed(kept)), reply.matched, reply.dropped, warnings)


def _error(e: Any, address: str) -> EventsError:
    import grpc

    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return EventsError(str(details), 2)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return EventsError(f"the head at {address} does not serve the state API")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return EventsError(
            f"the head at {address} refused the token; set FREIGHT_TOKEN to the cluster's "
            "token (the 'token' file in the head's session directory)"
        )
    name = code.name if code is not None else "error"
    return EventsError(f"cannot read events from the head at {address} ({name}: {details})")


def _when(row: dict[str, Any]) -> str:
    return datetime.fromtimestamp(float(row["time"])).strftime("%Y-%m-%d %H:%M:%S")


def _ids(row: dict[str, Any]) -> str:
    parts = [f"{k.removesuffix('_id')}={str(row[k])[:12]}" for k in ID_KEYS if row.get(k)]
    parts += [f"{k}={v}" for k, v in row.items() if k not in _BASE and k not in ID_KEYS and v]
    return " ".join(parts)


def render(rows: list[dict[str, Any]], fmt: str) -> None:
    """Print events (in the order given) as a table or as JSON lines."""
    if fmt == "json":
        for row in rows:
            print(json.dumps(row))
        return
    from rich.console import Console
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
    Console().print(table)


def cmd_events(args: argparse.Namespace) -> int:
    from freight.cli.status import resolve

    if args.limit < 1:
        print(f"freight events: --limit must be at least 1, not {args.limit}", file=sys.stderr)
        return 2
    try:
        address, token, _ = resolve(args.address)
    except SystemExit as e:
        print(str(e.code).replace("freight:", "freight events:", 1), file=sys.stderr)
        return 2
    filters: list[tuple[str, str, str]] = []
    if args.severity:
        filters.append(severity_filter(args.severity))
    if args.kind:
        filters.append(("kind", "=", args.kind))
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    try:
        page = fetch_events(address, token, filters, args.limit)
        render(page.rows[::-1], fmt)
        for warning in page.warnings:
            print(f"note: {warning}", file=sys.stderr)
        if page.matched > len(page.rows):
            print(
                f"showing the newest {len(page.rows)} of {page.matched} matching events "
                "(--limit N to see more)",
                file=sys.stderr,
            )
        if page.dropped:
            print(
                f"note: {page.dropped} older events were evicted (FREIGHT_EVENTS_MAX)",
                file=sys.stderr,
            )
        sys.stdout.flush()
        if args.follow:
            from freight.cli.watch_cmd import follow_events

            follow_events(address, filters, page.rows, render, fmt)
    except EventsError as e:
        print(f"freight events: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 0
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "events",
        help="cluster events: nodes joined/dead, workers crashed, jobs started/finished, ...",
        description=__doc__,
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
    p.add_argument("--limit", type=int, default=100, help="the newest N events (default 100)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default=None,
        help="a table on a terminal, JSON lines otherwise (default)",
    )
    p.add_argument("--address", default=None, help="head HOST:PORT (default: newest local cluster)")
    p.set_defaults(func=cmd_events)
