"""Process-level helpers shared by the head, node agents and workers."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from freight.config import settings

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to kill this process when its parent dies, so nothing is left behind."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def setup_process_logging(
    session_dir: str,
    name: str,
    component: str = "",
    static_ids: Mapping[str, Any] | None = None,
    current_ids: Callable[[], Mapping[str, Any] | None] | None = None,
) -> str:
    """Send this process's loguru records to ``SESSION/logs/<name>.log`` as JSON lines.

    Each record carries ``component`` (default: ``name`` up to its first ``-``), the fixed
    ``static_ids`` and whatever ``current_ids()`` returns (see :mod:`freight.observe.logging`).
    """
    from freight.observe.logging import configure_logging

    return configure_logging(
        session_dir,
        name,
        component or name.split("-", 1)[0],
        level=settings.log_level,
        static_ids=static_ids,
        current_ids=current_ids,
    )
