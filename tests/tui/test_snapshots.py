"""Appearance: every view of the inspector, replayed from the committed recording at a fixed
time (``shots.py``), matches its SVG snapshot (``__snapshots__/``; after a deliberate change of
the look: ``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import make_recording
import pytest
import shots
from textual.pilot import Pilot


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    with shots.utc():
        yield


@pytest.mark.parametrize("name", list(shots.SHOTS))
def test_view_matches_its_snapshot(name: str, snap_compare: Callable[..., bool]) -> None:
    shot = shots.SHOTS[name]

    async def run_before(pilot: Pilot[Any]) -> None:
        await shots.prepare(pilot, shot)

    assert snap_compare(shots.app(shot), terminal_size=shots.SIZE, run_before=run_before)


def test_the_committed_recording_is_what_its_script_writes() -> None:
    assert shots.RECORDING.read_text() == make_recording.text(), (
        "run: python tests/tui/make_recording.py"
    )
    assert shots.T0 == make_recording.T0


def test_every_shot_is_a_picture_of_the_docs() -> None:
    docs = shots.RECORDING.parents[3] / "docs"
    page = (docs / "inspector.md").read_text()
    for name in shots.SHOTS:
        assert (docs / "inspector" / f"{name}.svg").is_file(), (
            "run: python scripts/inspector_screenshots.py"
        )
        assert f"(inspector/{name}.svg)" in page, f"docs/inspector.md shows no {name}.svg"
