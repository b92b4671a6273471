"""Typed data-plane messages: one NamedTuple and one ``Kind`` per operation.

On the wire a message is the plain tuple of its fields (see ``freight.protocol.frames``); the
receiver rebuilds the NamedTuple with ``MESSAGE_TYPES[kind](*fields)``.
"""

from __future__ import annotations

import io
import itertools
import pickle
from enum import IntEnum
from typing import Any, NamedTuple


class Kind(IntEnum):
    # 0 is HELLO (frames.HELLO_KIND)
    HELLO_OK = 1
    ERROR = 2
    # owner -> agent
    REQUEST_LEASE = 10
    LEASE_GRANTED = 11
    LEASE_REJECTED = 12
    RETURN_LEASE = 13
    CANCEL_LEASE_REQUEST = 14
    LEASE_SPILLBACK = 21
    FETCH_OBJECT = 22
    FREE_ELSEWHERE = 23
    RESTORE_OBJECT = 25
    RESERVE_OBJECT = 15
    RESERVED = 16
    SEAL_OBJECT = 17
    FREE_OBJECTS = 18
    WORKER_BLOCKED = 19
    WORKER_UNBLOCKED = 20
    # agent -> owner
    WORKER_KILLED = 24
    CANCEL_OWNED_TASK = 26
    LEASE_WAITING = 27
    RECALL_LEASE = 28
    # worker -> agent
    REGISTER_WORKER = 30
    ACTOR_READY = 31
    # agent -> worker
    CREATE_ACTOR = 40
    EXIT_WORKER = 41
    # owner -> worker
    PUSH_TASK = 50
    TASK_DONE = 51
    CANCEL_TASK = 52
    # any process -> owner
    GET_OBJECT = 60
    OBJECT_VALUE = 61
    BORROW = 62
    RELEASE_BORROW = 63
    BORROW_ACK = 64
    CANCEL_OBJECT = 65
    # worker output -> driver
    LOG_LINES = 70
    # CLI -> any owner: what it holds and why (`freight memory`)
    MEMORY_REQUEST = 80
    MEMORY_REPLY = 81
    # worker/driver -> agent: metric figures and task events (see freight.client.telemetry)
    TELEMETRY = 90


class HelloOk(NamedTuple):
    peer_id: str


class Error(NamedTuple):
    req_id: int
    message: str
    exc: bytes  # pickled exception, or b""


class RequestLease(NamedTuple):
    req_id: int
    resources: dict[str, float]
    owner: str  # owner's data-plane address
    name: str  # function name, for pending-reason reports
    strategy: tuple[Any, ...] = ("DEFAULT",)  # freight.core.placement's wire form
    spilled: bool = False  # sent on by another node's agent: run it here or reject it
    prefer: str = ""  # the store folder of the node holding most of the arguments' bytes
    retriable: bool = False  # the task asked for has max_retries != 0 (memory monitor policy)


class LeaseSpillback(NamedTuple):
    """Ask the agent of another node: it is the place for this request."""

    req_id: int
    node_id: str
    data_address: str  # that agent's TCP data plane
    near: bool = False  # it holds the arguments: ask it unspilled, so it may send the request on


class LeaseGranted(NamedTuple):
    req_id: int
    worker_id: str
    worker_address: str
    pid: int
    gpu_ids: tuple[int, ...] = ()  # the GPUs the lease holds, for CUDA_VISIBLE_DEVICES


class LeaseRejected(NamedTuple):
    req_id: int
    reason: str
    infeasible: bool


class ReturnLease(NamedTuple):
    worker_id: str
    disconnect: bool  # the owner saw the worker die, or was told it is killed (WorkerKilled)


class WorkerKilled(NamedTuple):
    """The agent takes a leased worker back to free the node's memory: the owner fails (or
    retries) its tasks with ``reason``, then answers ``ReturnLease(worker_id, True)``, on which
    the agent kills it (decisions/0022-memory-monitor.md)."""

    worker_id: str
    reason: str  # why, and the node's top memory users, for the OutOfMemoryError


class LeaseWaiting(NamedTuple):
    """The request waits at the agent for a reason the owner cannot see (its node, or every
    node that could run it, is drained): the tasks' pending reason until it is answered."""

    req_id: int
    reason: str


class RecallLease(NamedTuple):
    """The node is drained: send the worker no more tasks, and return the lease once those in
    flight are done (decisions/0068-draining-nodes.md)."""

    worker_id: str


class CancelLeaseRequest(NamedTuple):
    req_id: int


class FetchObject(NamedTuple):
    """Copy an object of another node's store into this node's; answered with ``Reserved``
    (the local path) or ``Error``."""

    req_id: int
    object_id: bytes
    size: int
    store_dir: str  # the folder of the store that holds it (from the object's value)


class FreeElsewhere(NamedTuple):
    """Free objects an owner of this node made in another node's store (a task's returns)."""

    store_dir: str
    object_ids: list[bytes]


class RestoreObject(NamedTuple):
    """Bring an object of this node's store that was spilled to disk back into shared memory;
    answered with ``Reserved`` (its path, the one its value names) or ``Error`` (``exc`` empty
    when the store does not hold the object: it was freed)."""

    req_id: int
    object_id: bytes


class ReserveObject(NamedTuple):
    req_id: int
    object_id: bytes
    size: int
    owner: str


class Reserved(NamedTuple):
    req_id: int
    path: str


class SealObject(NamedTuple):
    object_id: bytes


class FreeObjects(NamedTuple):
    object_ids: list[bytes]


class WorkerBlocked(NamedTuple):
    worker_id: str


class WorkerUnblocked(NamedTuple):
    worker_id: str


class RegisterWorker(NamedTuple):
    worker_id: str
    address: str
    pid: int


class ActorReady(NamedTuple):
    actor_id: str
    error: bytes  # pickled exception from the constructor, or b""


class CreateActor(NamedTuple):
    actor_id: str
    creation_spec: bytes
    job_id: str
    gpu_ids: tuple[int, ...] = ()  # the actor's GPUs, for CUDA_VISIBLE_DEVICES


class ExitWorker(NamedTuple):
    reason: str


class PushTask(NamedTuple):
    task_id: bytes
    job_id: str
    name: str
    function_id: bytes
    function_blob: bytes  # cloudpickled function, sent once per connection, else b""
    args: bytes  # packed (args, kwargs) with top-level refs as placeholders
    arg_refs: list[tuple[bytes, str, Any]]  # (object id, owner, inline packed bytes | shm path)
    return_ids: list[bytes]
    actor_id: str
    method: str
    parent_task_id: bytes
    driver: str  # the job's driver socket, where worker output is printed
    trace_context: dict[str, str]
    gpu_ids: tuple[int, ...] = ()  # the lease's GPUs: CUDA_VISIBLE_DEVICES while it runs
    namespace: str = ""  # the job's namespace, where the task looks named actors up
    placement_group: tuple[Any, ...] = ()  # (group id, capture children) it runs in, or ()


class TaskDone(NamedTuple):
    task_id: bytes
    # per return id: ("v", packed bytes) | ("s", shm path, size) ; or None when failed
    results: list[tuple[Any, ...]] | None
    error: bytes  # pickled RayTaskError etc., or b""
    retryable: bool  # the failure was an application error that retry_exceptions may retry
    borrowed: list[bytes]  # refs the executor still holds (owner must keep them)
    start_time: float
    end_time: float
    # The runtime failed the attempt, not the task's code (its result could not be stored):
    # retried under max_retries like a crashed worker, never an application error.
    system: bool = False


class CancelTask(NamedTuple):
    task_id: bytes
    force: bool
    recursive: bool


class CancelObject(NamedTuple):
    """Ask an object's owner to cancel the task that makes it (``freight.cancel`` of a
    reference another process owns: only the owner knows where that task runs)."""

    object_id: bytes
    force: bool
    recursive: bool


class CancelOwnedTask(NamedTuple):
    """The agent passes on a cancel the head was asked for (``freight cancel TASK_ID`` from any
    process) to the process that owns the task: it cancels it as ``freight.cancel`` does."""

    task_id: bytes
    force: bool
    recursive: bool


class GetObject(NamedTuple):
    req_id: int
    object_id: bytes
    # The shared-memory path a borrower could not read (its node died): the owner rebuilds
    # the object and answers with the new value.
    lost: str = ""


class ObjectValue(NamedTuple):
    req_id: int
    object_id: bytes
    # ("v", packed) | ("s", path, size) | ("e", pickled exception)
    value: tuple[Any, ...]


class Borrow(NamedTuple):
    req_id: int  # answered with BorrowAck(req_id)
    object_ids: list[bytes]
    borrower: str


class BorrowAck(NamedTuple):
    req_id: int
    missing: list[bytes]  # ids already freed by the owner


class ReleaseBorrow(NamedTuple):
    object_ids: list[bytes]
    borrower: str


class LogLines(NamedTuple):
    prefix: str
    stream: str  # "stdout" | "stderr"
    text: str


class MemoryRequest(NamedTuple):
    req_id: int


class MemoryReply(NamedTuple):
    req_id: int
    pid: int
    role: str  # driver | worker
    # (object id hex, size, where: "inline" | "shared memory" | "pending" | "error" |
    #  "actor handle", owned, holders, call site)
    rows: list[tuple[str, int, str, bool, list[str], str]]
    node_id: str


class TaskEvent(NamedTuple):
    """One task state change, as its owner recorded it (fields as in freight.proto TaskEvent)."""

    task_id: str
    job_id: str
    name: str
    actor_id: str
    parent_task_id: str
    node_id: str
    worker_id: str
    attempt: int
    state: str
    time: float
    cause: str
    pending_reason: str
    error_type: str
    error_kind: str
    start_time: float
    end_time: float
    trace_id: str
    owner_address: str
    error: str
    traceback: str = ""  # the remote traceback of a FAILED task, when there is one


_EVENT_FIELDS = len(TaskEvent._fields)


class _PlainUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars: a payload that names any class is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"task rows may not contain {module}.{name}")


def pack_task_rows(rows: list[tuple[Any, ...]]) -> bytes:
    """Task rows as the agent forwards them to the head (read back by unpack_task_rows)."""
    return pickle.dumps(rows, protocol=5)


# Positions in a task row (the TaskEvent fields, then the transitions) by the type they hold.
_ROW_TEXT = (0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 16, 17, 18, 19)
_ROW_NUMBERS = (9, 14, 15)
_NUMBER = (int, float)
# The exact types of a row as an owner packs it: checked in one comparison.
_ROW_TYPES = tuple(
    int if i == 7 else float if i in _ROW_NUMBERS else str for i in range(_EVENT_FIELDS)
)
_TRANSITION_TYPES = (float, str, str)


def load_task_rows(chunk: bytes) -> tuple[list[tuple[Any, ...]], int]:
    """Decode one packed batch of task rows, checking every field's type.

    Returns the well-formed rows, each with its transitions turned into one flat tuple
    ``(time, state, cause, time, state, cause, ...)``, and the number of malformed rows (skipped,
    to be counted as dropped); a chunk that does not decode to a list counts as one malformed
    row. Only plain builtin values decode (no classes), so a chunk cannot run code in the head.
    """
    try:
        rows = _PlainUnpickler(io.BytesIO(chunk)).load()
    except Exception:
        return [], 1
    if not isinstance(rows, list):
        return [], 1
    out: list[tuple[Any, ...]] = []
    bad = 0
    n = _EVENT_FIELDS
    row_types = _ROW_TYPES
    chain = itertools.chain.from_iterable
    for row in rows:
        # The common case, checked at C speed: a tuple of exactly the types an owner packs,
        # with transitions that are (float, str, str) tuples.
        if type(row) is tuple and len(row) == n + 1 and tuple(map(type, row[:n])) == row_types:
            trs = row[n]
            if type(trs) is list and trs:
                try:
                    flat = tuple(chain(trs))
                except TypeError:
                    flat = ()  # a transition that is not a sequence
                if tuple(map(type, flat)) == _TRANSITION_TYPES * len(trs):
                    out.append((*row[:n], flat))
                    continue
        checked = _checked_row(row)
        if checked is None:
            bad += 1
        else:
            out.append(checked)
    return out, bad


def _checked_row(row: Any) -> tuple[Any, ...] | None:
    """A row that is not exactly as owners pack it, checked field by field (ints for times,
    lists for tuples); None when it is malformed."""
    n = _EVENT_FIELDS
    if (
        type(row) not in (tuple, list)
        or len(row) != n + 1
        or type(row[n]) not in (list, tuple)
        or not row[n]
        or type(row[7]) is not int
        or any(type(row[i]) is not str for i in _ROW_TEXT)
        or any(type(row[i]) not in _NUMBER for i in _ROW_NUMBERS)
    ):
        return None
    flat: list[Any] = []
    for tr in row[n]:
        if (
            type(tr) not in (tuple, list)
            or len(tr) != 3
            or type(tr[0]) not in _NUMBER
            or type(tr[1]) is not str
            or type(tr[2]) is not str
        ):
            return None
        flat += (float(tr[0]), tr[1], tr[2])
    return (*row[:n], tuple(flat))


def unpack_task_rows(chunk: bytes) -> tuple[list[TaskEvent], int]:
    """Expand one packed batch of task rows into a TaskEvent per transition (see
    :func:`load_task_rows` for what is checked and counted)."""
    rows, bad = load_task_rows(chunk)
    return [ev for row in rows for ev in row_events(row)], bad


def row_events(row: tuple[Any, ...]) -> list[TaskEvent]:
    """The TaskEvent of each transition of one row as :func:`load_task_rows` returns it."""
    head, tail, flat = row[:8], row[11:_EVENT_FIELDS], row[_EVENT_FIELDS]
    make = tuple.__new__
    return [
        make(TaskEvent, (*head, flat[i + 1], flat[i], flat[i + 2], *tail))
        for i in range(0, len(flat), 3)
    ]


class Telemetry(NamedTuple):
    metrics: dict[str, Any]  # freight.observe.recorder snapshot (cumulative)
    usage: dict[tuple[str, str], float]  # cumulative resource-seconds by (job id, resource)
    # Task rows changed since the last report, packed by pack_task_rows (the agent forwards
    # the bytes unread): the TaskEvent fields (latest state) followed by a list of
    # (time, state, cause) transitions not sent before
    task_events: bytes
    dropped: int  # task events dropped since the last report
    final: bool  # the process is shutting down cleanly
    task_rows: int  # how many rows task_events holds
    # Successful tasks left out of the sample of rows since the last report, as
    # (job id, name, is an actor task, count): the head counts them without a record.
    sampled_out: list[tuple[str, str, bool, int]] = []  # never mutated: a shared default is safe
    # The live tasks left out of the sample now, as (job id, name, is an actor task, state,
    # pending reason, count): the whole snapshot, replacing the previous report's.
    live_sampled_out: list[tuple[str, str, bool, str, str, int]] = []


MESSAGE_TYPES: dict[int, type] = {
    Kind.HELLO_OK: HelloOk,
    Kind.ERROR: Error,
    Kind.REQUEST_LEASE: RequestLease,
    Kind.LEASE_GRANTED: LeaseGranted,
    Kind.LEASE_REJECTED: LeaseRejected,
    Kind.RETURN_LEASE: ReturnLease,
    Kind.CANCEL_LEASE_REQUEST: CancelLeaseRequest,
    Kind.LEASE_SPILLBACK: LeaseSpillback,
    Kind.FETCH_OBJECT: FetchObject,
    Kind.FREE_ELSEWHERE: FreeElsewhere,
    Kind.RESTORE_OBJECT: RestoreObject,
    Kind.RESERVE_OBJECT: ReserveObject,
    Kind.RESERVED: Reserved,
    Kind.SEAL_OBJECT: SealObject,
    Kind.FREE_OBJECTS: FreeObjects,
    Kind.WORKER_BLOCKED: WorkerBlocked,
    Kind.WORKER_UNBLOCKED: WorkerUnblocked,
    Kind.WORKER_KILLED: WorkerKilled,
    Kind.CANCEL_OWNED_TASK: CancelOwnedTask,
    Kind.LEASE_WAITING: LeaseWaiting,
    Kind.RECALL_LEASE: RecallLease,
    Kind.REGISTER_WORKER: RegisterWorker,
    Kind.ACTOR_READY: ActorReady,
    Kind.CREATE_ACTOR: CreateActor,
    Kind.EXIT_WORKER: ExitWorker,
    Kind.PUSH_TASK: PushTask,
    Kind.TASK_DONE: TaskDone,
    Kind.CANCEL_TASK: CancelTask,
    Kind.GET_OBJECT: GetObject,
    Kind.OBJECT_VALUE: ObjectValue,
    Kind.BORROW: Borrow,
    Kind.RELEASE_BORROW: ReleaseBorrow,
    Kind.BORROW_ACK: BorrowAck,
    Kind.CANCEL_OBJECT: CancelObject,
    Kind.LOG_LINES: LogLines,
    Kind.MEMORY_REQUEST: MemoryRequest,
    Kind.MEMORY_REPLY: MemoryReply,
    Kind.TELEMETRY: Telemetry,
}

KIND_OF: dict[type, Kind] = {cls: Kind(k) for k, cls in MESSAGE_TYPES.items()}


def build(kind: int, fields: Any) -> Any:
    """Rebuild a message from its wire tuple; raise ValueError for an unknown kind or shape."""
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown message kind {kind}")
    n = len(getattr(cls, "_fields", ()))
    optional = len(getattr(cls, "_field_defaults", {}))  # trailing fields with a default
    if not isinstance(fields, tuple) or not n - optional <= len(fields) <= n:
        raise ValueError(f"malformed {cls.__name__} message")
    return cls(*fields)
