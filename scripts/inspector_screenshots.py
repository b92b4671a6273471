"""Regenerate docs/inspector/*.svg: the inspector's views, as the snapshot tests take them.

The committed recording (tests/tui/recordings/session.jsonl) is replayed at a fixed time, one
picture per entry of tests/tui/shots.py's SHOTS, saved with Textual's ``save_screenshot``. Run
``python scripts/inspector_screenshots.py`` after changing how a view looks (and update the
snapshots: ``pytest tests/tui/test_snapshots.py --snapshot-update``).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "inspector"
sys.path.insert(0, str(ROOT / "tests" / "tui"))  # the shots are the snapshot tests' own

import shots  # noqa: E402


async def take(name: str, shot: shots.Shot) -> Path:
    app = shots.app(shot)
    async with app.run_test(size=shots.SIZE) as pilot:
        await shots.prepare(pilot, shot)
        return Path(app.save_screenshot(f"{name}.svg", path=str(OUT)))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with shots.utc():
        for name, shot in shots.SHOTS.items():
            print(f"wrote {asyncio.run(take(name, shot)).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
