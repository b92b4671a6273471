"""The head's control store: persistence across reopen, named-actor uniqueness, KV."""

from __future__ import annotations

import sqlite3

import pytest

from freight.head.control_store import ControlStore
from freight.protocol.generated import freight_pb2 as pb


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "control.db"


@pytest.fixture
def store(db_path):
    s = ControlStore(db_path)
    yield s
    s.close()


def _actor(actor_id: str, name: str = "", namespace: str = "ns", state: str = "ALIVE"):
    return pb.ActorInfo(
        actor_id=actor_id, job_id="00000001", name=name, namespace=namespace, state=state
    )


def test_everything_survives_a_reopen(db_path):
    with ControlStore(db_path) as s:
        node = pb.NodeInfo(node_id="n1", agent_address="127.0.0.1:1", state="ALIVE")
        node.total.amounts["CPU"] = 2
        s.upsert_node(node)
        s.upsert_job(pb.JobInfo(job_id=s.next_job_id(), namespace="a", state="RUNNING"))
        s.upsert_actor(_actor("a1", name="counter"))
        s.kv_put("ns", "k", b"v")

    with ControlStore(db_path) as s:
        assert s.get_node("n1").total.amounts["CPU"] == 2
        assert [j.job_id for j in s.list_jobs()] == ["00000001"]
        assert s.get_named_actor("counter", "ns").actor_id == "a1"
        assert s.kv_get("ns", "k") == b"v"
        assert s.next_job_id() == "00000002"


def test_the_database_is_in_wal_mode(store, db_path):
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_job_ids_are_distinct_and_increasing(store):
    ids = [store.next_job_id() for _ in range(20)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 20
    assert all(len(i) == 8 for i in ids)


def test_a_live_name_is_unique_per_namespace(store):
    store.upsert_actor(_actor("a1", name="counter"))
    with pytest.raises(ValueError, match="already exists"):
        store.upsert_actor(_actor("a2", name="counter"))
    # the refused actor was not recorded anywhere
    assert store.get_actor("a2") is None
    assert store.get_named_actor("counter", "ns").actor_id == "a1"


def test_the_same_name_is_free_in_another_namespace(store):
    store.upsert_actor(_actor("a1", name="counter", namespace="one"))
    store.upsert_actor(_actor("a2", name="counter", namespace="two"))
    assert store.get_named_actor("counter", "two").actor_id == "a2"


def test_a_dead_actor_frees_its_name(store, db_path):
    store.upsert_actor(_actor("a1", name="counter"))
    store.upsert_actor(_actor("a1", name="counter", state="DEAD"))
    assert store.get_named_actor("counter", "ns") is None
    store.upsert_actor(_actor("a2", name="counter", state="PENDING_CREATION"))
    assert store.get_named_actor("counter", "ns").actor_id == "a2"
    store.close()
    with ControlStore(db_path) as reopened:
        assert reopened.get_named_actor("counter", "ns").actor_id == "a2"
        assert reopened.get_actor("a1").state == "DEAD"


def test_list_actors_hides_dead_ones_unless_asked(store):
    store.upsert_actor(_actor("a1"))
    store.upsert_actor(_actor("a2", state="DEAD"))
    assert [a.actor_id for a in store.list_actors()] == ["a1"]
    assert [a.actor_id for a in store.list_actors(include_dead=True)] == ["a1", "a2"]


def test_returned_messages_are_copies(store):
    store.upsert_node(pb.NodeInfo(node_id="n1", state="ALIVE"))
    store.get_node("n1").state = "DEAD"
    assert store.get_node("n1").state == "ALIVE"


def test_kv_put_respects_overwrite(store):
    assert store.kv_put("ns", "k", b"1") is True
    assert store.kv_put("ns", "k", b"2", overwrite=False) is False
    assert store.kv_get("ns", "k") == b"1"
    assert store.kv_put("ns", "k", b"3", overwrite=True) is False
    assert store.kv_get("ns", "k") == b"3"


def test_kv_namespaces_are_separate_and_delete_works(store, db_path):
    store.kv_put("a", "k", b"1")
    store.kv_put("b", "k", b"2")
    assert store.kv_del("a", "k") is True
    assert store.kv_del("a", "k") is False
    assert store.kv_get("a", "k") is None
    store.close()
    with ControlStore(db_path) as reopened:
        assert reopened.kv_get("a", "k") is None
        assert reopened.kv_get("b", "k") == b"2"


def test_records_without_ids_are_refused(store):
    with pytest.raises(ValueError, match="node_id"):
        store.upsert_node(pb.NodeInfo())
    with pytest.raises(ValueError, match="job_id"):
        store.upsert_job(pb.JobInfo())
    with pytest.raises(ValueError, match="actor_id"):
        store.upsert_actor(pb.ActorInfo())
