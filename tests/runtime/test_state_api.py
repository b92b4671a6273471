"""`freight.state` without a cluster: its public names, and input it refuses before connecting."""

from __future__ import annotations

import pytest

from freight import state
from freight.head.state_service import KINDS, decode_cursor, encode_cursor


def test_public_names_exist_and_are_documented() -> None:
    for name in state.__all__:
        obj = getattr(state, name)
        assert obj.__doc__, name
    for kind in ("nodes", "jobs", "tasks", "actors", "objects", "workers", "placement_groups"):
        assert f"list_{kind}" in state.__all__
    for kind in ("node", "job", "task", "actor", "object", "worker"):
        assert getattr(state, f"get_{kind}").__name__ == f"get_{kind}"
    assert set(state.KINDS) == set(KINDS)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: state.list_state("gadgets"), r"unknown kind 'gadgets'; valid kinds: nodes"),
        (lambda: state.list_tasks(limit=0), r"limit must be a positive int"),
        (lambda: state.list_tasks(["state"]), r"cannot parse filter 'state'"),
        (lambda: state.list_tasks([("state", "in", "x")]), r"operator one of"),
        (lambda: state.get_task(""), r"give the id"),
    ],
)
def test_bad_input_is_refused_before_connecting(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_state_list_reports_how_complete_it_is() -> None:
    rows = state.StateList([{"a": 1}], kind="tasks", total=10, matched=4, remaining=3)
    assert rows == [{"a": 1}] and rows.truncated
    assert rows.meta()["returned"] == 1 and rows.meta()["remaining"] == 3
    assert not state.StateList([], matched=0).truncated


def test_cursors_round_trip_and_belong_to_one_kind() -> None:
    cursor = encode_cursor("tasks", 42)
    assert decode_cursor("tasks", cursor) == 42
    with pytest.raises(ValueError, match=r"pages through tasks, not nodes"):
        decode_cursor("nodes", cursor)
    with pytest.raises(ValueError, match=r"bad cursor.*next_cursor"):
        decode_cursor("tasks", "not-a-cursor")
