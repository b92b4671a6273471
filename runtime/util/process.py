"""Process-level helpers shared by the head, node agents and workers."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from loguru import logger

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


def setup_process_logging(session_dir: str, name: str) -> str:
    """Send this process's loguru records to ``SESSION/logs/<name>.log`` as JSON lines."""
    logs = os.path.join(session_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    path = os.path.join(logs, f"{name}.log")
    logger.remove()
    logger.add(path, level=settings.log_level, serialize=True, enqueue=False)
    return path
