"""`freight top` sorts at the head: `s` on a view showing part of its set lists the first page in
that order, paging follows it, `S` reverses it; a view holding its whole set sorts on screen at
once. Against a real cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pilot import REFRESH, run, until
from textual.pilot import Pilot

import freight
from freight import state
from freight.head.state_service import KINDS
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.tui.app import LOCAL_SORT, TopApp, View, head_sort_field, id_keys
from freight.tui.objects import COLUMNS

TASKS = 150
PAGE = 40  # 4 pages, the last one short
NAMES = ("sort_echo", "sort_alpha", "sort_delta", "sort_bravo", "sort_charlie")
ALL = ("name~^sort_",)


@freight.remote
def sort_noop(i: int) -> int:
    return i


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {"FREIGHT_TASK_ROWS_SAMPLE": "0"}  # every task gets its record
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        refs = [sort_noop.options(name=NAMES[i % len(NAMES)]).remote(i) for i in range(TASKS)]
        assert freight.get(refs) == list(range(TASKS))
        wait_for_condition(
            lambda: state.list_state("tasks", [*ALL, "state=FINISHED"]).matched == TASKS,
            what="every task's record finished at the head",
        )
        yield c


def test_every_column_the_head_orders_is_a_field_of_its_kind() -> None:
    for kind, columns in COLUMNS.items():
        for i, (_, key, _) in enumerate(columns):
            field = head_sort_field(kind, i)
            assert field is None or field in KINDS[kind].fields, (kind, key, field)
            assert (field is None) == (key in LOCAL_SORT), (kind, key)


def name_column(app: TopApp) -> list[str]:
    return [str(app.table.get_row_at(i)[1]) for i in range(app.table.row_count)]


def ids(app: TopApp) -> list[str]:
    return [
        str(app.table.coordinate_to_cell_key((i, 0)).row_key.value)
        for i in range(app.table.row_count)
    ]


def head_order(descending: bool) -> list[str]:
    rows = state.list_state("tasks", list(ALL), limit=TASKS, sort_by="name", descending=descending)
    return [r["task_id"] for r in rows]


def test_sort_lists_every_page_in_the_heads_order(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.last is not None and app.last.synced, "the first page")
        await pilot.press("right_square_bracket")  # on page 2: a new order starts at page 1
        await until(pilot, lambda: len(app.pages) == 2, "page 2")

        async def pages(descending: bool) -> list[str]:
            """Every page's ids in the table's order, paging forward from the first."""
            seen: list[str] = []
            for page in range(-(-TASKS // PAGE)):
                first = page * PAGE + 1
                want = f"(rows {first:,}\u2013{min(TASKS, first + PAGE - 1):,})"
                await until(
                    pilot,
                    lambda w=want, p=page: (
                        len(app.pages) == p + 1
                        and app.order == ("name", descending)
                        and w in app.status_text()
                        and app.table.row_count == min(PAGE, TASKS - p * PAGE)
                    ),
                    f"page {page + 1} by name",
                )
                names = name_column(app)
                assert names == sorted(names, reverse=descending)
                seen += ids(app)
                if first + PAGE <= TASKS:
                    await pilot.press("right_square_bracket")
            return seen

        await pilot.press("s", "s")  # the second column: the task's name
        status = app.status_text()
        assert "sorted by name" in status and "this page only" not in status, status
        assert len(app.pages) == 1  # back on the first page
        ascending = await pages(False)
        assert ascending == head_order(False)  # the head's order, every row once

        await pilot.press("S")
        assert "sorted by name (reversed)" in app.status_text()
        descending = await pages(True)
        assert descending == head_order(True)
        assert set(descending) == set(ascending) and len(set(descending)) == TASKS

        # Past the last column: the head's own order again, from the first page.
        while app.sort_column is not None:
            await pilot.press("s")
        await until(
            pilot, lambda: app.order == ("", False) and app.table.row_count == PAGE, "as listed"
        )
        listed = [r["task_id"] for r in state.list_state("tasks", list(ALL), limit=PAGE)]
        await until(pilot, lambda: ids(app) == listed, "the head's own order")

    app = TopApp(
        cluster.address,
        id_keys(cluster.address),
        view=View("tasks", ALL),
        refresh=REFRESH,
        max_rows=PAGE,
    )
    run(app, body)


def test_a_view_holding_its_whole_set_sorts_at_once_and_keeps_its_rows(cluster: Cluster) -> None:
    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(
            pilot,
            lambda: app.last is not None and app.last.synced and app.table.row_count == TASKS,
            "the whole set listed",
        )
        before = set(ids(app))
        await pilot.press("s", "s")
        # Sorted on screen at once, the same rows, while the head is asked for the order.
        names = name_column(app)
        assert names == sorted(names) and set(ids(app)) == before
        assert app.order == ("name", False)
        await until(pilot, lambda: not app.resync, "the listing in the new order")
        assert set(ids(app)) == before and name_column(app) == sorted(name_column(app))
        assert ids(app) == head_order(False)  # equal names too: in the head's order
        status = app.status_text()
        assert "sorted by name" in status and "this page only" not in status, status

    app = TopApp(
        cluster.address, id_keys(cluster.address), view=View("tasks", ALL), refresh=REFRESH
    )
    run(app, body)
