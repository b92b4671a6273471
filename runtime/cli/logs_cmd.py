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
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any

from freight import _launcher
from freight.client import access, agents
from freight.config import settings
from freight.core.logs import (
    COMPONENTS,
    ID_FLAGS,
    Selection,
    by_time,
    last,
    open_reader,
    output_worker,
)
from freight.protocol.generated import freight_pb2 as pb

from . import common

POLL_S = 0.25  # --session-dir --follow: how often the files are read again
NODES_EVERY_S = 5.0  # --follow: how often to look for nodes that joined
QUEUED_REPLIES = 64  # replies held per node before its stream waits for this command
CLOSE_S = 5.0  # how long closing waits for a stream's pump to end
_END = object()


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


class NodeStream:
    """One node's ``ReadLogs`` stream, pumped by a thread into a bounded queue (so a node
    waits for this command rather than this command holding its lines without bound)."""

    def __init__(
        self, agent: agents.Agent, token: str, request: pb.ReadLogsRequest, wake: threading.Event
    ) -> None:
        self.agent = agent
        self.follow = request.follow
        self.replies: queue.Queue[Any] = queue.Queue(QUEUED_REPLIES)
        self.error: BaseException | None = None
        self.done = False
        self.caught_up = False  # every line written before the call has come
        self.closed = False
        self.wake = wake
        self.channel = agents.AgentChannel(agent, token)
        self.call = self.channel.stub.ReadLogs(request)
        self.pump = threading.Thread(
            target=self._pump, daemon=True, name=f"logs-{agent.node_id[:8]}"
        )
        self.pump.start()

    def _pump(self) -> None:
        try:
            for reply in self.call:
                self.replies.put(reply)
                self.wake.set()
        except Exception as e:  # the stream broke (or was cancelled): the reader says why
            self.replies.put(e)
        self.replies.put(_END)
        self.wake.set()

    def _got(self, item: Any) -> list[dict[str, Any]] | None:
        """The records of one queued item; None at the end of the stream."""
        if item is _END:
            self.done = True
            if self.follow and self.error is None:  # a followed stream ends only with its node
                self.error = ConnectionError("its agent ended the stream")
            return None
        if isinstance(item, BaseException):
            self.error = self.error or item
            return []
        self.caught_up = self.caught_up or item.caught_up
        records = [json.loads(r) for r in item.records]
        for rec in records:  # the node whose folder holds the line (the head's lines too)
            rec.setdefault("node_id", item.node_id)
        return records

    def history(self) -> Iterator[dict[str, Any]]:
        """The node's lines written before the call, in time order; stops at its end, or when
        the node stays silent for ``FREIGHT_STATE_AGENT_TIMEOUT_S`` (then :attr:`error` says
        so)."""
        while not self.done:
            try:
                # A node sends a reply at least every half second while it reads its files.
                item = self.replies.get(timeout=settings.state_agent_timeout_s)
            except queue.Empty:
                self.error = TimeoutError(
                    f"nothing came for {settings.state_agent_timeout_s:g} s "
                    "(FREIGHT_STATE_AGENT_TIMEOUT_S)"
                )
                self.close()
                return
            records = self._got(item)
            if records is None:
                return
            yield from records
            if self.caught_up:
                return

    def new_records(self) -> list[dict[str, Any]]:
        """What arrived since the last call (not waiting)."""
        out: list[dict[str, Any]] = []
        while not self.done:
            try:
                item = self.replies.get_nowait()
            except queue.Empty:
                break
            records = self._got(item)
            if records:
                out += records
        return out

    def close(self) -> None:
        """Cancel the stream and wait for its pump to end: a daemon thread stopped by the
        interpreter's exit while it holds the call's lock hangs the exit (the call's
        finalizer waits for that lock)."""
        if self.closed:
            return
        self.closed = True
        self.call.cancel()
        deadline = time.monotonic() + CLOSE_S
        while self.pump.is_alive() and time.monotonic() < deadline:
            try:
                self.replies.get_nowait()  # a pump waiting for room in the queue goes on
            except queue.Empty:
                pass
            self.pump.join(timeout=0.05)
        self.channel.close()


def cluster_logs(
    target: access.Target, selection: Selection, args: argparse.Namespace, render: Any
) -> int:
    """Every alive node's lines merged by time; with ``--follow``, new lines until Ctrl-C."""
    started = time.time()
    wake = threading.Event()

    def request(since: float = 0.0) -> pb.ReadLogsRequest:
        return pb.ReadLogsRequest(
            ids=selection.ids,
            component=selection.component or "",
            tail=args.tail,
            follow=args.follow,
            since=since,
            process_output=args.process_output,
        )

    streams = [NodeStream(a, target.token, request(), wake) for a in agents.alive_agents(target)]
    warned: set[str] = set()
    try:
        histories = [s.history() for s in streams]
        # A worker's own output has no times: node after node, each file's lines in order.
        merged = chain(*histories) if args.process_output else by_time(histories)
        _print(last(merged, args.tail), render)
        _warn(streams, warned)
        next_look = time.monotonic() + NODES_EVERY_S
        while args.follow:
            wake.wait(timeout=NODES_EVERY_S)
            wake.clear()
            batch = [rec for s in streams for rec in s.new_records()]
            if not args.process_output:
                batch.sort(key=lambda r: r["timestamp"])
            _print(batch, render)
            _warn(streams, warned)
            ended = all(s.done for s in streams)
            if ended or time.monotonic() >= next_look:
                next_look = time.monotonic() + NODES_EVERY_S
                joined = _joined(target, streams, request(started), wake)
                streams += joined
                if ended and not joined:  # the cluster stopped, say (kubectl's pod ended)
                    print("freight logs: no node is left to follow", file=sys.stderr)
                    break
    except KeyboardInterrupt:
        pass
    finally:
        for s in streams:
            s.close()
    return access.EXIT_PARTIAL if warned else 0


def _warn(streams: list[NodeStream], warned: set[str]) -> None:
    """Name each node whose stream failed, once."""
    for s in streams:
        if s.error is not None and s.agent.node_id not in warned:
            warned.add(s.agent.node_id)
            if s.caught_up:  # followed, then gone: its node stopped or left, say
                text = (
                    f"{s.agent.name} stopped answering ({agents.why(s.error)}): its lines "
                    "from then on are missing"
                )
            else:
                text = agents.did_not_answer(s.agent, s.error, "its log lines")
            print(f"freight logs: warning: {text}", file=sys.stderr, flush=True)


def _joined(
    target: access.Target, streams: list[NodeStream], request: pb.ReadLogsRequest, wake: Any
) -> list[NodeStream]:
    """Streams of the nodes that joined since the command started (their lines since then)."""
    try:
        alive = agents.alive_agents(target)
    except (ConnectionError, PermissionError):
        return []  # the head is away for now: the nodes already followed keep streaming
    known = {s.agent.node_id for s in streams}
    return [NodeStream(a, target.token, request, wake) for a in alive if a.node_id not in known]


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
