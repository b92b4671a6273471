"""`freight logs`: the JSON-lines logs of a cluster's processes on every node, filtered by ids.

Every head, agent and worker writes ``<session>/logs/<name>.log`` (see
:mod:`freight.observe.logging`) on its own node; each line carries the ids that applied when it
was logged. Every alive node's agent reads its folder with the filters applied there
(``ReadLogs``); this command merges the nodes' lines by time and prints them as text, or as JSON
lines with ``-o json``. ``--follow`` keeps every node's stream open and prints new lines as they
come (from workers started later too, and from nodes that join) until Ctrl-C. A node that does
not answer is named in a warning; the rest is printed and the exit code is 5 (partial).
``--worker ID --process-output`` prints what that worker process wrote to its stdout and stderr
itself (``worker-<id>.out``: a native crash's message, a fatal error, output of C code and child
processes), wherever it ran. ``--session-dir`` reads a folder on this machine instead, e.g. of a
cluster that has stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from freight import _launcher
from freight.client import access
from freight.client.logs import ClusterLogs, render_text
from freight.core.logs import COMPONENTS, ID_FLAGS, Selection, open_reader, output_worker

from . import common

POLL_S = 0.25  # --session-dir --follow: how often the files are read again


def render_json(rec: dict[str, Any]) -> str:
    out = {"time": datetime.fromtimestamp(rec["timestamp"]).astimezone().isoformat(), **rec}
    return json.dumps(out, default=str)


def render_output(rec: dict[str, Any]) -> str:
    return str(rec["message"])


def render_output_json(rec: dict[str, Any]) -> str:
    return json.dumps(rec, default=str)


def selection_for(args: argparse.Namespace) -> Selection:
    """The filters of the command line, or raise ``UsageError`` saying which one is wrong."""
    ids = {f"{flag}_id": getattr(args, flag) for flag in ID_FLAGS if getattr(args, flag)}
    try:
        if args.tail < 0:
            raise ValueError(f"--tail must be 0 (everything) or more, not {args.tail}")
        selection = Selection.checked(ids, args.component)
        if args.process_output:
            output_worker(selection)
        return selection
    except ValueError as e:
        raise access.UsageError(str(e)) from None


def cmd_logs(args: argparse.Namespace) -> int:
    selection = selection_for(args)
    text = (args.output or "text") == "text"
    if args.process_output:
        render = render_output if text else render_output_json
    else:
        render = render_text if text else render_json
    if args.session_dir:
        return local_logs(checked_session_dir(args.session_dir), selection, args, render)
    try:
        target = common.target(args)
    except access.ClusterNotFound:
        # No cluster runs here: what is left to read after a crash is the newest session
        # `freight start` left on this machine.
        found = _launcher.latest_session()
        if not found:
            raise
        return local_logs(found, selection, args, render)
    return cluster_logs(target, selection, args, render)


def checked_session_dir(path: str) -> str:
    if not os.path.isdir(os.path.join(path, "logs")):
        raise access.UsageError(f"{path} is not a freight session directory (no logs/)")
    return path


def _print(records: Any, render: Callable[[dict[str, Any]], str]) -> None:
    for rec in records:
        print(render(rec))
    sys.stdout.flush()


def local_logs(
    session_dir: str, selection: Selection, args: argparse.Namespace, render: Any
) -> int:
    """The logs of one session folder on this machine (a stopped cluster's, say)."""
    reader = open_reader(session_dir, selection, args.process_output)
    try:
        _print(reader.history(args.tail), render)
        while args.follow:
            time.sleep(POLL_S)  # polling files: nothing to wait on but time
            _print(reader.new_records(), render)
    except KeyboardInterrupt:
        pass
    return 0


def cluster_logs(
    target: access.Target, selection: Selection, args: argparse.Namespace, render: Any
) -> int:
    """Every alive node's lines merged by time; with ``--follow``, new lines until Ctrl-C."""
    logs = ClusterLogs(
        target,
        selection,
        tail=args.tail,
        follow=args.follow,
        process_output=args.process_output,
    )
    try:
        _print(logs.history(), render)
        _warn(logs)
        while args.follow:
            _print(logs.poll(), render)
            _warn(logs)
            if logs.ended:  # the cluster stopped, say (kubectl's pod ended)
                print("freight logs: no node is left to follow", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        logs.close()
    return access.EXIT_PARTIAL if logs.warned else 0


def _warn(logs: ClusterLogs) -> None:
    """Name each node whose stream failed, once."""
    for text in logs.warnings():
        print(f"freight logs: warning: {text}", file=sys.stderr, flush=True)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="log lines of the cluster's processes on every node, filtered by id",
        description=(
            "The logs of a cluster's processes on every node, filtered by ids.\n\n"
            "Every head, agent and worker writes <session>/logs/<name>.log on its node; each\n"
            "line carries the ids that applied when it was logged. Each node's agent keeps the\n"
            "lines whose ids start with the prefixes given; this command merges them by time\n"
            "and prints them as text (-o json: one JSON record per line). --follow keeps\n"
            "printing new lines of every node (new workers and nodes too) until Ctrl-C.\n"
            "A node that does not answer is named in a warning, and the command exits with 5.\n"
            "--worker ID --process-output: what that worker wrote to stdout/stderr itself.\n"
            "--session-dir reads a folder on this machine instead (a stopped cluster's)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in ID_FLAGS:
        p.add_argument(f"--{flag}", default=None, metavar="ID", help=f"{flag} id or prefix")
    p.add_argument("--component", choices=COMPONENTS, default=None, help="only this process kind")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument(
        "--process-output",
        action="store_true",
        help="with --worker ID: what the worker process wrote to its stdout/stderr itself "
        "(worker-<id>.out: crash messages, fatal errors, output of C code and child processes)",
    )
    p.add_argument(
        "--tail", type=int, default=1000, help="print the last N matching lines (0: all)"
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default=None,
        metavar="FORMAT",
        help="text (default) or json (one record per line)",
    )
    common.add_address_option(p)
    p.add_argument(
        "--session-dir",
        default=None,
        metavar="DIR",
        help="read this session folder on this machine instead (a stopped cluster's)",
    )
    p.set_defaults(func=cmd_logs)
