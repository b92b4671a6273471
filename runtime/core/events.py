"""The vocabulary of cluster events that the head and its clients share: severities, sources
and kinds. Pure, so clients read it without importing the head's modules."""

from __future__ import annotations

SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR")
SOURCES = ("head", "agent", "driver")
KINDS = frozenset(
    {
        "NODE_JOINED",
        "NODE_REMOVED",  # an agent unregistered (it was stopped)
        "NODE_DEAD",  # a node missed its heartbeats
        "NODE_FENCED",  # a node declared dead stopped its workers before it rejoined
        "WORKER_CRASHED",
        "OBJECT_STORE_FULL",
        "ACTOR_CREATED",
        "ACTOR_DEAD",
        "ACTOR_RESTARTED",
        "JOB_STARTED",
        "JOB_FINISHED",
        "DRIVER_DISCONNECTED",
        "TASK_OOM_KILLED",
        "OBJECT_SPILLED",
        "AUTOSCALER_DECISION",
        "PLACEMENT_GROUP_CREATED",
        "PLACEMENT_GROUP_REMOVED",
        # Someone acted on the cluster (freight cancel, kill, drain, job stop, ...): ids say
        # the action, its target, the token's role, who called and the reason they gave.
        "OPERATOR_ACTION",
    }
)
