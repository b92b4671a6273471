"""Cluster resources, nodes, and the runtime context."""

import os
import time

from ._impl import rt


@rt.remote
def task_ids():
    ctx = rt.get_runtime_context()
    return ctx.get_task_id(), ctx.get_job_id(), ctx.get_actor_id(), ctx.get_node_id()


@rt.remote(resources={"custom": 1})
def hold_custom(release_path):
    deadline = time.monotonic() + 120
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"


@rt.remote
class Identity:
    def ids(self):
        ctx = rt.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_task_id(), ctx.get_node_id()


def alive_nodes():
    return [n for n in rt.nodes() if n["Alive"]]


def test_is_initialized():
    assert rt.is_initialized()


def test_one_alive_node():
    assert len(alive_nodes()) == 1


def test_node_reports_cpu_resources():
    assert alive_nodes()[0]["Resources"]["CPU"] == 4


def test_cluster_resources_cpu():
    assert rt.cluster_resources()["CPU"] == 4


def test_cluster_resources_custom():
    assert rt.cluster_resources()["custom"] == 2


def test_available_resources_drop_while_task_holds_custom(tmp_path, wait_for):
    release = tmp_path / "release"
    ref = hold_custom.remote(str(release))
    wait_for(
        lambda: rt.available_resources().get("custom", 0) == 1,
        what="one unit of 'custom' to be in use",
    )
    release.write_text("go")
    assert rt.get(ref, timeout=120) == "released"
    wait_for(
        lambda: rt.available_resources().get("custom", 0) == 2,
        what="'custom' to be free again",
    )


def test_task_ids_differ_between_tasks():
    first, second = rt.get([task_ids.remote(), task_ids.remote()])
    assert first[0] and second[0]
    assert first[0] != second[0]


def test_task_runs_in_the_driver_job():
    _, job_id, _, _ = rt.get(task_ids.remote())
    assert job_id == rt.get_runtime_context().get_job_id()


def test_plain_task_has_no_actor_id():
    _, _, actor_id, _ = rt.get(task_ids.remote())
    assert actor_id is None


def test_task_node_id_is_the_node():
    _, _, _, node_id = rt.get(task_ids.remote())
    assert node_id == alive_nodes()[0]["NodeID"]


def test_driver_has_no_actor_id():
    assert rt.get_runtime_context().get_actor_id() is None


def test_actor_id_is_set_inside_actor():
    a, b = Identity.remote(), Identity.remote()
    (id_a, _, _), (id_b, _, _) = rt.get([a.ids.remote(), b.ids.remote()])
    assert id_a and id_b
    assert id_a != id_b


def test_actor_task_ids_differ_between_calls():
    a = Identity.remote()
    (_, task_1, _), (_, task_2, _) = rt.get([a.ids.remote(), a.ids.remote()])
    assert task_1 != task_2


def test_node_id_set_inside_actor():
    _, _, node_id = rt.get(Identity.remote().ids.remote())
    assert node_id == alive_nodes()[0]["NodeID"]
