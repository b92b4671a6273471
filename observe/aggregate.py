"""A node's figures: the sum of its processes' snapshots, keeping those of processes that exited.

Each reporter (a worker or driver connection) sends cumulative snapshots; the latest one per
reporter is kept. When a reporter goes away, its counters, histograms and usage move into the
retired totals, so a dead worker's counts never vanish from the node's totals; its gauges (live
figures) are dropped.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .recorder import Snapshot, check_snapshot

Usage = dict[tuple[str, str], float]


def _add_into(total: dict[Any, Any], part: dict[Any, Any], histogram: bool) -> None:
    for key, value in part.items():
        if histogram:
            cur = total.get(key)
            if cur is None:
                total[key] = list(value)
            else:
                for i, v in enumerate(value):
                    cur[i] += v
        else:
            total[key] = total.get(key, 0.0) + value


class NodeFigures:
    """Latest snapshot per live reporter plus the retired totals of reporters that left."""

    def __init__(self) -> None:
        self.live: dict[Hashable, tuple[Snapshot, Usage]] = {}
        self.retired: Snapshot = {"c": {}, "g": {}, "h": {}}
        self.retired_usage: Usage = {}

    def update(self, reporter: Hashable, snapshot: Any, usage: Any) -> None:
        """Store a reporter's newest cumulative figures (ValueError when malformed)."""
        snap = check_snapshot(snapshot)
        if not isinstance(usage, dict) or not all(
            isinstance(k, tuple)
            and len(k) == 2
            and all(isinstance(x, str) for x in k)
            and isinstance(v, (int, float))
            for k, v in usage.items()
        ):
            raise ValueError("malformed usage in a telemetry report")
        self.live[reporter] = (snap, usage)

    def retire(self, reporter: Hashable) -> None:
        """The reporter is gone: keep its counters and histograms, drop its gauges."""
        got = self.live.pop(reporter, None)
        if got is None:
            return
        snap, usage = got
        _add_into(self.retired["c"], snap["c"], False)
        _add_into(self.retired["h"], snap["h"], True)
        _add_into(self.retired_usage, usage, False)

    def totals(self, own: Snapshot | None = None) -> tuple[Snapshot, Usage]:
        """Sum of retired and live figures (and ``own``, the agent's snapshot)."""
        out: Snapshot = {"c": dict(self.retired["c"]), "g": {}, "h": {}}
        _add_into(out["h"], self.retired["h"], True)
        usage: Usage = dict(self.retired_usage)
        parts = [s for s, _ in self.live.values()]
        if own is not None:
            parts.append(own)
        for snap in parts:
            _add_into(out["c"], snap["c"], False)
            _add_into(out["g"], snap["g"], False)
            _add_into(out["h"], snap["h"], True)
        for _, u in self.live.values():
            _add_into(usage, u, False)
        return out, usage
