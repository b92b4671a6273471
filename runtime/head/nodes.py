"""The head's view of the node agents: registration, heartbeats, health checks, agent channels.

Liveness is decided by health checks, as Ray's GCS decides it: the head calls ``CheckHealth`` on
every alive node's agent every ``period_s`` seconds with a deadline of ``timeout_s``, and marks
the node DEAD after ``failure_threshold`` failed checks in a row; an answer resets the count. An
agent that answers with another node id (a different agent now listens on that address) fails
the check. Each node has its own checker task, so a slow node delays no other, and a node's next
check waits for its previous one. Heartbeats carry each node's available resources; a node whose
heartbeats stop for ``heartbeat_timeout_s`` (by default well beyond what the health checks
need) is marked DEAD too (docs/decisions/0016-health-checks.md).

The head judges only by time it saw go by (:class:`ObservedClock`): when its own event loop was
stalled (a SIGSTOP, a long GC or disk stall), the heartbeats and answers of that time are still
queued when it resumes, so the stall counts neither as heartbeat silence nor as a failed check
(docs/decisions/0029-observed-time.md).

Every change to the node table notifies :attr:`NodeDirectory.changed`, which pending actor
creations wait on.

A node an operator drained (``freight drain``) stays ALIVE but takes no new work: actors and
placement groups are placed on :meth:`NodeDirectory.open` nodes, and every agent learns the flag
from the heartbeat replies (docs/decisions/0068-draining-nodes.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from loguru import logger

from freight.config import settings
from freight.core.nodes import ALIVE, DEAD
from freight.head.control_store import ControlStore
from freight.head.rpc import FencedError, NotFoundError
from freight.observe.catalogue import HEALTH_CHECK_REASONS
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import aio_channel

HEALTH_CHECK_FAILURES = "freight_node_health_check_failures_total"
# Without an explicit heartbeat timeout, heartbeat silence marks a node dead only after twice
# the time the health checks take to find it dead, and never before this many seconds.
MIN_HEARTBEAT_TIMEOUT_S = 30.0
MAX_REASON_CHARS = 200
# The head counts silence only while it runs: a gap of its event loop longer than this counts
# as this long (ObservedClock). Far above the loop's usual lag, far below any timeout.
MAX_OBSERVED_STEP_S = 1.0
TICK_S = 0.1  # how often the health loop advances that clock
# A check during which the head stalled longer than this is not counted either way.
STALLED_CHECK_S = 0.05
# How long the calls on a dead node's agent channel may go on before it is closed under them
# (each has a deadline of its own, shorter; see _retire_channel).
RETIRED_CHANNEL_GRACE_S = 30.0


def covers(amounts: Mapping[str, float], request: Mapping[str, float]) -> bool:
    """True if ``amounts`` holds at least ``request`` of every resource (a missing key is 0)."""
    return all(amounts.get(k, 0.0) >= v for k, v in request.items() if v > 0)


def sum_amounts(maps: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The per-resource sum of several resource maps."""
    total: dict[str, float] = {}
    for m in maps:
        for k, v in m.items():
            total[k] = total.get(k, 0.0) + v
    return total


# ---- health checks, without I/O ----------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheckPolicy:
    """How often the head checks each agent, how long it waits, and how many misses kill."""

    period_s: float = 3.0
    timeout_s: float = 10.0
    failure_threshold: int = 5

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(
                f"the health check period must be positive, got {self.period_s!r} "
                "(FREIGHT_HEALTH_CHECK_PERIOD_S)"
            )
        if not self.timeout_s > 0:
            raise ValueError(
                f"the health check timeout must be positive, got {self.timeout_s!r} "
                "(FREIGHT_HEALTH_CHECK_TIMEOUT_S)"
            )
        if self.failure_threshold < 1:
            raise ValueError(
                f"the health check failure threshold must be at least 1, got "
                f"{self.failure_threshold!r} (FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD)"
            )

    @classmethod
    def from_settings(cls) -> HealthCheckPolicy:
        """The policy the ``FREIGHT_HEALTH_CHECK_*`` settings describe."""
        return cls(
            period_s=settings.health_check_period_s,
            timeout_s=settings.health_check_timeout_s,
            failure_threshold=settings.health_check_failure_threshold,
        )

    @property
    def detection_bound_s(self) -> float:
        """The longest a node that stops answering stays ALIVE.

        Up to one period until its next check, then ``failure_threshold`` failed checks, each
        started a period after the previous one started (or when it ended, if later) and each
        lasting at most ``timeout_s``.
        """
        return self.period_s + self.failure_threshold * max(self.period_s, self.timeout_s)

    @property
    def default_heartbeat_timeout_s(self) -> float:
        """The heartbeat timeout when none is given: looser than the health checks."""
        return max(MIN_HEARTBEAT_TIMEOUT_S, 2 * self.detection_bound_s)


@dataclass(frozen=True)
class CheckFailure:
    """Why one health check failed: a bounded ``kind`` for the metric, and words for people."""

    kind: str  # a gRPC status code in lower case, "wrong_node" or "error"
    text: str


class ObservedClock:
    """Seconds the head has seen go by: monotonic time, less the stalls of its event loop.

    The head judges nodes by silence, and silence means something only while the head was
    running to hear: after a SIGSTOP, a long GC or disk stall, the heartbeats and answers sent
    meanwhile are still queued when the head resumes. So time counts only in steps of at most
    ``max_step_s``: :meth:`tick` (called every fraction of a second by the health loop) advances
    the clock by the real time since the previous tick, capped at ``max_step_s``, and
    :meth:`now` applies the same cap to the time since the last tick, so a reading taken right
    after a stall, before the next tick, does not count it either.
    """

    def __init__(self, max_step_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_step_s = max_step_s
        self._clock = clock
        self._last = clock()
        self._observed = 0.0
        self.stalled_s = 0.0  # real time not counted, all told (the head's own stalls)

    def now(self) -> float:
        """Observed seconds since the clock was made."""
        return self._observed + min(self._clock() - self._last, self.max_step_s)

    def real(self) -> float:
        """The underlying monotonic time, to measure what a stall took from an interval."""
        return self._clock()

    def stalled_since(self, real_then: float, observed_then: float) -> float:
        """Real seconds since (``real_then``, ``observed_then``) that the clock did not count."""
        return max(0.0, (self._clock() - real_then) - (self.now() - observed_then))

    def tick(self) -> float:
        """Advance the clock; return how long the event loop stalled beyond ``max_step_s``
        since the last tick (0.0 when it did not)."""
        real = self._clock()
        step = real - self._last
        lost = max(0.0, step - self.max_step_s)
        self._observed += step - lost
        self._last = real
        self.stalled_s += lost
        return lost


class HealthTally:
    """Failed health checks per node, and when they add up to a dead node; no I/O."""

    def __init__(self, failure_threshold: int) -> None:
        self.failure_threshold = failure_threshold
        self._in_a_row: dict[str, int] = {}
        self._failed: dict[str, int] = {}  # every failed check of each node, for statistics()
        self._checks = 0

    def reset(self, node_id: str) -> None:
        """The node (re)registered: its count of failures in a row starts again."""
        self._in_a_row.pop(node_id, None)

    def passed(self, node_id: str) -> None:
        """The node answered a check."""
        self._checks += 1
        self._in_a_row.pop(node_id, None)

    def failed(self, node_id: str, failure: CheckFailure) -> str | None:
        """Count a failed check; once it makes ``failure_threshold`` in a row, return why the
        node is dead."""
        self._checks += 1
        self._failed[node_id] = self._failed.get(node_id, 0) + 1
        in_a_row = self._in_a_row[node_id] = self._in_a_row.get(node_id, 0) + 1
        if in_a_row < self.failure_threshold:
            return None
        return f"failed {in_a_row} health checks in a row: {failure.text}"

    def in_a_row(self, node_id: str) -> int:
        """Failed checks of the node since its last answer (or registration)."""
        return self._in_a_row.get(node_id, 0)

    def statistics(self) -> dict[str, Any]:
        """Checks made, and failed checks per node (all time) and in a row (right now)."""
        return {
            "checks": self._checks,
            "failed": dict(self._failed),
            "failing_in_a_row": dict(self._in_a_row),
        }


def describe_rpc_error(exc: aio.AioRpcError, timeout_s: float) -> CheckFailure:
    """The failure a ``CheckHealth`` call that raised ``exc`` stands for."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CheckFailure(
            "deadline_exceeded", f"deadline exceeded (no answer within {timeout_s:g} s)"
        )
    words = code.name.lower().replace("_", " ")
    details = exc.details() or ""
    text = f"{words}: {details}" if details else words
    return CheckFailure(code.name.lower(), text[:MAX_REASON_CHARS])


# ---- incarnations, without I/O -------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatVerdict:
    """What the sender of a heartbeat must do: nothing, register again, or first fence itself
    (stop every worker: the head declared this incarnation dead) and register a new one."""

    reregister: bool = False
    fence_reason: str = ""


def stale_incarnation(record: pb.NodeInfo | None, incarnation: str, dead_reason: str = "") -> str:
    """Why a request from ``incarnation`` of the node ``record`` describes is refused ("" when
    it is not): the head declared that incarnation dead, or another one of the node is alive
    (docs/decisions/0034-a-dead-node-fences-itself.md)."""
    if record is None:
        return ""
    if record.state == DEAD and record.incarnation == incarnation:
        why = f": {dead_reason}" if dead_reason else ""
        return f"the head declared node {record.node_id} dead{why}"
    if record.state == ALIVE and record.incarnation != incarnation:
        return (
            f"node {record.node_id} is alive as incarnation {record.incarnation or '(none)'}; "
            f"incarnation {incarnation or '(none)'} is stale"
        )
    return ""


# ---- the node table ----------------------------------------------------------------------------


class NodeDirectory:
    """Node table operations on top of the control store, plus one gRPC channel per agent."""

    def __init__(
        self,
        store: ControlStore,
        token: str,
        on_node_dead: Callable[[str, str], Awaitable[None]],
        health: HealthCheckPolicy | None = None,
        heartbeat_timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self._token = token
        self._on_node_dead = on_node_dead
        self.health = health if health is not None else HealthCheckPolicy()
        self.tally = HealthTally(self.health.failure_threshold)
        if heartbeat_timeout_s is None:
            heartbeat_timeout_s = self.health.default_heartbeat_timeout_s
        elif heartbeat_timeout_s < self.health.detection_bound_s:
            logger.warning(
                "the heartbeat timeout ({} s) is shorter than the health checks need to find a "
                "node dead ({:g} s): heartbeat silence will mark unresponsive nodes dead first",
                heartbeat_timeout_s,
                self.health.detection_bound_s,
            )
        self.heartbeat_timeout_s = heartbeat_timeout_s
        # Time as the head saw it go by, and when (on that clock) each node was last heard.
        self.clock = ObservedClock(MAX_OBSERVED_STEP_S)
        self._heard: dict[str, float] = {}
        self._dead_reasons: dict[str, str] = {}  # why each node was marked dead (this head)
        # Every incarnation this head declared dead: one may come back after a newer one
        # replaced it, when the node's record names only the newer one.
        self._dead_incarnations: set[tuple[str, str]] = set()
        self.changed = asyncio.Condition()
        self._agents: dict[str, tuple[str, aio.Channel, pb_grpc.NodeAgentServiceStub]] = {}
        self._retiring: dict[aio.Channel, asyncio.Task[None]] = {}
        self._checkers: dict[str, asyncio.Task[None]] = {}
        self._checking = False  # checkers run while health_loop() runs
        # A restarted head gives the nodes it remembers one full timeout to check in again.
        now = time.time()
        for node in store.list_nodes():
            node.last_heartbeat = now
            store.upsert_node(node)
            self._heard[node.node_id] = self.clock.now()

    async def notify(self) -> None:
        """Wake everyone waiting on :attr:`changed`."""
        async with self.changed:
            self.changed.notify_all()

    def alive(self) -> list[pb.NodeInfo]:
        """Alive nodes, in registration order."""
        return self._store.list_nodes(include_dead=False)

    def find(self, wanted: str) -> pb.NodeInfo:
        """The alive node ``wanted`` names (its id or a unique id prefix); NotFoundError for a
        node that is unknown or dead, ValueError for an ambiguous prefix."""
        from freight.head.state_service import one_by_prefix  # the one prefix rule

        wanted = wanted.strip()
        if not wanted:
            raise ValueError("give the id (or a unique id prefix) of a node")
        nodes = self._store.list_nodes(include_dead=True)
        node = one_by_prefix(nodes, lambda n: n.node_id, wanted, "nodes", "node_id")
        if node is None:
            raise NotFoundError(
                f"no node {wanted!r} in this cluster; `freight list nodes` lists them"
            )
        if node.state != ALIVE:
            raise NotFoundError(
                f"node {node.node_id} is {node.state.lower()}: only an alive node can be drained "
                "or undrained"
            )
        return node

    async def set_draining(self, node_id: str, draining: bool, reason: str) -> pb.NodeInfo:
        """Drain a node (no new work goes there) or open it again; the flag is kept in the
        control store, so a restarted head keeps it. Returns the node as it is now."""
        node = self._store.get_node(node_id)
        if node is None or node.state != ALIVE:
            raise NotFoundError(f"node {node_id} is not alive")
        if node.draining == draining:
            return node
        node.draining = draining
        node.drain_reason = reason if draining else ""
        node.drain_time = time.time() if draining else 0.0
        node.drain_seq += 1
        self._store.upsert_node(node)
        logger.info("node drained" if draining else "node undrained", node_id=node_id)
        await self.notify()
        return node

    async def tell_draining(self, node: pb.NodeInfo) -> pb.SetDrainingReply | None:
        """Tell the node's agent at once (it would learn at its next heartbeat); None when it
        did not answer."""
        try:
            stub = await self.agent(node)
            return await stub.SetDraining(
                pb.SetDrainingRequest(
                    draining=node.draining, seq=node.drain_seq, reason=node.drain_reason
                ),
                timeout=self.health.timeout_s,
            )
        except aio.AioRpcError as exc:
            logger.warning(
                "could not tell a node it is drained", node_id=node.node_id, error=exc.details()
            )
            return None

    def stale(self, node_id: str, incarnation: str) -> str:
        """Why requests of this incarnation of the node are refused ("" when they are not)."""
        if (node_id, incarnation) in self._dead_incarnations:
            why = self._dead_reasons.get(node_id, "")
            return f"the head declared node {node_id} dead (incarnation {incarnation})" + (
                f": {why}" if why else ""
            )
        record = self._store.get_node(node_id)
        return stale_incarnation(record, incarnation, self._dead_reasons.get(node_id, ""))

    async def admit(self, node: pb.NodeInfo) -> None:
        """Raise :class:`FencedError` for a registration of a dead or superseded incarnation.

        A new incarnation of a node whose old one is still ALIVE here is an agent restarted
        under the same node id before the health checks noticed the old one go: the head checks
        the old incarnation once, and if it does not answer as itself, declares it dead (its
        actors and tasks are recovered as for any dead node) and takes the new one. If it does
        answer, two agents claim the node, and the newcomer is refused."""
        if not node.node_id:
            raise ValueError("RegisterNode: node.node_id is empty")
        old = self._store.get_node(node.node_id)
        if (
            old is not None
            and old.state == ALIVE
            and old.incarnation != node.incarnation
            and (node.node_id, node.incarnation) not in self._dead_incarnations
        ):
            failure = await self._check(old)
            if failure is not None:
                await self.mark_dead(
                    old.node_id,
                    f"its agent restarted as a new incarnation; the old one does not answer "
                    f"({failure.text})",
                )
        stale = self.stale(node.node_id, node.incarnation)
        if stale:
            logger.warning("registration refused", node_id=node.node_id, reason=stale)
            raise FencedError(
                f"RegisterNode refused: {stale}. Its agent must stop every worker it runs and "
                "register as a new incarnation (agents do this by themselves)"
            )

    async def register(self, node: pb.NodeInfo) -> None:
        """Record ``node`` as ALIVE (a re-registration replaces the old record) once
        :meth:`admit` lets it in."""
        await self.admit(node)
        now = time.time()
        record = pb.NodeInfo()
        record.CopyFrom(node)
        old = self._store.get_node(node.node_id)
        if old is not None:  # a drain outlives the agent: it is the operator's word on the node
            record.draining, record.drain_reason = old.draining, old.drain_reason
            record.drain_time, record.drain_seq = old.drain_time, old.drain_seq
        record.state = ALIVE
        record.start_time = node.start_time or now
        record.last_heartbeat = now
        if not record.HasField("available"):
            record.available.CopyFrom(record.total)
        self._store.upsert_node(record)
        self._heard[record.node_id] = self.clock.now()
        logger.info(
            "node registered",
            node_id=node.node_id,
            agent_address=node.agent_address,
            total=dict(node.total.amounts),
        )
        self._start_checks(node.node_id)
        await self.notify()

    async def heartbeat(self, request: pb.HeartbeatRequest) -> HeartbeatVerdict:
        """Record a heartbeat; say whether the node must register again (unknown or DEAD), and
        fence itself first (this incarnation was declared dead, or is superseded)."""
        node = self._store.get_node(request.node_id)
        stale = self.stale(request.node_id, request.incarnation)
        if stale:
            return HeartbeatVerdict(reregister=True, fence_reason=stale)
        if node is None or node.state != ALIVE:
            return HeartbeatVerdict(reregister=True)
        node.available.CopyFrom(request.available)
        if request.HasField("total"):  # placement groups add and take resources
            node.total.CopyFrom(request.total)
        node.stats.CopyFrom(request.stats)
        node.last_heartbeat = time.time()
        self._store.upsert_node(node)
        self._heard[node.node_id] = self.clock.now()
        await self.notify()
        return HeartbeatVerdict()

    async def mark_dead(self, node_id: str, reason: str) -> bool:
        """Mark a node DEAD; return False if it was unknown or already DEAD."""
        node = self._store.get_node(node_id)
        if node is None or node.state == DEAD:
            return False
        node.state = DEAD
        self._store.upsert_node(node)
        self._heard.pop(node_id, None)
        self._dead_reasons[node_id] = reason
        if node.incarnation:
            self._dead_incarnations.add((node_id, node.incarnation))
        self._stop_checks(node_id)
        logger.warning("node dead", node_id=node_id, reason=reason)
        await self._close_agent(node_id)
        await self._on_node_dead(node_id, reason)
        await self.notify()
        return True

    # ---- liveness ----------------------------------------------------------------------------

    async def health_loop(self) -> None:
        """Health-check every alive node, and mark nodes DEAD whose heartbeats stop for
        ``heartbeat_timeout_s`` of the head's observed time; runs until cancelled."""
        self._checking = True
        for node in self.alive():
            self._start_checks(node.node_id)
        interval = min(1.0, self.heartbeat_timeout_s / 4)
        judged = self.clock.now()
        try:
            while True:
                await asyncio.sleep(min(TICK_S, interval))
                stalled = self.clock.tick()
                if stalled:
                    logger.warning(
                        "the head's event loop was stalled for {:.1f} s: the nodes are not "
                        "judged by that time (heartbeats and answers sent meanwhile were queued)",
                        stalled + MAX_OBSERVED_STEP_S,
                    )
                if self.clock.now() - judged < interval:
                    continue
                judged = self.clock.now()
                for node in self.alive():
                    heard = self._heard.setdefault(node.node_id, judged)
                    if judged - heard > self.heartbeat_timeout_s:
                        await self.mark_dead(
                            node.node_id,
                            f"no heartbeat for more than {self.heartbeat_timeout_s:g} s",
                        )
        finally:
            self._checking = False
            checkers = list(self._checkers.values())
            self._checkers.clear()
            for task in checkers:
                task.cancel()
            await asyncio.gather(*checkers, return_exceptions=True)

    def statistics(self) -> dict[str, Any]:
        """Health-check figures (see :meth:`HealthTally.statistics`) and nodes being checked."""
        return {**self.tally.statistics(), "nodes_checked": len(self._checkers)}

    def _start_checks(self, node_id: str) -> None:
        """(Re)start the node's health checks, with a clean count of failures in a row."""
        self._stop_checks(node_id)
        self.tally.reset(node_id)
        if self._checking:
            self._checkers[node_id] = asyncio.create_task(
                self._check_loop(node_id), name=f"health-check-{node_id[:12]}"
            )

    def _stop_checks(self, node_id: str) -> None:
        task = self._checkers.pop(node_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _check_loop(self, node_id: str) -> None:
        """Check one node every period (never two checks at once) until it is found dead."""
        started = time.monotonic()  # the first check comes one period after registration
        while True:
            await asyncio.sleep(max(0.0, started + self.health.period_s - time.monotonic()))
            node = self._store.get_node(node_id)
            if node is None or node.state != ALIVE:
                return
            started = time.monotonic()
            observed = self.clock.now()
            failure = await self._check(node)
            stalled = self.clock.stalled_since(started, observed)
            if failure is not None and stalled > STALLED_CHECK_S:
                # The deadline passed while the head itself was not running: the answer may
                # be queued unread. Only checks the head saw fail count.
                logger.info(
                    "a health check not counted: the head was stalled while it waited",
                    node_id=node_id,
                    stalled_s=round(stalled, 2),
                    reason=failure.text,
                )
                continue
            if failure is None:
                self.tally.passed(node_id)
                continue
            reason = failure.kind if failure.kind in HEALTH_CHECK_REASONS else "error"
            RECORDER.inc(HEALTH_CHECK_FAILURES, (reason,))
            verdict = self.tally.failed(node_id, failure)
            logger.warning(
                "health check failed",
                node_id=node_id,
                agent_address=node.agent_address,
                reason=failure.text,
                in_a_row=self.tally.in_a_row(node_id),
            )
            if verdict is not None:
                try:
                    await self.mark_dead(node_id, verdict)
                except Exception:
                    logger.exception("could not mark a node dead", node_id=node_id)
                return

    async def _check(self, node: pb.NodeInfo) -> CheckFailure | None:
        """One ``CheckHealth`` call; None if the expected node answered."""
        timeout = self.health.timeout_s
        try:
            stub = await self.agent(node)
            reply = await stub.CheckHealth(pb.CheckHealthRequest(), timeout=timeout)
        except aio.AioRpcError as exc:
            return describe_rpc_error(exc, timeout)
        except Exception as exc:  # a check that could not be made is a failed check
            logger.exception("health check error", node_id=node.node_id)
            return CheckFailure("error", f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS])
        if reply.node_id != node.node_id:
            return CheckFailure(
                "wrong_node",
                f"the agent at {node.agent_address} is node {reply.node_id or '(none)'}",
            )
        if node.incarnation and reply.incarnation != node.incarnation:
            return CheckFailure(
                "wrong_incarnation",
                f"the agent at {node.agent_address} is incarnation "
                f"{reply.incarnation or '(none)'} of node {node.node_id}, not "
                f"{node.incarnation}",
            )
        return None

    # ---- agent channels ----------------------------------------------------------------------

    async def agent(self, node: pb.NodeInfo) -> pb_grpc.NodeAgentServiceStub:
        """A stub for the node's agent, over a channel cached per node (and per address)."""
        cached = self._agents.get(node.node_id)
        if cached is not None and cached[0] == node.agent_address:
            return cached[2]
        channel = aio_channel(node.agent_address, self._token)
        stub = pb_grpc.NodeAgentServiceStub(channel)
        self._agents[node.node_id] = (node.agent_address, channel, stub)
        if cached is not None:  # the agent came back on a new address
            self._retire_channel(cached[1])
        return stub

    async def _close_agent(self, node_id: str) -> None:
        cached = self._agents.pop(node_id, None)
        if cached is not None:
            self._retire_channel(cached[1])

    def _retire_channel(self, channel: aio.Channel) -> None:
        """Close a channel nobody takes from the cache any more once its calls have ended.

        Closing it at once would cancel them, and a cancelled call raises CancelledError in
        its caller, not an RPC error: the head's Shutdown, asking an agent that unregistered
        before its answer arrived, was ended without setting the head stopping.
        """
        task = asyncio.ensure_future(channel.close(grace=RETIRED_CHANNEL_GRACE_S))
        self._retiring[channel] = task
        task.add_done_callback(lambda _: self._retiring.pop(channel, None))

    async def close(self) -> None:
        """Close every agent channel (the head is stopping: calls still going on end now)."""
        for node_id in list(self._agents):
            await self._agents.pop(node_id)[1].close()
        for channel, task in list(self._retiring.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await channel.close()
