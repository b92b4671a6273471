"""Which game day runs here, and the timestamped notes people add to it.

A running game day writes ``$FREIGHT_TEMP_DIR/gameday/running.json`` (its process, as
:func:`freight.util.process.identity` records it, and its notes file); `freight gameday note
"..."` appends to that notes file. A file whose process has ended names no running game day.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from freight.client import access
from freight.config import settings
from freight.util.private_files import make_private_dir
from freight.util.process import identity, is_recorded_process

MAX_NOTE_CHARS = 2000


@dataclass(frozen=True)
class Note:
    time: float
    text: str
    by: str  # "operator" (freight gameday note), or "gameday" (the run's own closing note)


def state_path() -> str:
    return os.path.join(settings.temp_dir, "gameday", "running.json")


def running() -> dict[str, Any] | None:
    """The game day running here (its state file), or None."""
    try:
        with open(state_path(), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and is_recorded_process(info) else None


def begin(title: str, notes_path: str, out_dir: str) -> None:
    """Announce this process as the game day running here; refused while another runs."""
    other = running()
    if other is not None:
        raise access.UsageError(
            f"a game day is already running here (pid {other['pid']}, {other.get('title')!r}, "
            f"report in {other.get('out_dir')}): one at a time per FREIGHT_TEMP_DIR; wait for "
            "it, or give this one another FREIGHT_TEMP_DIR"
        )
    make_private_dir(os.path.dirname(state_path()), "the game day's folder")
    info = {**identity(), "title": title, "notes": notes_path, "out_dir": out_dir}
    tmp = f"{state_path()}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, state_path())


def end() -> None:
    """Withdraw this process's state file (another's is left alone)."""
    try:
        with open(state_path(), encoding="utf-8") as f:
            if json.load(f).get("pid") == os.getpid():
                os.unlink(state_path())
    except (OSError, ValueError):
        pass


def append(path: str, text: str, by: str = "operator") -> Note:
    """Append a note to the notes file ``path``, stamped now."""
    note = Note(time.time(), text, by)
    line = json.dumps({"t": note.time, "text": note.text, "by": note.by}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return note


def add(text: str) -> tuple[Note, dict[str, Any]]:
    """Add ``text`` as a note to the game day running here: the note, and that game day."""
    text = text.strip()
    if not text:
        raise access.UsageError('a note needs some text: freight gameday note "what you saw"')
    if len(text) > MAX_NOTE_CHARS:
        raise access.UsageError(
            f"a note holds at most {MAX_NOTE_CHARS} characters, this one {len(text)}: shorten it"
        )
    info = running()
    if info is None:
        raise access.UsageError(
            f"no game day is running here (none under {settings.temp_dir}, FREIGHT_TEMP_DIR): "
            "start one with `freight gameday run PLAN.yaml`, or set FREIGHT_TEMP_DIR to the one "
            "it runs with"
        )
    return append(str(info["notes"]), text), info


def read(path: str) -> list[Note]:
    """The notes of ``path``, oldest first."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                    out.append(Note(float(r["t"]), str(r["text"]), str(r.get("by", "operator"))))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return sorted(out, key=lambda n: n.time)
