"""A cluster's log lines from every node, through each alive node's agent (``ReadLogs``).

The lines of a node are only in its session folder: each agent reads its own folder with the
filters applied there and streams what matches. :class:`ClusterLogs` opens one stream per alive
node, gives their history merged by time, then (when following) the lines that arrive, from nodes
that join later too. A node that does not answer is reported once (:meth:`ClusterLogs.warnings`)
and the others go on. ``freight logs`` prints what it gives; ``freight top`` shows it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any

from freight.client import access, agents
from freight.config import settings
from freight.core.logs import ID_FLAGS, Selection, by_time, last
from freight.protocol.generated import freight_pb2 as pb

NODES_EVERY_S = 5.0  # following: how often to look for nodes that joined
QUEUED_REPLIES = 64  # replies held per node before its stream waits for the reader
CLOSE_S = 5.0  # how long closing waits for a stream's pump to end
_END = object()


def render_text(rec: dict[str, Any]) -> str:
    """A record as one line of text (its exception on the lines after), as `freight logs`
    prints it."""
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


class NodeStream:
    """One node's ``ReadLogs`` stream, pumped by a thread into a bounded queue (so a node
    waits for the reader rather than the reader holding its lines without bound)."""

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


class ClusterLogs:
    """The lines of ``selection`` on every alive node of ``target``: :meth:`history` (the last
    ``tail`` lines, 0: all), then with ``follow`` :meth:`poll` for what arrives. Raises what
    :func:`freight.client.agents.alive_agents` raises when the head does not answer. Blocking:
    call it from a thread (or a command line); :meth:`close` when done."""

    def __init__(
        self,
        target: access.Target,
        selection: Selection,
        *,
        tail: int,
        follow: bool,
        process_output: bool = False,
    ) -> None:
        self.target = target
        self.selection = selection
        self.tail = tail
        self.follow = follow
        self.process_output = process_output
        self.started = time.time()
        self.wake = threading.Event()
        self.warned: set[str] = set()  # nodes whose failure was reported
        self.ended = False  # following, every stream ended and no node joined
        self._next_look = time.monotonic() + NODES_EVERY_S
        self.streams = [
            NodeStream(a, target.token, self._request(), self.wake)
            for a in agents.alive_agents(target)
        ]

    def _request(self, since: float = 0.0) -> pb.ReadLogsRequest:
        return pb.ReadLogsRequest(
            ids=self.selection.ids,
            component=self.selection.component or "",
            tail=self.tail,
            follow=self.follow,
            since=since,
            process_output=self.process_output,
        )

    def history(self) -> Iterable[dict[str, Any]]:
        """Every node's lines written before the call, merged by time, the last ``tail``."""
        histories = [s.history() for s in self.streams]
        # A worker's own output has no times: node after node, each file's lines in order.
        merged = chain(*histories) if self.process_output else by_time(histories)
        return last(merged, self.tail)

    def poll(self, timeout: float = NODES_EVERY_S) -> list[dict[str, Any]]:
        """Following: the lines that arrived, in time order, waiting up to ``timeout`` for the
        first; every ``NODES_EVERY_S`` (or when every stream ended) the nodes that joined are
        followed too (their lines since the start). :attr:`ended` tells when no node is left."""
        self.wake.wait(timeout=timeout)
        self.wake.clear()
        batch = [rec for s in self.streams for rec in s.new_records()]
        if not self.process_output:
            batch.sort(key=lambda r: r["timestamp"])
        over = all(s.done for s in self.streams)
        if over or time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + NODES_EVERY_S
            joined = self._joined()
            self.streams += joined
            self.ended = over and not joined  # the cluster stopped, say
        return batch

    def interrupt(self) -> None:
        """Let a :meth:`poll` waiting in another thread return now."""
        self.wake.set()

    def _joined(self) -> list[NodeStream]:
        try:
            alive = agents.alive_agents(self.target)
        except (ConnectionError, PermissionError):
            return []  # the head is away for now: the nodes already followed keep streaming
        known = {s.agent.node_id for s in self.streams}
        request = self._request(self.started)
        return [
            NodeStream(a, self.target.token, request, self.wake)
            for a in alive
            if a.node_id not in known
        ]

    def warnings(self) -> list[str]:
        """A sentence for each node whose stream failed since the last call (once per node)."""
        out = []
        for s in self.streams:
            if s.error is not None and s.agent.node_id not in self.warned:
                self.warned.add(s.agent.node_id)
                if s.caught_up:  # followed, then gone: its node stopped or left, say
                    out.append(
                        f"{s.agent.name} stopped answering ({agents.why(s.error)}): its lines "
                        "from then on are missing"
                    )
                else:
                    out.append(agents.did_not_answer(s.agent, s.error, "its log lines"))
        return out

    def close(self) -> None:
        for s in self.streams:
            s.close()
