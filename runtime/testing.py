"""Helpers for testing programs that use freight (and freight itself)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def wait_for_condition(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Raises ``TimeoutError`` naming ``what`` when ``timeout`` seconds pass first. This is how
    tests wait for another process: never with a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # poll interval; the deadline above bounds the wait


@contextlib.contextmanager
def short_temp_dir() -> Iterator[Path]:
    """A fresh folder for FREIGHT_TEMP_DIR, short enough for the Unix socket paths below it.

    Socket paths are limited to 107 bytes, which pytest's ``tmp_path`` easily exceeds.
    """
    path = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["short_temp_dir", "wait_for_condition"]
