"""What a node agent reads for `freight logs` and `freight memory`: its session folder's log
lines (``ReadLogs``) and its processes' reference tables (``Memory``).

Both read files and sockets with blocking calls, so they run in threads: the agent's event loop
keeps answering heartbeats and health checks while a large log is read. A followed log stream
reads only as fast as its caller takes the replies (gRPC flow control holds the next write), and
each reply holds at most :data:`BATCH_RECORDS` lines or about :data:`BATCH_BYTES`: nothing is
queued without bound for a slow reader. At most :data:`MAX_FOLLOWERS` streams follow at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from freight.core.logs import OutputReader, Reader
from freight.core.references import ANSWER_TIMEOUT_S, ask_processes, rows_of
from freight.protocol.generated import freight_pb2 as pb

POLL_S = 0.25  # how often a followed stream looks for new lines (files: nothing to wait on)
BATCH_RECORDS = 500
BATCH_BYTES = 1 << 20
BATCH_S = 0.5
MAX_FOLLOWERS = 16


class TooManyFollowers(Exception):
    """The agent already serves :data:`MAX_FOLLOWERS` followed log streams."""


def _take(records: Iterator[dict[str, Any]]) -> tuple[list[str], bool]:
    """The next batch of records as JSON text, and whether the records have ended. A batch
    also ends after :data:`BATCH_S`, so a reader waiting on a selective filter over large
    files hears from the node (an empty batch) and can tell it from a node that is stuck."""
    out: list[str] = []
    size = 0
    deadline = time.monotonic() + BATCH_S
    for rec in records:
        text = json.dumps(rec, default=str)
        out.append(text)
        size += len(text)
        if len(out) >= BATCH_RECORDS or size >= BATCH_BYTES or time.monotonic() > deadline:
            return out, False
    return out, True


def _fill(records: Iterator[dict[str, Any]], window: deque[dict[str, Any]]) -> bool:
    """Move records into ``window`` for up to :data:`BATCH_S`; whether they have ended."""
    deadline = time.monotonic() + BATCH_S
    for rec in records:
        window.append(rec)
        if time.monotonic() > deadline:
            return False
    return True


def _batches(texts: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(texts), BATCH_RECORDS):
        yield texts[i : i + BATCH_RECORDS]


class LogService:
    """The ``ReadLogs`` streams of one node."""

    def __init__(self, node_id: str, session_dir: str) -> None:
        self.node_id = node_id
        self.session_dir = session_dir
        self.followers = 0

    async def read(
        self, reader: Reader | OutputReader, tail: int, follow: bool
    ) -> AsyncIterator[pb.ReadLogsReply]:
        """The matching lines written so far (the last ``tail``; all for 0) in time order, a
        reply marked ``caught_up``, then, with ``follow``, new lines until cancelled."""
        if follow and self.followers >= MAX_FOLLOWERS:
            raise TooManyFollowers(
                f"node {self.node_id[:12]} already serves {MAX_FOLLOWERS} followed log streams; "
                "stop one of them (or read without --follow)"
            )
        if follow:
            self.followers += 1
        try:
            history = iter(await asyncio.to_thread(reader.history, 0))
            if tail:
                # The last lines come after every line is read: meanwhile the caller hears
                # from the node (empty replies), as it does while a filter finds nothing.
                window: deque[dict[str, Any]] = deque(maxlen=tail)
                while not await asyncio.to_thread(_fill, history, window):
                    yield pb.ReadLogsReply(node_id=self.node_id)
                history = iter(window)
            ended = False
            while not ended:
                batch, ended = await asyncio.to_thread(_take, history)
                yield pb.ReadLogsReply(node_id=self.node_id, records=batch, caught_up=ended)
            while follow:
                await asyncio.sleep(POLL_S)
                new = await asyncio.to_thread(reader.new_records)
                texts = [json.dumps(r, default=str) for r in new]
                for batch in _batches(texts):
                    yield pb.ReadLogsReply(node_id=self.node_id, records=batch, caught_up=True)
        finally:
            if follow:
                self.followers -= 1


async def node_memory(
    node_id: str, session_dir: str, token: str, budget: float | None
) -> pb.NodeMemoryReply:
    """The reference tables of the node's drivers and workers; a process that does not answer
    within the caller's ``budget`` (seconds, None: no deadline) is left out."""
    wait = ANSWER_TIMEOUT_S if budget is None else max(0.1, min(ANSWER_TIMEOUT_S, budget * 0.8))
    replies = await asyncio.to_thread(ask_processes, session_dir, token, wait)
    return pb.NodeMemoryReply(
        node_id=node_id,
        processes=len(replies),
        references=[
            pb.ObjectReference(
                object_id=r["object_id"],
                size=r["size"],
                where=r["where"],
                process=r["process"],
                owner=bool(r["owner"]),
                held_by=list(r["held_by"]),
                call_site=r["call_site"] or "",
            )
            for r in rows_of(replies)
        ],
    )
