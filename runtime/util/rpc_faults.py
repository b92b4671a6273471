"""Fault points on the runtime's calls: a fraction of the calls of one gRPC method, or of the
data-plane messages of one kind a node agent receives, fail or wait.

Each process (the head, every node agent) has one :data:`FAULTS` table, empty unless an operator
switched a fault on through ``SetRpcFault`` (admin token). Empty, the hooks cost one truthiness
check of a dict per call: :class:`RpcFaultInterceptor` for gRPC, and the data-plane server loop
(:func:`freight.protocol.aio.serve_connection`) per frame. Every fault carries its own expiry,
kept by the process itself (a timer on its loop, and a check at each call), so a fault whose
harness died ends anyway; and its own seed, so the calls a fraction hits are the same in a rerun
that makes the same calls in the same order (docs/decisions/0086-rpc-fault-hooks.md).

Names: a gRPC method by its full name (``freight.v1.HeadService/Heartbeat``; ``HeadService/
Heartbeat`` will do), a data-plane kind as ``data/<message>`` (``data/RequestLease``). A failed
gRPC call ends with the fault's status code before its handler runs; a failed data-plane message
closes the connection it came on, as a peer that went away would (there is no reply to fail).
A delayed call or message waits before it is handled (later messages of that connection behind
it: it is latency on that link).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc import aio
from loguru import logger

from freight.protocol import messages as m
from freight.protocol.generated import freight_pb2 as pb

FAIL, DELAY = "fail", "delay"
HEAD, NODE = "head", "node"
DATA_PREFIX = "data/"
MAX_DURATION_S = 3600.0  # time-boxed like every fault: an hour at most
MAX_DELAY_S = 600.0
MAX_ID_CHARS = 64
KEEP_ENDED = 64  # ended faults remembered for their final counts (the harness reads them)

# What each component serves: the names a fault on it can take.
SERVICES = {HEAD: ("HeadService", "StateService"), NODE: ("NodeAgentService",)}
# The calls that switch faults: never faulted, so that a fault can always be cleared.
CONTROL_METHODS = frozenset({"SetRpcFault", "ClearRpcFaults", "ListRpcFaults"})
# The data-plane messages a node agent receives (freight.node.agent handles each of these; it
# refuses every other kind on its socket, so a fault on another kind could never hit).
AGENT_MESSAGES: tuple[type, ...] = (
    m.RequestLease,
    m.ReturnLease,
    m.CancelLeaseRequest,
    m.ReserveObject,
    m.RestoreObject,
    m.FetchObject,
    m.FreeElsewhere,
    m.SealObject,
    m.FreeObjects,
    m.WorkerBlocked,
    m.WorkerUnblocked,
    m.RegisterWorker,
    m.ActorReady,
    m.Telemetry,
)


def grpc_methods(component: str) -> list[str]:
    """The full names of the gRPC methods ``component`` ("head" or "node") serves."""
    return [
        f"{service.full_name}/{method.name}"
        for name in SERVICES[component]
        for service in (pb.DESCRIPTOR.services_by_name[name],)
        for method in service.methods
        if method.name not in CONTROL_METHODS
    ]


def data_kinds() -> list[str]:
    """The names of the data-plane message kinds a node agent receives."""
    return [DATA_PREFIX + cls.__name__ for cls in AGENT_MESSAGES]


def known_names(component: str) -> list[str]:
    """Every name a fault on ``component`` can take."""
    return grpc_methods(component) + (data_kinds() if component == NODE else [])


def served_by(name: str) -> str:
    """Which component serves the call ``name`` (a name :func:`resolve` returned)."""
    return NODE if name.startswith(DATA_PREFIX) or name in grpc_methods(NODE) else HEAD


def _unknown(name: str) -> ValueError:
    head, node = grpc_methods(HEAD), known_names(NODE)
    return ValueError(
        f"no RPC method or data-plane message kind is called {name!r}. The head serves: "
        f"{', '.join(head)}. Node agents serve: {', '.join(node)}."
    )


def resolve(name: str, component: str = "") -> str:
    """The full name of the method or message kind ``name`` gives (``HeadService/Heartbeat``
    -> ``freight.v1.HeadService/Heartbeat``; ``data/REQUEST_LEASE`` -> ``data/RequestLease``);
    ValueError naming what exists when it names none, or when ``component`` does not serve it."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"give the RPC method to fault, got {name!r}")
    text = name.strip().lstrip("/")
    everything = known_names(HEAD) + known_names(NODE)
    if text.lower().startswith(DATA_PREFIX):
        wanted = text[len(DATA_PREFIX) :].replace("_", "").lower()
        found = [n for n in data_kinds() if n[len(DATA_PREFIX) :].lower() == wanted]
    else:
        found = [n for n in everything if n == text or n.endswith("." + text)]
    if len(found) != 1:
        raise _unknown(name)
    where = served_by(found[0])
    if component and where != component:
        server = "the head" if where == HEAD else "the node agents"
        asked = "the head" if component == HEAD else "a node agent"
        raise ValueError(
            f"{found[0]} is served by {server}, not by {asked}: fault it with target {where!r}"
        )
    return found[0]


@dataclass(frozen=True)
class FaultSpec:
    """One fault as asked for: which calls, what happens to them, for how long."""

    fault_id: str
    method: str  # as :func:`resolve` returns it
    action: str  # FAIL or DELAY
    fraction: float = 1.0
    code: str = "UNAVAILABLE"  # FAIL: the status the calls end with
    delay_s: float = 0.0  # DELAY: how long each hit call waits
    seed: int = 0
    duration_s: float = 0.0


def _number(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def check(spec: FaultSpec, component: str = "") -> FaultSpec:
    """``spec`` with its method's full name; ValueError saying what is wrong with it."""
    fid = spec.fault_id
    if not isinstance(fid, str) or not 0 < len(fid) <= MAX_ID_CHARS or not fid.isprintable():
        raise ValueError(f"a fault id is 1 to {MAX_ID_CHARS} printable characters, got {fid!r}")
    if spec.action not in (FAIL, DELAY):
        raise ValueError(f"a fault's action is {FAIL!r} or {DELAY!r}, got {spec.action!r}")
    fraction = _number("fraction", spec.fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction is of the calls: more than 0, at most 1; got {fraction!r}")
    duration = _number("duration", spec.duration_s)
    if not 0 < duration <= MAX_DURATION_S:
        raise ValueError(
            f"duration must be more than 0 and at most {MAX_DURATION_S:g} s, got {duration!r}"
        )
    delay = _number("delay", spec.delay_s)
    if spec.action == DELAY and not 0 < delay <= MAX_DELAY_S:
        raise ValueError(f"delay must be more than 0 and at most {MAX_DELAY_S:g} s, got {delay!r}")
    code = str(spec.code or "UNAVAILABLE").upper()
    if spec.action == FAIL and (code not in grpc.StatusCode.__members__ or code == "OK"):
        codes = ", ".join(c for c in grpc.StatusCode.__members__ if c != "OK")
        raise ValueError(f"code must name a gRPC status other than OK ({codes}), got {code!r}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int):
        raise ValueError(f"seed must be a whole number, got {spec.seed!r}")
    method = resolve(spec.method, component)
    return replace(
        spec,
        method=method,
        fraction=fraction,
        duration_s=duration,
        delay_s=delay if spec.action == DELAY else 0.0,
        code=code if spec.action == FAIL else "",
    )


def spec_of(fault: pb.RpcFault, duration_s: float) -> FaultSpec:
    """The :class:`FaultSpec` a ``SetRpcFault`` request carries (unchecked)."""
    return FaultSpec(
        fault.fault_id,
        fault.method,
        fault.action,
        fault.fraction,
        fault.code,
        fault.delay_s,
        fault.seed,
        duration_s,
    )


class Fault:
    """A fault in force: its spec, its own random source, its deadline and its counts."""

    __slots__ = ("calls", "deadline", "expires", "hits", "rng", "spec", "state", "timer")

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.deadline = time.monotonic() + spec.duration_s  # what the process goes by
        self.expires = time.time() + spec.duration_s  # what people and journals read
        self.calls = 0
        self.hits = 0
        self.state = "in force"
        self.timer: asyncio.TimerHandle | None = None

    def hit(self) -> bool:
        """Whether this call is one of the fraction (one draw per call, in arrival order)."""
        self.calls += 1
        if self.rng.random() < self.spec.fraction:
            self.hits += 1
            return True
        return False

    def record(self, node_id: str = "") -> pb.RpcFault:
        s = self.spec
        return pb.RpcFault(
            fault_id=s.fault_id,
            method=s.method,
            action=s.action,
            fraction=s.fraction,
            code=s.code,
            delay_s=s.delay_s,
            seed=s.seed,
            expires=self.expires,
            calls=self.calls,
            hits=self.hits,
            node_id=node_id,
            state=self.state,
        )

    def describe(self) -> str:
        s = self.spec
        what = f"fail with {s.code}" if s.action == FAIL else f"wait {s.delay_s:g} s"
        until = time.strftime("%H:%M:%S", time.gmtime(self.expires))
        return f"{s.fraction:.0%} of {s.method} calls {what} until {until} UTC (fault {s.fault_id})"


class FaultTable:
    """The faults in force in one process, by the gRPC method or data-plane kind they hit."""

    def __init__(self) -> None:
        self.component = ""  # HEAD or NODE once the process serves (what names it takes)
        # Mutated in place, never rebound: the hooks hold these very dicts.
        self.methods: dict[str, Fault] = {}  # "/freight.v1.HeadService/Heartbeat" -> fault
        self.kinds: dict[int, Fault] = {}  # data-plane Kind -> fault
        self._ended: dict[str, Fault] = {}

    def _slot(self, method: str) -> tuple[dict[Any, Fault], Any]:
        if method.startswith(DATA_PREFIX):
            name = method[len(DATA_PREFIX) :]
            cls = next(c for c in AGENT_MESSAGES if c.__name__ == name)
            return self.kinds, m.KIND_OF[cls]
        return self.methods, "/" + method

    def in_force(self) -> list[Fault]:
        self._expire_due()
        return [*self.methods.values(), *self.kinds.values()]

    def set(self, spec: FaultSpec) -> Fault:
        """Switch ``spec`` on (checked here: a request may come from any client). The same id
        again replaces it; another fault on a method that has one is refused."""
        spec = check(spec, self.component)
        table, key = self._slot(spec.method)
        self._expire_due()
        current = table.get(key)
        elsewhere = [f for f in self.in_force() if f.spec.fault_id == spec.fault_id]
        if elsewhere and elsewhere[0] is not current:
            raise ValueError(
                f"fault id {spec.fault_id!r} is in force here on another method: "
                f"{elsewhere[0].describe()}; give each fault its own id"
            )
        if current is not None and current.spec.fault_id != spec.fault_id:
            raise ValueError(
                f"{spec.method} already has a fault in force here: {current.describe()}; clear "
                "it first (ClearRpcFaults) or wait for it to expire"
            )
        if current is not None:
            self._end(current, "replaced")
        fault = Fault(spec)
        table[key] = fault
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # no loop (a unit test): the check at each call still ends it
        if loop is not None:
            fault.timer = loop.call_later(spec.duration_s, self._expire, fault)
        logger.warning("RPC fault switched on: {}", fault.describe())
        return fault

    def clear(self, fault_ids: Iterable[str] = ()) -> tuple[list[Fault], list[Fault]]:
        """End the faults ``fault_ids`` name (every fault in force when none). Returns those it
        ended, and those named that had ended before (their ``state`` says how); ids this
        process never had (or forgot: it keeps the last few) are in neither."""
        wanted = set(fault_ids)
        cleared = []
        for fault in self.in_force():
            if not wanted or fault.spec.fault_id in wanted:
                self._end(fault, "cleared")
                cleared.append(fault)
        ended = [f for i, f in self._ended.items() if i in wanted and f not in cleared]
        return cleared, ended

    def _end(self, fault: Fault, state: str) -> None:
        table, key = self._slot(fault.spec.method)
        if table.get(key) is fault:
            del table[key]
        if fault.timer is not None:
            fault.timer.cancel()
        fault.state = state
        self._ended[fault.spec.fault_id] = fault
        while len(self._ended) > KEEP_ENDED:
            del self._ended[next(iter(self._ended))]
        logger.warning(
            "RPC fault {}: {} (hit {} of {} calls)",
            state,
            fault.describe(),
            fault.hits,
            fault.calls,
        )

    def _expire(self, fault: Fault) -> None:
        # Its timer: asyncio may run it a hair before the deadline, so no clock check here.
        if fault.state == "in force":
            self._end(fault, "expired")

    def _expire_due(self) -> None:
        now = time.monotonic()
        for fault in [*self.methods.values(), *self.kinds.values()]:
            if now >= fault.deadline:
                self._end(fault, "expired")

    def _live(self, fault: Fault | None) -> Fault | None:
        if fault is None:
            return None
        if time.monotonic() >= fault.deadline:  # its timer is late (a busy loop): ends now
            self._end(fault, "expired")
            return None
        return fault if fault.hit() else None

    def grpc_hit(self, method: str) -> Fault | None:
        """The fault this call of ``method`` (``/package.Service/Method``) falls under, if any."""
        return self._live(self.methods.get(method))

    async def admit_message(self, kind: int) -> str:
        """Apply the fault on data-plane ``kind`` to one message: wait when delayed; return why
        the connection must close when failed, "" to handle the message."""
        fault = self._live(self.kinds.get(kind))
        if fault is None:
            return ""
        if fault.spec.action == DELAY:
            await asyncio.sleep(fault.spec.delay_s)
            return ""
        if fault.hits == 1:
            logger.warning("closing data-plane connections: {}", fault.describe())
        return f"closed by an injected fault: {fault.describe()}"


FAULTS = FaultTable()  # this process's table (one process serves one component)


def _failing(fault: Fault) -> grpc.RpcMethodHandler:
    code = grpc.StatusCode[fault.spec.code]
    message = f"freight: injected fault: {fault.describe()}"

    async def fail(_request: Any, context: aio.ServicerContext) -> None:
        await context.abort(code, message)

    # No request deserializer: nothing of the failed call is decoded. A unary handler ends a
    # streaming call with the same status.
    return grpc.unary_unary_rpc_method_handler(fail)


class RpcFaultInterceptor(aio.ServerInterceptor):
    """Fails or delays the calls a fault of ``table`` hits; passes every call straight on
    while the table holds no gRPC fault. Install it after the token check, so that only
    authenticated calls (of methods the server knows) reach it."""

    def __init__(self, table: FaultTable = FAULTS) -> None:
        self._methods = table.methods
        self._table = table

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self._methods:  # no fault in force: the one check every call pays
            return await continuation(handler_call_details)
        fault = self._table.grpc_hit(handler_call_details.method)
        if fault is None:
            return await continuation(handler_call_details)
        if fault.spec.action == FAIL:
            return _failing(fault)
        # Each call is served in its own task: waiting here holds this call only.
        await asyncio.sleep(fault.spec.delay_s)
        return await continuation(handler_call_details)
