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


def _url(text: str) -> str:
    if not text:
        return ""  # argparse passes the default through here too
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(
            f"give Alertmanager's base URL, like http://127.0.0.1:9093, got {text!r}"
        )
    return text.rstrip("/")


def cmd_top(args: argparse.Namespace) -> int:
    from freight.tui.actions import token_is_read_only
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
    # A read-only token hides the action keys as --read-only does (the cluster would refuse them).
    read_only = args.read_only or token_is_read_only(target.address)
    TopApp(
        target.address,
        keys,
        view=view,
        read_only=read_only,
        refresh=args.refresh,
        alertmanager=args.alertmanager,
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
        help="the first view, as after ':' (default: tasks); quote filters: 'actors state=ALIVE'; "
        "overview: the nodes' meters, rates, SLOs, alerts and events",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="inspect only: no action on the cluster is offered (as with a read-only token)",
    )
    p.add_argument(
        "--refresh",
        type=_positive,
        default=1.0,
        metavar="S",
        help="seconds between two repaints and two checks that the head answers (default 1)",
    )
    p.add_argument(
        "--alertmanager",
        type=_url,
        default="",
        metavar="URL",
        help="the Alertmanager whose firing alerts the overview shows (default: the one "
        "'freight monitoring up' runs for the cluster, if any)",
    )
    p.set_defaults(func=cmd_top)
