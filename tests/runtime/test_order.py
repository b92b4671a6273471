"""Ordering listings by a field (``sort_by``): the order, the cursors, and the fast filters.

Pure: :mod:`freight.core.order` and the head's :class:`TaskStore` (no cluster). The state
service's listing of the other kinds is covered against a real cluster in
``tests/e2e/test_state_sort.py``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from test_task_store import event, life, tid

from freight.core.filters import FilterError, compile_filters, finder
from freight.core.order import (
    Sorting,
    comes_after,
    compile_sorting,
    cursor_key,
    order_name,
    sort_items,
    start_after,
)
from freight.head.task_store import TaskStore, compile_task_filters, compile_task_sorting


def by(field: str, descending: bool = False, is_time: bool = False) -> Sorting:
    return Sorting(field, lambda row: row.get(field), is_time, descending)


def order(rows: list[dict[str, Any]], sorting: Sorting) -> list[str]:
    return [r["id"] for r in sort_items(rows, sorting, sorting.get)]


def test_none_and_empty_values_come_last_in_both_directions() -> None:
    rows = [
        {"id": "a", "v": "pear"},
        {"id": "b", "v": None},
        {"id": "c", "v": "apple"},
        {"id": "d"},
        {"id": "e", "v": ""},
        {"id": "f", "v": "fig"},
    ]
    assert order(rows, by("v")) == ["c", "f", "a", "b", "d", "e"]
    # Descending reverses the values only: the rows without one stay last, in the given order.
    assert order(rows, by("v", descending=True)) == ["a", "f", "c", "b", "d", "e"]


def test_numbers_compare_as_numbers_and_before_text_when_a_field_mixes_them() -> None:
    rows = [
        {"id": "a", "v": 10},
        {"id": "b", "v": "9"},
        {"id": "c", "v": 9.5},
        {"id": "d", "v": 2},
        {"id": "e", "v": "10"},
        {"id": "f", "v": [1, 2]},
        {"id": "g", "v": None},
    ]
    assert order(rows, by("v")) == ["d", "c", "a", "e", "b", "f", "g"]
    assert order(rows, by("v", descending=True)) == ["f", "b", "e", "a", "c", "d", "g"]
    # One type: numbers as numbers (10 after 9.5, not before it as text would put it).
    nums = [{"id": str(v), "v": v} for v in (10, 9.5, 100, 0, -1)]
    assert order(nums, by("v")) == ["-1", "0", "9.5", "10", "100"]


def test_a_time_of_zero_has_no_value_but_a_number_zero_does() -> None:
    rows = [{"id": "a", "t": 5.0}, {"id": "b", "t": 0.0}, {"id": "c", "t": 1.0}]
    assert order(rows, by("t", is_time=True)) == ["c", "a", "b"]
    assert order(rows, by("t", descending=True, is_time=True)) == ["a", "c", "b"]
    assert order(rows, by("t")) == ["b", "c", "a"]  # a number: 0 is a value


def test_equal_values_keep_the_given_order_in_both_directions() -> None:
    rows = [{"id": str(i), "v": i % 2} for i in range(6)]
    assert order(rows, by("v")) == ["0", "2", "4", "1", "3", "5"]
    assert order(rows, by("v", descending=True)) == ["1", "3", "5", "0", "2", "4"]


def test_unknown_sort_field_is_refused_naming_the_fields() -> None:
    with pytest.raises(FilterError, match=r"cannot sort tasks by 'nmae'.*sort by one of .*name"):
        compile_task_sorting("nmae", False)
    with pytest.raises(FilterError, match="give sort_by too"):
        compile_task_sorting("", True)
    assert compile_task_sorting("", False) is None


def test_order_names_tie_cursors_to_their_order() -> None:
    name = compile_task_sorting("name", True)
    assert order_name("tasks", name, False) == "tasks by name descending"
    assert order_name("tasks", None, True) == "tasks newest first"
    assert order_name("tasks", compile_task_sorting("attempt", False), True) == (
        "tasks by attempt newest first"
    )


def test_cursor_keys_come_back_from_json_and_bad_ones_are_refused() -> None:
    assert cursor_key(json.loads(json.dumps([(1, "fn"), 7]))) == ((1, "fn"), 7)
    assert cursor_key([None, 7]) == (None, 7)
    for bad in (7, [1, 2, 3], [[5, "x"], 1], ["x", 1]):
        with pytest.raises(ValueError):
            cursor_key(bad)


def test_start_after_finds_the_row_after_a_cursor_whose_row_is_gone() -> None:
    rows = [{"id": i, "v": v} for i, v in enumerate([3, 1, None, 2, 1, 3])]
    for descending in (False, True):
        for newest_first in (False, True):
            given = rows[::-1] if newest_first else rows
            s = by("v", descending)
            ordered = sort_items(given, s, s.get)
            for at, row in enumerate(ordered):
                key = (s.value(row), row["id"])

                def pair(r: dict[str, Any], s: Sorting = s) -> tuple[Any, int]:
                    return s.value(r), r["id"]

                assert start_after(ordered, pair, key, descending, newest_first) == at + 1
                # The cursor's row left: the next page starts at the same place.
                rest = [r for r in ordered if r is not row]
                assert start_after(rest, pair, key, descending, newest_first) == at
                assert not comes_after(*key, key, descending, newest_first)


def many(store: TaskStore, first: int, n: int, seed: int) -> None:
    """``n`` tasks from ``first`` on: names, attempts and durations drawn at random, some
    without an end (running: no duration) or still pending."""
    rng = random.Random(seed)
    for i in range(first, first + n):
        t = 1000.0 + i
        kind = rng.random()
        if kind < 0.2:
            store.apply([event(i, "PENDING_NODE_ASSIGNMENT", t, name=f"fn{rng.randrange(4)}")])
            continue
        name, attempt = f"fn{rng.randrange(4)}", rng.randrange(3)
        evs = life(i, t, "FAILED" if kind < 0.4 else "FINISHED")
        store.apply([ev._replace(name=name, attempt=attempt) for ev in evs])


def page_through(
    store: TaskStore, sorting: Any, limit: int, newest_first: bool = False, add: int = 0
) -> list[dict[str, Any]]:
    """Every page of a listing, ``add`` tasks arriving between pages, the cursor through JSON."""
    seen: list[dict[str, Any]] = []
    after: Any = None
    n = len(store)
    while True:
        page = store.list(None, limit, after, False, newest_first, sorting)
        seen += [json.loads(r) for r in page.rows]
        if add:
            many(store, n, add, n)
            n += add
        if not page.remaining:
            return seen
        after = page.last_key
        if sorting is not None:  # as the state service reads it back from a cursor
            after = cursor_key(json.loads(json.dumps(after)))


def expected(rows: list[dict[str, Any]], field: str, descending: bool) -> list[str]:
    present = [r for r in rows if r[field] not in (None, "")]
    missing = [r for r in rows if r[field] in (None, "")]
    present.sort(key=lambda r: r[field], reverse=descending)
    return [r["task_id"] for r in present + missing]


@pytest.mark.parametrize("field", ["name", "attempt", "duration", "error_type", "state"])
@pytest.mark.parametrize("descending", [False, True])
def test_task_pages_follow_the_sort(field: str, descending: bool) -> None:
    store = TaskStore()
    many(store, 0, 200, seed=1)
    whole = [json.loads(r) for r in store.list(None, 1000).rows]
    sorting = compile_task_sorting(field, descending)
    got = page_through(store, sorting, limit=17)
    assert [r["task_id"] for r in got] == expected(whole, field, descending)


def test_sorted_pages_neither_repeat_nor_skip_while_tasks_arrive() -> None:
    store = TaskStore()
    many(store, 0, 150, seed=2)
    before = {r["task_id"]: r for r in map(json.loads, store.list(None, 1000).rows)}
    for descending in (False, True):
        for newest_first in (False, True):
            sorting = compile_task_sorting("name", descending)
            got = page_through(store, sorting, limit=11, newest_first=newest_first, add=7)
            ids = [r["task_id"] for r in got]
            assert len(ids) == len(set(ids)), "a row was listed twice"
            assert set(before) <= set(ids), "a row that was there all along was skipped"
            names = [r["name"] for r in got]
            assert names == sorted(names, reverse=descending)
            # Equal names: the default order (oldest first, or newest first).
            for name in set(names):
                seqs = [store.records[r["task_id"]].seq for r in got if r["name"] == name]
                assert seqs == sorted(seqs, reverse=newest_first)


def test_a_time_sort_puts_running_tasks_last() -> None:
    store = TaskStore()
    store.apply(life(0, 10.0))
    store.apply([event(1, "RUNNING", 11.0)])
    store.apply(life(2, 5.0))
    sorting = compile_task_sorting("end_time", True)
    got = [json.loads(r)["task_id"] for r in store.list(None, 10, sorting=sorting).rows]
    assert got == [tid(0), tid(2), tid(1)]


def test_a_sorted_listing_counts_and_filters_as_the_default_one() -> None:
    store = TaskStore()
    many(store, 0, 120, seed=3)
    pred = compile_task_filters(["state=FAILED"])
    plain = store.list(pred, 5)
    ordered = store.list(pred, 5, sorting=compile_task_sorting("attempt", True))
    assert (ordered.total, ordered.matched, ordered.remaining) == (
        plain.total,
        plain.matched,
        plain.remaining,
    )
    assert all(json.loads(r)["state"] == "FAILED" for r in ordered.rows)


def test_default_pages_with_a_cursor_skip_exactly_the_rows_before_it() -> None:
    store = TaskStore()
    many(store, 0, 60, seed=4)
    pred = compile_task_filters(["name~fn[12]"])
    for newest_first in (False, True):
        whole = [
            json.loads(r)["task_id"] for r in store.list(pred, 1000, None, False, newest_first).rows
        ]
        after: Any = None
        seen: list[str] = []
        while True:
            page = store.list(pred, 7, after, False, newest_first)
            seen += [json.loads(r)["task_id"] for r in page.rows]
            assert page.remaining == len(whole) - len(seen)
            if not page.remaining:
                break
            after = page.last_key
        assert seen == whole


@pytest.mark.parametrize(
    "pattern",
    ["train", "tra", "", "a b", "x-y/z", "~!@#%&=:;,<>'\"", "é", "^tr", "n$", "t.a", "(tr|ev)"],
)
def test_regex_filters_answer_as_re2_does(pattern: str) -> None:
    texts = ["train", "evaluate", "", "a b", "x-y/z", "é", "retrain", "TRAIN", "t+a", "n"]
    import re2

    search = re2.compile(pattern).search
    found = finder(pattern, search)
    assert [found(t) for t in texts + texts] == [search(t) is not None for t in texts + texts]
    fields = {"name": compile_task_sorting.__globals__["TASK_FIELDS"]["name"]}
    for op in ("~", "!~"):
        pred = compile_filters([("name", op, pattern)], fields, "tasks", lambda k: lambda r: r[k])
        assert pred is not None
        want = [(search(t) is not None) == (op == "~") for t in texts]
        assert [pred({"name": t}) for t in texts] == want


def test_sorting_a_field_compiles_for_every_kind_with_its_types() -> None:
    fields = {"t": compile_task_sorting.__globals__["TASK_FIELDS"]["end_time"]}
    s = compile_sorting("t", False, fields, "things", lambda k: lambda r: r.get(k))
    assert s is not None and s.is_time and s.value({"t": 0.0}) is None
    assert s.value({"t": 2.5}) == (0, 2.5)
