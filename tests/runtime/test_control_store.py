"""The head's control store: persistence across reopen, named-actor uniqueness, KV; private
files, and damaged stores refused with the way out."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from freight.head.control_store import ControlStore, ControlStoreError
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


def test_actors_per_node_counts_the_placed_actors_that_are_not_dead(store):
    store.upsert_actor(pb.ActorInfo(actor_id="a1", node_id="n1", state="ALIVE"))
    store.upsert_actor(pb.ActorInfo(actor_id="a2", node_id="n1", state="RESTARTING"))
    store.upsert_actor(pb.ActorInfo(actor_id="a3", node_id="n2", state="PENDING_CREATION"))
    store.upsert_actor(pb.ActorInfo(actor_id="a4", node_id="n2", state="DEAD"))
    store.upsert_actor(pb.ActorInfo(actor_id="a5", state="PENDING_CREATION"))  # not placed
    assert store.actors_per_node() == {"n1": 2, "n2": 1}
    # The same figures as counting the listed actors, which the placement did before.
    listed: dict[str, int] = {}
    for a in store.list_actors():
        if a.node_id:
            listed[a.node_id] = listed.get(a.node_id, 0) + 1
    assert store.actors_per_node() == listed


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


# ---- private files and damaged stores ----------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _fill(store: ControlStore, n: int = 60) -> None:
    for i in range(n):
        store.upsert_node(pb.NodeInfo(node_id=f"n{i}", agent_address="x" * 200, state="ALIVE"))


def _crashed_copy(db_path: Path, dest: Path) -> Path:
    """The files a head SIGKILLed with ``db_path`` open would leave: database, log and index,
    copied while the store is still open (nothing checkpointed)."""
    dest.mkdir(mode=0o700)
    store = ControlStore(db_path)
    _fill(store)
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(f"{db_path}{suffix}", dest / f"control.db{suffix}")
    store.close()
    assert (dest / "control.db-wal").stat().st_size > 4096 * 10  # the rows are in the log
    return dest / "control.db"


def test_the_store_files_are_private(tmp_path):
    folder = tmp_path / "state"
    store = ControlStore(folder / "control.db")  # the folder is made, 0700
    _fill(store, 5)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    store.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes == {"control.db": 0o600, "control.db-wal": 0o600, "control.db-shm": 0o600}


def test_a_store_folder_other_users_can_read_is_refused(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.raises(PermissionError, match=r"mode 0755.*chmod 0700"):
        ControlStore(folder / "control.db")
    assert list(folder.iterdir()) == []


def test_a_second_store_on_the_same_file_is_refused(store, db_path):
    with pytest.raises(ControlStoreError, match="in use by another running head"):
        ControlStore(db_path)


def test_an_empty_store_file_is_refused_not_replaced(db_path):
    db_path.touch(mode=0o600)
    with pytest.raises(ControlStoreError) as e:
        ControlStore(db_path)
    assert str(db_path) in str(e.value) and "empty (0 bytes)" in str(e.value)
    assert f"delete {db_path}" in str(e.value)
    assert db_path.read_bytes() == b""


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_store_file_is_refused_with_the_way_out(db_path, where):
    with ControlStore(db_path) as s:
        _fill(s)
    data = bytearray(db_path.read_bytes())
    if where == "header":
        data[:16] = b"not a database!!"
    else:  # every page after the first (the tables' b-trees) overwritten
        data[4096:] = b"\xa5" * (len(data) - 4096)
    db_path.write_bytes(bytes(data))
    before = _files(db_path.parent)
    with pytest.raises(ControlStoreError) as e:
        ControlStore(db_path)
    message = str(e.value)
    assert f"the control store {db_path} is damaged" in message
    assert ".recover" in message and "Nothing was changed" in message
    assert _files(db_path.parent) == before


def test_an_intact_log_a_crash_left_is_replayed(db_path, tmp_path):
    copy = _crashed_copy(db_path, tmp_path / "crash")
    with ControlStore(copy) as s:
        assert len(s.list_nodes()) == 60


@pytest.mark.parametrize("damage", ["truncated", "bit flip"])
def test_a_damaged_log_is_refused_not_silently_dropped(db_path, tmp_path, damage):
    copy = _crashed_copy(db_path, tmp_path / "crash")
    wal = Path(f"{copy}-wal")
    data = bytearray(wal.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0x10
    wal.write_bytes(bytes(data))
    before = _files(copy.parent)
    with pytest.raises(ControlStoreError) as e:
        ControlStore(copy)
    message = str(e.value)
    assert f"the control store's log {copy}-wal is damaged" in message
    assert "committed frames" in message and f"move {copy}-wal and {copy}-shm aside" in message
    assert _files(copy.parent) == before


def test_a_row_that_cannot_be_read_is_named_with_the_way_out(db_path):
    with ControlStore(db_path) as s:
        _fill(s, 3)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("UPDATE nodes SET data = x'ffffffff' WHERE node_id = 'n1'")
        conn.commit()
    before = _files(db_path.parent)
    with pytest.raises(ControlStoreError) as e:
        ControlStore(db_path)
    message = str(e.value)
    assert f"the control store {db_path} has a row it cannot read: nodes node_id='n1'" in message
    assert _files(db_path.parent) == before
    # The way out it gives works: delete that row, and the store opens with the other nodes.
    fix = re.search(r'`sqlite3 (\S+) "(.+?)"', message)
    assert fix is not None and fix[1] == str(db_path)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(fix[2])
        conn.commit()
    with ControlStore(db_path) as s:
        assert sorted(n.node_id for n in s.list_nodes()) == ["n0", "n2"]


def test_a_forgotten_secret_leaves_no_bytes_behind(db_path):
    secret = b"0123456789abcdef-a-token-an-older-head-kept-here"
    with ControlStore(db_path) as s:
        _fill(s, 3)
        s.kv_put("freight", "cluster_token", secret)
        s.forget_secret("freight", "cluster_token")
        assert s.kv_get("freight", "cluster_token") is None
        for p in db_path.parent.iterdir():
            assert secret not in p.read_bytes(), p


def test_a_bad_placement_group_or_event_row_is_named_too(db_path):
    from freight.head.events import EventStore
    from freight.head.placement_groups import KV_NAMESPACE

    with ControlStore(db_path) as s:
        s.kv_put(KV_NAMESPACE, "pg1", b"\xff\xff\xff\xff")
        with pytest.raises(ControlStoreError, match=r"kv ns='.+' key='pg1'.*DELETE FROM kv"):
            s.kv_messages(KV_NAMESPACE, pb.PlacementGroupInfo)
        events = EventStore(s)
        events.record("NODE_JOINED", "a node joined")
        s.connection.execute("UPDATE events SET ids = 'not json'")
        with pytest.raises(ControlStoreError, match=r"events seq=1 .*WHERE seq = 1"):
            EventStore(s)
