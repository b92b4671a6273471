"""Regenerate docs/settings.md from freight.config (a test fails when it is stale)."""

from __future__ import annotations

from pathlib import Path

from freight.config import settings_table

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MD = ROOT / "docs" / "settings.md"


def render_settings() -> str:
    return (
        "# Settings\n\n"
        "Every `FREIGHT_*` environment variable freight reads, generated from `runtime/config.py`\n"
        "by `python scripts/gen_docs.py`.\n\n" + settings_table() + "\n"
    )


if __name__ == "__main__":
    SETTINGS_MD.write_text(render_settings())
    print(SETTINGS_MD.relative_to(ROOT))
