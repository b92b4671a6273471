"""A node agent's worker leases and local resources, as an I/O-free state machine.

Events (lease requests, workers registering or exiting, leases returned, workers blocking in
``get``) go in; :class:`Action` values come out, which the agent's server carries out. Workers
are capped by the node's CPU count for CPU tasks; a worker blocked in ``get`` gives its CPUs back
(a placement group bundle's CPUs too) so nested tasks cannot deadlock the node or the bundle.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from .placement import group_resources, is_cpu, labels_match
from .task_state import INFEASIBLE, WAITING_FOR_DRAINED, WAITING_FOR_RESOURCES, WAITING_FOR_WORKER
from .transitions import InvalidTransition, Transition, TransitionLog, now

EPS = 1e-9


@dataclass(slots=True)
class LeaseRequest:
    req_id: int
    client: int  # the connection that asked
    resources: dict[str, float]
    name: str
    time: float = field(default_factory=now)
    reason: str = WAITING_FOR_RESOURCES
    warned: bool = False
    strategy: tuple[object, ...] = ("DEFAULT",)
    spilled: bool = False  # sent on by another node: never spilled again


@dataclass(slots=True)
class WorkerSlot:
    worker_id: str
    pid: int = 0
    address: str = ""
    state: str = "STARTING"  # STARTING | IDLE | LEASED | ACTOR | STOPPING | DEAD
    resources: dict[str, float] = field(default_factory=dict)
    client: int = -1
    blocked: bool = False
    idle_since: float = 0.0
    transitions: list[Transition] = field(default_factory=list)
    gpu_ids: tuple[int, ...] = ()  # the GPUs its lease holds (CUDA_VISIBLE_DEVICES)
    # Whether it has run work with GPUs (True) or without (False); None until its first lease.
    # A process keeps what it set up for its devices (a CUDA context, a library that read
    # CUDA_VISIBLE_DEVICES at import), so the two kinds never share a worker (as in Ray).
    gpu: bool | None = None


@dataclass(slots=True)
class ActorRequest:
    """An actor this node is to host, waiting for a worker process of its own."""

    actor_id: str
    resources: dict[str, float]
    time: float = field(default_factory=now)


class Grant(NamedTuple):
    req: LeaseRequest
    worker: WorkerSlot


class ActorClaim(NamedTuple):
    """``worker`` is the actor's now (state ACTOR): run its constructor there."""

    req: ActorRequest
    worker: WorkerSlot


class StartWorkers(NamedTuple):
    n: int


class Infeasible(NamedTuple):
    req: LeaseRequest
    message: str


class Stop(NamedTuple):
    """Stop these workers: they run tasks for an owner that is gone, or are idle workers of
    the wrong kind (GPU or CPU-only) in the way of a worker of the other kind."""

    worker_ids: list[str]
    reason: str = "its owner is gone"


class Held(NamedTuple):
    """The request waits here, ungranted, because the node is drained: its owner is told why
    (the tasks' pending reason)."""

    req: LeaseRequest


Action = Grant | ActorClaim | StartWorkers | Infeasible | Stop | Held


def fits(need: dict[str, float], have: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) + EPS >= v for k, v in need.items() if v > 0)


def _wants_gpu(resources: dict[str, float]) -> bool:
    return resources.get("GPU", 0.0) > EPS


def shape_key(resources: dict[str, float]) -> str:
    return json.dumps({k: v for k, v in sorted(resources.items()) if v}, separators=(",", ":"))


class LeaseManager:
    def __init__(
        self,
        total: dict[str, float],
        validate: bool = False,
        node_id: str = "",
        labels: dict[str, str] | None = None,
        startup_limit: int = 0,
    ) -> None:
        self.node_id = node_id
        self.labels = dict(labels or {})  # for requests whose strategy constrains labels
        self.total = dict(total)
        self.available = dict(total)
        # Placement groups' bundles reserved here: pg id -> (base amounts taken, group amounts
        # added to total and available once committed).
        self.groups: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        self.committed: set[str] = set()
        # The free share of each GPU (by id): whole GPUs go to one lease, fractions share one.
        self.gpu_free: dict[int, float] = {i: 1.0 for i in range(int(total.get("GPU", 0) + EPS))}
        self.workers: dict[str, WorkerSlot] = {}
        self.pending: deque[LeaseRequest] = deque()
        # Actors waiting for a worker, first come first served: each registration hands one
        # worker to the first in line (no herd of waiters woken to race for it).
        self.actor_queue: deque[ActorRequest] = deque()
        # Worker processes starting at once are bounded (Ray's maximum_startup_concurrency):
        # a burst of actors must not start hundreds of interpreters that starve the agent.
        self.startup_limit = startup_limit if startup_limit > 0 else self.cpu_cap()
        self.starting = 0  # workers in STARTING
        self.starting_peak = 0  # the most that were starting at once
        self.prestart_left = 0  # workers still to start ahead of any demand
        self.log = TransitionLog()
        self._validate = validate
        self.leases_granted = 0
        # Drained (freight drain): no new lease is granted here; what holds one keeps it.
        self.draining = False

    # -- helpers -----------------------------------------------------------------------------

    def _set(self, w: WorkerSlot, state: str, cause: str) -> None:
        tr = Transition(now(), w.state, state, cause)
        if w.state == "STARTING":
            self.starting -= 1
        w.state = state
        w.transitions.append(tr)
        if len(w.transitions) > 64:
            del w.transitions[:32]
        self.log.emit(w.worker_id, tr)

    def _take(self, res: dict[str, float]) -> None:
        for k, v in res.items():
            self.available[k] = self.available.get(k, 0.0) - v

    def _give(self, res: dict[str, float]) -> None:
        for k, v in res.items():
            self.available[k] = self.available.get(k, 0.0) + v

    @staticmethod
    def _held(w: WorkerSlot) -> dict[str, float]:
        """What the worker's lease takes from the free pool now: a blocked worker's CPUs went
        back when it blocked."""
        if not w.blocked:
            return dict(w.resources)
        return {k: v for k, v in w.resources.items() if not is_cpu(k)}

    def cpu_cap(self) -> int:
        return max(1, int(self.total.get("CPU", 1) + EPS))

    def active_task_workers(self) -> int:
        return sum(
            1
            for w in self.workers.values()
            if w.state in ("STARTING", "IDLE", "LEASED") and not w.blocked
        )

    # -- events ------------------------------------------------------------------------------

    def request(self, req: LeaseRequest) -> list[Action]:
        self.pending.append(req)
        return self._dispatch()

    def set_draining(self, draining: bool) -> list[Action]:
        """Stop granting new leases (the requests queued here wait, or are sent on by the
        agent), or grant them again."""
        self.draining = draining
        return self._dispatch()

    def cancel(self, req_id: int, client: int) -> bool:
        for req in self.pending:
            if req.req_id == req_id and req.client == client:
                self.pending.remove(req)
                return True
        return False

    def worker_starting(self, worker_id: str) -> WorkerSlot:
        w = self.workers[worker_id] = WorkerSlot(worker_id)
        w.transitions.append(Transition(now(), "", "STARTING", "spawned"))
        self.starting += 1
        self.starting_peak = max(self.starting_peak, self.starting)
        return w

    def prestart(self, n: int) -> list[Action]:
        """Start ``n`` workers ahead of demand (within the start-up bound, as they register)."""
        self.prestart_left = max(0, n)
        return self._dispatch()

    def request_actor(self, req: ActorRequest) -> list[Action]:
        """Queue an actor for a worker of its own; an :class:`ActorClaim` hands it one."""
        self.actor_queue.append(req)
        return self._dispatch()

    def cancel_actor(self, req: ActorRequest) -> bool:
        """Take an actor out of the queue (its creation was given up)."""
        try:
            self.actor_queue.remove(req)
        except ValueError:
            return False
        return True

    def unclaim(self, worker_id: str) -> list[Action]:
        """A worker claimed for an actor whose creation was given up before it began: it is
        idle again."""
        w = self.workers.get(worker_id)
        if w is None or w.state != "ACTOR":
            return []
        self._release(w)
        w.idle_since = now()
        self._set(w, "IDLE", "actor creation given up")
        return self._dispatch()

    def actor_infeasible(self, resources: dict[str, float]) -> str:
        """Why this node can never host an actor with ``resources`` ("" when it can)."""
        if fits(resources, self.total):
            return ""
        return f"{INFEASIBLE}: needs {shape_key(resources)}, node has {shape_key(self.total)}"

    def worker_registered(self, worker_id: str, address: str, pid: int) -> list[Action]:
        w = self.workers.get(worker_id) or self.worker_starting(worker_id)
        w.address, w.pid = address, pid
        if w.state == "STARTING":
            w.idle_since = now()
            self._set(w, "IDLE", "registered")
        return self._dispatch()

    def lease_returned(self, worker_id: str) -> list[Action]:
        w = self.workers.get(worker_id)
        if w is None or w.state != "LEASED":
            return []
        self._release(w)
        w.client, w.idle_since = -1, now()
        self._set(w, "IDLE", "lease returned")
        return self._dispatch()

    def worker_exited(self, worker_id: str, cause: str) -> list[Action]:
        w = self.workers.pop(worker_id, None)
        if w is None:
            return []
        if w.state in ("LEASED", "ACTOR"):
            self._release(w)
        self._set(w, "DEAD", cause)
        return self._dispatch()

    def client_gone(self, client: int, crashed: bool = True) -> list[Action]:
        """An owner disconnected: drop its requests and take back its leases. An owner that
        crashed may have left its tasks running, whose results nobody is left to take: its
        workers are stopped (as Ray does). One that said goodbye has them back as idle."""
        self.pending = deque(r for r in self.pending if r.client != client)
        doomed = []
        for w in list(self.workers.values()):
            if w.state == "LEASED" and w.client == client:
                self._release(w)
                w.client = -1
                if crashed:
                    self._set(w, "STOPPING", "owner disconnected")
                    doomed.append(w.worker_id)
                else:
                    w.idle_since = now()
                    self._set(w, "IDLE", "owner disconnected")
        actions = self._dispatch()
        return [Stop(doomed), *actions] if doomed else actions

    def set_blocked(self, worker_id: str, blocked: bool) -> list[Action]:
        w = self.workers.get(worker_id)
        if w is None or w.blocked == blocked or w.state not in ("LEASED", "ACTOR"):
            return []
        w.blocked = blocked
        cpu = {k: v for k, v in w.resources.items() if is_cpu(k)}
        if blocked:
            self._give(cpu)
        else:
            self._take(cpu)
        return self._dispatch()

    def _claim(self, w: WorkerSlot, resources: dict[str, float]) -> None:
        self._take(resources)
        w.resources = dict(resources)
        w.gpu_ids = self._take_gpus(resources.get("GPU", 0.0))
        w.gpu = _wants_gpu(resources)
        self._set(w, "ACTOR", "claimed for an actor")

    @staticmethod
    def _pick_idle(idle: list[WorkerSlot], gpu: bool) -> WorkerSlot | None:
        """Take from ``idle`` a worker that may run work of this kind: one that ran the same
        kind before, else a fresh one (kept for either kind as long as possible)."""
        fresh = -1
        for i in range(len(idle) - 1, -1, -1):
            if idle[i].gpu is gpu:
                return idle.pop(i)
            if idle[i].gpu is None and fresh < 0:
                fresh = i
        return idle.pop(fresh) if fresh >= 0 else None

    def _take_gpus(self, amount: float) -> tuple[int, ...]:
        """GPU ids for a lease of ``amount`` GPUs: that many whole ones, or for a fraction the
        fullest GPU that still has room (so fractions pack onto few GPUs)."""
        if amount <= EPS or not self.gpu_free:
            return ()
        if amount >= 1 - EPS:
            ids = sorted(i for i, f in self.gpu_free.items() if f >= 1 - EPS)[: int(amount + EPS)]
            for i in ids:
                self.gpu_free[i] = 0.0
            return tuple(ids)
        room = [(f, i) for i, f in self.gpu_free.items() if f + EPS >= amount]
        if not room:
            return ()
        _, i = min(room)
        self.gpu_free[i] -= amount
        return (i,)

    def _give_gpus(self, w: WorkerSlot) -> None:
        amount = w.resources.get("GPU", 0.0)
        for i in w.gpu_ids:
            self.gpu_free[i] = 1.0 if amount >= 1 - EPS else self.gpu_free[i] + amount
        w.gpu_ids = ()

    def _release(self, w: WorkerSlot) -> None:
        self._give_gpus(w)
        self._give(self._held(w))
        w.resources, w.blocked = {}, False

    def _dispatch(self) -> list[Action]:
        actions: list[Action] = []
        idle = [w for w in self.workers.values() if w.state == "IDLE"]
        starting = self.starting
        want_workers = 0  # requests that take a CPU, waiting for a worker
        want_uncapped = 0  # requests that take none, waiting for a worker
        kept: deque[LeaseRequest] = deque()
        for req in self.pending:
            barred = self._barred(req)
            if barred or not fits(req.resources, self.total):
                req.reason = INFEASIBLE
                if not req.warned and not barred and any("_group_" in k for k in req.resources):
                    # A placement group's resources appear on the nodes a heartbeat or two after
                    # its bundles are reserved: no warning for that.
                    req.warned = True
                if not req.warned:
                    req.warned = True
                    actions.append(
                        Infeasible(
                            req,
                            f"no node can ever run {req.name!r}: {barred}"
                            if barred
                            else f"no node can ever run {req.name!r}: it asks for "
                            f"{shape_key(req.resources)} and the node has {shape_key(self.total)}",
                        )
                    )
                kept.append(req)
            elif self.draining:
                if req.reason != WAITING_FOR_DRAINED:
                    req.reason = WAITING_FOR_DRAINED
                    actions.append(Held(req))
                kept.append(req)
            elif not fits(req.resources, self.available):
                req.reason = WAITING_FOR_RESOURCES
                kept.append(req)
            elif (w := self._pick_idle(idle, _wants_gpu(req.resources))) is not None:
                self._take(req.resources)
                w.resources, w.client = dict(req.resources), req.client
                w.gpu_ids = self._take_gpus(req.resources.get("GPU", 0.0))
                w.gpu = _wants_gpu(req.resources)
                self._set(w, "LEASED", f"lease {req.req_id}")
                self.leases_granted += 1
                actions.append(Grant(req, w))
            else:
                req.reason = WAITING_FOR_WORKER
                if any(v > EPS and is_cpu(k) for k, v in req.resources.items()):
                    want_workers += 1
                else:
                    want_uncapped += 1
                kept.append(req)
        self.pending = kept
        want_actors = self._dispatch_actors(idle, actions)
        # Task workers are capped by the CPU count (a starting one counts: it is on its way).
        # A task that takes no CPU is not (a canary, a coordinator): it gets a worker of its own
        # even on a node whose CPUs are all busy, as in Ray, within the start-up bound.
        room = self.cpu_cap() - self.active_task_workers()
        short = want_workers - starting - max(room, 0)
        if short > 0 and idle:
            # Idle workers of the other kind take the room: stop some to start the right kind.
            surplus = [w.worker_id for w in idle[:short]]
            for wid in surplus:
                self.retire(wid)
            room += len(surplus)
            actions.append(Stop(surplus, "an idle worker of the other kind (GPU or CPU-only)"))
        task_workers = min(want_workers, room + starting) + want_uncapped
        want_workers = task_workers + want_actors + self.prestart_left
        need = min(want_workers, self.startup_limit) - starting
        if need > 0:
            self.prestart_left = max(0, self.prestart_left - need)
            actions.append(StartWorkers(need))
        if self._validate:
            self.validate()
        return actions

    def _dispatch_actors(self, idle: list[WorkerSlot], actions: list[Action]) -> int:
        """Hand the idle workers left to the actors first in line; return how many of those
        still waiting want a worker. Only those the idle workers reach are looked at, so a
        long queue costs nothing per event."""
        queue = self.actor_queue
        skipped: list[ActorRequest] = []  # waiting for resources, not for a worker
        while queue and idle:
            req = queue[0]
            if not fits(req.resources, self.available):
                skipped.append(queue.popleft())
                continue
            w = self._pick_idle(idle, _wants_gpu(req.resources))
            if w is None:
                break  # the idle ones are of the other kind: this one waits for a new worker
            queue.popleft()
            self._claim(w, req.resources)
            actions.append(ActorClaim(req, w))
        want = len(queue)
        queue.extendleft(reversed(skipped))
        return want

    def reserve_bundles(
        self, pg_id: str, bundles: list[tuple[int, dict[str, float]]]
    ) -> tuple[str, list[Action]]:
        """Set aside a placement group's bundles: their amounts leave the free pool and come
        back as the group's own resources. Returns why it cannot ("" when it did; otherwise
        nothing changed) and what the group's resources let start."""
        if pg_id in self.groups:
            return "", []  # asked again (the head retried): already reserved
        need: dict[str, float] = {}
        added: dict[str, float] = {}
        for index, bundle in bundles:
            for k, v in bundle.items():
                need[k] = need.get(k, 0.0) + v
            for k, v in group_resources(pg_id, index, bundle).items():
                added[k] = added.get(k, 0.0) + v
        if not fits(need, self.available):
            return f"needs {shape_key(need)}, free here {shape_key(self.available)}", []
        self._take(need)
        self.groups[pg_id] = (need, added)
        return "", []

    def commit_bundles(self, pg_id: str) -> tuple[str, list[Action]]:
        """Make reserved bundles usable: the group's resources appear (second phase)."""
        got = self.groups.get(pg_id)
        if got is None:
            return f"placement group {pg_id} has no bundles reserved here", []
        if pg_id in self.committed:
            return "", []
        self.committed.add(pg_id)
        for k, v in got[1].items():
            self.total[k] = self.total.get(k, 0.0) + v
            self.available[k] = self.available.get(k, 0.0) + v
        return "", self._dispatch()

    def return_bundles(self, pg_id: str) -> tuple[list[str], list[Action]]:
        """Give a placement group's bundles back; returns the workers still using them (to be
        killed, as Ray does) and what the freed amounts let start."""
        got = self.groups.pop(pg_id, None)
        if got is None:
            return [], []
        need, added = got
        if pg_id not in self.committed:  # only set aside: nothing used it
            self._give(need)
            return [], self._dispatch()
        self.committed.discard(pg_id)
        doomed = []
        for w in self.workers.values():
            held = {k: v for k, v in w.resources.items() if k in added}
            if held and w.state in ("LEASED", "ACTOR"):
                doomed.append(w.worker_id)
                self._give({k: v for k, v in self._held(w).items() if k in added})
                w.resources = {k: v for k, v in w.resources.items() if k not in added}
        for k, v in added.items():
            self.total[k] = self.total.get(k, 0.0) - v
            self.available[k] = self.available.get(k, 0.0) - v
            if abs(self.total[k]) < EPS:
                del self.total[k]
                self.available.pop(k, None)
        self._give(need)
        return doomed, self._dispatch()

    def _barred(self, req: LeaseRequest) -> str:
        """Why the request's strategy keeps it off this node ("" when it does not)."""
        strategy = req.strategy
        if strategy[0] == "LABELS" and not labels_match(self.labels, strategy[1]):  # type: ignore[arg-type]
            return f"no node has the labels {list(strategy[1])}"  # type: ignore[call-overload]
        if strategy[0] == "NODE" and not strategy[2] and strategy[1] != self.node_id:
            return f"its node affinity is to node {str(strategy[1])[:12]}"
        return ""

    def retire(self, worker_id: str) -> bool:
        """Take an idle worker out of service (it is being asked to exit)."""
        w = self.workers.get(worker_id)
        if w is None or w.state != "IDLE":
            return False
        self._set(w, "STOPPING", "retired")
        return True

    def idle_surplus(self, now_s: float, timeout_s: float) -> list[str]:
        """Idle workers beyond the CPU count that have been idle longer than ``timeout_s``.

        Blocked tasks make the pool grow past the CPU count; this shrinks it back.
        """
        idle = sorted(
            (w for w in self.workers.values() if w.state == "IDLE"), key=lambda w: w.idle_since
        )
        surplus = self.active_task_workers() - self.cpu_cap()
        out = []
        for w in idle:
            if surplus <= 0 or now_s - w.idle_since < timeout_s:
                break
            out.append(w.worker_id)
            surplus -= 1
        return out

    def pending_by_reason(self) -> dict[str, int]:
        """Lease requests and actors waiting here, by pending reason."""
        out: dict[str, int] = {}
        for r in self.pending:
            out[r.reason] = out.get(r.reason, 0) + 1
        for a in self.actor_queue:
            reason = (
                WAITING_FOR_WORKER if fits(a.resources, self.available) else WAITING_FOR_RESOURCES
            )
            out[reason] = out.get(reason, 0) + 1
        return out

    def infeasible_shapes(self) -> list[str]:
        return sorted({shape_key(r.resources) for r in self.pending if r.reason == INFEASIBLE})

    def validate(self) -> None:
        used: dict[str, float] = {}
        for w in self.workers.values():
            for k, v in self._held(w).items():
                used[k] = used.get(k, 0.0) + v
            if w.state == "LEASED" and w.client < 0:
                raise InvalidTransition(f"worker {w.worker_id} leased to nobody")
        starting = sum(1 for w in self.workers.values() if w.state == "STARTING")
        if starting != self.starting:
            raise InvalidTransition(f"{starting} workers starting, counted {self.starting}")
        for base, _ in self.groups.values():  # set aside for placement groups' bundles
            for k, v in base.items():
                used[k] = used.get(k, 0.0) + v
        for k in set(self.total) | set(used):
            want = self.total.get(k, 0.0) - used.get(k, 0.0)
            if abs(self.available.get(k, 0.0) - want) > 1e-6:
                raise InvalidTransition(
                    f"resource {k}: available {self.available.get(k)} != {want}"
                )

    def statistics(self) -> dict[str, object]:
        states: dict[str, int] = {}
        for w in self.workers.values():
            states[w.state] = states.get(w.state, 0) + 1
        return {
            "workers": states,
            "pending": self.pending_by_reason(),
            "available": dict(self.available),
            "total": dict(self.total),
            "leases_granted": self.leases_granted,
            "startup_limit": self.startup_limit,
            "starting_peak": self.starting_peak,
            "actors_waiting": len(self.actor_queue),
            "draining": self.draining,
        }
