"""The span accounting behind freight_telemetry_dropped_total{kind="spans"}: every span a process
ends is exported or counted as dropped once, and at shutdown the rest is counted at once."""

from __future__ import annotations

from freight.observe._span_export import Unsettled


def test_failed_exports_are_counted_and_successful_ones_are_not() -> None:
    counted: list[int] = []
    u = Unsettled(counted.append)
    for _ in range(5):
        u.ended()
    u.settled(2, dropped=False)
    u.settled(3, dropped=True)
    assert counted == [3] and u.pending == 0


def test_written_off_spans_are_not_counted_again_when_their_export_ends() -> None:
    counted: list[int] = []
    u = Unsettled(counted.append)
    for _ in range(4):
        u.ended()
    assert u.write_off() == 4 and counted == [4] and u.pending == 0
    u.ended()  # a span ended after the write-off (a driver that goes on)
    # The export under way at the write-off ends, then the later span's: only the later one
    # is new.
    u.settled(3, dropped=True)
    u.settled(2, dropped=True)
    assert counted == [4, 1] and u.pending == 0
    assert u.write_off() == 0 and counted == [4, 1]
