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
import sys
from typing import Any, NamedTuple

from freight.client import access
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import action_metadata, sync_channel

DEFAULT_TIMEOUT_S = 30.0


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
    address: str | None,
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
    if not isinstance(node_id, str) or not node_id.strip():
        raise access.UsageError(f"give the id (or a unique prefix) of a node, got {node_id!r}")
    request = pb.DrainNodeRequest(node_id=node_id.strip(), undrain=undrain)
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
