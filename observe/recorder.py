"""A process's own metric figures: cheap to record, read as one cumulative snapshot.

Workers and drivers record into the process-wide :data:`RECORDER` on their hot paths (a dict
update under a short lock per figure; the hottest counters, one per object or task, count
lock-free through :meth:`Recorder.counter`). They send
:meth:`Recorder.snapshot` to their node agent, which sums the snapshots of all its processes and
keeps the last one of each process that exited (so a dead worker's counts stay in the node's
totals). Snapshots are cumulative, so a lost report loses nothing but freshness.

Label values of :data:`~freight.observe.catalogue.BOUNDED` labels are folded here too: the first
``top_n`` distinct values of each label keep their name, later ones become ``other``.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable
from typing import Any

from .catalogue import BOUNDED, BY_NAME, OTHER, Type, top_n_of

# One snapshot, as sent over the wire (plain builtins, so it pickles small and fast):
#   {"c": {(name, labels): value}, "g": {(name, labels): value},
#    "h": {(name, labels): [per-bucket counts..., +Inf count, sum]}}
Snapshot = dict[str, dict[tuple[str, tuple[str, ...]], Any]]


MAX_CACHED_KEYS = 100_000  # resolved (name, labels) keys kept for the hot path


def _count_value(count: itertools.count[int]) -> int:
    """How many times ``next`` was called on a ``count()`` started at 0, without advancing it
    (its repr is ``count(N)``)."""
    return int(repr(count)[6:-1])


class LabelBound:
    """Sticky top-N folding of one label's values: the first N seen keep their name."""

    __slots__ = ("folded", "kept", "top_n")

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n
        self.kept: set[str] = set()
        self.folded = 0  # distinct values folded into ``other``

    def fold(self, value: str) -> str:
        if value in self.kept:
            return value
        if len(self.kept) < self.top_n:
            self.kept.add(value)
            return value
        self.folded += 1
        return OTHER


class Recorder:
    """Counters, gauges and histograms of one process, keyed by catalogue name and labels."""

    def __init__(self, top_n: int = 50) -> None:
        self.top_n = top_n
        self.counters: dict[tuple[str, tuple[str, ...]], float] = {}
        self.gauges: dict[tuple[str, tuple[str, ...]], float] = {}
        self.histograms: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        self._bounds: dict[str, LabelBound] = {}
        self._keys: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        # Positions of bounded labels per metric, so the hot path folds without a lookup.
        self._bounded_at: dict[str, tuple[int, ...]] = {
            m.name: tuple(i for i, label in enumerate(m.labels) if label in BOUNDED)
            for m in BY_NAME.values()
        }
        self._lock = threading.Lock()
        self.enabled = True
        # Hot-path counters (see counter()): a series' count and what reset() last saw of it.
        self._counts: dict[tuple[str, tuple[str, ...]], itertools.count[int]] = {}
        self._count_base: dict[tuple[str, tuple[str, ...]], int] = {}

    def _key(self, name: str, labels: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        key = (name, labels)
        got = self._keys.get(key)
        if got is not None:
            return got
        at = self._bounded_at[name]
        if at:
            folded = list(labels)
            for i in at:
                label = BY_NAME[name].labels[i]
                bound = self._bounds.get(label)
                if bound is None:
                    bound = self._bounds[label] = LabelBound(top_n_of(label, self.top_n))
                folded[i] = bound.fold(labels[i])
            labels = tuple(folded)
        if len(self._keys) < MAX_CACHED_KEYS:
            self._keys[key] = (name, labels)  # folding is sticky, so the answer never changes
        return (name, labels)

    def inc(self, name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        if not self.enabled:
            return
        key = self._key(name, labels)
        with self._lock:
            self.counters[key] = self.counters.get(key, 0.0) + amount

    def counter(self, name: str, labels: tuple[str, ...] = ()) -> Callable[[], object]:
        """The increment of one counter series, for a hot path: ``added = rec.counter(name,
        labels)`` once, then ``added()`` per event, which adds 1 without a lock or a key lookup
        (``next`` of an ``itertools.count`` is one atomic step). :meth:`snapshot` adds the
        counts in. It counts even when the recorder is off; nothing reads it then."""
        key = self._key(name, labels)
        with self._lock:
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = itertools.count()
        return count.__next__

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """Set a gauge."""
        if not self.enabled:
            return
        self.gauges[self._key(name, labels)] = value

    def clear_gauge(self, name: str) -> None:
        """Forget every series of a gauge (before setting the current ones)."""
        for key in [k for k in self.gauges if k[0] == name]:
            self.gauges.pop(key, None)

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """Record one observation in a histogram."""
        if not self.enabled:
            return
        key = self._key(name, labels)
        buckets = BY_NAME[name].buckets
        i = bisect.bisect_left(buckets, value)
        with self._lock:
            h = self.histograms.get(key)
            if h is None:
                h = self.histograms[key] = [0.0] * (len(buckets) + 2)
            h[i] += 1
            h[-1] += value

    def observe_many(self, name: str, labels: tuple[str, ...], values: list[float]) -> None:
        """Record several observations of one series at once (one lock, one key lookup)."""
        if not self.enabled or not values:
            return
        key = self._key(name, labels)
        buckets = BY_NAME[name].buckets
        where = bisect.bisect_left
        with self._lock:
            h = self.histograms.get(key)
            if h is None:
                h = self.histograms[key] = [0.0] * (len(buckets) + 2)
            for value in values:
                h[where(buckets, value)] += 1
            h[-1] += sum(values)

    def snapshot(self) -> Snapshot:
        """Cumulative copy of every figure (safe to send while recording goes on)."""
        with self._lock:
            counters = dict(self.counters)
            for key, count in self._counts.items():
                n = _count_value(count) - self._count_base.get(key, 0)
                if n:
                    counters[key] = counters.get(key, 0.0) + n
            return {
                "c": counters,
                "g": dict(self.gauges),
                "h": {k: list(v) for k, v in self.histograms.items()},
            }

    def reset(self) -> None:
        """Forget every figure (a driver that disconnects starts afresh on its next cluster)."""
        with self._lock:
            self._count_base = {key: _count_value(c) for key, c in self._counts.items()}
            self.counters.clear()
            self.gauges.clear()
            self.histograms.clear()
            self._bounds.clear()
            self._keys.clear()

    def folded_values(self) -> int:
        return sum(b.folded for b in self._bounds.values())


def check_snapshot(snap: Any) -> Snapshot:
    """Validate a snapshot received from another process; raise ValueError when malformed."""
    if not isinstance(snap, dict) or set(snap) != {"c", "g", "h"}:
        raise ValueError("a metrics snapshot must be a dict with keys c, g, h")
    for part in ("c", "g", "h"):
        series = snap[part]
        if not isinstance(series, dict):
            raise ValueError(f"metrics snapshot part {part} is not a dict")
        for key, value in series.items():
            if (
                not isinstance(key, tuple)
                or len(key) != 2
                or not isinstance(key[1], tuple)
                or not all(isinstance(x, str) for x in key[1])
            ):
                raise ValueError(f"malformed metric key {key!r}")
            m = BY_NAME.get(key[0])
            if m is None or len(key[1]) != len(m.labels):
                raise ValueError(f"unknown metric or wrong labels {key!r}")
            want = {"c": Type.COUNTER, "g": Type.GAUGE, "h": Type.HISTOGRAM}[part]
            if m.type is not want:
                raise ValueError(f"{key[0]} is a {m.type.value}, sent as {want.value}")
            if part == "h":
                if not isinstance(value, list) or len(value) != len(m.buckets) + 2:
                    raise ValueError(f"malformed histogram {key[0]}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"malformed value for {key[0]}")
    return snap


RECORDER = Recorder()
