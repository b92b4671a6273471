"""Acting on a running cluster from any process: the Python side of ``freight cancel``,
``freight kill``, ``freight drain``, ``freight job stop`` and ``freight stop --address``.

Every action needs the cluster's admin token (the read-only token is refused with
:class:`freight.client.access.AccessDenied`) and is recorded as an ``OPERATOR_ACTION`` cluster
event naming the token's role, the caller and the ``reason`` given. ``address`` resolves as
everywhere (:mod:`freight.client.access`): ``None``, ``"auto"`` or ``"host:port"``.
"""

from __future__ import annotations

import getpass
import os
import socket
import string
import sys
import time
from typing import Any, NamedTuple

import grpc

from freight.client import access
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util import rpc_faults
from freight.util.grpc_auth import action_metadata, sync_channel

DEFAULT_TIMEOUT_S = 30.0
# A job's driver gets FREIGHT_JOB_STOP_GRACE_S to exit after SIGTERM; the call waits that long.
STOP_JOB_TIMEOUT_S = 120.0
POLL_S = 0.1
STATUS_TIMEOUT_S = 10.0
# The head asks its agents to stop (each within 10 s, at once) before it answers.
SHUTDOWN_TIMEOUT_S = 20.0
_HEX = frozenset(string.hexdigits)


class ActionResult(NamedTuple):
    """What an action did: ``action`` (``cancel_task``, ...), the whole id of what it acted on
    (``target``), and a sentence saying what happened."""

    action: str
    target: str
    message: str
    done: bool = True  # False: there was nothing to do (a job that had already ended)


def caller_name() -> str:
    """What an action's cluster event says made it: the program and who ran it where
    (``freight kill (alice@host1, pid 4242)``)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "-c", ""):
        program = "python"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    command = " ".join([program, *sys.argv[1:2]]) if program == "freight" else program
    return f"{command} ({user}@{socket.gethostname()}, pid {os.getpid()})"


def _act(
    address: str | access.Target | None,
    method: str,
    request: Any,
    reason: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    service: str = "HeadService",
) -> Any:
    """Call the head's ``method`` with the caller and reason attached; failures are mapped to
    :mod:`freight.client.access`'s errors."""
    if not isinstance(reason, str):
        raise access.UsageError(f"reason must be text, got {type(reason).__name__}")
    if isinstance(address, access.Target):
        target = address
    else:
        target = access.resolve(address, flag="address=")
    channel = sync_channel(target.address, target.token)
    try:
        stub = getattr(pb_grpc, f"{service}Stub")(channel)
        fn = getattr(stub, method)
        md = action_metadata(caller_name(), reason)
        return access.call(
            target, lambda req, timeout: fn(req, timeout=timeout, metadata=md), request, timeout
        )
    finally:
        channel.close()


def _id(kind: str, value: Any) -> str:
    """An id (or unique prefix) as given: text, hexadecimal; UsageError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise access.UsageError(f"give a {kind} id (or a unique prefix of one), got {value!r}")
    value = value.strip().lower()
    if not set(value) <= _HEX:
        raise access.UsageError(
            f"{value!r} is not a {kind} id: ids are hexadecimal (`freight list {kind}s` shows them)"
        )
    return value


def cancel_task(
    task_id: str,
    force: bool = False,
    recursive: bool = True,
    reason: str = "",
    address: str | None = None,
) -> ActionResult:
    """Cancel the task ``task_id`` names (its id or a unique prefix) from any process, as its
    owner's ``freight.cancel`` would: a pending task never runs, a running one gets
    ``TaskCancelledError`` (``KeyboardInterrupt`` in its code); ``force`` kills its worker (not
    allowed for actor tasks); ``recursive`` cancels the tasks it submitted too. The request is
    passed to the owner: the task ends shortly after this returns.

    Raises :class:`~freight.client.access.CommandFailed` when the task had already ended,
    ``NotFound`` when the cluster has no such task, ``UsageError`` for a bad id or an ambiguous
    prefix."""
    tid = _id("task", task_id)
    request = pb.CancelTaskRequest(task_id=tid, force=bool(force), recursive=bool(recursive))
    reply = _act(address, "CancelTask", request, reason)
    if not reply.requested:
        raise access.CommandFailed(reply.message)
    return ActionResult("cancel_task", reply.task_id, reply.message)


def kill_actor(
    actor_id: str, no_restart: bool = True, reason: str = "", address: str | None = None
) -> ActionResult:
    """Kill the actor ``actor_id`` names (its id or a unique prefix) at once, as
    ``freight.kill`` does: calls in flight and later calls raise ``ActorDiedError``. With
    ``no_restart=False`` an actor that has restarts left (``max_restarts``) restarts.

    Raises ``CommandFailed`` when the actor is dead already, ``NotFound`` for an unknown one."""
    aid = _id("actor", actor_id)
    request = pb.KillActorRequest(actor_id=aid, no_restart=bool(no_restart))
    reply = _act(address, "KillActor", request, reason)
    aid = reply.actor_id or aid
    if not reply.killed:
        from freight import state

        row = state.get_state("actors", aid, address=address)
        if row is None:
            raise access.NotFound(f"no actor {actor_id!r} (`freight list actors` shows them)")
        raise access.CommandFailed(f"actor {aid} already {row.get('state')}: nothing to kill")
    how = "killed" if no_restart else "killed; it restarts if it has restarts left"
    return ActionResult("kill_actor", aid, f"actor {aid} {how}")


def kill_worker(
    worker_id: str, force: bool = False, reason: str = "", address: str | None = None
) -> ActionResult:
    """Stop the worker process ``worker_id`` names (its id or a unique prefix), on whichever
    node runs it: asked to exit at once, or with ``force`` killed with SIGKILL. Its tasks fail
    as after a worker crash and are retried under their ``max_retries``; an actor on it
    restarts under its ``max_restarts``.

    Raises ``NotFound`` when no live node runs such a worker."""
    request = pb.KillWorkerByIdRequest(worker_id=_id("worker", worker_id), force=bool(force))
    reply = _act(address, "KillWorker", request, reason)
    if not reply.killed:
        raise access.CommandFailed(f"worker {reply.worker_id} had already exited")
    how = "killed (SIGKILL)" if force else "asked to exit"
    return ActionResult(
        "kill_worker", reply.worker_id, f"worker {reply.worker_id} on node {reply.node_id} {how}"
    )


def stop_job(job_id: str, reason: str = "", address: str | None = None) -> ActionResult:
    """Stop a job ``freight job submit`` started (SIGTERM to its driver's process group,
    SIGKILL after ``FREIGHT_JOB_STOP_GRACE_S``) and wait until it has ended.

    A job that had already ended is left as it is (``done`` False); ``NotFound`` for an
    unknown one."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise access.UsageError(f"give a job id, got {job_id!r}")
    job_id = job_id.strip()
    try:
        reply = _act(
            address, "StopJob", pb.StopJobRequest(job_id=job_id), reason, timeout=STOP_JOB_TIMEOUT_S
        )
    except access.NotFound as e:
        raise access.NotFound(f"{e} (`freight job list` shows the jobs)") from None
    job = _act(address, "GetJob", pb.GetJobRequest(job_id=job_id), "").job
    if not reply.stopped:
        return ActionResult(
            "stop_job", job_id, f"job {job_id} had already ended: {job.state}", False
        )
    return ActionResult("stop_job", job_id, f"job {job_id} {job.state}: {job.message}")


def stop_cluster(
    address: str | None = None, reason: str = "", timeout: float = DEFAULT_TIMEOUT_S
) -> ActionResult:
    """Stop the cluster at ``address``: every live node's agent (and its workers), then the head,
    which records the action before it goes down. Waits up to ``timeout`` seconds for the head
    to stop answering."""
    target = access.resolve(address, flag="address=")
    channel = sync_channel(target.address, target.token)
    try:
        status = pb_grpc.HeadServiceStub(channel).ClusterStatus
        # It answers now (else ClusterUnreachable, exit 3): silence after the request is its stop.
        access.call(target, status, pb.ClusterStatusRequest(), STATUS_TIMEOUT_S)
        request = pb.ShutdownRequest(reason=reason, stop_nodes=True)
        try:
            nodes = f"{_act(target, 'Shutdown', request, reason, SHUTDOWN_TIMEOUT_S).nodes_stopped}"
        except access.ClusterUnreachable:
            nodes = "its"  # it went down before its answer reached us: checked below
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status(pb.ClusterStatusRequest(), timeout=max(0.1, deadline - time.monotonic()))
            except grpc.RpcError:
                break  # it no longer answers: it has stopped
            time.sleep(POLL_S)  # still winding down (its calls in flight get a grace period)
        else:
            raise access.CommandFailed(
                f"the head at {target.address} was asked to stop, and still answers after "
                f"{timeout:g} s"
            )
    finally:
        channel.close()
    return ActionResult(
        "stop_cluster",
        target.address,
        f"stopped the cluster at {target.address} ({nodes} node(s) and its head)",
    )


# ---- nodes


class Drain(NamedTuple):
    """What :func:`drain_node` or :func:`undrain_node` did, and what it leaves."""

    node_id: str
    draining: bool  # the node's flag now
    changed: bool  # False: it was so already
    reason: str  # the reason the drain recorded ("" once undrained)
    open_nodes: int  # other alive nodes that take new work
    node_told: bool  # its agent confirmed; else it learns at its next heartbeat (a second)
    running_tasks: int  # what runs there now and goes on (as its agent said)
    running_actors: int
    waiting: int  # lease requests waiting there for a node that takes work


def _drain(node_id: str, undrain: bool, reason: str, address: str | None) -> Drain:
    request = pb.DrainNodeRequest(node_id=_id("node", node_id), undrain=undrain)
    reply = _act(address, "DrainNode", request, reason)
    node = reply.node
    return Drain(
        node.node_id,
        node.draining,
        reply.changed,
        node.drain_reason,
        reply.open_nodes,
        reply.node_told,
        reply.running_tasks,
        reply.running_actors,
        reply.waiting,
    )


def drain_node(node_id: str, reason: str = "", address: str | None = None) -> Drain:
    """Drain a node (Ray's ``ray drain-node``, kubectl's cordon): it takes no new tasks, actors
    or placement group bundles; what runs there goes on. Work only drained nodes could run
    waits ("waiting: every feasible node is draining"). ``node_id`` may be a unique prefix; an
    unknown or dead node raises :class:`freight.client.access.NotFound`. The drain outlives
    agent and head restarts until :func:`undrain_node`."""
    return _drain(node_id, False, reason, address)


def undrain_node(node_id: str, reason: str = "", address: str | None = None) -> Drain:
    """Open a drained node again: it takes new work, and what waited for it starts there."""
    return _drain(node_id, True, reason, address)


# ---- RPC fault hooks (freight.util.rpc_faults; the chaos harness's fail_rpc and delay_rpc)


def set_rpc_fault(
    spec: rpc_faults.FaultSpec,
    node_id: str = "",
    reason: str = "",
    address: str | access.Target | None = None,
) -> dict[str, Any]:
    """Switch an RPC fault on: on the head (``node_id`` ""), or on the node ``node_id`` names
    through the head. It ends by itself after ``spec.duration_s`` (kept by the process it is in
    force in), or at :func:`clear_rpc_faults`. Returns the fault as in force (``expires`` is unix
    time). A bad spec or a method that process does not serve raises
    :class:`freight.client.access.UsageError` naming what exists."""
    try:
        spec = rpc_faults.check(spec, rpc_faults.NODE if node_id else rpc_faults.HEAD)
    except ValueError as e:
        raise access.UsageError(str(e)) from None
    fault = pb.RpcFault(
        fault_id=spec.fault_id,
        method=spec.method,
        action=spec.action,
        fraction=spec.fraction,
        code=spec.code,
        delay_s=spec.delay_s,
        seed=spec.seed,
    )
    request = pb.SetRpcFaultRequest(fault=fault, duration_s=spec.duration_s, node_id=node_id)
    return access.record(_act(address, "SetRpcFault", request, reason).fault)


def clear_rpc_faults(
    fault_ids: list[str] | tuple[str, ...] = (),
    node_id: str = "",
    reason: str = "",
    address: str | access.Target | None = None,
) -> list[dict[str, Any]]:
    """End RPC faults on the head (``node_id`` "") or on one node: those ``fault_ids`` name,
    every one in force when none. Returns each named fault with its final counts and
    ``state``: "cleared" by this call, or how it had ended before ("expired", "cleared",
    "replaced") with ``ended_before`` true; an id the process never had (or forgot, after a
    restart) is not in the list."""
    request = pb.ClearRpcFaultsRequest(fault_ids=list(fault_ids), node_id=node_id)
    reply = _act(address, "ClearRpcFaults", request, reason)
    return [
        {**access.record(f), "ended_before": before}
        for before, faults in ((False, reply.cleared), (True, reply.ended))
        for f in faults
    ]


def list_rpc_faults(
    node_id: str = "", all_nodes: bool = False, address: str | access.Target | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The RPC faults in force on the head, on one node (``node_id``), or on the head and every
    live node (``all_nodes``); and the ids of nodes that did not answer. The read-only token
    may ask."""
    request = pb.ListRpcFaultsRequest(node_id=node_id, all_nodes=all_nodes)
    reply = _act(address, "ListRpcFaults", request, "")
    return [access.record(f) for f in reply.faults], list(reply.unreachable)
