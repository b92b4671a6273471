"""`freight top`: the terminal inspector (:mod:`freight.tui`), a live keyboard-first view."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Callable
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


def _url_of(service: str, example: str) -> Callable[[str], str]:
    """An argparse type: an http(s) URL of ``service``, without its trailing slash."""

    def parse(text: str) -> str:
        if not text:
            return ""  # argparse passes the default through here too
        parts = urllib.parse.urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise argparse.ArgumentTypeError(f"give {service}'s URL, like {example}, got {text!r}")
        return text.strip().rstrip("/")

    return parse


def cmd_top(args: argparse.Namespace) -> int:
    # What can be refused is checked before the screen's modules (Textual) are loaded.
    from freight.tui.commands import CommandError, parse_command
    from freight.tui.feed import id_keys

    try:
        first = parse_command(args.view) if args.view else None
    except CommandError as e:
        raise access.UsageError(str(e)) from None
    if args.replay is not None:
        return _replay(args, _options(args, first))
    target = common.target(args)
    keys = id_keys(target.address)  # the head answers, or the command ends here with why
    _need_terminal()
    from freight.tui.actions import token_is_read_only
    from freight.tui.app import TopApp

    kw = _options(args, first)
    # A read-only token hides the action keys as --read-only does (the cluster would refuse them).
    kw["read_only"] = args.read_only or token_is_read_only(target.address)
    kw["alertmanager"] = args.alertmanager
    kw["traces"] = args.traces or ""
    if args.record is None:
        TopApp(target.address, keys, **kw).run()
        return 0
    from freight.tui.record import Recorder, RecordingApp

    try:
        recorder = Recorder(args.record, address=target.address, id_keys=keys)
    except ValueError as e:
        raise access.UsageError(str(e)) from None
    try:
        RecordingApp(recorder, target.address, keys, **kw).run()
    finally:
        recorder.close()
    return 0


def _options(args: argparse.Namespace, first: Any) -> dict[str, Any]:
    """The app's options common to a live view and a replay; ``first``: the parsed VIEW."""
    from freight.tui.app import View

    view = View(first.kind, tuple(first.filters)) if first and not first.quit else None
    return {"view": view, "read_only": args.read_only, "refresh": args.refresh}


def _need_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise access.UsageError(
            "freight top needs a terminal; in a script, use 'freight status' or "
            "'freight list KIND --watch'"
        )


def _replay(args: argparse.Namespace, kw: dict[str, Any]) -> int:
    from freight.tui.replay import RecordingError, ReplayApp, load

    if args.record is not None:
        raise access.UsageError(
            "--record and --replay go apart: a replay shows a recording, it records nothing"
        )
    if args.address is not None:
        raise access.UsageError("--replay needs no cluster: drop --address")
    try:
        recording = load(args.replay)  # every line checked before the screen opens
    except RecordingError as e:
        raise access.UsageError(str(e)) from None
    _need_terminal()
    ReplayApp(recording, **kw).run()
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
        help="the first view, any command typed after ':' (default: tasks); quote filters: "
        "'actors state=ALIVE'; overview: the nodes' meters, rates, SLOs, alerts and events; "
        "'logs task_id=ID': a task's log lines; 'traces ID': a task's timeline",
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
        help="seconds between two repaints, and at least between two listings of a view (default 1)",
    )
    p.add_argument(
        "--alertmanager",
        type=_url_of("Alertmanager", "http://127.0.0.1:9093"),
        default="",
        metavar="URL",
        help="the Alertmanager whose firing alerts the overview shows (default: the one "
        "'freight monitoring up' runs for the cluster, if any)",
    )
    p.add_argument(
        "--record",
        metavar="FILE",
        default=None,
        help="keep what the screens show, as JSON lines (gzip when FILE ends in .gz), for "
        "--replay later",
    )
    p.add_argument(
        "--replay",
        metavar="FILE",
        default=None,
        help="show a recording made with --record (no cluster needed), with a time slider: "
        "< and > step 10 s, p plays or pauses, home and end jump",
    )
    p.add_argument(
        "--traces",
        type=_url_of("the Jaeger query service", "http://HOST:16686"),
        default=None,
        metavar="URL",
        help="a Jaeger query service (http://host:16686): a task's trace view shows its spans "
        "from there; without it, the task's state transitions",
    )
    p.set_defaults(func=cmd_top)
