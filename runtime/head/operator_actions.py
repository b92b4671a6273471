"""What the head does for the actions an operator takes on tasks, workers and nodes (``freight
cancel``, ``freight kill worker``, ``freight stop --address``): find the process that can do it,
through the agents. The RPCs that call these record each action (:mod:`freight.head.audit`)."""

from __future__ import annotations

import asyncio
import os
import string

import grpc
from loguru import logger

from freight.core.task_state import TERMINAL
from freight.protocol.generated import freight_pb2 as pb

from .nodes import NodeDirectory
from .rpc import NotFoundError
from .task_store import TaskEntry, TaskStore

AGENT_TIMEOUT_S = 10.0
_HEX = frozenset(string.hexdigits)


def check_id(kind: str, text: str) -> str:
    """A task or worker id (or prefix) as given: hex, at least one character."""
    text = text.strip().lower()
    if not text:
        raise ValueError(f"give a {kind} id (or a unique prefix of one)")
    if not set(text) <= _HEX:
        raise ValueError(
            f"{text!r} is not a {kind} id: ids are hexadecimal (`freight list {kind}s` shows them)"
        )
    return text


def task_to_cancel(tasks: TaskStore, task_id: str, force: bool) -> TaskEntry:
    """The record of the task ``task_id`` names. ValueError for a bad id, an ambiguous prefix or
    force on an actor task; NotFoundError for an unknown one."""
    rec = tasks.get(check_id("task", task_id))  # ValueError when the prefix is ambiguous
    if rec is None:
        raise NotFoundError(
            f"no task {task_id!r} in the cluster's task records (`freight list tasks` shows "
            "them; successful short tasks may have been left out of the sample, and records of "
            "old ones are evicted)"
        )
    if force and rec.actor_id and rec.state not in TERMINAL:
        raise ValueError(
            f"task {rec.task_id} is a call of actor {rec.actor_id}: force is not supported for "
            "actor tasks (the calls share its process and state). Cancel without --force, or "
            "kill the actor (`freight kill actor`)."
        )
    return rec


def actor_named(actors: list[pb.ActorInfo], actor_id: str) -> str:
    """The whole id of the actor ``actor_id`` names (an id or a unique prefix); ``actor_id``
    itself when no actor has it (the kill then finds nothing). ValueError for a bad id or an
    ambiguous prefix."""
    wanted = check_id("actor", actor_id)
    if any(a.actor_id == wanted for a in actors):
        return wanted
    found = [a.actor_id for a in actors if a.actor_id.startswith(wanted)]
    if len(found) > 1:
        shown = ", ".join(found[:5])
        raise ValueError(
            f"actor id prefix {actor_id!r} matches {len(found)} actors ({shown}"
            f"{', ...' if len(found) > 5 else ''}); give more characters"
        )
    return found[0] if found else wanted


def _owner_nodes(nodes: list[pb.NodeInfo], owner: str) -> list[pb.NodeInfo]:
    """The nodes the owner may be connected to: the one whose socket folder holds the owner's
    Unix socket (a process's data-plane socket lies beside its agent's), else every node."""
    # (Imported here: frames reads FREIGHT_MAX_FRAME_BYTES when imported, and the head checks
    # its settings before it imports what reads them.)
    from freight.protocol.frames import split_address

    path = split_address(owner)[0]
    folder = os.path.dirname(path) if path else ""
    mine = [n for n in nodes if folder and os.path.dirname(n.data_socket) == folder]
    return mine or nodes


async def ask_owner_to_cancel(
    directory: NodeDirectory, rec: TaskEntry, force: bool, recursive: bool
) -> str:
    """Ask the task's owner, through its node's agent, to cancel it; return the owner's node id.
    NotFoundError when no live node has the owner connected (it exited, and its tasks ended
    with it)."""
    request = pb.CancelOwnedTaskRequest(
        owner_address=rec.owner_address, task_id=rec.task_id, force=force, recursive=recursive
    )
    for node in _owner_nodes(directory.alive(), rec.owner_address):
        stub = await directory.agent(node)
        try:
            reply = await stub.CancelOwnedTask(request, timeout=AGENT_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            logger.warning(
                "could not reach an agent to cancel a task",
                node_id=node.node_id,
                error=f"{e.code().name}: {e.details()}",
            )
            continue
        if reply.delivered:
            return node.node_id
    raise NotFoundError(
        f"the owner of task {rec.task_id} ({rec.owner_address or 'unknown'}) is not connected "
        "to any live node: it has exited, and the task ended with it"
    )


async def find_worker(directory: NodeDirectory, worker_id: str) -> tuple[pb.NodeInfo, str]:
    """The node running the worker ``worker_id`` (an id or unique prefix) names, and its whole
    id, from the agents' worker lists. ValueError for a bad or ambiguous id, NotFoundError for
    an unknown one."""
    prefix = check_id("worker", worker_id)
    nodes = directory.alive()

    async def workers(node: pb.NodeInfo) -> list[tuple[pb.NodeInfo, str]]:
        stub = await directory.agent(node)
        try:
            reply = await stub.ListWorkers(pb.ListWorkersRequest(), timeout=AGENT_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return []
        return [(node, w.worker_id) for w in reply.workers if w.worker_id.startswith(prefix)]

    found = [hit for hits in await asyncio.gather(*map(workers, nodes)) for hit in hits]
    exact = [hit for hit in found if hit[1] == prefix]
    found = exact or found
    if not found:
        raise NotFoundError(
            f"no worker {worker_id!r} on the cluster's live nodes (`freight list workers` "
            "shows them)"
        )
    if len(found) > 1:
        shown = ", ".join(w for _, w in found[:5])
        raise ValueError(
            f"worker id prefix {worker_id!r} matches {len(found)} workers ({shown}"
            f"{', ...' if len(found) > 5 else ''}); give more characters"
        )
    return found[0]


async def stop_nodes(directory: NodeDirectory, reason: str) -> int:
    """Ask every live node's agent to stop (its workers with it); return how many agreed."""

    async def stop(node: pb.NodeInfo) -> bool:
        stub = await directory.agent(node)
        try:
            await stub.Shutdown(pb.ShutdownRequest(reason=reason), timeout=AGENT_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            logger.warning(
                "could not stop a node",
                node_id=node.node_id,
                error=f"{e.code().name}: {e.details()}",
            )
            return False
        return True

    return sum(await asyncio.gather(*map(stop, directory.alive())))
