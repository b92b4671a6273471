"""`freight top`: the terminal inspector (:mod:`freight.tui`), a live keyboard-first view."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from freight.client import access

from . import common


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"give a positive number of seconds, got {text!r}")
    return value


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"give the Jaeger query service's URL, as http://HOST:16686, got {text!r}"
        )
    return text.strip().rstrip("/")


def cmd_top(args: argparse.Namespace) -> int:
    from freight.tui.app import TopApp, View, id_keys
    from freight.tui.commands import CommandError, parse_command

    try:
        first = parse_command(args.view) if args.view else None
    except CommandError as e:
        raise access.UsageError(str(e)) from None
    target = common.target(args)
    keys = id_keys(target.address)  # the head answers, or the command ends here with why
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise access.UsageError(
            "freight top needs a terminal; in a script, use 'freight status' or "
            "'freight list KIND --watch'"
        )
    view = View(first.kind, tuple(first.filters)) if first and not first.quit else None
    TopApp(
        target.address,
        keys,
        view=view,
        read_only=args.read_only,
        refresh=args.refresh,
        traces=args.traces or "",
    ).run()
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="the terminal inspector: live views of nodes, jobs, tasks, actors, events...",
        description="A live, keyboard-first view of the cluster (k9s keys): ':' opens a view "
        "(:tasks, :actors state=ALIVE), '/' filters it, enter describes a row, esc goes back, "
        "'?' lists the keys, q quits.",
    )
    common.add_address_option(p)
    p.add_argument(
        "view",
        nargs="?",
        default="",
        metavar="VIEW",
        help="the first view, as after ':' (default: tasks); quote filters: 'actors state=ALIVE'",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="inspect only: no action on the cluster is offered",
    )
    p.add_argument(
        "--refresh",
        type=_positive,
        default=1.0,
        metavar="S",
        help="seconds between two repaints and two checks that the head answers (default 1)",
    )
    p.add_argument(
        "--traces",
        type=_http_url,
        default=None,
        metavar="URL",
        help="a Jaeger query service (http://host:16686): a task's trace view shows its spans "
        "from there; without it, the task's state transitions",
    )
    p.set_defaults(func=cmd_top)
