"""What the inspector's Pilot tests share: run an app headless, wait for a condition, and make
the app a test drives against a real cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from freight.testing import Cluster
from freight.tui.actions import ConfirmScreen
from freight.tui.app import TopApp, View, id_keys

REFRESH = 0.1  # the tests' --refresh: rows come within a tenth of a second
SIZE = (160, 40)


def run(app: TopApp, body: Callable[[Pilot[None]], Awaitable[None]]) -> None:
    """Run ``app`` headless at :data:`SIZE` and drive it with ``body``."""

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await body(pilot)

    asyncio.run(main())


async def until(pilot: Pilot[None], predicate: Callable[[], Any], what: str) -> Any:
    """Let the app process its messages until ``predicate()`` holds (a deadline bounds it)."""
    deadline = time.monotonic() + 30
    while True:
        await pilot.pause()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await pilot.pause(0.02)  # the poll interval; the deadline above bounds the wait


async def confirm(
    pilot: Pilot[None],
    key: str,
    answer: str = "y",
    *,
    asks: str = "",
    done: Callable[[], Any],
    what: str,
) -> str:
    """Press the action ``key``, wait for its confirmation dialog and check that it asks
    ``asks``, answer with ``answer``, then wait until ``done()`` holds; the dialog's text."""
    app = pilot.app
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), f"the dialog of {key}")
    text = str(app.screen.query_one("#confirm").render())
    assert asks in text, text
    await pilot.press(answer)
    await until(pilot, done, what)
    return text


def app_for(cluster: Cluster, view: View | None = None, **kw: Any) -> TopApp:
    return TopApp(cluster.address, id_keys(cluster.address), view=view, refresh=REFRESH, **kw)
