"""The level of what a task logs with the standard ``logging`` module, kept in a worker.

A worker forwards its stdout and stderr line by line (to its JSON log and to the driver), and a
line on stderr is an ERROR there. Records of the ``logging`` module reach stderr as text through
whatever handler the task's code set up (``logging.warning`` calls ``basicConfig`` itself; a
logger nobody configured uses the last-resort handler), so their level would be lost. Two hooks
keep it without taking the handlers away from the user (``basicConfig(level=...)`` in a task
still works):

- a record factory remembers, per thread, the last record made; a line that the same thread then
  writes and that carries that record's message gets the record's level (:func:`level_of`);
- the last-resort handler prints ``LEVEL:logger:message`` (``logging.BASIC_FORMAT``, what
  ``logging.warning`` prints) instead of the bare message, so what the driver prints shows the
  level too.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

_local = threading.local()
_installed = False


def _loguru_level(levelno: int) -> str:
    """The loguru level of a ``logging`` level number (custom levels fall to the one below)."""
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


class _LastResort(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler of records no configured handler takes: on the current ``sys.stderr``
    (the worker's forwarder), with the level in the text."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter(logging.BASIC_FORMAT))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def install() -> None:
    """Hook the record factory and the last-resort handler of this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _local.record = record
        _local.lines = None  # the message's lines, worked out when a line is written
        return record

    logging.setLogRecordFactory(factory)
    logging.lastResort = _LastResort()


def level_of(line: str) -> str | None:
    """The loguru level of ``line`` if this thread's last logging record wrote it, else None."""
    record = getattr(_local, "record", None)
    if record is None or not line:
        return None
    lines = _local.lines
    if lines is None:
        try:
            lines = _local.lines = [p for p in record.getMessage().splitlines() if p]
        except Exception:  # a bad format string: logging reports it itself
            lines = _local.lines = []
    if any(part in line for part in lines):
        return _loguru_level(record.levelno)
    _local.record = None  # the record's lines are over: later lines are the task's own
    return None
