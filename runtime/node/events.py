"""Cluster events a node agent raises (worker crashed, object store full, driver disconnected).

:class:`EventOutbox` queues them (bounded: beyond ``max_pending`` the oldest are dropped and
counted) and :func:`event_loop` sends them to the head's ``ReportEvents`` RPC as soon as they
arrive, in batches. A failed report is retried with the next batch and never hurts the agent.

:class:`WorkerExits` tells a worker that crashed from one the agent asked to exit. A worker's
death shows up twice, in either order: its data-plane connection closes, and the reaper
collects its exit code; the event is raised once both are known.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import OrderedDict, deque
from typing import Any

import grpc
from loguru import logger

from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb

MAX_BATCH = 500
STORE_FULL_INTERVAL_S = 10.0


def new_event_id() -> str:
    """A unique id that sorts by creation time (as the head's own event ids do)."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:8]}"


class EventOutbox:
    """Events waiting to be sent to the head, oldest first, at most ``max_pending``."""

    def __init__(self, node_id: str, max_pending: int = 1000) -> None:
        self.node_id = node_id
        self.max_pending = max_pending
        self.pending: deque[pb.ClusterEvent] = deque()
        self.dropped = 0
        self.wakeup: asyncio.Event | None = None  # set by event_loop, inside the agent's loop
        self._throttled: dict[str, tuple[float, int]] = {}  # key -> (last sent, suppressed)

    def record(self, kind: str, message: str, severity: str = "WARNING", **ids: Any) -> None:
        """Queue an event of this node; empty ids are left out."""
        event = pb.ClusterEvent(
            event_id=new_event_id(),
            time=time.time(),
            severity=severity,
            source="agent",
            kind=kind,
            message=message,
            ids={k: str(v) for k, v in ids.items() if v not in (None, "")},
        )
        event.ids.setdefault("node_id", self.node_id)
        self._push([event])

    def record_throttled(
        self, key: str, kind: str, message: str, interval_s: float, **ids: Any
    ) -> bool:
        """Like :meth:`record`, at most once per ``interval_s`` for ``key``; the events held
        back are counted into the next one's message. Returns True if it was queued."""
        now = time.monotonic()
        last, suppressed = self._throttled.get(key, (-interval_s, 0))
        if now - last < interval_s:
            self._throttled[key] = (last, suppressed + 1)
            return False
        if suppressed:
            message += f" ({suppressed} more like it since the last report)"
        self._throttled[key] = (now, 0)
        self.record(kind, message, **ids)
        return True

    def _push(self, events: list[pb.ClusterEvent], front: bool = False) -> None:
        if front:
            self.pending.extendleft(reversed(events))
        else:
            self.pending.extend(events)
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            for _ in range(excess):
                self.pending.popleft()
            self.dropped += excess
            RECORDER.inc("freight_telemetry_dropped_total", ("events",), excess)
        if self.wakeup is not None:
            self.wakeup.set()

    def take(self, n: int = MAX_BATCH) -> list[pb.ClusterEvent]:
        """Up to ``n`` of the oldest pending events, removed from the queue."""
        return [self.pending.popleft() for _ in range(min(n, len(self.pending)))]

    def put_back(self, events: list[pb.ClusterEvent]) -> None:
        """Return events a failed report did not deliver, ahead of newer ones."""
        self._push(events, front=True)


async def event_loop(outbox: EventOutbox, head: Any, stopping: asyncio.Event) -> None:
    """Send queued events to the head until ``stopping`` is set (then one last flush)."""
    outbox.wakeup = asyncio.Event()
    retry_s = 1.0
    warned = False
    while True:
        if not outbox.pending and not stopping.is_set():
            outbox.wakeup.clear()
            waiter = asyncio.ensure_future(outbox.wakeup.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stop.cancel()
        batch = outbox.take()
        if not batch:
            if stopping.is_set():
                return
            continue
        try:
            await head.ReportEvents(pb.ReportEventsRequest(events=batch), timeout=5)
            retry_s, warned = 1.0, False
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # The head refused the batch: retrying cannot help. Drop it, loudly.
                outbox.dropped += len(batch)
                RECORDER.inc("freight_telemetry_dropped_total", ("events",), len(batch))
                logger.error("the head refused {} events: {}", len(batch), e.details())
                continue
            if stopping.is_set():
                return
            outbox.put_back(batch)
            if not warned:
                logger.warning("could not report events to the head: {}", e.details())
                warned = True
            try:
                await asyncio.wait_for(stopping.wait(), timeout=retry_s)
            except TimeoutError:
                pass
            retry_s = min(retry_s * 2, 30.0)
        except Exception:
            logger.exception("reporting events failed; they are dropped")
            outbox.dropped += len(batch)
            RECORDER.inc("freight_telemetry_dropped_total", ("events",), len(batch))


def describe_exit(returncode: int) -> tuple[str, dict[str, str]]:
    """``("was killed by SIGKILL", {"signal": "SIGKILL"})`` or the exit code equivalent."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}", {"signal": name}
    return f"exited with code {returncode}", {"exit_code": str(returncode)}


class WorkerExits:
    """Raises WORKER_CRASHED for workers that exited without being asked to."""

    KEEP = 256  # half-known exits remembered while the other half is awaited

    def __init__(self, outbox: EventOutbox) -> None:
        self.outbox = outbox
        self.expected: OrderedDict[str, None] = OrderedDict()  # an ordered set, bounded
        # Connection closed, exit code not yet known (bounded: a peer may claim any worker id).
        self._closed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._codes: OrderedDict[str, int] = OrderedDict()  # exit code seen, closure not yet

    def expect(self, worker_id: str) -> None:
        """The agent asked this worker to exit (or killed it): its exit is no crash."""
        self.expected[worker_id] = None
        while len(self.expected) > self.KEEP:
            self.expected.popitem(last=False)

    def connection_closed(self, worker_id: str, info: dict[str, Any]) -> None:
        """The worker's connection closed; ``info``: pid, actor_id, job_id as known."""
        if worker_id in self.expected:
            return
        code = self._codes.pop(worker_id, None)
        if code is None:
            self._closed[worker_id] = info
            while len(self._closed) > self.KEEP:
                self._closed.popitem(last=False)
        else:
            self._report(worker_id, code, info, "")

    def exited(self, worker_id: str, returncode: int, info: dict[str, Any] | None = None) -> None:
        """The reaper collected the worker's exit code. ``info`` is given for a worker that
        never registered (no connection will close for it)."""
        if worker_id in self.expected:
            del self.expected[worker_id]
            self._closed.pop(worker_id, None)
            return
        closed = self._closed.pop(worker_id, None)
        if closed is not None:
            self._report(worker_id, returncode, closed, "")
        elif info is not None:
            self._report(worker_id, returncode, info, " before it registered")
        else:
            self._codes[worker_id] = returncode
            while len(self._codes) > self.KEEP:
                self._codes.popitem(last=False)

    def _report(self, worker_id: str, code: int, info: dict[str, Any], when: str) -> None:
        how, detail = describe_exit(code)
        pid = info.get("pid") or 0
        doing = ""
        if info.get("actor_id"):
            doing = f" while hosting actor {info['actor_id']}"
        elif info.get("job_id"):
            doing = f" while leased to job {info['job_id']}"
        self.outbox.record(
            "WORKER_CRASHED",
            f"worker {worker_id} (pid {pid}) {how}{when}{doing}",
            worker_id=worker_id,
            pid=pid or "",
            actor_id=info.get("actor_id", ""),
            job_id=info.get("job_id", ""),
            **detail,
        )
