"""The inspector's parts without a cluster: the screens over the table view share one frame, and
each objects feed keeps its own answer from the agents."""

from __future__ import annotations

from freight.tui.logs import LogsScreen
from freight.tui.modal import BACK_AND_QUIT, SourceScreen
from freight.tui.objects import ObjectFeed
from freight.tui.traces import TracesScreen


def test_logs_and_traces_screens_share_the_frame() -> None:
    for screen in (LogsScreen, TracesScreen):
        assert issubclass(screen, SourceScreen)
        # The frame composes, opens and closes the source, and goes back: not each screen.
        for name in ("compose", "on_mount", "on_unmount"):
            assert name not in vars(screen), f"{screen.__name__} writes {name} again"
        assert screen.BINDINGS[-len(BACK_AND_QUIT) :] == BACK_AND_QUIT


def test_each_objects_feed_holds_its_own_references() -> None:
    def feed() -> ObjectFeed:  # not started: no thread, no call
        return ObjectFeed(
            "objects", [], address="127.0.0.1:1", id_key="object_id", refresh=1.0, limit=10
        )

    one, two = feed(), feed()
    assert "_refs" not in vars(ObjectFeed) and "_asked" not in vars(ObjectFeed)
    one._refs, one._asked = {"ab": []}, 5.0
    assert (two._refs, two._asked) == (None, 0.0)
