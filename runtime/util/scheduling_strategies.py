"""Scheduling strategies for the ``scheduling_strategy`` option of tasks and actors.

The same names as Ray's ``ray.util.scheduling_strategies``, so programs keep their imports with
``freight`` in place of ``ray``. Besides these classes, the option takes the strings
``"DEFAULT"`` (the hybrid policy: pack onto the local node until it is half used, then spread)
and ``"SPREAD"`` (round-robin over the nodes that have room).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (hex, as ``freight.nodes()`` and the runtime context give it).

    With ``soft=False`` a task that node cannot run (it is gone, or lacks the resources) fails
    as unschedulable; with ``soft=True`` it runs elsewhere instead, and also when the node has no
    room at the moment and another node has.
    """

    node_id: str
    soft: bool = False
    _spill_on_unavailable: bool = False
    _fail_on_unavailable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError(
                f"NodeAffinitySchedulingStrategy needs a node id string, got {self.node_id!r}."
            )
        if not isinstance(self.soft, bool):
            raise ValueError(f"NodeAffinitySchedulingStrategy soft must be a bool: {self.soft!r}")


@dataclass(frozen=True)
class In:
    """The label's value is one of ``values``."""

    values: tuple[str, ...]

    def __init__(self, *values: str) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class NotIn:
    """The label is missing, or its value is none of ``values``."""

    values: tuple[str, ...]

    def __init__(self, *values: str) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class Exists:
    """The node has the label."""


@dataclass(frozen=True)
class DoesNotExist:
    """The node does not have the label."""


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run on the bundles of a placement group: bundle ``placement_group_bundle_index``, or any
    of them with -1. The task's or actor's resources are taken from the bundle."""

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None

    def __post_init__(self) -> None:
        from freight.util.placement_group import PlacementGroup

        pg = self.placement_group
        if not isinstance(pg, PlacementGroup):
            raise ValueError(
                "PlacementGroupSchedulingStrategy needs the PlacementGroup that "
                f"placement_group() returned, got {type(pg).__name__}."
            )
        i = self.placement_group_bundle_index
        if isinstance(i, bool) or not isinstance(i, int) or not -1 <= i < pg.bundle_count:
            raise ValueError(
                f"placement_group_bundle_index must be -1 or 0..{pg.bundle_count - 1} for this "
                f"group of {pg.bundle_count} bundle(s), got {i!r}."
            )


_OPS = {In: "in", NotIn: "not_in", Exists: "exists", DoesNotExist: "does_not_exist"}


@dataclass(frozen=True)
class NodeLabelSchedulingStrategy:
    """Run on a node whose labels match every ``hard`` condition, preferring nodes that also
    match the ``soft`` ones. Conditions map a label key to ``In(...)``, ``NotIn(...)``,
    ``Exists()`` or ``DoesNotExist()``; node labels come from ``freight start --labels``."""

    hard: dict[str, Any]
    soft: dict[str, Any] = field(default_factory=dict)


def _constraints(conditions: Any, which: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    if not isinstance(conditions, dict):
        raise ValueError(
            f"NodeLabelSchedulingStrategy {which} must be a dict of label -> In/NotIn/Exists/"
            f"DoesNotExist, got {type(conditions).__name__}."
        )
    out = []
    for key, cond in conditions.items():
        op = _OPS.get(type(cond))
        if not isinstance(key, str) or op is None:
            raise ValueError(
                f"NodeLabelSchedulingStrategy {which}: {key!r}: {cond!r} is not a condition; "
                "use In(...), NotIn(...), Exists() or DoesNotExist()."
            )
        values = tuple(getattr(cond, "values", ()))
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"label values must be strings, got {values!r} for {key!r}.")
        out.append((key, op, values))
    return tuple(out)


def placed(
    resources: dict[str, float], strategy: Any, parent: tuple[Any, ...] = ()
) -> tuple[dict[str, float], tuple[Any, ...]]:
    """A task's or actor's resources and the wire form of its strategy, with a placement group
    strategy turned into the group's own resources (which steer it to the bundle's node).
    ``parent`` is the caller's group when it captures its children (see :func:`placement_of`):
    a call without a strategy then runs on any of that group's bundles."""
    if strategy is None and parent:
        wire: tuple[Any, ...] = ("PG", parent[0], -1)
    else:
        wire = to_wire(strategy)
    if wire[0] == "PG":
        from freight.core.placement import DEFAULT, in_group

        return in_group(resources, wire[1], wire[2]), DEFAULT
    return resources, wire


def placement_of(strategy: Any, parent: tuple[Any, ...]) -> tuple[Any, ...]:
    """The placement group a task or actor runs in, as ``(group id, capture its children)``, or
    ``()`` for none; ``parent`` is the caller's own when it captures its children, else ``()``.

    Ray's rules: a PlacementGroupSchedulingStrategy names the group (its capture flag, when
    unset, is the caller's); no strategy at all inside a capturing caller's group means that
    group (any bundle), capturing too; any other strategy leaves the groups behind."""
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        capture = strategy.placement_group_capture_child_tasks
        return (strategy.placement_group.id, bool(parent) if capture is None else bool(capture))
    if strategy is None and parent:
        return (parent[0], True)
    return ()


def to_wire(strategy: Any) -> tuple[Any, ...]:
    """The form a lease request carries (see ``freight.core.placement``); raises ValueError
    with what to write instead for anything that is not a strategy."""
    if strategy is None or strategy == "DEFAULT":
        return ("DEFAULT",)
    if strategy == "SPREAD":
        return ("SPREAD",)
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ("NODE", strategy.node_id, strategy.soft)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        return ("PG", strategy.placement_group.id, strategy.placement_group_bundle_index)
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        return (
            "LABELS",
            _constraints(strategy.hard, "hard"),
            _constraints(strategy.soft, "soft"),
        )
    raise ValueError(
        "scheduling_strategy must be 'DEFAULT', 'SPREAD', a NodeAffinitySchedulingStrategy, a "
        "NodeLabelSchedulingStrategy or a PlacementGroupSchedulingStrategy "
        f"(freight.util.scheduling_strategies), got {strategy!r}."
    )


__all__ = [
    "DoesNotExist",
    "Exists",
    "In",
    "NodeAffinitySchedulingStrategy",
    "NodeLabelSchedulingStrategy",
    "NotIn",
    "PlacementGroupSchedulingStrategy",
]
