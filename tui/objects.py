"""The objects view's rows: the stores' objects (the state API) joined, in the feed's thread, with
what `freight memory` knows of each (the processes' reference tables, through the agents):
its reference types, whether it is pinned, and the processes that hold it.

The join is made here, by the client, because the head does not hold the reference tables:
each node's agent asks its own processes (``Memory``), as `freight memory` does. It is asked at
most every :data:`HOLDERS_EVERY_S` seconds, and only while the objects view is open.
"""

from __future__ import annotations

import time
from typing import Any

from freight import state
from freight.cli.state_cmd import COLUMNS as STATE_COLUMNS
from freight.client import access
from freight.client.memory import cluster_rows

from .feed import Feed

HOLDERS_EVERY_S = 1.0  # the agents ask every process of their node: not at every repaint

# The inspector's columns: the state API's, and for objects what holds them.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    **STATE_COLUMNS,
    "objects": [
        *STATE_COLUMNS["objects"],
        ("pinned", "pinned", ""),
        ("reference type", "reference_types", "long"),
        ("holders", "holders", "long"),
    ],
}


def join(row: dict[str, Any], refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A store's object row with its references (None: not known, the agents did not answer):
    ``reference_types`` and ``holders`` as text (``driver pid=12 (owner)``), ``holder_processes``
    as a list, ``owner_process``, and ``pinned``: its primary copy holds store memory (sealed,
    not spilled), or a process pins it."""
    types: list[str] = []
    holders: list[str] = []
    owner = ""
    for r in refs or ():
        types += [t for t in r["reference_types"] if t not in types]
        if r["process"] not in holders:
            holders.append(r["process"])
        if r["owner"]:
            owner = r["process"]
    in_memory = bool(row.get("sealed")) and not row.get("spilled")
    return {
        **row,
        "pinned": in_memory or "PINNED_IN_MEMORY" in types,
        "reference_types": ", ".join(types) or ("UNREFERENCED" if refs is not None else "?"),
        "holders": ", ".join(f"{h} (owner)" if h == owner else h for h in holders)
        or ("" if refs is not None else "?"),
        "holder_processes": holders,
        "owner_process": owner,
    }


class ObjectFeed(Feed):
    """The objects of the stores passing the view's filters, each joined with its holders."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._refs: dict[str, list[dict[str, Any]]] | None = None  # the agents' last answer
        self._asked = 0.0  # when they were asked (time.monotonic())

    def _references(self) -> dict[str, list[dict[str, Any]]] | None:
        """Every object's reference rows, by object id (None: the agents could not be asked)."""
        try:
            rows, _partial = cluster_rows(access.resolve(self.address))
        except (ConnectionError, PermissionError, ValueError):
            return None
        by_id: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_id.setdefault(r["object_id"], []).append(r)
        return by_id

    def _shape(self, rows: state.StateList) -> list[dict[str, Any]]:
        """Each object joined with its holders, asked of the agents at most every
        HOLDERS_EVERY_S (in the feed's thread)."""
        if self._refs is None or time.monotonic() - self._asked >= max(
            self.refresh, HOLDERS_EVERY_S
        ):
            self._refs, self._asked = self._references(), time.monotonic()
        refs = self._refs
        return [join(r, None if refs is None else refs.get(r["object_id"], [])) for r in rows]
