"""Regenerate docs/settings.md and docs/metrics.md from their sources (tests fail when stale)."""

from __future__ import annotations

from pathlib import Path

from freight.config import SETTINGS, settings_table
from freight.observe.budget import budget_table
from freight.observe.catalogue import metrics_table

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MD = ROOT / "docs" / "settings.md"
METRICS_MD = ROOT / "docs" / "metrics.md"


def render_settings() -> str:
    return (
        "# Settings\n\n"
        "Every `FREIGHT_*` environment variable freight reads, generated from `runtime/config.py`\n"
        "by `python scripts/gen_docs.py`. `freight settings` shows the values in effect.\n\n"
        + settings_table()
        + "\n"
    )


def render_metrics() -> str:
    return (
        "# Metrics\n\n"
        "Every metric freight exports, generated from `observe/catalogue.py` by\n"
        "`python scripts/gen_docs.py`. Node agents serve the `node` metrics at their\n"
        "`/metrics` (their workers' and drivers' figures folded in), the head serves the `head`\n"
        "ones (and its own gRPC latency, event-loop lag, dropped telemetry and build info).\n"
        "Every series has a `cluster` label. `freight metrics prometheus-config` prints a\n"
        "scrape configuration; `freight metrics targets` lists the endpoints.\n\n"
        + metrics_table()
        + "\n\n## Series budget\n\n"
        + budget_table(SETTINGS["metrics_top_n"].default)
        + "\n"
    )


if __name__ == "__main__":
    SETTINGS_MD.write_text(render_settings())
    print(SETTINGS_MD.relative_to(ROOT))
    METRICS_MD.write_text(render_metrics())
    print(METRICS_MD.relative_to(ROOT))
