"""Where the on-call pack is: the runbooks and the alerting files shipped with freight.

The source keeps them in the top-level folders ``runbooks/`` and ``alerts/``; the package maps
them to ``freight.runbooks`` and ``freight.alerts`` (pyproject.toml), so an installed freight
finds them through :mod:`importlib.resources` as a source checkout does (decision 0050).
``FREIGHT_ONCALL_DIR`` points at a site's own pack instead.
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from freight.config import DEFAULT_RUNBOOK_BASE_URL, settings

_NAME = re.compile(r"[A-Za-z0-9_-]+")


def pack_dir(part: str) -> Traversable:
    """The ``runbooks`` or ``alerts`` folder in use."""
    if settings.oncall_dir:
        return Path(settings.oncall_dir) / part
    return resources.files(f"freight.{part}")


def runbook_names() -> list[str]:
    """The alert names that have a runbook page, sorted (README.md is the index, not a page)."""
    folder = pack_dir("runbooks")
    if not folder.is_dir():
        return []
    return sorted(
        f.name.removesuffix(".md")
        for f in folder.iterdir()
        if f.name.endswith(".md") and f.name != "README.md" and f.is_file()
    )


def runbook_text(name: str) -> str:
    """The Markdown of runbook ``name``; LookupError naming the close matches when there is none."""
    names = runbook_names()
    page = pack_dir("runbooks") / f"{name}.md"
    # The index (README) prints too; any other name must be a page, never a path elsewhere.
    if _NAME.fullmatch(name) and (name in names or (name == "README" and page.is_file())):
        return page.read_text(encoding="utf-8")
    if not names:
        raise LookupError(f"there is no runbook {name!r}: no runbooks are installed")
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    close += [n for n in names if name.lower() in n.lower() and n not in close][: 3 - len(close)]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise LookupError(f"there is no runbook {name!r}; {hint}`freight runbook` lists them all")


def runbook_url(name: str) -> str:
    return f"{settings.runbook_base_url.rstrip('/')}/{name}.md"


def rebase_runbook_url(url: str) -> str:
    """``url`` (as the shipped rules write it) under the configured base URL."""
    default = DEFAULT_RUNBOOK_BASE_URL + "/"
    if url.startswith(default):
        return runbook_url(url[len(default) :].removesuffix(".md"))
    return url


def rule_files() -> list[Traversable]:
    """The Prometheus rule files (``alerts/rules/*.yml``), sorted by name."""
    folder = pack_dir("alerts") / "rules"
    if not folder.is_dir():
        return []
    return sorted(
        (f for f in folder.iterdir() if f.name.endswith((".yml", ".yaml")) and f.is_file()),
        key=lambda f: f.name,
    )


def alertmanager_file() -> Traversable | None:
    f = pack_dir("alerts") / "alertmanager.yml"
    return f if f.is_file() else None
