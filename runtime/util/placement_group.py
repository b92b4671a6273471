"""Placement groups: reserve resources on the cluster's nodes, all at once, for tasks and actors.

The same names as Ray's ``ray.util.placement_group``::

    from freight.util.placement_group import placement_group, remove_placement_group
    from freight.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    freight.get(pg.ready())                      # or pg.wait(timeout_seconds=10)
    train.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    ).remote()
    remove_placement_group(pg)

Strategies: ``PACK`` (as few nodes as possible), ``SPREAD`` (as many as possible),
``STRICT_PACK`` (one node), ``STRICT_SPREAD`` (one node per bundle). A group is reserved whole or
not at all; until then it waits, and ``freight status`` / ``placement_group_table()`` say why.
"""

from __future__ import annotations

import math
import time
from typing import Any

from freight.core.placement import PG_STRATEGIES

MAX_WAIT_PER_CALL_S = 30.0  # one GetPlacementGroup call waits at most this (the head allows 60)


class PlacementGroup:
    """A handle to a placement group (picklable: tasks and actors may take it as an argument)."""

    def __init__(self, pg_id: str, bundles: list[dict[str, float]], strategy: str = "") -> None:
        self.id = pg_id
        self.bundle_specs = [dict(b) for b in bundles]
        self.strategy = strategy

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """An ObjectRef that is ready once every bundle is reserved (``freight.get`` it)."""
        return (
            _ready_task()
            .options(num_cpus=0, scheduling_strategy=_strategy(self, -1))
            .remote(self.id)
        )

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait until every bundle is reserved; False if ``timeout_seconds`` pass first."""
        from freight import _api

        seconds = _api._check_timeout(timeout_seconds, "PlacementGroup.wait")  # nan: ValueError
        deadline = time.monotonic() + (math.inf if seconds is None else seconds)
        while True:
            # The head answers as soon as the group leaves PENDING (or its wait runs out).
            left = deadline - time.monotonic()
            info = _get(self.id, min(max(left, 0.0), MAX_WAIT_PER_CALL_S))
            if info is not None and info.state == "CREATED":
                return True
            if info is None or info.state == "REMOVED" or time.monotonic() >= deadline:
                return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id!r}, bundles={self.bundle_specs}, {self.strategy})"


def _strategy(pg: PlacementGroup, index: int) -> Any:
    from freight.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, list) or not bundles:
        raise ValueError(
            f"placement_group() needs a non-empty list of bundles (dicts like {{'CPU': 1}}), "
            f"got {bundles!r}."
        )
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict) or not b:
            raise ValueError(f"bundle {i} must be a non-empty dict of resource -> amount: {b!r}")
        amounts = {}
        for k, v in b.items():
            if (
                not isinstance(k, str)
                or isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise ValueError(f"bundle {i}: {k!r}: {v!r} is not a resource amount (>= 0).")
            if v:
                amounts[k] = float(v)
        if not amounts:
            raise ValueError(f"bundle {i} asks for nothing: {b!r}; give it a positive amount.")
        out.append(amounts)
    return out


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
) -> PlacementGroup:
    """Ask the cluster to reserve ``bundles`` under ``strategy``; returns at once (see
    :meth:`PlacementGroup.ready` and :meth:`PlacementGroup.wait`)."""
    from freight import _api
    from freight.client.head_client import pb_module as pb
    from freight.client.head_client import resources_pb

    checked = _check_bundles(bundles)
    if strategy not in PG_STRATEGIES:
        raise ValueError(
            f"placement_group strategy must be one of {', '.join(PG_STRATEGIES)}, got {strategy!r}."
        )
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}.")
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {type(name).__name__}.")
    w = _api._require_worker()
    info = pb.PlacementGroupInfo(
        name=name,
        namespace=w.namespace,
        strategy=strategy,
        bundles=[resources_pb(b) for b in checked],
        job_id=w.job_id,
        detached=lifetime == "detached",
    )
    reply = w.head.call("CreatePlacementGroup", pb.CreatePlacementGroupRequest(pg=info))
    return PlacementGroup(reply.pg.pg_id, checked, strategy)


def _get(pg_id: str, wait_s: float = 0.0) -> Any:
    """The head's record of the group; with ``wait_s``, once it is no longer PENDING."""
    from freight import _api
    from freight.client.head_client import pb_module as pb

    reply = _api._require_worker().head.call(
        "GetPlacementGroup", pb.GetPlacementGroupRequest(pg_id=pg_id, wait_s=wait_s), 30 + wait_s
    )
    return reply.pg if reply.found else None


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Return the group's bundles to their nodes; tasks and actors still using them are killed."""
    from freight import _api
    from freight.client.head_client import pb_module as pb

    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(
            f"remove_placement_group() takes a PlacementGroup, got {type(placement_group).__name__}"
        )
    _api._require_worker().head.call(
        "RemovePlacementGroup", pb.RemovePlacementGroupRequest(pg_id=placement_group.id)
    )


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group of that name in the current namespace (ValueError if none)."""
    from freight import _api
    from freight.client.head_client import pb_module as pb

    w = _api._require_worker()
    reply = w.head.call(
        "GetPlacementGroup",
        pb.GetPlacementGroupRequest(name=placement_group_name, namespace=w.namespace),
    )
    if not reply.found:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return _handle(reply.pg)


def _handle(pg: Any) -> PlacementGroup:
    """A handle to the group the head's record describes."""
    return PlacementGroup(pg.pg_id, [dict(b.amounts) for b in pg.bundles], pg.strategy)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """What the head knows of one group, or of all of them by id (as Ray's table)."""
    from freight import _api
    from freight.client.head_client import pb_module as pb

    def row(pg: Any) -> dict[str, Any]:
        return {
            "placement_group_id": pg.pg_id,
            "name": pg.name,
            "strategy": pg.strategy,
            "state": pg.state,
            "bundles": {i: dict(b.amounts) for i, b in enumerate(pg.bundles)},
            "bundles_to_node_id": dict(enumerate(pg.bundle_nodes)),
            "pending_reason": pg.pending_reason,
            "detached": pg.detached,
        }

    if placement_group is not None:
        got = _get(placement_group.id)
        return row(got) if got is not None else {}
    reply = _api._require_worker().head.call("ListPlacementGroups", pb.ListPlacementGroupsRequest())
    return {pg.pg_id: row(pg) for pg in reply.pgs}


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the calling task or actor runs in; None in a driver, or outside
    any group (child tasks run in it too when it was given with
    ``placement_group_capture_child_tasks=True``)."""
    from freight import _api

    task = _api._require_worker().current_task
    group = task.placement_group if task is not None else ()
    if not group:
        return None
    info = _get(group[0])
    # Removed since: its id is all that is left.
    return _handle(info) if info is not None else PlacementGroup(group[0], [])


def _ready(pg_id: str) -> bool:
    # It runs once the bundles' resources exist; the head marks the group CREATED right after.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = _get(pg_id)
        if info is not None and info.state == "CREATED":
            return True
        time.sleep(0.01)  # polls the head, bounded by the deadline
    return True


_READY: list[Any] = []  # the remote function behind ready(), made on first use


def _ready_task() -> Any:
    if not _READY:
        import freight

        _READY.append(freight.remote(_ready))
    return _READY[0]


__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
