"""What the head decides for an action before it asks an agent (which task, which actor, which
node holds the owner), and what the Python API refuses before it calls anything. No cluster."""

from __future__ import annotations

import pytest

from freight import actions
from freight.client import access
from freight.head.operator_actions import _owner_nodes, actor_named, check_id, task_to_cancel
from freight.head.rpc import NotFoundError
from freight.head.task_store import TaskStore
from freight.protocol.generated import freight_pb2 as pb

PREFIX = "ab" * 8


def tid(i: int) -> str:
    return PREFIX + i.to_bytes(8, "little").hex()


def event(i: int, state: str, t: float, actor_id: str = "") -> pb.TaskEvent:
    return pb.TaskEvent(
        task_id=tid(i), job_id="00000001", name=f"fn{i}", actor_id=actor_id, state=state, time=t,
        owner_address="/tmp/driver.sock",
    )  # fmt: skip


def test_ids_are_hex_and_lower_case() -> None:
    assert check_id("task", " ABcd ") == "abcd"
    with pytest.raises(ValueError, match="not a task id: ids are hexadecimal"):
        check_id("task", "12-34")
    with pytest.raises(ValueError, match="give a worker id"):
        check_id("worker", "  ")


def test_the_task_to_cancel_by_id_or_prefix() -> None:
    store = TaskStore()
    store.apply([event(1, "SUBMITTED_TO_WORKER", 1.0), event(2, "FINISHED", 1.0)])
    assert task_to_cancel(store, tid(1)[:-1], force=False).task_id == tid(1)
    assert task_to_cancel(store, tid(2), force=True).state == "FINISHED"  # the RPC says so
    with pytest.raises(ValueError, match="give more characters"):
        task_to_cancel(store, tid(1)[:8], force=False)
    with pytest.raises(NotFoundError, match="no task"):
        task_to_cancel(store, "f" * 32, force=False)


def test_force_is_refused_for_a_live_actor_task() -> None:
    store = TaskStore()
    store.apply([event(3, "SUBMITTED_TO_WORKER", 1.0, actor_id="a" * 24)])
    with pytest.raises(ValueError, match="force is not supported for actor tasks"):
        task_to_cancel(store, tid(3), force=True)
    assert task_to_cancel(store, tid(3), force=False).actor_id == "a" * 24


def test_an_actor_by_id_or_prefix() -> None:
    actors = [pb.ActorInfo(actor_id="ab12" + "0" * 20), pb.ActorInfo(actor_id="ab34" + "0" * 20)]
    assert actor_named(actors, "ab3") == "ab34" + "0" * 20
    assert actor_named(actors, "ab12" + "0" * 20) == "ab12" + "0" * 20
    assert actor_named(actors, "cd") == "cd"  # unknown: the kill finds nothing
    with pytest.raises(ValueError, match="matches 2 actors"):
        actor_named(actors, "ab")


def test_the_owners_node_is_the_one_whose_socket_folder_holds_its_socket() -> None:
    a = pb.NodeInfo(node_id="a", data_socket="/s/a/sockets/agent-a.sock")
    b = pb.NodeInfo(node_id="b", data_socket="/s/b/sockets/agent-b.sock")
    owner = "/s/b/sockets/driver-1234.sock|10.0.0.2:4000"
    assert [n.node_id for n in _owner_nodes([a, b], owner)] == ["b"]
    # An owner no node's folder holds (or with no socket): every node is asked in turn.
    assert [n.node_id for n in _owner_nodes([a, b], "10.0.0.9:4000")] == ["a", "b"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: actions.cancel_task("not hex"),
        lambda: actions.cancel_task(""),
        lambda: actions.kill_actor(None),  # type: ignore[arg-type]
        lambda: actions.kill_worker("zz"),
        lambda: actions.stop_job("  "),
    ],
)
def test_bad_ids_are_usage_errors_before_any_call(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(access.UsageError):
        call()


def test_a_reason_must_be_text() -> None:
    with pytest.raises(access.UsageError, match="reason must be text"):
        actions.cancel_task("ab" * 16, reason=3)  # type: ignore[arg-type]
