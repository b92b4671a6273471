"""Task and actor-call submission: leases, direct pushes to workers, results, retries.

An owner asks its node agent for a worker lease per resource shape, then pushes tasks of that
shape straight to the leased worker (up to ``FREIGHT_LEASE_PIPELINE`` in flight) and keeps the
lease while it has work. Actor calls go straight to the actor's worker over one connection per
caller, so they run in submission order.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freight import exceptions as exc
from freight.config import settings
from freight.core.lease import shape_key
from freight.core.task_state import (
    INFEASIBLE,
    WAITING_FOR_RESOURCES,
    WAITING_FOR_WORKER,
    Outcome,
    TaskRecord,
)
from freight.observe import tracing
from freight.observe.recorder import RECORDER
from freight.protocol import frames
from freight.protocol import messages as m

from .lineage import Lineage
from .refs import ObjectRef, actor_handle_id

if TYPE_CHECKING:
    from .core_worker import CoreWorker, Peer

LEASE_IDLE_S = 0.2
UNKNOWN_ACTOR_GRACE_S = 10.0  # how long a handle's actor may be unknown to the head
NODE_GONE_WAIT_S = 0.5  # a failed remote task waits this long to tell a dead node from a crash
RETRY_DELAY_MAX_S = 5.0  # the longest backoff before a task is retried
STALE_ADDRESS_S = 60.0  # how long the head may still name a dead worker as an actor's
KILL_WAIT_S = 120.0  # how long destroying an actor nobody holds waits for an unreachable head
OUT_OF_SCOPE = "all references to the actor were removed"  # Ray's words for this death
_RESOLVED_NONE: list[tuple[bytes, str, Any]] = []  # shared by every task without ref arguments
# Pipelining: a worker may hold several queued tasks while their expected total run time
# stays under this budget; functions never seen to finish count as UNKNOWN (long).
PIPELINE_BUDGET_S = 0.002
UNKNOWN = 1e9
# Arguments on another node smaller than this are copied rather than followed: a copy of
# 1 MiB costs about what a lease hop to that node does.
LOCALITY_MIN_BYTES = 1 << 20


@dataclass(slots=True)
class TaskSpec:
    task_id: bytes
    name: str
    function_id: bytes
    function_blob: bytes
    args: bytes
    arg_refs: list[tuple[bytes, str]]
    nested: list[bytes]
    return_ids: list[bytes]
    resources: dict[str, float]
    max_retries: int = 0
    retry_exceptions: bool | tuple[type, ...] = False
    actor_id: str = ""
    method: str = ""
    resolved: list[tuple[bytes, str, Any]] | None = None
    shape: str = ""
    trace: tracing.TaskTrace | None = None  # set only when tracing is on
    strategy: tuple[Any, ...] = ("DEFAULT",)  # freight.core.placement's wire form
    placement_group: tuple[Any, ...] = ()  # (group id, capture children) it runs in, or ()
    # References to the arguments put in the store for this call (freight.client.args): they
    # live as long as the spec, so a retry or a rebuild from lineage finds them.
    stored: tuple[Any, ...] = ()


@dataclass(slots=True)
class Lease:
    worker_id: str
    peer: Peer
    shape: str
    inflight: dict[bytes, TaskSpec] = field(default_factory=dict)
    idle_since: float = 0.0
    expected: float = 0.0  # summed expected run time of the tasks in flight
    agent: frames.FrameSocket | None = None  # another node's agent that granted it (else ours)
    gpu_ids: tuple[int, ...] = ()  # its GPUs, sent with every task pushed on it
    recalled: bool = False  # its node was drained: returned once the tasks in flight are done


@dataclass(slots=True)
class ActorState:
    actor_id: str
    class_name: str
    address: str = ""
    peer: Peer | None = None
    queue: deque[TaskSpec] = field(default_factory=deque)
    inflight: dict[bytes, TaskSpec] = field(default_factory=dict)
    dead_cause: str = ""
    resolving: bool = False
    max_restarts: int = 0  # as created (the head's word once resolved): -1 is no limit
    undelivered: set[bytes] = field(default_factory=set)  # calls the dead connection refused
    stale_address: str = ""  # the address of the worker that died, while it restarts
    creating: bool = False  # this process created it and CreateActor has not answered yet
    out_of_scope: bool = False  # created here, and no handle to it is left anywhere
    # Held from taking calls off the queue until they are sent: two threads pumping at once
    # (a submit and the creation reply) must not send them out of order.
    send_lock: threading.RLock = field(default_factory=threading.RLock)


def _node_gone(agent: frames.FrameSocket | None) -> bool:
    """True when the connection to the other node's agent that granted a lease hangs up
    within NODE_GONE_WAIT_S: that node died (its workers die with their agent, though a
    worker's exit may reach us a moment before the agent's). Asks the kernel, which knows of
    the hang-up even while data the reader thread has not read yet is waiting."""
    if agent is None:
        return False  # this node's own agent: were it gone, so would be this process soon
    if agent.closed:
        return True
    try:
        poller = select.poll()
        poller.register(agent.sock.fileno(), select.POLLRDHUP)
        hung_up = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
        return any(ev & hung_up for _, ev in poller.poll(NODE_GONE_WAIT_S * 1000))
    except (OSError, ValueError):
        return True  # closed under us


_REBUILDS_STARTED = RECORDER.counter("freight_object_reconstructions_total", ("started",))
_REBUILDS_FAILED = RECORDER.counter("freight_object_reconstructions_total", ("failed",))


def _retry_allowed(spec: TaskSpec, error: BaseException | None) -> bool:
    re = spec.retry_exceptions
    if re is True:
        return True
    if isinstance(re, tuple) and error is not None:
        cause = getattr(error, "cause", error)
        return isinstance(cause, re)
    return False


class TaskSubmitter:
    def __init__(self, cw: CoreWorker) -> None:
        self.cw = cw
        self.queues: dict[str, deque[TaskSpec]] = {}
        self.leases: dict[str, list[Lease]] = {}
        self.lease_by_peer: dict[str, Lease] = {}
        self.requests: dict[int, str] = {}
        # Lease requests sent on to another node's agent: which agent, and how many hops.
        self.request_agent: dict[int, tuple[frames.FrameSocket, int]] = {}
        self.outstanding: dict[str, int] = {}
        self.return_to_task: dict[bytes, TaskSpec] = {}
        self.cancelled: set[bytes] = set()
        self.borrowed_owner: dict[bytes, str] = {}
        self.pipeline = max(1, settings.lease_pipeline)
        self.warned_infeasible: set[str] = set()
        # Shapes whose standing lease request an agent found infeasible: a task queued behind
        # one is infeasible too (the agent says so once per request, not per task).
        self.infeasible: set[str] = set()
        # Shapes whose standing request an agent holds for a reason of its own (every node
        # that could run them is drained), and that reason: the pending reason of their tasks.
        self.held: dict[str, str] = {}
        self.durations: dict[bytes, float] = {}  # mean run time per function (EWMA)
        self.lineage = Lineage(settings.lineage_max_bytes, cw._prefix)
        from .core_worker import Slot

        self._slot = Slot

    # -- submission --------------------------------------------------------------------------

    def submit(self, spec: TaskSpec, actor: ActorState | None = None) -> None:
        size = len(spec.args) + len(spec.function_blob)
        if size > frames.MAX_FRAME:  # could never be sent: say so now, at the call
            raise frames.FrameTooLargeError(size, f"the call {spec.name}()")
        if not tracing.ENABLED:
            self._submit(spec, actor)
            return
        # The submit span is current while submitting: argument fetches become its children.
        spec.trace = tracing.submit_begin(spec.name, spec.task_id, self.cw.job_id, spec.actor_id)
        try:
            self._submit(spec, actor)
        finally:
            tracing.submit_end(spec.trace)

    def _submit(self, spec: TaskSpec, actor: ActorState | None) -> None:
        cw = self.cw
        rec = TaskRecord(
            spec.task_id, spec.name, spec.max_retries, spec.retry_exceptions, spec.actor_id
        )
        rec.job_id = cw.job_id
        rec.resources = spec.resources
        task = cw.current_task
        if task is not None:
            rec.parent_task_id = task.task_id
        if spec.trace is not None:
            rec.trace_id = spec.trace.trace_id
        if cw.record_call_sites:
            from .core_worker import call_site

            site = f"{spec.name}() at {call_site()}"
            for rid in spec.return_ids:
                cw.call_sites[rid] = site
        slots, Slot = cw.slots, self._slot
        if not spec.arg_refs:
            # The common case: every argument is a value, so the task is ready to schedule.
            spec.resolved = _RESOLVED_NONE
            if actor is None and not spec.shape:
                spec.shape = shape_key(spec.resources)
            with cw.lock:
                for rid in spec.return_ids:
                    self.return_to_task[rid] = spec
                    if rid not in slots:
                        slots[rid] = Slot()
                if spec.nested:
                    cw.refs.add_submitted(spec.nested)
                cw.tasks.submit(rec, args_ready=True)
                if actor is not None:
                    actor.queue.append(spec)
                else:
                    q = self.queues.get(spec.shape)
                    if q is None:
                        q = self.queues[spec.shape] = deque()
                    q.append(spec)
                    standing = self._standing_reason(spec.shape)
                    if standing:
                        rec.pending_reason = standing
            if actor is None:
                self.pump(spec.shape)
            else:
                self.cw.actors.pump(actor)
            return
        with cw.lock:
            for rid in spec.return_ids:
                self.return_to_task[rid] = spec
                if rid not in slots:
                    slots[rid] = Slot()
            cw.refs.add_submitted([o for o, _ in spec.arg_refs] + list(spec.nested))
            cw.tasks.submit(rec, args_ready=False)
            if actor is not None:
                actor.queue.append(spec)
        self._resolve(spec, actor)

    def _resolve(self, spec: TaskSpec, actor: ActorState | None) -> None:
        """Wait for the task's arguments; queue it once they are all ready."""
        cw = self.cw
        remaining = [len(spec.arg_refs)]
        values: list[Any] = [None] * len(spec.arg_refs)

        def ready() -> None:
            resolved = [(o, w, v) for (o, w), v in zip(spec.arg_refs, values, strict=True)]
            with cw.lock:
                if spec.task_id not in cw.tasks.live:
                    return  # failed or cancelled while its arguments were being resolved
                cw.tasks.args_ready(spec.task_id)
                spec.resolved = resolved
                if actor is None:
                    spec.shape = self._shape_with_locality(spec, resolved)
                    self.queues.setdefault(spec.shape, deque()).append(spec)
                    standing = self._standing_reason(spec.shape)
                    if standing:
                        cw.tasks.set_pending_reason(spec.task_id, standing)
            if actor is None:
                self.pump(spec.shape)
            else:
                self.cw.actors.pump(actor)

        lock = threading.Lock()
        for i, (oid, owner) in enumerate(spec.arg_refs):

            def on_value(value: Any, i: int = i) -> None:
                values[i] = value
                with lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    ready()

            cw.on_ready(oid, owner, on_value)

    def pump(self, shape: str) -> None:
        cw = self.cw
        sends: list[tuple[Lease, TaskSpec]] = []
        request = False
        with cw.lock:
            q = self.queues.get(shape)
            if not q:
                return
            leases = self.leases.setdefault(shape, [])
            # SPREAD means one task per worker at a time, each lease asked for on its own (and
            # so placed on the next node), never several queued behind one worker.
            limit = 1 if q[0].strategy[0] == "SPREAD" else self.pipeline
            while q:
                # Queue a task behind a busy worker only when it and everything already queued
                # there are known to be short: a long task would otherwise hold up short ones
                # that another worker could run (decisions/0003-pipelining.md).
                cost = self.durations.get(q[0].function_id, UNKNOWN)
                best = None
                for lease in leases:
                    n = len(lease.inflight)
                    if not lease.peer.alive or n >= limit:
                        continue
                    if n and lease.expected + cost > PIPELINE_BUDGET_S:
                        continue
                    if best is None or n < len(best.inflight):
                        best = lease
                if best is None:
                    break
                spec = q.popleft()
                best.expected += cost
                best.inflight[spec.task_id] = spec
                if spec.trace is not None:
                    spec.trace.reason = cw.tasks.live[spec.task_id].pending_reason
                cw.tasks.dispatched(spec.task_id, best.worker_id)
                sends.append((best, spec))
            if q and self.outstanding.get(shape, 0) == 0:
                self.outstanding[shape] = 1
                request = True
                for spec in q:
                    cw.tasks.set_pending_reason(spec.task_id, WAITING_FOR_WORKER)
            withdraw = self._withdraw(shape) if not q and self.outstanding.get(shape) else None
        if withdraw is not None:
            with contextlib.suppress(OSError):  # a closed connection dropped the request anyway
                withdraw[0].send(m.CancelLeaseRequest(withdraw[1]))
        for lease, spec in sends:
            self.push(lease.peer, spec, lease.gpu_ids)
        if request:
            req_id = cw.next_req()
            with cw.lock:
                self.requests[req_id] = shape
            q0 = self.queues[shape]
            name = q0[0].name if q0 else ""
            resources = q0[0].resources if q0 else {}
            strategy = q0[0].strategy if q0 else ("DEFAULT",)
            prefer = shape.partition("\n")[2]
            retriable = bool(q0) and q0[0].max_retries != 0  # for the memory monitor
            cw.agent.send(
                m.RequestLease(
                    req_id, resources, cw.address, name, strategy, False, prefer, retriable
                )
            )

    def _withdraw(self, shape: str) -> tuple[frames.FrameSocket, int] | None:
        """Forget the lease request of ``shape``, whose queue is empty, and say where to cancel
        it (call with the lock held). Left standing, it would take a worker, and that node's
        room, whenever it came up: a later task would find the node full. A grant already on
        its way is handed back on arrival, as for any request given up on."""
        req_id = next((r for r, s in self.requests.items() if s == shape), None)
        self.outstanding[shape] = 0
        self.infeasible.discard(shape)
        self.held.pop(shape, None)
        if req_id is None:
            return None
        del self.requests[req_id]
        agent = self.request_agent.pop(req_id, (self.cw.agent, 0))[0]
        return agent, req_id

    def _shape_with_locality(self, spec: TaskSpec, resolved: list[tuple[bytes, str, Any]]) -> str:
        """The queue a task waits in: its resource shape, and, when another node's store holds
        most of its argument bytes, that store (leases for it are asked for there, so the
        arguments are read where they lie instead of copied)."""
        key = spec.shape or shape_key(spec.resources)
        if spec.strategy[0] != "DEFAULT":
            return key
        held: dict[str, int] = {}
        for _, _, value in resolved:
            if value is not None and value[0] == "s":
                where = os.path.dirname(value[1])
                held[where] = held.get(where, 0) + value[2]
        if not held:
            return key
        where = max(held, key=held.__getitem__)
        if where == self.cw.store_dir or held[where] < LOCALITY_MIN_BYTES:
            return key
        return f"{key}\n{where}"  # a shape key is JSON: it never holds a raw newline

    def push(self, peer: Peer, spec: TaskSpec, gpu_ids: tuple[int, ...] = ()) -> bool:
        """Send a task to a worker; False if the connection refused it (it never arrived)."""
        cw = self.cw
        blob = b""
        if spec.function_id and spec.function_id not in peer.sent_functions:
            blob = spec.function_blob
            peer.sent_functions.add(spec.function_id)
        task = cw.current_task
        tt = spec.trace
        msg = m.PushTask(
            spec.task_id,
            cw.job_id,
            spec.name,
            spec.function_id,
            blob,
            spec.args,
            spec.resolved or [],
            spec.return_ids,
            spec.actor_id,
            spec.method,
            task.task_id if task is not None else b"",
            cw.driver_address,
            {} if tt is None else tracing.pushed(tt, cw.tasks.live.get(spec.task_id)),
            gpu_ids,
            cw.namespace,
            spec.placement_group,
        )
        try:
            peer.fs.send(msg)
        except frames.FrameTooLargeError as e:
            if blob:
                peer.sent_functions.discard(spec.function_id)
            self._unsendable(peer, spec, e)
        except OSError:
            return False  # the reader thread sees the closed connection and fails or retries it
        return True

    def _unsendable(self, peer: Peer, spec: TaskSpec, error: frames.FrameTooLargeError) -> None:
        """Fail a call whose message is larger than a frame may be (its arguments' values add
        up to more): at once, and without a retry, which would only fail the same way."""
        cw = self.cw
        if spec.trace is not None:
            tracing.schedule_done(spec.trace, error)
        with cw.lock:
            lease = self.lease_by_peer.get(peer.address)
            holder = lease if lease is not None else cw.actors.by_peer.get(peer.address)
            if holder is not None:
                holder.inflight.pop(spec.task_id, None)
            if lease is not None and not lease.inflight:
                lease.expected = 0.0
                lease.idle_since = time.monotonic()
            if spec.task_id in cw.tasks.live:
                cw.tasks.failed(
                    spec.task_id, str(error)[:200], False, False, "FrameTooLargeError", "system"
                )
        self._finish(spec, [("e", pickle.dumps(error))] * len(spec.return_ids), [])

    # -- agent replies -----------------------------------------------------------------------

    def _spill(self, msg: m.LeaseSpillback) -> None:
        """The local agent says another node is the place: ask that node's agent, which
        grants the lease or, if it cannot run it after all, rejects it."""
        cw = self.cw
        with cw.lock:
            shape = self.requests.get(msg.req_id)
            q = self.queues.get(shape or "")
            hops = self.request_agent.get(msg.req_id, (None, 0))[1]
            if shape in self.infeasible or self.held.pop(shape or "", None):
                # A node that can run them joined (or was undrained): they wait for it.
                self.infeasible.discard(shape)
                for spec in q or ():
                    cw.tasks.set_pending_reason(spec.task_id, WAITING_FOR_RESOURCES)
        if shape is None:
            return
        if not q:  # nothing left to run: forget the request
            with cw.lock:
                self.requests.pop(msg.req_id, None)
                self.outstanding[shape] = 0
            return
        spec = q[0]
        # Sent to where the arguments lie: that agent may still pass it on to a node with room.
        near = msg.near is True and hops == 0
        prefer = shape.partition("\n")[2] if near else ""
        try:
            agent = cw.remote_agent(msg.data_address)
            with cw.lock:
                self.request_agent[msg.req_id] = (agent, hops + 1)
            agent.send(
                m.RequestLease(
                    msg.req_id,
                    spec.resources,
                    cw.address,
                    spec.name,
                    spec.strategy,
                    not near,
                    prefer,
                    spec.max_retries != 0,
                )
            )
        except (ConnectionError, OSError):
            # That node is unreachable: ask our own agent again, which has a newer view soon.
            self._ask_again(msg.req_id, hops + 1)

    def _ask_again(self, req_id: int, hops: int) -> None:
        """Send a request back to this node's agent (bounded, so a stale view cannot loop)."""
        cw = self.cw
        with cw.lock:
            shape = self.requests.get(req_id)
            q = self.queues.get(shape or "")
            self.request_agent[req_id] = (cw.agent, hops)
        if shape is None or not q:
            return
        spec = q[0]
        spilled = hops >= 3  # after three hops, queue at home rather than chase the view
        cw.agent.send(
            m.RequestLease(
                req_id,
                spec.resources,
                cw.address,
                spec.name,
                spec.strategy,
                spilled,
                retriable=spec.max_retries != 0,
            )
        )

    def _unschedulable(self, req_id: int, shape: str, reason: str) -> None:
        """No node may ever run the tasks of ``shape`` (a hard node affinity to a node that is
        gone): fail them with TaskUnschedulableError."""
        cw = self.cw
        with cw.lock:
            self.requests.pop(req_id, None)
            self.request_agent.pop(req_id, None)
            self.outstanding[shape] = 0
            self.infeasible.discard(shape)
            q = self.queues.get(shape)
            specs = list(q) if q else []
            if q:
                q.clear()
        for spec in specs:
            err = exc.TaskUnschedulableError(reason)
            with cw.lock:
                cw.tasks.failed(spec.task_id, reason, True, False, "TaskUnschedulableError")
            if spec.trace is not None:
                tracing.schedule_done(spec.trace, err)
            self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])

    def on_agent_closed(self, agent: frames.FrameSocket) -> None:
        """Another node's agent went away: its pending requests go back to ours."""
        with self.cw.lock:
            waiting = [(r, hops) for r, (fs, hops) in self.request_agent.items() if fs is agent]
        for req_id, hops in waiting:
            self._ask_again(req_id, hops + 1)

    def on_lease_reply(self, msg: Any, source: frames.FrameSocket | None = None) -> None:
        """A reply to a lease request, from our agent (``source`` None) or another node's."""
        cw = self.cw
        if type(msg) is m.LeaseSpillback:
            self._spill(msg)
            return
        if type(msg) is m.LeaseRejected:
            with cw.lock:
                shape = self.requests.get(msg.req_id)
            if shape is None:
                return  # a request withdrawn (or failed) already: nothing waits for it
            if source is not None and msg.infeasible:
                hops = self.request_agent.get(msg.req_id, (None, 0))[1]
                self._ask_again(msg.req_id, hops)  # that node could not run it after all
                return
            if not msg.infeasible:
                self._unschedulable(msg.req_id, shape, msg.reason)
                return
            with cw.lock:
                if self.requests.get(msg.req_id) != shape:
                    return  # withdrawn or answered meanwhile
                self.infeasible.add(shape)
                self.held.pop(shape, None)
                for spec in self.queues.get(shape, ()):
                    cw.tasks.set_pending_reason(spec.task_id, INFEASIBLE)
            if shape not in self.warned_infeasible:
                self.warned_infeasible.add(shape)
                print(
                    f"freight: warning: {msg.reason}. The task stays pending (infeasible) "
                    "until a node that can run it joins; `freight status` lists it.",
                    file=sys.stderr,
                )
            return
        with cw.lock:
            shape = self.requests.pop(msg.req_id, None)
            self.request_agent.pop(msg.req_id, None)
            if shape is not None:
                self.outstanding[shape] = 0
                self.infeasible.discard(shape)
                self.held.pop(shape, None)
        agent = source
        if shape is None:  # a grant for a request given up on: hand the worker back
            (agent or cw.agent).send(m.ReturnLease(msg.worker_id, False))
            return
        try:
            peer = cw.peer(msg.worker_address)
        except (ConnectionError, OSError):
            (agent or cw.agent).send(m.ReturnLease(msg.worker_id, True))
            self.pump(shape)
            return
        lease = Lease(
            msg.worker_id,
            peer,
            shape,
            idle_since=time.monotonic(),
            agent=agent,
            gpu_ids=tuple(msg.gpu_ids),
        )
        with cw.lock:
            self.leases.setdefault(shape, []).append(lease)
            self.lease_by_peer[peer.address] = lease
        self.pump(shape)

    def on_lease_waiting(self, msg: m.LeaseWaiting) -> None:
        """An agent holds a request for a reason of its own: its tasks show that reason."""
        if not isinstance(msg.reason, str):
            raise frames.ProtocolError("malformed LeaseWaiting")
        cw = self.cw
        with cw.lock:
            shape = self.requests.get(msg.req_id)
            if shape is None:
                return  # withdrawn or answered meanwhile
            self.held[shape] = msg.reason[:200]
            for spec in self.queues.get(shape, ()):
                cw.tasks.set_pending_reason(spec.task_id, self.held[shape])

    def on_lease_recalled(
        self, msg: m.RecallLease, source: frames.FrameSocket | None = None
    ) -> None:
        """The lease's node was drained: push no more tasks to its worker, and give it back
        now, or once the tasks in flight there are done."""
        cw = self.cw
        with cw.lock:
            lease = next(
                (
                    ls
                    for ls in self.lease_by_peer.values()
                    if ls.worker_id == msg.worker_id and ls.agent is source
                ),
                None,
            )
            if lease is None:
                return  # returned already
            lease.recalled = True
            shape_leases = self.leases.get(lease.shape, [])
            if lease in shape_leases:
                shape_leases.remove(lease)
            idle = not lease.inflight and self.lease_by_peer.pop(lease.peer.address, None)
        if idle:
            self._give_back(lease)
        if self.queues.get(lease.shape):
            self.pump(lease.shape)  # what waits asks for a lease elsewhere

    def _give_back(self, lease: Lease) -> None:
        """Return a recalled lease, once it is out of :attr:`lease_by_peer`."""
        with contextlib.suppress(OSError):
            (lease.agent or self.cw.agent).send(m.ReturnLease(lease.worker_id, False))

    def _standing_reason(self, shape: str) -> str:
        """Why a task queued behind the standing request of ``shape`` waits, when the agent
        said ("" when it said nothing: the request is simply waiting)."""
        return INFEASIBLE if shape in self.infeasible else self.held.get(shape, "")

    def return_idle_leases(self) -> None:
        cw = self.cw
        now = time.monotonic()
        returned: list[Lease] = []
        with cw.lock:
            for shape, leases in self.leases.items():
                if self.queues.get(shape):
                    continue
                for lease in list(leases):
                    if not lease.inflight and now - lease.idle_since > LEASE_IDLE_S:
                        leases.remove(lease)
                        self.lease_by_peer.pop(lease.peer.address, None)
                        returned.append(lease)
        for lease in returned:
            try:
                (lease.agent or cw.agent).send(m.ReturnLease(lease.worker_id, False))
            except OSError:
                pass

    # -- results -----------------------------------------------------------------------------

    def on_task_done(self, peer: Peer, msg: m.TaskDone) -> None:
        cw = self.cw
        recalled = None  # a recalled lease whose last task this was: returned below
        with cw.lock:
            lease = self.lease_by_peer.get(peer.address)
            actor = None if lease is not None else cw.actors.by_peer.get(peer.address)
            holder = lease if lease is not None else actor
            spec = holder.inflight.pop(msg.task_id, None) if holder is not None else None
            if spec is None:
                return
            if lease is not None:
                lease.expected -= self.durations.get(spec.function_id, UNKNOWN)
                if not lease.inflight:
                    lease.expected = 0.0
                    lease.idle_since = time.monotonic()
                    if lease.recalled and self.lease_by_peer.pop(peer.address, None):
                        recalled = lease
                if not msg.error:
                    took = max(0.0, msg.end_time - msg.start_time)
                    old = self.durations.get(spec.function_id)
                    self.durations[spec.function_id] = (
                        took if old is None else 0.8 * old + 0.2 * took
                    )
            rec = cw.tasks.live.get(spec.task_id)
            if rec is not None:
                rec.start_time, rec.end_time = msg.start_time, msg.end_time
            if not msg.error and spec.trace is None:
                # The common case, in one go: finished, values stored, waiters woken.
                cw.tasks.finished(spec.task_id)
                if lease is not None and spec.max_retries and msg.results:
                    self._keep_lineage(spec, msg.results)
                woken = self._finish_locked(spec, msg.results or ())
            else:
                woken = None
        if woken is not None:
            for callbacks, value in woken[0]:
                for cb in callbacks:
                    cb(value)
            if woken[1]:
                cw._free(woken[1])
        else:
            self._task_done_slow(spec, msg)
        if recalled is not None:
            self._give_back(recalled)
        # Pump only when calls are queued: one queued after this check is pumped by its
        # submitter, and an idle pump here would contend with the woken caller's next submit.
        if lease is not None:
            if self.queues.get(lease.shape):
                self.pump(lease.shape)
        elif actor is not None and actor.queue:
            cw.actors.pump(actor)

    def _finish_locked(self, spec: TaskSpec, results: Any) -> tuple[list[Any], list[bytes]]:
        """Store a finished task's values; the caller holds the lock and then runs the
        returned callbacks (with their values) and frees the returned ids."""
        cw = self.cw
        woken = []
        for rid, r in zip(spec.return_ids, results, strict=False):
            callbacks = cw.store_locked(rid, r[0], r[1])
            if callbacks:
                woken.append((callbacks, r[0]))
        return_to_task = self.return_to_task
        for rid in spec.return_ids:
            return_to_task.pop(rid, None)
        if self.cancelled:
            self.cancelled.discard(spec.task_id)
        freed: list[bytes] = []
        if spec.arg_refs or spec.nested:
            freed = cw.refs.remove_submitted([o for o, _ in spec.arg_refs] + list(spec.nested))
        return woken, freed

    def _task_done_slow(self, spec: TaskSpec, msg: m.TaskDone) -> None:
        """A task that failed, or is traced: the outcome decides between retry and finish."""
        cw = self.cw
        if spec.trace is not None:
            tracing.schedule_done(spec.trace)
        if msg.error:
            error = _load_error(msg.error)
            if type(error) is exc.ObjectLostError and not spec.actor_id:
                lost = self._argument_lost(spec, error)
                if lost is None:
                    return  # the argument is being rebuilt; the task runs once it is back
                error = lost
            cancelled = msg.task_id in self.cancelled or isinstance(error, exc.TaskCancelledError)
            if cancelled:
                error = exc.TaskCancelledError(msg.task_id.hex())
                with cw.lock:
                    cw.tasks.cancelled(spec.task_id, "cancelled while running")
                outcome = Outcome.FINAL
            else:
                app_retry = msg.retryable and _retry_allowed(spec, error)
                cause = getattr(error, "cause", None) or error
                with cw.lock:
                    outcome = cw.tasks.failed(
                        spec.task_id,
                        f"{type(cause).__name__}: {cause}"[:200],  # the user's exception
                        msg.system,
                        app_retry,
                        type(cause).__name__,
                        "application" if msg.retryable else "system",
                        getattr(error, "traceback_str", "") or "",
                    )
            if outcome is Outcome.RETRY and spec.actor_id:
                cw.actors.call_again(spec)
            elif outcome is Outcome.RETRY:
                self._requeue(spec)
            else:
                self._finish(spec, [("e", pickle.dumps(error))] * len(spec.return_ids), [])
        else:
            with cw.lock:
                cw.tasks.finished(spec.task_id)
                if not spec.actor_id and spec.max_retries and msg.results:
                    self._keep_lineage(spec, msg.results)
            values = []
            foreign = []
            for r in msg.results or ():
                values.append(r[0])
                foreign.append(r[1])
            self._finish(spec, values, foreign)

    def _finish(self, spec: TaskSpec, values: list[Any], foreign: list[Any]) -> None:
        cw = self.cw
        for i, (rid, value) in enumerate(zip(spec.return_ids, values, strict=False)):
            cw.store_value(rid, value, foreign[i] if i < len(foreign) else [])
        with cw.lock:
            for rid in spec.return_ids:
                self.return_to_task.pop(rid, None)
            self.cancelled.discard(spec.task_id)
            freed = cw.refs.remove_submitted([o for o, _ in spec.arg_refs] + list(spec.nested))
        cw._free(freed)

    # -- lineage: rebuilding objects lost with their node --------------------------------------

    def _keep_lineage(self, spec: TaskSpec, results: Any) -> None:
        """Keep a finished task's spec (under the lock), so its returns can be rebuilt: only
        when one is in a store, the kind a node takes with it when it dies (an inline value
        lives in its owner; one a rebuilt task needs travels in that task's spec)."""
        for r in results:
            if r[0][0] == "s":
                break
        else:
            return
        if spec.task_id in self.lineage.entries:
            self.lineage.keep(spec)  # rebuilt: kept already
            return
        entries = self.cw.refs.entries
        for rid in spec.return_ids:
            if rid in entries:  # (all of them dropped already: nothing to rebuild)
                self.lineage.keep(spec)
                return

    def rebuild(self, oid: bytes, cause: str = "", lost: Any = None) -> exc.ObjectLostError | None:
        """Run the task that made ``oid`` (an object this process owns, lost with its node, or
        as ``cause`` says) again; None once that is under way, else the error saying why it
        cannot be rebuilt. ``lost`` is the value its caller found lost: when the object holds
        another one by now (a rebuild ran and finished meanwhile), nothing is run again."""
        cw = self.cw
        with cw.lock:
            if lost is not None:
                slot = cw.slots.get(oid)
                if slot is None or slot.value != lost:
                    return None
            e = self.lineage.spec_of(oid)
            if e is None:
                why = self.lineage.why_not(oid)
                evicted = oid in self.lineage.evicted_set
            else:
                spec = e.spec
                if spec.task_id in cw.tasks.live:
                    return None  # under way already (another get, or a task that takes it)
                limit = spec.max_retries
                if 0 <= limit <= e.rebuilds:
                    why = (
                        f"the task that made it ({spec.name}) was run again {e.rebuilds} "
                        f"time(s) already, its max_retries={limit}"
                    )
                    evicted = True
                else:
                    e.rebuilds += 1
                    rebuilds = e.rebuilds
                    why = ""
            if why:
                _REBUILDS_FAILED()
                cls = exc.ObjectReconstructionFailedError if evicted else exc.ObjectLostError
                lost = (
                    f"{cause} It"
                    if cause
                    else f"Object {oid.hex()} was lost (every copy was on a node that died) and it"
                )
                return cls(oid.hex(), f"{lost} cannot be rebuilt: {why}.")
            for rid in spec.return_ids:  # waiters wait for the new values
                slot = cw.slots.get(rid)
                if slot is not None:
                    slot.value = None
                self.lineage.value_back(rid)
            # Arguments whose values were freed since: an inline one is the value the task was
            # sent; one in a store is rebuilt too, once this task waits for it (its submission
            # holds them, so the new values are kept until it runs).
            prefix = cw._prefix
            sent = {o: v for o, _, v in spec.resolved or ()}
            freed_args = []
            for o, _ in spec.arg_refs:
                if o[:8] != prefix or o in cw.slots:
                    continue
                value = sent.get(o)
                if value is not None and value[0] == "v":
                    cw.slots[o] = self._slot(value)
                else:
                    freed_args.append(o)
            spec.resolved = None
            spec.trace = None
            spec.shape = spec.shape.partition("\n")[0]  # where the arguments lie is found again
        _REBUILDS_STARTED()
        self.submit(spec)
        with cw.lock:
            rec = cw.tasks.live.get(spec.task_id)
            if rec is not None:
                rec.attempt = rebuilds
            for rid in spec.return_ids:
                if rid not in cw.refs.entries:  # a return nobody holds: its new value is freed
                    cw.slots.pop(rid, None)
        for arg in freed_args:
            err = self.rebuild(arg)
            if err is not None:  # the task fails with it instead of waiting for ever
                cw.store_value(arg, ("e", pickle.dumps(err)))
        return None

    def _argument_lost(
        self, spec: TaskSpec, error: exc.ObjectLostError
    ) -> exc.ObjectLostError | None:
        """The worker could not read an argument (lost with its node). When this process owns
        it, rebuild it and run the task once it is back (None); else the error the task
        fails with."""
        cw = self.cw
        try:
            oid = bytes.fromhex(error.object_id)
        except ValueError:
            return error
        if oid[:8] != cw._prefix or all(o != oid for o, _ in spec.arg_refs):
            return error
        sent = next((v for o, _, v in spec.resolved or () if o == oid), None)
        with cw.lock:
            slot = cw.slots.get(oid)
            # The value the task was sent is the one it found lost, or the object was rebuilt
            # (or is being rebuilt) since another reader found it lost: just run it again.
            stale = slot is not None and slot.value == sent
        err = self.rebuild(oid, str(error), sent) if stale else None
        if err is not None:
            return err  # why the argument is gone for good
        with cw.lock:
            if spec.task_id not in cw.tasks.live:
                return None
            cw.tasks.argument_lost(spec.task_id, oid)
            spec.resolved = None
            spec.shape = spec.shape.partition("\n")[0]
        self._resolve(spec, None)
        return None

    def _requeue(self, spec: TaskSpec) -> None:
        """Queue a failed task again, first in line, after a backoff that doubles with each
        attempt (``FREIGHT_TASK_RETRY_DELAY_MS``, at most RETRY_DELAY_MAX_S)."""
        rec = self.cw.tasks.get(spec.task_id)
        attempt = rec.attempt if rec is not None else 0
        delay = min(
            settings.task_retry_delay_ms / 1000 * 2 ** max(attempt - 1, 0), RETRY_DELAY_MAX_S
        )
        if delay <= 0:
            self._queue_again(spec)
            return
        timer = threading.Timer(delay, self._queue_again, (spec,))
        timer.daemon = True
        timer.start()

    def _queue_again(self, spec: TaskSpec) -> None:
        cw = self.cw
        with cw.lock:
            cancelled = spec.task_id in self.cancelled
            if cancelled:
                cw.tasks.cancelled(spec.task_id, "cancelled while waiting to be retried")
            elif spec.task_id in cw.tasks.live:
                self.queues.setdefault(spec.shape, deque()).appendleft(spec)
                standing = self._standing_reason(spec.shape)
                if standing:
                    cw.tasks.set_pending_reason(spec.task_id, standing)
        if cancelled:
            err = exc.TaskCancelledError(spec.task_id.hex())
            self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])
            return
        self.pump(spec.shape)

    def on_peer_closed(self, peer: Peer) -> None:
        cw = self.cw
        with cw.lock:
            lease = self.lease_by_peer.pop(peer.address, None)
            shape_leases = self.leases.get(lease.shape, []) if lease is not None else []
            if lease in shape_leases:
                shape_leases.remove(lease)
        if lease is None:
            cw.actors.on_peer_closed(peer)
            return
        self._lease_lost(lease)

    def on_worker_killed(
        self, msg: m.WorkerKilled, source: frames.FrameSocket | None = None
    ) -> None:
        """The agent kills a leased worker to free the node's memory: its tasks fail with
        OutOfMemoryError (or are retried) now, and the ReturnLease this sends is the agent's
        go-ahead to kill it, so the worker's closing connection finds no lease left to fail
        with a generic WorkerCrashedError (decisions/0022-memory-monitor.md)."""
        cw = self.cw
        with cw.lock:
            lease = next(
                (
                    ls
                    for ls in self.lease_by_peer.values()
                    if ls.worker_id == msg.worker_id and ls.agent is source
                ),
                None,
            )
            if lease is not None:
                del self.lease_by_peer[lease.peer.address]
                shape_leases = self.leases.get(lease.shape, [])
                if lease in shape_leases:
                    shape_leases.remove(lease)
        if lease is not None:  # else returned already, or its death was handled
            self._lease_lost(lease, str(msg.reason))

    def _lease_lost(self, lease: Lease, oom_reason: str = "") -> None:
        """A leased worker died (or the memory monitor is killing it, ``oom_reason``): retry
        its tasks or fail them."""
        cw = self.cw
        try:
            (lease.agent or cw.agent).send(m.ReturnLease(lease.worker_id, True))
        except OSError:
            pass
        for spec in list(lease.inflight.values()):
            if spec.trace is not None:
                lost = f"worker {lease.worker_id} died while running {spec.name}"
                tracing.schedule_done(
                    spec.trace,
                    exc.OutOfMemoryError(oom_reason)
                    if oom_reason
                    else exc.WorkerCrashedError(lost),
                )
            if spec.task_id in self.cancelled:
                err: BaseException = exc.TaskCancelledError(spec.task_id.hex())
                with cw.lock:
                    cw.tasks.cancelled(spec.task_id, "force-cancelled")
                self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])
                continue
            if oom_reason:
                cause = f"worker {lease.worker_id} killed by the memory monitor"
                error_type = "OutOfMemoryError"
            else:
                cause = f"worker {lease.worker_id} (pid unknown) died while running {spec.name}"
                error_type = "WorkerCrashedError"
            with cw.lock:
                outcome = cw.tasks.failed(spec.task_id, cause, True, False, error_type)
                attempts = (cw.tasks.get(spec.task_id) or TaskRecord(b"", "", 0)).attempt + 1
            if outcome is Outcome.RETRY:
                self._requeue(spec)
                continue
            tried = f"{attempts} attempt(s); max_retries={spec.max_retries}"
            if not oom_reason and _node_gone(lease.agent):
                where = lease.peer.address.rpartition("|")[2]
                err = exc.NodeDiedError(
                    f"The node running task {spec.name!r} died ({tried}): its agent is gone, "
                    f"and worker {lease.worker_id} ({where}) with it."
                )
                self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])
                continue
            if oom_reason:
                err = exc.OutOfMemoryError(
                    f"Task {spec.name!r} failed: its worker was killed because the node ran low "
                    f"on memory ({tried}).\n{oom_reason}"
                )
            else:
                err = exc.WorkerCrashedError(
                    f"The worker running task {spec.name!r} died unexpectedly ({tried}). Worker "
                    f"{lease.worker_id}, node {cw.node_id[:12]}."
                )
            self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])
        self.pump(lease.shape)

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, oid: bytes, force: bool, recursive: bool, owner: str = "") -> bool:
        """Cancel the task that makes ``oid``; one another process owns (``owner``) is that
        owner's to cancel, as only it knows where the task runs: the request goes there."""
        cw = self.cw
        if owner and owner != cw.address:
            try:
                cw.peer(owner).fs.send(m.CancelObject(oid, force, recursive))
            except (ConnectionError, OSError):
                return False  # the owner is gone, and its tasks' results with it
            return True
        with cw.lock:
            spec = self.return_to_task.get(oid)
            if spec is None:
                return False
            if force and spec.actor_id:
                raise ValueError(
                    "force=True is not supported for actor tasks: an actor's calls share its "
                    "process and state. Cancel without force, or kill the actor with kill()."
                )
            q = (
                self.queues.get(spec.shape)
                if not spec.actor_id
                else getattr(cw.actors.states.get(spec.actor_id), "queue", None)
            )
            if q is not None and spec in q:
                q.remove(spec)  # not sent yet: it never runs
                queued = True
            else:
                queued = False
                if spec.resolved is None:
                    queued = True  # still waiting for arguments
            if queued:
                cw.tasks.cancelled(spec.task_id, "cancelled before it ran")
            else:
                self.cancelled.add(spec.task_id)
            lease = next(
                (ls for ls in self.lease_by_peer.values() if spec.task_id in ls.inflight), None
            )
            actor = cw.actors.states.get(spec.actor_id) if spec.actor_id and not queued else None
            # An actor call sent already: its worker skips it if it has not started it yet.
            to_actor = actor.peer if actor is not None and spec.task_id in actor.inflight else None
        if queued:
            err = exc.TaskCancelledError(spec.task_id.hex())
            if spec.trace is not None:
                tracing.schedule_done(spec.trace, err)
            self._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])
            return True
        peer = lease.peer if lease is not None else to_actor
        if peer is not None:
            try:
                peer.fs.send(m.CancelTask(spec.task_id, force, recursive))
            except OSError:
                pass
        return True

    def cancel_children(self, force: bool) -> None:
        """Cancel every task this process submitted and is still waiting for (the children of
        a task cancelled with recursive=True); ``force`` applies to tasks, never to actor calls
        (as in Ray)."""
        with self.cw.lock:
            children = [(rid, bool(spec.actor_id)) for rid, spec in self.return_to_task.items()]
        for rid, actor_call in children:
            self.cancel(rid, force and not actor_call, True)

    def cancel_owned(self, task_id: bytes, force: bool, recursive: bool) -> bool:
        """Cancel a task this process owns, named by its id (``freight cancel TASK_ID`` from
        another process, passed on by the head and this node's agent); False when this process
        holds no such task (it has ended meanwhile)."""
        with self.cw.lock:
            oid = next(
                (rid for rid, spec in self.return_to_task.items() if spec.task_id == task_id), None
            )
        if oid is None:
            return False
        self.cancel_asked(oid, force, recursive)
        return True

    def cancel_asked(self, oid: bytes, force: bool, recursive: bool) -> None:
        """Another process asked to cancel the task that makes ``oid``, which this one owns.
        It cannot hear an error from here: an actor call asked to be forced is cancelled
        without force (the caller's own cancel would have refused it)."""
        try:
            self.cancel(oid, force, recursive)
        except ValueError:
            self.cancel(oid, False, recursive)


def _load_error(blob: bytes) -> BaseException:
    try:
        err = pickle.loads(blob)
    except Exception as e:
        return exc.RaySystemError(f"could not load the remote error: {e!r}")
    return err if isinstance(err, BaseException) else exc.RaySystemError(repr(err))


class ActorSubmitter:
    """Calls to actors: one ordered connection per (caller, actor). Also the lifetime of the
    actors this process created: each is destroyed once no handle to it is left."""

    def __init__(self, cw: CoreWorker) -> None:
        self.cw = cw
        self.states: dict[str, ActorState] = {}
        self.by_peer: dict[str, ActorState] = {}
        # The handle objects of the non-detached actors created here (decisions/0031).
        self.owned_handles: dict[bytes, str] = {}

    # -- lifetimes -----------------------------------------------------------------------------

    def own_handle(self, actor_id: str) -> ObjectRef:
        """The reference held by the handles of an actor this process creates; the actor is
        destroyed when it is no longer held anywhere (handles here, borrowers, pending calls)."""
        hid = actor_handle_id(actor_id)
        with self.cw.lock:
            self.owned_handles[hid] = actor_id
        return ObjectRef(hid, self.cw.address)

    def borrow_handle(self, actor: Any) -> ObjectRef | None:
        """The reference for a handle to an existing actor (its head record ``actor``), got by
        name: this process borrows it from the actor's creator. None for a detached actor."""
        if actor.detached or not actor.owner_address:
            return None
        return self.cw.ref_unpickled(actor_handle_id(actor.actor_id), actor.owner_address)

    def handles_gone(self, actor_ids: list[str]) -> None:
        """No handle to these actors (created here) is left: destroy them, as Ray does. One
        still being created is destroyed once its creation has answered."""
        doomed = []
        for actor_id in actor_ids:
            st = self.state(actor_id)
            with self.cw.lock:
                st.out_of_scope = True
                if not st.creating:
                    doomed.append(st)
        for st in doomed:
            self._destroy(st)

    def creation_done(self, actor_id: str) -> None:
        """CreateActor answered for an actor created here."""
        st = self.state(actor_id)
        with self.cw.lock:
            st.creating = False
            doomed = st.out_of_scope
        if doomed:
            self._destroy(st)

    def _destroy(self, st: ActorState) -> None:
        with self.cw.lock:
            if st.dead_cause:
                return  # dead already (killed, or its constructor failed)
            st.dead_cause = OUT_OF_SCOPE

        def kill() -> None:
            from .head_client import pb_module as pb

            request = pb.KillActorRequest(actor_id=st.actor_id, no_restart=True, cause=OUT_OF_SCOPE)
            deadline = time.monotonic() + KILL_WAIT_S
            delay = 0.05
            while not self.cw.closed:
                try:
                    self.cw.head.call("KillActor", request)
                    return
                except ConnectionError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(delay)  # the head is restarting: ask again once it is back
                    delay = min(delay * 2, 1.0)
                except Exception as e:
                    print(f"freight: could not destroy actor {st.actor_id}: {e!r}", file=sys.stderr)
                    return

        threading.Thread(target=kill, name="freight-destroy-actor", daemon=True).start()

    def state(self, actor_id: str, class_name: str = "") -> ActorState:
        with self.cw.lock:
            st = self.states.get(actor_id)
            if st is None:
                st = self.states[actor_id] = ActorState(actor_id, class_name)
            return st

    def created(self, actor_id: str, address: str, dead_cause: str) -> None:
        """The actor is alive at ``address`` (or dead with a cause): flush queued calls."""
        st = self.state(actor_id)
        with self.cw.lock:
            st.resolving = False
            if dead_cause:
                st.dead_cause = dead_cause
            else:
                st.address = address
        self.pump(st)

    def restarting(self, actor_id: str) -> None:
        """This process asked for the actor's restart: its worker is stale from now on.

        Later calls wait for the new address instead of going to the dying worker, where
        they would be lost with it.
        """
        st = self.state(actor_id)
        with self.cw.lock:
            if st.address and not st.dead_cause:
                st.stale_address, st.address = st.address, ""

    def call_again(self, spec: TaskSpec) -> None:
        """Send a call whose attempt failed and may be retried again, before later calls."""
        st = self.state(spec.actor_id)
        with self.cw.lock:
            st.queue.appendleft(spec)
        self.pump(st)

    def resolve(self, st: ActorState) -> None:
        """Find the address of an actor created elsewhere (a handle passed to us)."""
        with self.cw.lock:
            if st.resolving or st.address or st.dead_cause:
                return
            st.resolving = True

        def run() -> None:
            from .head_client import pb_module as pb

            start = time.monotonic()
            deadline = start + 60
            delay = 0.01
            while True:
                try:
                    reply = self.cw.head.call_through_restarts(
                        "GetActor", pb.GetActorRequest(actor_id=st.actor_id)
                    )
                except Exception as e:  # unreachable for long, or the channel closed at shutdown
                    self.created(st.actor_id, "", f"could not reach the head: {e}")
                    return
                a = reply.actor
                if reply.found:
                    st.max_restarts = a.max_restarts
                # After a death, the old address is stale until the head has heard of it (or,
                # if the head never does, for STALE_ADDRESS_S: then it is tried again).
                stale = (
                    a.worker_address == st.stale_address
                    and time.monotonic() - start < STALE_ADDRESS_S
                )
                if reply.found and a.state == "ALIVE" and not stale:
                    self.created(st.actor_id, a.worker_address, "")
                    return
                # A handle can arrive before its actor is registered (an unnamed actor's
                # creator registers it in the background): "not found" gets a grace period.
                # A restart takes as long as it takes.
                unknown = not reply.found and time.monotonic() - start > UNKNOWN_ACTOR_GRACE_S
                late = time.monotonic() > deadline and a.state == "PENDING_CREATION"
                if unknown or a.state == "DEAD" or late:
                    cause = a.death_cause if reply.found else "no such actor"
                    self.created(st.actor_id, "", cause or "the actor is dead")
                    return
                time.sleep(delay)  # polling the head while the actor is being (re)created
                delay = min(delay * 2, 0.1)

        threading.Thread(target=run, daemon=True).start()

    def pump(self, st: ActorState) -> None:
        with st.send_lock:
            fails = self._send_queued(st)
        if not st.address and not st.dead_cause and st.queue:
            self.resolve(st)
        for spec in fails:
            self._fail(st, spec)

    def _send_queued(self, st: ActorState) -> list[TaskSpec]:
        """Send the calls that can go; return those that fail (the actor is dead)."""
        cw = self.cw
        sends: list[TaskSpec] = []
        fails: list[TaskSpec] = []
        with cw.lock:
            if st.dead_cause:
                fails = list(st.queue)
                st.queue.clear()
            elif st.address:
                old = st.peer
                if old is not None and old.alive and old.address != st.address:
                    if st.inflight:  # wait: the old worker's close settles its calls first
                        return []
                    self.by_peer.pop(old.address, None)
                    st.peer = None
                if st.peer is None or not st.peer.alive:
                    try:
                        st.peer = cw.peer(st.address)
                    except (ConnectionError, OSError) as e:
                        if st.max_restarts != 0:
                            # The worker is gone, but the head named it (it had not heard of
                            # the death yet, or has just restarted): ask it again until the
                            # actor's restart gives a new address (pump resolves it).
                            st.stale_address, st.address = st.address, ""
                            return []
                        st.dead_cause = f"the actor's worker is unreachable: {e}"
                        fails = list(st.queue)
                        st.queue.clear()
                    else:
                        self.by_peer[st.address] = st
                while st.peer is not None and st.queue and st.queue[0].resolved is not None:
                    spec = st.queue.popleft()
                    st.inflight[spec.task_id] = spec
                    if spec.trace is not None:
                        spec.trace.reason = cw.tasks.live[spec.task_id].pending_reason
                    cw.tasks.dispatched(spec.task_id, st.actor_id)
                    sends.append(spec)
        peer = st.peer
        for spec in sends:
            assert peer is not None
            if not cw.submitter.push(peer, spec):
                with cw.lock:
                    st.undelivered.add(spec.task_id)  # never ran: sent again, not retried
        return fails

    def _fail(
        self, st: ActorState, spec: TaskSpec, in_flight: str = "", recorded: bool = False
    ) -> None:
        """Fail a call: the actor is dead, or (``in_flight``) it died while running it."""
        what = f"The actor {st.class_name or ''}({st.actor_id[:12]})"
        cause = in_flight or st.dead_cause
        err = exc.RayActorError(
            f"{what} died while running {spec.name}: {in_flight}"
            if in_flight
            else f"{what} is dead, so {spec.name} cannot run: {st.dead_cause}",
            st.actor_id,
        )
        if spec.trace is not None:
            tracing.schedule_done(spec.trace, err)
        with self.cw.lock:
            if not recorded and spec.task_id in self.cw.tasks.live:
                self.cw.tasks.failed(spec.task_id, cause, False, False, "RayActorError", "system")
        self.cw.submitter._finish(spec, [("e", pickle.dumps(err))] * len(spec.return_ids), [])

    def on_peer_closed(self, peer: Peer) -> None:
        cw = self.cw
        with cw.lock:
            st = self.by_peer.pop(peer.address, None)
            if st is None:
                return
            inflight = list(st.inflight.values())
            st.inflight.clear()
            restarts = st.max_restarts != 0 and not st.dead_cause
            if restarts:  # the head restarts it if it has restarts left; ask it where
                if st.address in ("", peer.address):  # (unless the new address is known)
                    st.stale_address, st.address = peer.address, ""
                if st.peer is peer:
                    st.peer = None
            else:
                st.dead_cause = st.dead_cause or "the actor's worker process died (or was killed)"
        if not restarts:
            for spec in inflight:
                self._fail(st, spec)
            self.pump(st)
            return
        cause = "its worker died during the call"
        again: list[TaskSpec] = []
        for spec in inflight:
            if spec.task_id in st.undelivered:
                st.undelivered.discard(spec.task_id)
                with cw.lock:
                    cw.tasks.requeued(spec.task_id)
                again.append(spec)
                continue
            if spec.max_retries == 0:
                self._fail(st, spec, f"{cause} (max_task_retries=0)")
                continue
            with cw.lock:
                outcome = cw.tasks.failed(spec.task_id, cause, True, False, "RayActorError")
            if outcome is Outcome.RETRY:
                again.append(spec)
            else:
                self._fail(st, spec, f"{cause}, and its max_task_retries ran out", recorded=True)
        with cw.lock:
            st.queue.extendleft(reversed(again))  # in their order, before later calls
        self.pump(st)
        if not again and not st.queue:
            self.resolve(st)  # learn the new address (or the death) before the next call
