"""Actions on the cluster, recorded as ``OPERATOR_ACTION`` cluster events: what was done to
what, by whom (the role of the token the call carried, and what the caller says it is) and why
(the ``--reason`` it gave). The audit trail ``freight events --kind OPERATOR_ACTION`` shows."""

from __future__ import annotations

from typing import Any

from grpc import aio

from freight.util.grpc_auth import Caller, caller

from .events import EventStore


def record_action(
    events: EventStore,
    context: aio.ServicerContext,
    token: str,
    action: str,
    message: str,
    *,
    severity: str = "INFO",
    **ids: Any,
) -> Caller:
    """Record that ``action`` (``cancel_task``, ``kill_actor``, ...) was done; ``message`` says
    what it did in words, ``ids`` name its target (``task_id=...``). Returns the caller."""
    who = caller(context.invocation_metadata(), token)
    text = f"{message} (by {who.by or 'a client'}, {who.role}"
    text += f", reason: {who.reason})" if who.reason else ")"
    events.record(
        "OPERATOR_ACTION",
        text,
        severity=severity,
        action=action,
        role=who.role,
        by=who.by,
        reason=who.reason,
        **ids,
    )
    return who
