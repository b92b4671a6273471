"""Structured logs: one loguru JSON-lines file per process, every record carrying its ids.

:func:`configure_logging` points loguru at ``<session>/logs/<name>.log`` and installs a patcher
that adds to each record's ``extra`` the ids that apply where it was logged: the component
(head, agent, worker), fixed ids of the process (node_id, worker_id), the ids of the task it is
running (job_id, task_id, actor_id, from a callable the runtime passes in, so this module knows
nothing of the runtime), and the current trace and span ids when tracing is in use.

Ids passed explicitly to a log call (``logger.info("...", job_id=j)``) win over the patched
ones. Telemetry must never break the process: a failing id source is switched off after its
first failure, and the patcher never raises.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

ID_KEYS = ("job_id", "task_id", "actor_id", "node_id", "worker_id", "trace_id", "span_id")
"""The ids a record may carry in its ``extra``, besides ``component``."""

ROTATION = "100 MB"
RETENTION = 3  # rotated files kept per process, besides the one being written

IdSource = Callable[[], Mapping[str, Any] | None]


def _tracing_ids() -> Mapping[str, Any] | None:
    """The current trace and span ids, if the tracing module is loaded in this process.

    Tracing is imported only by processes that trace; one that never imported it cannot have a
    current span, so the log path never pays for importing OpenTelemetry.
    """
    tracing = sys.modules.get("freight.observe.tracing")
    current = getattr(tracing, "current_ids", None) if tracing is not None else None
    if current is None:
        return None
    got = current()
    if isinstance(got, Mapping):
        return got
    if isinstance(got, tuple) and len(got) == 2:
        return {"trace_id": got[0], "span_id": got[1]}
    return None


class IdPatcher:
    """A loguru patcher adding the component and the ids that apply to a record's ``extra``."""

    def __init__(
        self,
        component: str,
        static_ids: Mapping[str, Any] | None = None,
        current_ids: IdSource | None = None,
        trace_ids: IdSource | None = _tracing_ids,
    ) -> None:
        self.component = component
        self.static_ids = {k: str(v) for k, v in (static_ids or {}).items() if v}
        self.sources: list[IdSource] = [s for s in (current_ids, trace_ids) if s is not None]
        self.failed: list[str] = []  # "source: error" of the sources switched off

    def __call__(self, record: Any) -> None:
        extra = record["extra"]
        extra.setdefault("component", self.component)
        for key, value in self.static_ids.items():
            extra.setdefault(key, value)
        for source in self.sources:
            try:
                ids = source()
                if ids:
                    for key, value in ids.items():
                        if value:
                            extra.setdefault(key, value if isinstance(value, str) else str(value))
            except Exception as e:
                # Logging from here would recurse into this patcher: remember it and stop asking
                # this source; the first record after that says so.
                self.sources = [s for s in self.sources if s is not source]
                self.failed.append(f"{getattr(source, '__name__', source)!s}: {e!r}")
                extra.setdefault("log_ids_error", self.failed[-1])


def log_path(session_dir: str, name: str) -> str:
    """The log file of process ``name`` in a session: ``<session>/logs/<name>.log``."""
    return os.path.join(session_dir, "logs", f"{name}.log")


def configure_logging(
    session_dir: str,
    name: str,
    component: str,
    *,
    level: str = "INFO",
    static_ids: Mapping[str, Any] | None = None,
    current_ids: IdSource | None = None,
    rotation: str | int = ROTATION,
    retention: int = RETENTION,
) -> str:
    """Send this process's loguru records to ``<session>/logs/<name>.log`` as JSON lines.

    Replaces every handler already installed (loguru's stderr default included). ``component``
    is ``head``, ``agent`` or ``worker``; ``static_ids`` are ids fixed for the process (its
    node_id, worker_id); ``current_ids`` returns the ids of what the calling thread runs now
    (job_id, task_id, actor_id) or None. Returns the path of the log file.
    """
    if not name or os.sep in name:
        raise ValueError(f"configure_logging: invalid log name {name!r} (a file name, no '/')")
    path = log_path(session_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    logger.remove()
    logger.configure(patcher=IdPatcher(component, static_ids, current_ids))
    logger.add(
        # loguru formats the path (for {time}): keep braces in folder names literal.
        path.replace("{", "{{").replace("}", "}}"),
        level=level.upper(),
        serialize=True,
        # Tracebacks must not print local variables: they can hold the cluster token.
        diagnose=False,
        backtrace=False,
        enqueue=False,
        rotation=rotation,
        retention=retention,
        encoding="utf-8",
    )
    return path
