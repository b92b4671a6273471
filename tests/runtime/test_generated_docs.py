"""Generated documents match their sources."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_doc_is_current():
    gen = _gen_docs()
    assert gen.SETTINGS_MD.read_text() == gen.render_settings(), (
        "docs/settings.md is stale: run `python scripts/gen_docs.py`"
    )
