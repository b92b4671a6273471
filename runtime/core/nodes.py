"""The vocabulary of node states that the head and its clients share. Pure: no I/O.

A node is ALIVE or DEAD by its liveness (``NodeInfo.state``); an alive node an operator drained
(``freight drain``: ``NodeInfo.draining``) shows as DRAINING, in the state API, ``freight
status`` and the ``freight_nodes`` gauge alike (docs/decisions/0068-draining-nodes.md).
"""

from __future__ import annotations

ALIVE = "ALIVE"
DEAD = "DEAD"
DRAINING = "DRAINING"
NODE_STATES = (ALIVE, DRAINING, DEAD)


def node_state(state: str, draining: bool) -> str:
    """The state a node shows: DRAINING for an alive node that takes no new work."""
    return DRAINING if state == ALIVE and draining else state
