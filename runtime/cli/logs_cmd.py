"""`freight logs`: the JSON-lines logs of a cluster's processes on this machine, filtered by ids.

Every head, agent and worker writes ``<session>/logs/<name>.log`` (see
:mod:`freight.observe.logging`); each line carries the ids that applied when it was logged.
This command merges the files by time, keeps the lines whose ids start with the prefixes given,
and prints them as text on a terminal and as JSON lines when piped. ``--follow`` keeps reading
every matching file, including files created later (new workers), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import glob
import heapq
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from freight import _launcher
from freight.client import access

from . import common

ID_FLAGS = ("job", "task", "actor", "node", "worker")
COMPONENTS = ("head", "agent", "worker")
POLL_S = 0.25
CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")
_NOT_EXTRA = {"component", *(f"{k}_id" for k in ID_FLAGS), "trace_id", "span_id"}


class LogFile:
    """One log file read incrementally: complete lines since the last read, across renames."""

    def __init__(self, path: str, inode: int) -> None:
        self.path = path
        self.inode = inode
        self.offset = 0
        self.partial = b""
        name = os.path.basename(path)
        self.component = next((c for c in COMPONENTS if name.startswith(c)), "")

    def lines(self) -> Iterator[bytes]:
        """The complete lines written since the last call (reads up to the current end)."""
        try:
            with open(self.path, "rb") as f:
                end = os.fstat(f.fileno()).st_size
                if end < self.offset:  # truncated: start over
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                while self.offset < end:
                    data = f.read(min(CHUNK, end - self.offset))
                    if not data:
                        break
                    self.offset += len(data)
                    *complete, self.partial = (self.partial + data).split(b"\n")
                    yield from complete
        except FileNotFoundError:
            return


def parse(line: bytes, component: str) -> dict[str, Any] | None:
    """One loguru JSON line as a flat record, or None if it is not one."""
    try:
        doc = json.loads(line)
        rec = doc["record"]
        extra = dict(rec.get("extra") or {})
        out: dict[str, Any] = {
            "timestamp": float(rec["time"]["timestamp"]),
            "level": rec["level"]["name"],
            "component": extra.get("component") or component,
            "message": rec["message"],
        }
    except (ValueError, KeyError, TypeError):
        return None
    for key in (*(f"{k}_id" for k in ID_FLAGS), "trace_id", "span_id"):
        if extra.get(key):
            out[key] = str(extra[key])
    out["pid"] = (rec.get("process") or {}).get("id")
    rest = {k: v for k, v in extra.items() if k not in _NOT_EXTRA}
    if rest:
        out["extra"] = rest
    if rec.get("exception"):
        text = str(doc.get("text", ""))
        out["exception"] = text.split("\n", 1)[1].rstrip() if "\n" in text else ""
    return out


class Selection:
    """Which records to show: id prefixes and a component."""

    def __init__(self, ids: dict[str, str], component: str | None) -> None:
        self.ids = ids
        self.component = component
        self.needles = [v.encode() for v in ids.values()]

    def wants_file(self, log: LogFile) -> bool:
        if self.component and log.component != self.component:
            return False
        worker = self.ids.get("worker_id")
        if worker and log.component == "worker":
            return os.path.basename(log.path).startswith(f"worker-{worker}"[:23])
        return True

    def records(self, log: LogFile) -> Iterator[dict[str, Any]]:
        for line in log.lines():
            # Ids are hex: a line that does not contain the prefix cannot match it.
            if not line or any(n not in line for n in self.needles):
                continue
            rec = parse(line, log.component)
            if rec is not None and self.matches(rec):
                rec["file"] = os.path.basename(log.path)
                yield rec

    def matches(self, rec: dict[str, Any]) -> bool:
        if self.component and rec["component"] != self.component:
            return False
        return all(str(rec.get(k, "")).startswith(v) for k, v in self.ids.items())


def discover(logs_dir: str, known: dict[int, LogFile]) -> list[LogFile]:
    """Track every ``*.log`` file of the folder (by inode, so a rotated file is not re-read);
    return the files seen for the first time."""
    new = []
    for path in sorted(glob.glob(os.path.join(logs_dir, "*.log"))):
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            continue
        log = known.get(inode)
        if log is None:
            known[inode] = log = LogFile(path, inode)
            new.append(log)
        log.path = path
    return new


def render_text(rec: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(rec["timestamp"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    # Task ids share their owner's prefix: show them whole; the others are unique early.
    ids = " ".join(
        f"{k}={rec[f'{k}_id'] if k == 'task' else str(rec[f'{k}_id'])[:12]}"
        for k in ID_FLAGS
        if rec.get(f"{k}_id")
    )
    text = f"{when} {rec['level']:<8} {rec['component']:<6} {ids + ' ' if ids else ''}| "
    text += rec["message"]
    if rec.get("exception"):
        text += "\n" + rec["exception"]
    return text


def render_json(rec: dict[str, Any]) -> str:
    out = {"time": datetime.fromtimestamp(rec["timestamp"]).astimezone().isoformat(), **rec}
    return json.dumps(out, default=str)


def session_for(args: argparse.Namespace) -> str:
    """The session directory to read: ``--session-dir``, else the local folder of the cluster
    the command line names (:func:`freight.client.access.resolve`); with no cluster named and
    none running, the newest session `freight start` left on this machine, whose logs are what
    is left to read after a crash. Raises :class:`UsageError` or ``ConnectionError`` saying why
    there is none."""
    if args.session_dir:
        if not os.path.isdir(os.path.join(args.session_dir, "logs")):
            raise access.UsageError(
                f"{args.session_dir} is not a freight session directory (no logs/)"
            )
        return str(args.session_dir)
    try:
        target = common.target(args)
    except access.ClusterNotFound:
        found = _launcher.latest_session()
        if not found or not os.path.isdir(os.path.join(found, "logs")):
            raise
        return found
    if not target.session_dir:
        raise access.CommandFailed(
            f"no session on this machine belongs to the cluster at {target.address}; "
            "`freight logs` reads the log files of the processes on this machine "
            "(run it on the node, or pass --session-dir DIR)"
        )
    return target.session_dir


def selection_for(args: argparse.Namespace) -> Selection:
    """The filters of the command line, or raise ``ValueError`` saying which one is wrong."""
    ids: dict[str, str] = {}
    for flag in ID_FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        value = value.strip().lower()
        if not _HEX.fullmatch(value):
            raise ValueError(
                f"--{flag} expects a hex id or id prefix (as `freight list` shows them), "
                f"not {getattr(args, flag)!r}"
            )
        ids[f"{flag}_id"] = value
    if args.tail < 0:
        raise ValueError(f"--tail must be 0 (everything) or more, not {args.tail}")
    return Selection(ids, args.component)


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        selection = selection_for(args)
    except ValueError as e:
        raise access.UsageError(str(e)) from None
    session_dir = session_for(args)
    fmt = args.output or "text"
    render = render_text if fmt == "text" else render_json
    logs_dir = os.path.join(session_dir, "logs")
    known: dict[int, LogFile] = {}
    files = [f for f in discover(logs_dir, known) if selection.wants_file(f)]
    merged = heapq.merge(*(selection.records(f) for f in files), key=lambda r: r["timestamp"])
    shown: Any = deque(merged, maxlen=args.tail) if args.tail else merged
    try:
        for rec in shown:
            print(render(rec))
        sys.stdout.flush()
        if args.follow:
            follow(logs_dir, known, selection, render)
    except KeyboardInterrupt:
        return 0
    return 0


def follow(logs_dir: str, known: dict[int, LogFile], selection: Selection, render: Any) -> None:
    """Print new matching lines of every log file (new files too) until interrupted."""
    while True:
        time.sleep(POLL_S)  # polling files: nothing to wait on but time
        discover(logs_dir, known)
        batch = [
            rec
            for log in list(known.values())
            if selection.wants_file(log)
            for rec in selection.records(log)
        ]
        for inode in [i for i, log in known.items() if not os.path.exists(log.path)]:
            del known[inode]  # removed by retention
        if batch:
            batch.sort(key=lambda r: r["timestamp"])
            for rec in batch:
                print(render(rec))
            sys.stdout.flush()


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="log lines of the cluster's processes on this machine, filtered by id",
        description=(
            "The JSON-lines logs of a cluster's processes on this machine, filtered by ids.\n\n"
            "Every head, agent and worker writes <session>/logs/<name>.log; each line carries\n"
            "the ids that applied when it was logged. This command merges the files by time,\n"
            "keeps the lines whose ids start with the prefixes given, and prints them as text\n"
            "on a terminal and as JSON lines when piped. --follow keeps reading every matching\n"
            "file, including files created later (new workers), until Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in ID_FLAGS:
        p.add_argument(f"--{flag}", default=None, metavar="ID", help=f"{flag} id or prefix")
    p.add_argument("--component", choices=COMPONENTS, default=None, help="only this process kind")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
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
    p.add_argument("--session-dir", default=None, help="read this session directory's logs")
    p.set_defaults(func=cmd_logs)
