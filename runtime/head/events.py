"""Cluster events: node joined/dead, worker crashed, job started/finished, ... kept by the head.

:class:`EventStore` keeps the newest ``FREIGHT_EVENTS_MAX`` events in the control store's SQLite
database (table ``events``, created here through the store's connection) with a copy in memory
that serves every read. Older events are evicted and counted
(``freight_telemetry_dropped_total{kind="events"}``, and :attr:`EventStore.dropped`, persisted).
Every recorded event counts in ``freight_events_total{severity, kind}``.

Events come from the head itself (:meth:`EventStore.record`) and from node agents through the
``ReportEvents`` RPC (:meth:`EventStore.add_reported`, which validates them first). Kinds and
severities are closed sets, so metric labels stay bounded.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from loguru import logger

from freight.core.events import KINDS, SEVERITIES, SOURCES
from freight.head.control_store import ControlStore
from freight.observe.recorder import RECORDER, Recorder
from freight.protocol.generated import freight_pb2 as pb

ID_KEYS = ("node_id", "job_id", "actor_id", "worker_id", "task_id")
"""Ids every row carries (empty when they do not apply)."""

COLUMNS = ("event_id", "time", "severity", "source", "kind", "message")

MAX_BATCH = 1000
MAX_MESSAGE = 4096
MAX_IDS = 16
_ID_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, time REAL NOT NULL,
    severity TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    ids TEXT NOT NULL);
"""
_DROPPED_KEY = "events_dropped"


def new_event_id() -> str:
    """A unique id that sorts by creation time (nanoseconds, then randomness), so events with
    equal times still list in the order they were raised."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:8]}"


def check_event(event: pb.ClusterEvent) -> None:
    """Raise ``ValueError`` saying what is wrong with a reported event."""
    if event.severity not in SEVERITIES:
        raise ValueError(
            f"ReportEvents: severity {event.severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    if event.kind not in KINDS:
        raise ValueError(
            f"ReportEvents: unknown event kind {event.kind!r}; known kinds: "
            f"{', '.join(sorted(KINDS))}"
        )
    if event.source not in SOURCES:
        raise ValueError(
            f"ReportEvents: source {event.source!r} is not one of {', '.join(SOURCES)}"
        )
    if len(event.ids) > MAX_IDS:
        raise ValueError(f"ReportEvents: an event carries at most {MAX_IDS} ids")
    for key, value in event.ids.items():
        if not _ID_KEY.fullmatch(key) or key in COLUMNS:
            raise ValueError(f"ReportEvents: invalid id key {key!r} (lowercase, like 'node_id')")
        if len(value) > 256:
            raise ValueError(f"ReportEvents: id {key} is longer than 256 characters")
    if len(event.event_id) > 64:
        raise ValueError("ReportEvents: event_id is longer than 64 characters")


class EventStore:
    """The newest ``max_events`` cluster events, in SQLite and in memory, in arrival order."""

    def __init__(
        self, store: ControlStore, max_events: int = 10_000, recorder: Recorder | None = None
    ) -> None:
        if max_events < 1:
            raise ValueError(f"FREIGHT_EVENTS_MAX must be at least 1, not {max_events}")
        self.max_events = max_events
        self._recorder = recorder if recorder is not None else RECORDER
        self._db = store.connection
        self._db.executescript(_SCHEMA)
        self._rows: deque[tuple[int, dict[str, Any]]] = deque()  # (seq, row), oldest first
        self.feed: Callable[[str, Any], None] | None = None  # told of each event added (watches)
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_DROPPED_KEY,)).fetchone()
        self.dropped = int(row[0]) if row else 0
        for seq, event_id, t, severity, source, kind, message, ids in self._db.execute(
            "SELECT seq, event_id, time, severity, source, kind, message, ids FROM events "
            "ORDER BY seq"
        ):
            try:
                event = _row(event_id, t, severity, source, kind, message, json.loads(ids))
            except (TypeError, ValueError) as e:
                raise store.bad_row("events", {"seq": seq}, e) from None
            self._rows.append((seq, event))
        self._evict()  # the limit may be lower than when these were stored

    # ---- writing -----------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        message: str,
        *,
        severity: str = "INFO",
        source: str = "head",
        **ids: Any,
    ) -> dict[str, Any] | None:
        """Record one event raised by the head; return its row. Empty ids are left out.

        An unknown kind or severity raises ``ValueError`` (a bug in the caller); a failing
        database is logged and the event dropped (and counted): events never fail the RPC
        that raised them.
        """
        event = pb.ClusterEvent(
            time=time.time(),
            severity=severity,
            source=source,
            kind=kind,
            message=message,
            ids={k: str(v) for k, v in ids.items() if v not in (None, "")},
        )
        check_event(event)
        try:
            added = self._insert([event])
        except sqlite3.Error as e:
            self._recorder.inc("freight_telemetry_dropped_total", ("events",))
            logger.warning("could not store a {} event: {!r}", kind, e)
            return None
        return added[0] if added else None

    def add_reported(self, events: Iterable[pb.ClusterEvent]) -> int:
        """Validate and store events a node agent reported; return how many were new.

        The whole batch is refused (``ValueError``) if one event is invalid. Events whose
        ``event_id`` is already stored (a retried report) are skipped.
        """
        batch = list(events)
        if len(batch) > MAX_BATCH:
            raise ValueError(f"ReportEvents: at most {MAX_BATCH} events per request")
        for event in batch:
            check_event(event)
        return len(self._insert(batch))

    def _insert(self, events: list[pb.ClusterEvent]) -> list[dict[str, Any]]:
        now = time.time()
        added: list[dict[str, Any]] = []
        self._db.execute("BEGIN")
        try:
            for e in events:
                event_id = e.event_id or new_event_id()
                ids = dict(e.ids)
                message = e.message[:MAX_MESSAGE]
                t = e.time if e.time > 0 else now
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events "
                    "(event_id, time, severity, source, kind, message, ids) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event_id, t, e.severity, e.source, e.kind, message, json.dumps(ids)),
                )
                if cur.rowcount == 0:
                    continue  # a retried report: already stored
                row = _row(event_id, t, e.severity, e.source, e.kind, message, ids)
                self._rows.append((int(cur.lastrowid or 0), row))
                added.append(row)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            # Keep memory as the database is: drop what this batch appended.
            for _ in added:
                self._rows.pop()
            raise
        for row in added:
            self._recorder.inc("freight_events_total", (row["severity"], row["kind"]))
            if self.feed is not None:
                self.feed("events", row)
        self._evict()
        return added

    def _evict(self) -> None:
        excess = len(self._rows) - self.max_events
        if excess <= 0:
            return
        last_seq = self._rows[excess - 1][0]
        self.dropped += excess
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM events WHERE seq <= ?", (last_seq,))
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (_DROPPED_KEY, str(self.dropped)),
        )
        self._db.execute("COMMIT")
        for _ in range(excess):
            self._rows.popleft()
        self._recorder.inc("freight_telemetry_dropped_total", ("events",), excess)

    # ---- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def rows(
        self,
        newest_first: bool = True,
        *,
        severity: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events as flat dicts (copies), newest first unless ``newest_first`` is False.

        Each row has ``event_id, time, severity, source, kind, message``, the ids of
        :data:`ID_KEYS` (empty when they do not apply) and any other ids the reporter gave
        (``pid``, ``exit_code`` ...). ``severity`` keeps events at that level or above;
        ``since`` keeps events with ``time >= since``; ``limit`` keeps the first rows.
        """
        floor = SEVERITIES.index(severity) if severity is not None else 0
        source = reversed(self._rows) if newest_first else iter(self._rows)
        out: list[dict[str, Any]] = []
        for _, row in source:
            if floor and SEVERITIES.index(row["severity"]) < floor:
                continue
            if kind is not None and row["kind"] != kind:
                continue
            if since is not None and row["time"] < since:
                continue
            out.append(dict(row))
            if limit is not None and len(out) >= limit:
                break
        return out


def _row(
    event_id: str,
    t: float,
    severity: str,
    source: str,
    kind: str,
    message: str,
    ids: Mapping[str, str],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": event_id,
        "time": t,
        "severity": severity,
        "source": source,
        "kind": kind,
        "message": message,
    }
    for key in ID_KEYS:
        row[key] = ids.get(key, "")
    for key, value in ids.items():
        row.setdefault(key, value)
    return row
