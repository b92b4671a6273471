"""Which node runs a lease request: Ray's scheduling policies as one I/O-free function.

A node agent asks :func:`pick_node` for every lease request it receives from an owner of its
node. The answer is this node (queue or grant here), another node (spill the request back to
it), or a reason why no node can ever run it. The agent's view of other nodes comes from the
head's heartbeat replies and is up to a heartbeat old; :meth:`ClusterView.charge` keeps it
honest in between by taking what was just sent to a node off its free amounts.

Policies (``strategy`` is the wire form of a task's ``scheduling_strategy``):

- ``("DEFAULT",)``: hybrid. Nodes under half used count as empty, so work packs onto the local
  node until it is half used, then spreads to the least used node that has room; with no room
  anywhere it queues on the least used node that could run it.
- ``("SPREAD",)``: round-robin over the nodes that have room (then over those that could run it).
- ``("NODE", node_id, soft)``: that node. When it is gone or can never run the request, a hard
  affinity is unschedulable and a soft one falls back to the hybrid policy; a soft affinity also
  falls back while the node has no room and another node has.
- ``("LABELS", hard, soft)``: only nodes whose labels match every ``hard`` constraint, preferring
  those that also match ``soft``; a constraint is ``(key, op, values)`` with op ``in``,
  ``not_in``, ``exists`` or ``does_not_exist``.

A draining node (``freight drain``) is chosen only when no open node could ever run the request
(a hard affinity to it, or only it has the resources): it holds the request, without granting it,
until it is undrained (docs/decisions/0068-draining-nodes.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freight.observe.catalogue import BYTE_RESOURCES

EPS = 1e-9
SPREAD_THRESHOLD = 0.5
DEFAULT: tuple[Any, ...] = ("DEFAULT",)


@dataclass(slots=True)
class NodeState:
    """What a node agent knows of one node."""

    node_id: str
    total: dict[str, float]
    available: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    address: str = ""  # the agent's TCP data plane
    store_dir: str = ""  # its object store's folder
    agent_address: str = ""  # its agent's gRPC server
    draining: bool = False  # takes no new work (freight drain)
    drain_seq: int = 0  # which drain or undrain the flag comes from


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a request goes: ``node_id`` (empty when none can run it) and, when empty, why."""

    node_id: str
    reason: str = ""
    permanent: bool = False  # no node of the cluster could run it (infeasible / unschedulable)
    near: bool = False  # chosen for holding the arguments: that node decides again, knowing more


def covers(have: Mapping[str, float], need: Mapping[str, float]) -> bool:
    return all(have.get(k, 0.0) + EPS >= v for k, v in need.items() if v > 0)


def utilization(node: NodeState) -> float:
    """The most used share of any resource the node has (Ray's critical resource use)."""
    worst = 0.0
    for k, total in node.total.items():
        if total > 0 and k not in BYTE_RESOURCES:
            worst = max(worst, 1.0 - node.available.get(k, 0.0) / total)
    return worst


def _label_ok(labels: Mapping[str, str], constraint: tuple[Any, ...]) -> bool:
    key, op, values = constraint
    if op == "in":
        return key in labels and labels[key] in values
    if op == "not_in":
        return key not in labels or labels[key] not in values
    if op == "exists":
        return key in labels
    if op == "does_not_exist":
        return key not in labels
    raise ValueError(f"unknown label operator {op!r}")


def labels_match(labels: Mapping[str, str], constraints: tuple[Any, ...]) -> bool:
    """True if ``labels`` meet every ``(key, op, values)`` constraint."""
    return all(_label_ok(labels, c) for c in constraints)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def strategy_to_json(strategy: tuple[Any, ...]) -> str:
    """The form the control plane keeps (``ActorInfo.scheduling_strategy``); "" for DEFAULT."""
    return "" if strategy == DEFAULT else json.dumps(strategy)


def strategy_from_json(text: str) -> tuple[Any, ...]:
    return _tuples(json.loads(text)) if text else DEFAULT


def _open(nodes: list[NodeState]) -> list[NodeState]:
    """The nodes that take new work (not drained)."""
    return [n for n in nodes if not n.draining]


def _hybrid(
    request: Mapping[str, float], local: str, candidates: list[NodeState]
) -> NodeState | None:
    """The hybrid policy over nodes that can run the request."""
    if not candidates:
        return None
    with_room = [n for n in candidates if covers(n.available, request)]
    pool = with_room or candidates

    def score(n: NodeState) -> tuple[float, int]:
        u = utilization(n)
        return (0.0 if u < SPREAD_THRESHOLD else u, 0 if n.node_id == local else 1)

    return min(pool, key=score)


class ClusterView:
    """The nodes a node agent knows, and the round-robin position of SPREAD."""

    def __init__(self, local: NodeState) -> None:
        self.local_id = local.node_id
        self.nodes: dict[str, NodeState] = {local.node_id: local}
        self._spread = 0

    def update(self, nodes: list[NodeState]) -> None:
        """Replace the view of the other nodes (the local one stays live)."""
        local = self.nodes[self.local_id]
        self.nodes = {n.node_id: n for n in nodes if n.node_id != self.local_id}
        self.nodes[self.local_id] = local

    def charge(self, node_id: str, request: Mapping[str, float]) -> None:
        """A request went to ``node_id``: count its amounts as used there until the next
        update, so a burst is not sent to one node on an old view."""
        node = self.nodes.get(node_id)
        if node is None or node_id == self.local_id:
            return
        for k, v in request.items():
            node.available[k] = node.available.get(k, 0.0) - v

    def pick(
        self, request: Mapping[str, float], strategy: tuple[Any, ...] = DEFAULT, prefer: str = ""
    ) -> Choice:
        """The node for ``request`` under ``strategy``. Under the default one, ``prefer`` (a
        node's store folder: where the task's arguments lie) goes first: another node is chosen
        with ``near`` set, and this node only while it has room."""
        kind = strategy[0] if strategy else "DEFAULT"
        nodes = list(self.nodes.values())
        feasible = [n for n in nodes if covers(n.total, request)]
        if kind == "NODE":
            target, soft = str(strategy[1]), bool(strategy[2])
            node = self.nodes.get(target)
            if node is not None and node.draining and soft:
                node = None  # a soft affinity does not wait for a drained node
            if node is not None and covers(node.total, request):
                if not soft or covers(node.available, request):
                    return Choice(node.node_id)
                others = [n for n in _open(feasible) if covers(n.available, request)]
                return Choice(node.node_id if not others else self._default(request, others))
            if not soft:
                why = (
                    f"node {target[:12]} is not alive"
                    if node is None
                    else f"node {target[:12]} can never run it"
                )
                return Choice("", f"unschedulable: node affinity to {why}", True)
        elif kind == "LABELS":
            hard, soft_labels = tuple(strategy[1]), tuple(strategy[2])
            feasible = [n for n in feasible if labels_match(n.labels, hard)]
            if not feasible:
                return Choice("", f"infeasible: no node matches the labels {list(hard)}", True)
            preferred = [
                n for n in _open(feasible) or feasible if labels_match(n.labels, soft_labels)
            ]
            if preferred and any(covers(n.available, request) for n in preferred):
                feasible = preferred
        if not feasible:
            return Choice("", "infeasible", True)
        # Drained nodes only when no open node can ever run it: then it waits on one of them.
        feasible = _open(feasible) or feasible
        if kind == "SPREAD":
            pool = [n for n in feasible if covers(n.available, request)] or feasible
            pool.sort(key=lambda n: n.node_id)
            node = pool[self._spread % len(pool)]
            self._spread += 1
            return Choice(node.node_id)
        if prefer and kind == "DEFAULT":
            near = next((n for n in feasible if n.store_dir == prefer), None)
            if near is not None and near.node_id != self.local_id:
                # Where the arguments lie, whatever this (older) view says of its load: that
                # node knows its own load and sends the request on if it has no room.
                return Choice(near.node_id, near=True)
            if near is not None and covers(near.available, request):
                return Choice(near.node_id)
        return Choice(self._default(request, feasible))

    def _default(self, request: Mapping[str, float], feasible: list[NodeState]) -> str:
        node = _hybrid(request, self.local_id, feasible)
        assert node is not None
        return node.node_id


# -- placement groups ---------------------------------------------------------------------------

PG_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_UNITS = 1000.0  # of bundle_group_<pg> per bundle, for requests that name no resource


def group_resources(pg_id: str, index: int, bundle: Mapping[str, float]) -> dict[str, float]:
    """What a reserved bundle adds to its node (Ray's names): each resource under
    ``<name>_group_<index>_<pg>`` and ``<name>_group_<pg>``, plus ``bundle_group_*`` units."""
    out: dict[str, float] = {}
    for k, v in {**bundle, "bundle": BUNDLE_UNITS}.items():
        for name in (f"{k}_group_{index}_{pg_id}", f"{k}_group_{pg_id}"):
            out[name] = out.get(name, 0.0) + v
    return out


def in_group(resources: Mapping[str, float], pg_id: str, index: int) -> dict[str, float]:
    """A task's or actor's request rewritten to draw on a placement group's bundle ``index``
    (-1: any bundle); a request of nothing draws a sliver of the bundle's own units.

    One bundle's request draws on the group's whole amount too (as in Ray), so that what runs
    on a given bundle and what runs on any bundle never hold more than the group has."""
    wanted = {k: v for k, v in resources.items() if v > 0} or {"bundle": 0.001}
    suffixes = [f"_group_{pg_id}"] if index < 0 else [f"_group_{index}_{pg_id}", f"_group_{pg_id}"]
    return {f"{k}{suffix}": v for suffix in suffixes for k, v in wanted.items()}


def is_cpu(resource: str) -> bool:
    """True for ``CPU`` and a placement group's CPU (``CPU_group_...``): what a worker blocked
    in ``get`` gives back, inside a bundle as outside one (as Ray's raylet does)."""
    return resource == "CPU" or resource.startswith("CPU_group_")


def assign_bundles(
    bundles: list[Mapping[str, float]],
    strategy: str,
    free: Mapping[str, Mapping[str, float]],
) -> list[str] | None:
    """The node of each bundle, or None when the nodes' ``free`` amounts cannot hold them all
    under ``strategy`` (then nothing is reserved: all or none)."""
    left = {n: dict(a) for n, a in free.items()}
    order = sorted(range(len(bundles)), key=lambda i: -sum(bundles[i].values()))

    def take(node: str, need: Mapping[str, float]) -> None:
        for k, v in need.items():
            left[node][k] = left[node].get(k, 0.0) - v

    total: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            total[k] = total.get(k, 0.0) + v
    if strategy in ("PACK", "STRICT_PACK"):
        whole = [n for n in left if covers(left[n], total)]
        if whole:
            return [whole[0]] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
    out: list[str] = [""] * len(bundles)
    used: set[str] = set()
    for i in order:
        need = bundles[i]
        fits = [n for n in left if covers(left[n], need)]
        if strategy == "STRICT_SPREAD":
            fits = [n for n in fits if n not in used]
        elif strategy == "SPREAD":
            fits.sort(key=lambda n: n in used)  # an unused node first, a used one if need be
        else:  # PACK that does not fit on one node: fill the nodes already used first
            fits.sort(key=lambda n: n not in used)
        if not fits:
            return None
        out[i] = fits[0]
        used.add(fits[0])
        take(fits[0], need)
    return out
