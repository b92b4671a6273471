"""`freight top --record FILE`: what the screens were given, kept as JSON lines for a replay.

Every source a screen asks for (:meth:`freight.tui.app.TopApp.source`, the one seam) is wrapped
in a :class:`RecordingSource`: each ``take()`` goes to the file with its time, the source's name
and the payload's type, so :mod:`freight.tui.replay` can hand the same values out again. A
source's life is a *session* (opened, taken, stopped): a view opened twice is two sessions, and
a replay rebuilds a view from the start of the session open at its clock.

The file grows with changes only. A take equal to the last one recorded once its changes are
emptied (:meth:`Payload.quiet`; a :class:`~freight.tui.feed.Batch` without changes and with the
same counts) is not written; a heartbeat line every :data:`HEARTBEAT_S` seconds keeps the
timeline honest about quiet stretches. A name ending in ``.gz`` is written gzip-compressed.

The lines (one JSON object each)::

    {"recording": 1, "t": ..., "address": ..., "id_keys": {...}}      # the first line
    {"t": ..., "session": 3, "source": "tasks", "open": true}
    {"t": ..., "session": 3, "type": "freight.tui.feed:Batch", "payload": {...}}
    {"t": ..., "session": 3, "close": true}
    {"t": ..., "beat": true}
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from .app import TopApp
from .source import Source

S = TypeVar("S", bound=Source)

FORMAT = 1  # the "recording" field of the first line; a replay refuses another
HEARTBEAT_S = 5.0


class Payload(Protocol):
    """What a payload type may define so that recording and replay treat it as changes (a
    :class:`~freight.tui.feed.Batch`). A type without them is a "state now" value: the last one
    taken is the whole truth, and an equal one is not written again."""

    def quiet(self) -> Any:
        """This payload with its changes emptied: what ``take()`` gives when nothing changed."""
        ...

    @classmethod
    def merge(cls, payloads: list[Any]) -> Any:
        """Several takes, in order, as one (a replay's clock may pass many at once)."""
        ...

    @classmethod
    def nothing(cls, note: str) -> Any:
        """What ``take()`` gives before anything is known; ``note`` says why (empty: not yet;
        otherwise the replay's "not recorded ...")."""
        ...


def type_name(payload: Any) -> str | None:
    """``module:QualName`` of a dataclass payload (None for plain data)."""
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        cls = type(payload)
        return f"{cls.__module__}:{cls.__qualname__}"
    return None


def to_json(payload: Any) -> Any:
    """A payload as JSON-able data (records within it as objects too)."""
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return dataclasses.asdict(payload)
    return payload


def quiet(payload: Any) -> Any:
    method = getattr(payload, "quiet", None)
    return method() if callable(method) else payload


def open_text(path: Path, mode: str) -> IO[str]:
    """``path`` as text, through gzip when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


class Recorder:
    """The file a recording session writes (thread-safe; every line flushed, so a recording cut
    by a crash keeps what was seen up to it)."""

    def __init__(
        self,
        path: str | Path,
        *,
        address: str,
        id_keys: dict[str, str],
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        try:
            self._file = open_text(self.path, "w")
        except OSError as e:
            raise ValueError(
                f"cannot record to {self.path}: {e.strerror or e} (give a writable path)"
            ) from None
        self._lock = threading.Lock()
        self._sessions = 0
        self._last_write = 0.0
        self.failed = ""  # why the recording stopped early (the inspector goes on)
        self._write({"recording": FORMAT, "address": address, "id_keys": id_keys})
        if self.failed:
            raise ValueError(f"cannot record to {self.path}: {self.failed} (give a writable path)")

    def _write(self, line: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(json.dumps({"t": now, **line}, default=str) + "\n")
                self._file.flush()
            except OSError as e:
                # A full disk ends the recording, not the inspector (the status line says so).
                self.failed = e.strerror or str(e)
                try:
                    self._file.close()
                except OSError:
                    pass  # what could not be flushed is lost either way
                return
            self._last_write = now

    def heartbeat(self) -> None:
        """A line that says "recording, nothing changed", at most every ``heartbeat_s``."""
        if time.time() - self._last_write >= self.heartbeat_s:
            self._write({"beat": True})

    def session(self, name: str) -> int:
        with self._lock:
            self._sessions += 1
            number = self._sessions
        self._write({"session": number, "source": name, "open": True})
        return number

    def taken(self, session: int, payload: Any) -> None:
        self._write({"session": session, "type": type_name(payload), "payload": to_json(payload)})

    def closed(self, session: int) -> None:
        self._write({"session": session, "close": True})

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


class RecordingSource:
    """``inner``, with what it gives written to ``recorder`` (changes only, see the module)."""

    def __init__(self, recorder: Recorder, name: str, inner: Source) -> None:
        self.recorder, self.name, self.inner = recorder, name, inner
        self.session = 0
        self._last: Any = None  # the last payload written, quiet (nothing written yet: None)
        self.takes = self.written = 0

    def start(self) -> RecordingSource:
        self.session = self.recorder.session(self.name)
        self.inner.start()
        return self

    def stop(self) -> None:
        self.inner.stop()
        self.recorder.closed(self.session)

    def take(self) -> Any:
        payload = self.inner.take()
        self.takes += 1
        if not self.written or payload != self._last:
            self.recorder.taken(self.session, payload)
            self._last = quiet(payload)
            self.written += 1
        else:
            self.recorder.heartbeat()
        return payload

    def __getattr__(self, name: str) -> Any:
        # A screen may read its source's own attributes (a feed's kind): they are the inner's.
        return getattr(self.inner, name)


class RecordingApp(TopApp):
    """The inspector, live, with every source it opens recorded by ``recorder``."""

    def __init__(self, recorder: Recorder, address: str, id_keys: dict[str, str], **kw: Any):
        super().__init__(address, id_keys, **kw)
        self.recorder = recorder

    def source(self, name: str, make: Callable[[], S]) -> S:
        return RecordingSource(self.recorder, name, make()).start()  # type: ignore[return-value]

    def status_text(self) -> str:
        r = self.recorder
        rec = f"REC STOPPED: {r.failed}" if r.failed else f"REC {r.path.name}"
        return f"{rec}  |  {super().status_text()}"
