"""The head's control store: nodes, jobs, actors and a small key/value table.

SQLite in WAL mode persists everything (``<session_dir>/control.db``), so a restarted head picks
the cluster up again (:mod:`freight.head.store_file` keeps the files private and refuses damaged
ones); dicts in front of it serve every read. Writes go to both, SQLite first, so
the cache never holds what the database refused. Messages are stored as serialized protobuf
bytes next to the columns that are indexed or constrained.

The class does I/O only: it knows nothing of asyncio, scheduling or the network.
"""

from __future__ import annotations

import functools
import inspect
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from freight.head import store_file
from freight.head.store_file import ControlStoreError
from freight.observe.recorder import RECORDER
from freight.protocol.generated import freight_pb2 as pb

DEAD = "DEAD"
__all__ = ["DEAD", "ControlStore", "ControlStoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, state TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, state TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS actors (
    actor_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, name TEXT NOT NULL,
    namespace TEXT NOT NULL, state TEXT NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS actors_live_name ON actors (namespace, name)
    WHERE name != '' AND state != 'DEAD';
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key));
"""


_M = TypeVar("_M", pb.NodeInfo, pb.JobInfo, pb.ActorInfo)
_P = TypeVar("_P", bound=Message)


def _copy(msg: _M) -> _M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


class ControlStore:
    """Nodes, jobs, actors and KV, cached in memory and persisted in SQLite (WAL).

    Returned messages are copies: change them and ``upsert_*`` them back to record a change.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._nodes: dict[str, pb.NodeInfo] = {}
        self._jobs: dict[str, pb.JobInfo] = {}
        self._actors: dict[str, pb.ActorInfo] = {}
        self._live_names: dict[tuple[str, str], str] = {}  # (namespace, name) -> actor_id
        self._kv: dict[tuple[str, str], bytes] = {}
        self._job_counter = 0
        # Told of every node, job and actor written (kind, message): the head's watches
        # (freight.head.watch). Others whose records live here call it too (placement groups).
        self.feed: Callable[[str, Any], None] | None = None
        # Files private, the store this head's alone, checked before SQLite may replay its log.
        store_file.prepare(self.path, _SCHEMA)
        self._lock = store_file.lock(self.path)
        try:
            store_file.check(self.path)
            # isolation_level=None: each statement commits on its own; multi-statement writes
            # use explicit transactions.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                self._open()
            except sqlite3.DatabaseError as e:
                raise store_file.damaged(self.path, f"SQLite says {e}") from None
        except BaseException:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            os.close(self._lock)
            raise

    def _open(self) -> None:
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise store_file.damaged(self.path, "SQLite's check finds " + "; ".join(problems))
        self._db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL survives process crashes; only an OS crash can lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._load()

    def _rows(self, table: str, key: str, kind: type[_M]) -> list[_M]:
        out = []
        for ident, data in self._db.execute(f"SELECT {key}, data FROM {table}"):
            try:
                out.append(kind.FromString(data))
            except Exception as e:  # DecodeError, or not bytes at all
                raise self.bad_row(table, {key: ident}, e) from None
        return out

    def bad_row(self, table: str, where: dict[str, Any], error: Exception) -> ControlStoreError:
        """The error for a row of ``table`` (the one ``where`` picks) that cannot be read: it
        names the row and gives the command that deletes it. The head refuses to start on it
        rather than drop the row itself."""

        def sql(v: Any) -> str:
            return str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"

        shown = " ".join(f"{k}={v!r}" for k, v in where.items())
        cond = " AND ".join(f"{k} = {sql(v)}" for k, v in where.items())
        return ControlStoreError(
            f"the control store {self.path} has a row it cannot read: {table} {shown} "
            f"({type(error).__name__}: {error}). Nothing was changed. Delete that row "
            f'(`sqlite3 {self.path} "DELETE FROM {table} WHERE {cond}"`; the head forgets what '
            "it held) or restore the store from a backup, then start again."
        )

    def kv_messages(self, ns: str, kind: type[_P]) -> list[_P]:
        """Every value of ``ns`` decoded as a ``kind`` message, in key order;
        :class:`ControlStoreError` naming the row when one cannot be decoded."""
        out = []
        for key in self.kv_keys(ns):
            try:
                out.append(kind.FromString(self._kv[(ns, key)]))
            except Exception as e:  # DecodeError
                raise self.bad_row("kv", {"ns": ns, "key": key}, e) from None
        return out

    def _load(self) -> None:
        for node in self._rows("nodes", "node_id", pb.NodeInfo):
            self._nodes[node.node_id] = node
        for job in self._rows("jobs", "job_id", pb.JobInfo):
            self._jobs[job.job_id] = job
        for actor in self._rows("actors", "actor_id", pb.ActorInfo):
            self._actors[actor.actor_id] = actor
            if actor.name and actor.state != DEAD:
                self._live_names[(actor.namespace, actor.name)] = actor.actor_id
        for ns, key, value in self._db.execute("SELECT ns, key, value FROM kv"):
            self._kv[(ns, key)] = bytes(value)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'job_counter'").fetchone()
        if row and not str(row[0]).isdigit():
            raise store_file.damaged(self.path, f"its job counter is {row[0]!r}, not a number")
        self._job_counter = int(row[0]) if row else 0

    # ---- nodes -------------------------------------------------------------------------------

    def upsert_node(self, node: pb.NodeInfo) -> None:
        """Insert or replace a node, keyed by ``node_id``."""
        if not node.node_id:
            raise ValueError("upsert_node: the node has no node_id")
        self._db.execute(
            "INSERT OR REPLACE INTO nodes (node_id, state, data) VALUES (?, ?, ?)",
            (node.node_id, node.state, node.SerializeToString()),
        )
        self._nodes[node.node_id] = _copy(node)
        if self.feed is not None:
            self.feed("nodes", node)

    def get_node(self, node_id: str) -> pb.NodeInfo | None:
        """The node with this id, or None."""
        node = self._nodes.get(node_id)
        return _copy(node) if node is not None else None

    def list_nodes(self, include_dead: bool = False) -> list[pb.NodeInfo]:
        """All nodes in registration order; DEAD ones only with ``include_dead``."""
        return [_copy(n) for n in self._nodes.values() if include_dead or n.state != DEAD]

    # ---- jobs --------------------------------------------------------------------------------

    def next_job_id(self) -> str:
        """A new job id: a persisted counter as 8 hex digits (``00000001``, ...), never reused."""
        self._job_counter += 1
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('job_counter', ?)",
            (str(self._job_counter),),
        )
        return f"{self._job_counter:08x}"

    def upsert_job(self, job: pb.JobInfo) -> None:
        """Insert or replace a job, keyed by ``job_id``."""
        if not job.job_id:
            raise ValueError("upsert_job: the job has no job_id (take one from next_job_id())")
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (job_id, state, data) VALUES (?, ?, ?)",
            (job.job_id, job.state, job.SerializeToString()),
        )
        self._jobs[job.job_id] = _copy(job)
        if self.feed is not None:
            self.feed("jobs", job)

    def get_job(self, job_id: str) -> pb.JobInfo | None:
        """The job with this id, or None."""
        job = self._jobs.get(job_id)
        return _copy(job) if job is not None else None

    def list_jobs(self) -> list[pb.JobInfo]:
        """All jobs in the order they were registered."""
        return [_copy(j) for j in self._jobs.values()]

    # ---- actors ------------------------------------------------------------------------------

    def upsert_actor(self, actor: pb.ActorInfo) -> None:
        """Insert or replace an actor, keyed by ``actor_id``.

        Raises ``ValueError`` if the actor is named and not DEAD while another live actor holds
        the same name in the same namespace.
        """
        if not actor.actor_id:
            raise ValueError("upsert_actor: the actor has no actor_id")
        key = (actor.namespace, actor.name)
        live = bool(actor.name) and actor.state != DEAD
        holder = self._live_names.get(key) if actor.name else None
        if live and holder is not None and holder != actor.actor_id:
            raise ValueError(
                f"an actor named {actor.name!r} already exists in namespace "
                f"{actor.namespace!r} (actor {holder})"
            )
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO actors (actor_id, job_id, name, namespace, state, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    actor.actor_id,
                    actor.job_id,
                    actor.name,
                    actor.namespace,
                    actor.state,
                    actor.SerializeToString(),
                ),
            )
        except sqlite3.IntegrityError as e:  # the cache and the index disagree: say so plainly
            raise ValueError(f"upsert_actor {actor.actor_id}: {e}") from e
        previous = self._actors.get(actor.actor_id)
        if previous is not None and previous.name:
            prev_key = (previous.namespace, previous.name)
            if self._live_names.get(prev_key) == actor.actor_id:
                del self._live_names[prev_key]
        if live:
            self._live_names[key] = actor.actor_id
        self._actors[actor.actor_id] = _copy(actor)
        if self.feed is not None:
            self.feed("actors", actor)

    def get_actor(self, actor_id: str) -> pb.ActorInfo | None:
        """The actor with this id (in any state), or None."""
        actor = self._actors.get(actor_id)
        return _copy(actor) if actor is not None else None

    def get_named_actor(self, name: str, namespace: str) -> pb.ActorInfo | None:
        """The live (not DEAD) actor of this name in this namespace, or None."""
        actor_id = self._live_names.get((namespace, name))
        return self.get_actor(actor_id) if actor_id is not None else None

    def list_actors(self, include_dead: bool = False) -> list[pb.ActorInfo]:
        """All actors in creation order; DEAD ones only with ``include_dead``."""
        return [_copy(a) for a in self._actors.values() if include_dead or a.state != DEAD]

    def actors_per_node(self) -> dict[str, int]:
        """How many actors that are not DEAD each node holds (placed ones only). No copies:
        every pending actor's placement asks it at each heartbeat, and with a thousand actors
        copying them all took most of the head's time."""
        load: dict[str, int] = {}
        for a in self._actors.values():
            if a.node_id and a.state != DEAD:
                load[a.node_id] = load.get(a.node_id, 0) + 1
        return load

    # ---- key/value ---------------------------------------------------------------------------

    def kv_put(self, ns: str, key: str, value: bytes, overwrite: bool = True) -> bool:
        """Store ``value``; return True if the key was new. Without ``overwrite``, keep the old
        value of an existing key."""
        exists = (ns, key) in self._kv
        if exists and not overwrite:
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", (ns, key, bytes(value))
        )
        self._kv[(ns, key)] = bytes(value)
        return not exists

    def kv_get(self, ns: str, key: str) -> bytes | None:
        """The value of ``key`` in ``ns``, or None."""
        return self._kv.get((ns, key))

    def kv_del(self, ns: str, key: str) -> bool:
        """Delete ``key``; return True if it existed."""
        if (ns, key) not in self._kv:
            return False
        self._db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))
        del self._kv[(ns, key)]
        return True

    def forget_secret(self, ns: str, key: str) -> None:
        """Delete ``key`` and overwrite its old bytes in the database and its log as well."""
        self._db.execute("PRAGMA secure_delete=ON")
        self.kv_del(ns, key)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def kv_keys(self, ns: str, prefix: str = "") -> list[str]:
        """Keys of ``ns`` that start with ``prefix``, sorted."""
        return sorted(k for n, k in self._kv if n == ns and k.startswith(prefix))

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection, for modules that keep their own tables here (events)."""
        return self._db

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]
            os.close(self._lock)  # after SQLite is done with the files

    def __enter__(self) -> ControlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    labels = (method.__name__,)

    @functools.wraps(method)
    def timed(self: ControlStore, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            RECORDER.observe(
                "freight_control_store_operation_seconds", labels, time.perf_counter() - start
            )

    return timed


# Every public operation is timed in freight_control_store_operation_seconds{operation} (two
# clock reads and one histogram update, about a microsecond).
for _name, _fn in list(vars(ControlStore).items()):
    if inspect.isfunction(_fn) and not _name.startswith("_") and _name != "close":
        setattr(ControlStore, _name, _timed(_fn))
