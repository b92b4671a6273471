"""Every live object reference of a cluster, who holds it and why: the rows `freight memory`
prints and `freight top`'s objects view joins to the stores' objects.

Every alive node's agent asks its drivers and workers over their owner sockets what they refer
to (their reference tables; the ``Memory`` RPC), so the answer is exact for the whole cluster. A
node that does not answer is named in a warning and the rest is returned.
"""

from __future__ import annotations

from typing import Any

from freight.client import access, agents
from freight.config import settings
from freight.core.references import reference_types
from freight.protocol.generated import freight_pb2 as pb


def cluster_rows(target: access.Target) -> tuple[list[dict[str, Any]], list[str]]:
    """Every alive node's references, and a warning per node that did not answer."""
    alive = agents.alive_agents(target)
    answers = agents.ask_all(
        alive,
        target.token,
        lambda stub: stub.Memory(pb.NodeMemoryRequest(), timeout=settings.state_agent_timeout_s),
    )
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for agent, reply, error in answers:
        if error is not None:
            warnings.append(agents.did_not_answer(agent, error, "its processes' references"))
            continue
        for r in reply.references:
            held_by = list(r.held_by)
            rows.append(
                {
                    "object_id": r.object_id,
                    "size": r.size,
                    "where": r.where,
                    "node_id": reply.node_id,
                    "process": r.process,
                    "owner": r.owner,
                    "held_by": held_by,
                    "reference_types": reference_types(held_by),
                    "call_site": r.call_site,
                }
            )
    return rows, warnings
