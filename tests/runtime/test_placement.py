"""The scheduling policies of freight.core.placement, node by node."""

from __future__ import annotations

import pytest

from freight.core.placement import (
    Choice,
    ClusterView,
    NodeState,
    assign_bundles,
    group_resources,
    in_group,
    strategy_from_json,
    strategy_to_json,
    utilization,
)
from freight.util.scheduling_strategies import (
    DoesNotExist,
    Exists,
    In,
    NodeAffinitySchedulingStrategy,
    NodeLabelSchedulingStrategy,
    NotIn,
    to_wire,
)


def node(
    node_id: str,
    cpus: float,
    free: float | None = None,
    labels: dict[str, str] | None = None,
    **res: float,
) -> NodeState:
    total = {"CPU": cpus, **res}
    available = dict(total)
    if free is not None:
        available["CPU"] = free
    return NodeState(node_id, total, available, labels or {}, f"127.0.0.1:{len(node_id)}")


def view(local: NodeState, *others: NodeState) -> ClusterView:
    v = ClusterView(local)
    v.update([local, *others])
    return v


def test_hybrid_keeps_work_local_until_half_used() -> None:
    local = node("a", 4)
    v = view(local, node("b", 4))
    assert v.pick({"CPU": 1}).node_id == "a"
    local.available["CPU"] = 2  # half used: no longer counts as empty
    assert v.pick({"CPU": 1}).node_id == "b"


def test_hybrid_prefers_a_node_with_room_and_queues_on_the_least_used() -> None:
    v = view(node("a", 2, free=0), node("b", 2, free=0), node("c", 4, free=1))
    assert v.pick({"CPU": 1}).node_id == "c"
    v = view(node("a", 2, free=0), node("b", 4, free=0))
    assert v.pick({"CPU": 1}).node_id == "a"  # nobody has room: queue at home


def test_custom_resource_and_infeasible() -> None:
    v = view(node("a", 2), node("b", 2, special=1))
    assert v.pick({"CPU": 1, "special": 1}).node_id == "b"
    choice = v.pick({"CPU": 8})
    assert choice.node_id == "" and choice.permanent and "infeasible" in choice.reason


def test_charge_keeps_a_burst_from_piling_onto_one_node() -> None:
    local = node("a", 2, free=0)
    v = view(local, node("b", 2), node("c", 2))
    picks = []
    for _ in range(4):
        choice = v.pick({"CPU": 1})
        picks.append(choice.node_id)
        v.charge(choice.node_id, {"CPU": 1})
    assert sorted(picks) == ["b", "b", "c", "c"]


def test_default_goes_where_the_arguments_lie() -> None:
    near = node("b", 4)
    near.store_dir = "/dev/shm/b"
    local = node("a", 4)
    local.store_dir = "/dev/shm/a"
    v = view(local, near, node("c", 4))
    assert v.pick({"CPU": 1}).node_id == "a"
    choice = v.pick({"CPU": 1}, prefer="/dev/shm/b")
    assert (choice.node_id, choice.near) == ("b", True)
    # Even when this view says it is full: that node knows better, and passes it on if so.
    near.available["CPU"] = 0
    assert v.pick({"CPU": 1}, prefer="/dev/shm/b") == choice
    assert v.pick({"CPU": 1}, prefer="/dev/shm/gone").node_id == "a"  # a node that left
    assert v.pick({"CPU": 8}, prefer="/dev/shm/b").node_id == ""  # infeasible stays so
    # Asked on the node that holds the arguments: run here while there is room, else spread.
    assert v.pick({"CPU": 1}, prefer="/dev/shm/a") == Choice("a")
    local.available["CPU"] = 0
    assert v.pick({"CPU": 1}, prefer="/dev/shm/a").node_id == "c"
    # Only the default policy follows the arguments.
    assert v.pick({"CPU": 1}, ("NODE", "c", False), "/dev/shm/b").node_id == "c"


def test_spread_goes_round_robin() -> None:
    v = view(node("a", 2), node("b", 2), node("c", 2))
    picks = [v.pick({"CPU": 1}, ("SPREAD",)).node_id for _ in range(6)]
    assert sorted(picks) == ["a", "a", "b", "b", "c", "c"]


def test_node_affinity_hard_and_soft() -> None:
    v = view(node("a", 2), node("b", 2, free=0))
    assert v.pick({"CPU": 1}, ("NODE", "b", False)).node_id == "b"  # hard: waits there
    assert v.pick({"CPU": 1}, ("NODE", "b", True)).node_id == "a"  # soft: elsewhere for now
    gone = v.pick({"CPU": 1}, ("NODE", "zz", False))
    assert gone.node_id == "" and "not alive" in gone.reason
    assert v.pick({"CPU": 1}, ("NODE", "zz", True)).node_id == "a"
    too_big = v.pick({"CPU": 4}, ("NODE", "b", False))
    assert too_big.node_id == "" and "can never run it" in too_big.reason


def test_labels_hard_and_soft() -> None:
    v = view(
        node("a", 2, labels={"zone": "a"}),
        node("b", 2, labels={"zone": "b", "disk": "ssd"}),
        node("c", 2, labels={"zone": "c"}),
    )
    hard = to_wire(NodeLabelSchedulingStrategy(hard={"zone": In("b", "c")}))
    assert {v.pick({"CPU": 1}, hard).node_id for _ in range(3)} <= {"b", "c"}
    prefer = to_wire(
        NodeLabelSchedulingStrategy(hard={"zone": NotIn("a")}, soft={"disk": Exists()})
    )
    assert v.pick({"CPU": 1}, prefer).node_id == "b"
    no_disk = to_wire(NodeLabelSchedulingStrategy(hard={"disk": DoesNotExist()}))
    assert v.pick({"CPU": 1}, no_disk).node_id in {"a", "c"}
    none = v.pick({"CPU": 1}, to_wire(NodeLabelSchedulingStrategy(hard={"zone": In("x")})))
    assert none.node_id == "" and none.permanent


def test_utilization_ignores_memory() -> None:
    n = node("a", 4, free=1, memory=100.0)
    n.available["memory"] = 0.0
    assert utilization(n) == pytest.approx(0.75)


def test_wire_forms_and_json_round_trip() -> None:
    for strategy in (
        None,
        "SPREAD",
        NodeAffinitySchedulingStrategy("ab", soft=True),
        NodeLabelSchedulingStrategy(hard={"zone": In("a", "b")}, soft={"gpu": Exists()}),
    ):
        wire = to_wire(strategy)
        assert strategy_from_json(strategy_to_json(wire)) == wire


@pytest.mark.parametrize(
    "bad, match",
    [
        ("PACK", "SPREAD"),
        (42, "SPREAD"),
        (NodeLabelSchedulingStrategy(hard={"zone": "a"}), r"In\(\.\.\.\)"),
        (NodeLabelSchedulingStrategy(hard=["zone"]), "dict"),  # type: ignore[arg-type]
    ],
)
def test_bad_strategies_say_what_to_write(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_wire(bad)


def test_node_affinity_needs_a_node_id() -> None:
    with pytest.raises(ValueError, match="node id"):
        NodeAffinitySchedulingStrategy("")


# -- placement groups --------------------------------------------------------------------------


FREE = {"a": {"CPU": 2.0}, "b": {"CPU": 2.0}, "c": {"CPU": 4.0, "GPU": 1.0}}


def test_strict_pack_puts_every_bundle_on_one_node_or_none() -> None:
    assert assign_bundles([{"CPU": 1}, {"CPU": 1}], "STRICT_PACK", FREE) in (
        ["a", "a"],
        ["b", "b"],
        ["c", "c"],
    )
    assert assign_bundles([{"CPU": 3}, {"CPU": 2}], "STRICT_PACK", FREE) is None


def test_pack_falls_back_to_few_nodes() -> None:
    got = assign_bundles([{"CPU": 3}, {"CPU": 2}, {"CPU": 1}], "PACK", FREE)
    assert got is not None and got[0] == "c" and len(set(got)) == 2


def test_strict_spread_needs_a_node_per_bundle() -> None:
    got = assign_bundles([{"CPU": 1}] * 3, "STRICT_SPREAD", FREE)
    assert got is not None and sorted(got) == ["a", "b", "c"]
    assert assign_bundles([{"CPU": 1}] * 4, "STRICT_SPREAD", FREE) is None


def test_spread_prefers_distinct_nodes_and_reuses_when_it_must() -> None:
    got = assign_bundles([{"CPU": 1}] * 4, "SPREAD", FREE)
    assert got is not None and len(set(got)) == 3


def test_a_bundle_nobody_can_hold_fails_the_whole_group() -> None:
    assert assign_bundles([{"CPU": 1}, {"GPU": 2}], "PACK", FREE) is None


def test_group_resources_and_requests_in_a_group() -> None:
    added = group_resources("pg1", 0, {"CPU": 2})
    assert added == {
        "CPU_group_0_pg1": 2.0,
        "CPU_group_pg1": 2.0,
        "bundle_group_0_pg1": 1000.0,
        "bundle_group_pg1": 1000.0,
    }
    assert in_group({"CPU": 1}, "pg1", -1) == {"CPU_group_pg1": 1}
    # One bundle's request also draws on the group's whole amount, as in Ray.
    assert in_group({"CPU": 1}, "pg1", 0) == {"CPU_group_0_pg1": 1, "CPU_group_pg1": 1}
    assert in_group({}, "pg1", 1) == {"bundle_group_1_pg1": 0.001, "bundle_group_pg1": 0.001}


def test_a_task_follows_only_arguments_big_enough_and_elsewhere() -> None:
    from types import SimpleNamespace

    from freight.client.submitter import LOCALITY_MIN_BYTES, TaskSpec, TaskSubmitter

    submitter = TaskSubmitter.__new__(TaskSubmitter)  # the method reads only cw.store_dir
    submitter.cw = SimpleNamespace(store_dir="/dev/shm/here")  # type: ignore[assignment]
    spec = TaskSpec(b"t", "f", b"", b"", b"", [], [], [], {"CPU": 1.0}, shape='{"CPU":1.0}')

    def shape(*values: tuple[str, str, int]) -> str:
        return submitter._shape_with_locality(spec, [(b"o", "w", v) for v in values])

    big, small = LOCALITY_MIN_BYTES, LOCALITY_MIN_BYTES - 1
    assert shape(("s", "/dev/shm/b/x", big)) == '{"CPU":1.0}\n/dev/shm/b'
    assert shape(("s", "/dev/shm/b/x", small)) == '{"CPU":1.0}'  # copied instead
    assert shape(("s", "/dev/shm/here/x", big)) == '{"CPU":1.0}'  # already here
    assert shape(("v", b"inline", big)) == '{"CPU":1.0}'  # inline values travel with it
    # The node holding the most bytes wins.
    assert shape(("s", "/dev/shm/b/x", big), ("s", "/dev/shm/c/y", 2 * big)).endswith("/c")
    spec.strategy = ("SPREAD",)
    assert shape(("s", "/dev/shm/b/x", big)) == '{"CPU":1.0}'  # a strategy says where


# -- drained nodes ----------------------------------------------------------------------------


def drained(n: NodeState) -> NodeState:
    n.draining = True
    return n


def test_a_drained_node_gets_no_new_work_while_an_open_node_can_run_it() -> None:
    view = ClusterView(drained(node("a", 4)))
    view.update([node("b", 2, free=0.0)])  # full, but open: the request waits there
    assert view.pick({"CPU": 1}) == Choice("b")
    assert view.pick({"CPU": 1}, ("SPREAD",)) == Choice("b")
    assert view.pick({"CPU": 1}, ("NODE", "a", True)) == Choice("b")  # soft: not on a drain


def test_work_only_drained_nodes_can_run_waits_on_one_of_them() -> None:
    view = ClusterView(node("a", 1))
    view.update([drained(node("b", 8, gpu_box=1))])
    assert view.pick({"CPU": 4}) == Choice("b")
    assert view.pick({"gpu_box": 1}) == Choice("b")
    assert view.pick({"CPU": 1}, ("NODE", "b", False)) == Choice("b")  # a hard affinity waits
    assert view.pick({"CPU": 1}) == Choice("a")


def test_actors_go_to_open_nodes_and_wait_when_only_drained_ones_fit() -> None:
    from freight.core.task_state import WAITING_FOR_DRAINED
    from freight.head.actors import Placement, place_actor_with
    from freight.protocol.generated import freight_pb2 as pb

    def info(node_id: str, cpus: float, draining: bool = False) -> pb.NodeInfo:
        amounts = pb.ResourceMap(amounts={"CPU": cpus})
        return pb.NodeInfo(node_id=node_id, total=amounts, available=amounts, draining=draining)

    nodes = [info("a", 8, draining=True), info("b", 2)]
    assert place_actor_with(("DEFAULT",), {}, nodes, {}, {}) == Placement(node_id="b")
    assert place_actor_with(("DEFAULT",), {"CPU": 4}, nodes, {}, {}) == Placement(
        pending_reason=WAITING_FOR_DRAINED
    )
    assert place_actor_with(("NODE", "a", False), {}, nodes, {}, {}) == Placement(
        pending_reason=WAITING_FOR_DRAINED
    )
    assert place_actor_with(("NODE", "a", True), {}, nodes, {}, {}) == Placement(node_id="b")
    assert place_actor_with(("DEFAULT",), {"CPU": 16}, nodes, {}, {}).infeasible
