"""Reading a session folder's JSON-lines logs: parse, filter by ids, merge by time, follow.

Every head, agent and worker writes ``<session>/logs/<name>.log`` (see
:mod:`freight.observe.logging`); each line carries the ids that applied when it was logged.
A node agent reads its own folder with this module to answer ``ReadLogs``, and `freight logs
--session-dir` reads a stopped cluster's folder with the same code. No runtime imports: a client
loads it without the head's or the agent's modules.
"""

from __future__ import annotations

import glob
import heapq
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

ID_FLAGS = ("job", "task", "actor", "node", "worker")
ID_KEYS = tuple(f"{k}_id" for k in ID_FLAGS)
COMPONENTS = ("head", "agent", "worker")
CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")
_NOT_EXTRA = {"component", *ID_KEYS, "trace_id", "span_id"}


class LogFile:
    """One log file read incrementally: complete lines since the last read, across renames."""

    def __init__(self, path: str, inode: int) -> None:
        self.path = path
        self.inode = inode
        self.offset = 0
        self.partial = b""
        name = os.path.basename(path)
        self.component = next((c for c in COMPONENTS if name.startswith(c)), "")

    def lines(self) -> Iterator[bytes]:
        """The complete lines written since the last call (reads up to the current end)."""
        try:
            # A followed folder is read four times a second: a stat is cheaper than an open.
            if os.stat(self.path).st_size == self.offset:
                return
            with open(self.path, "rb") as f:
                end = os.fstat(f.fileno()).st_size
                if end < self.offset:  # truncated: start over
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                while self.offset < end:
                    data = f.read(min(CHUNK, end - self.offset))
                    if not data:
                        break
                    self.offset += len(data)
                    *complete, self.partial = (self.partial + data).split(b"\n")
                    yield from complete
        except FileNotFoundError:
            return


def parse(line: bytes, component: str) -> dict[str, Any] | None:
    """One loguru JSON line as a flat record, or None if it is not one."""
    try:
        doc = json.loads(line)
        rec = doc["record"]
        extra = dict(rec.get("extra") or {})
        out: dict[str, Any] = {
            "timestamp": float(rec["time"]["timestamp"]),
            "level": rec["level"]["name"],
            "component": extra.get("component") or component,
            "message": rec["message"],
        }
    except (ValueError, KeyError, TypeError):
        return None
    for key in (*ID_KEYS, "trace_id", "span_id"):
        if extra.get(key):
            out[key] = str(extra[key])
    out["pid"] = (rec.get("process") or {}).get("id")
    rest = {k: v for k, v in extra.items() if k not in _NOT_EXTRA}
    if rest:
        out["extra"] = rest
    if rec.get("exception"):
        text = str(doc.get("text", ""))
        out["exception"] = text.split("\n", 1)[1].rstrip() if "\n" in text else ""
    return out


class Selection:
    """Which records to show: id prefixes (``task_id`` -> hex prefix), a component, and no
    record older than ``since`` (unix seconds; 0: any)."""

    def __init__(self, ids: Mapping[str, str], component: str | None, since: float = 0.0) -> None:
        self.ids = dict(ids)
        self.component = component or None
        self.since = since
        self.needles = [v.encode() for v in self.ids.values()]

    @classmethod
    def checked(
        cls, ids: Mapping[str, str], component: str | None, since: float = 0.0
    ) -> Selection:
        """A selection from values a person or a peer sent; ``ValueError`` saying which one is
        wrong (``--task`` style names, as the command line spells them)."""
        clean: dict[str, str] = {}
        for key, value in ids.items():
            if key not in ID_KEYS:
                raise ValueError(f"logs are filtered by {', '.join(ID_KEYS)}, not {key!r}")
            value = value.strip().lower()
            if not _HEX.fullmatch(value):
                raise ValueError(
                    f"--{key[:-3]} expects a hex id or id prefix (as `freight list` shows "
                    f"them), not {ids[key]!r}"
                )
            clean[key] = value
        if component and component not in COMPONENTS:
            raise ValueError(f"--component is one of {', '.join(COMPONENTS)}, not {component!r}")
        return cls(clean, component, since)

    def wants_file(self, log: LogFile) -> bool:
        if self.component and log.component != self.component:
            return False
        worker = self.ids.get("worker_id")
        if worker and log.component == "worker":
            return os.path.basename(log.path).startswith(f"worker-{worker}"[:23])
        return True

    def records(self, log: LogFile) -> Iterator[dict[str, Any]]:
        for line in log.lines():
            # Ids are hex: a line that does not contain the prefix cannot match it.
            if not line or any(n not in line for n in self.needles):
                continue
            rec = parse(line, log.component)
            if rec is not None and self.matches(rec):
                rec["file"] = os.path.basename(log.path)
                yield rec

    def matches(self, rec: dict[str, Any]) -> bool:
        if self.component and rec["component"] != self.component:
            return False
        if rec["timestamp"] < self.since:
            return False
        return all(str(rec.get(k, "")).startswith(v) for k, v in self.ids.items())


def discover(logs_dir: str, known: dict[int, LogFile], pattern: str = "*.log") -> list[LogFile]:
    """Track every ``pattern`` file of the folder (by inode, so a rotated file is not re-read);
    return the files seen for the first time."""
    new = []
    for path in sorted(glob.glob(os.path.join(logs_dir, pattern))):
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            continue
        log = known.get(inode)
        if log is None:
            known[inode] = log = LogFile(path, inode)
            new.append(log)
        log.path = path
    return new


def by_time(streams: Iterable[Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Streams of records, each in time order, merged into one in time order."""
    return heapq.merge(*streams, key=lambda r: r["timestamp"])


def last(records: Iterable[dict[str, Any]], tail: int) -> Iterable[dict[str, Any]]:
    """The last ``tail`` records (all of them for 0)."""
    return deque(records, maxlen=tail) if tail else records


class Reader:
    """A session folder's logs for one selection: :meth:`history`, what the files hold now in
    time order, then :meth:`new_records`, what was written since (new files too), as often as
    asked. Blocking file I/O: an event loop calls it from a thread."""

    def __init__(self, session_dir: str, selection: Selection) -> None:
        self.logs_dir = os.path.join(session_dir, "logs")
        self.selection = selection
        self.known: dict[int, LogFile] = {}

    def history(self, tail: int) -> Iterable[dict[str, Any]]:
        files = [f for f in discover(self.logs_dir, self.known) if self.selection.wants_file(f)]
        return last(by_time(self.selection.records(f) for f in files), tail)

    def new_records(self) -> list[dict[str, Any]]:
        discover(self.logs_dir, self.known)
        batch = [
            rec
            for log in list(self.known.values())
            if self.selection.wants_file(log)
            for rec in self.selection.records(log)
        ]
        for inode in [i for i, log in self.known.items() if not os.path.exists(log.path)]:
            del self.known[inode]  # removed by retention
        batch.sort(key=lambda r: r["timestamp"])
        return batch


class OutputReader:
    """What the workers whose ids start with ``worker_prefix`` wrote to their stdout and stderr
    themselves: ``logs/worker-<id>.out``, where a native crash's message, a Python fatal error,
    and the output of C code and child processes land (a task's ``print`` is in the JSON log
    too, with its ids). The file has no times and no ids: records are its lines, in order, with
    the worker id and the file name. Same interface as :class:`Reader`."""

    def __init__(self, session_dir: str, worker_prefix: str) -> None:
        self.logs_dir = os.path.join(session_dir, "logs")
        self.pattern = f"worker-{worker_prefix}*.out"
        self.known: dict[int, LogFile] = {}

    def _records(self, log: LogFile) -> Iterator[dict[str, Any]]:
        name = os.path.basename(log.path)
        worker = name[len("worker-") : -len(".out")]
        for line in log.lines():
            text = line.decode(errors="replace").rstrip("\r")
            yield {"worker_id": worker, "file": name, "message": text}

    def history(self, tail: int) -> Iterable[dict[str, Any]]:
        files = discover(self.logs_dir, self.known, self.pattern)
        return last((rec for f in files for rec in self._records(f)), tail)

    def new_records(self) -> list[dict[str, Any]]:
        discover(self.logs_dir, self.known, self.pattern)
        return [rec for log in list(self.known.values()) for rec in self._records(log)]


def output_worker(selection: Selection) -> str:
    """The worker id prefix whose own output a selection reads; ``ValueError`` if it names
    anything else (the output file has no ids to filter by)."""
    worker = selection.ids.get("worker_id")
    if not worker or len(selection.ids) > 1 or selection.component:
        raise ValueError(
            "a worker's own output (worker-<id>.out) has no ids to filter by: name the worker, "
            "and only the worker (--worker ID; the WORKER_CRASHED event names it)"
        )
    return worker


def open_reader(session_dir: str, selection: Selection, process_output: bool) -> Any:
    """A :class:`Reader` of the selection, or with ``process_output`` an :class:`OutputReader`
    of its worker (``ValueError`` from :func:`output_worker`)."""
    if process_output:
        return OutputReader(session_dir, output_worker(selection))
    return Reader(session_dir, selection)
