"""Helpers for testing programs that use freight (and freight itself)."""

from __future__ import annotations

import time
from collections.abc import Callable
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


__all__ = ["wait_for_condition"]
