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
from typing import Any

from freight.client import access
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
