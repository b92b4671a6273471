"""`freight top` pages through a set larger than a page, against a real cluster: every row is seen
once going forward and again on the way back, and the status line names the range shown. (Sorting
lists in another order from the first page: tests/tui/test_sort.py.)"""

from __future__ import annotations

import pytest
from pilot import REFRESH, run, until
from textual.pilot import Pilot

import freight
from freight import state
from freight.testing import Cluster, wait_for_condition
from freight.tui.app import TopApp, View, id_keys

TASKS = 700
PAGE = 60  # 12 pages, the last one short


@freight.remote
def paging_noop(i: int) -> int:
    return i


@pytest.fixture(scope="module")
def cluster(cluster: Cluster) -> Cluster:
    """The inspector's shared cluster (conftest.py; every task gets its record), with this
    file's tasks finished."""
    assert freight.get([paging_noop.remote(i) for i in range(TASKS)]) == list(range(TASKS))
    wait_for_condition(
        lambda: state.list_state("tasks", ["name=paging_noop", "state=FINISHED"]).matched == TASKS,
        what="every task's record finished at the head",
    )
    return cluster


def test_paging_forward_and_back_shows_every_row_once(cluster: Cluster) -> None:
    pages = -(-TASKS // PAGE)

    def expected(page: int) -> tuple[int, int]:
        first = page * PAGE + 1
        return first, min(TASKS, first + PAGE - 1)

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)

        async def on_page(page: int) -> list[str]:
            """The ids the table shows once it shows ``page`` whole, in the table's order."""
            first, last = expected(page)
            want = f"showing {last - first + 1:,} of {TASKS:,} (rows {first:,}\u2013{last:,})"
            await until(
                pilot,
                lambda: len(app.pages) == page + 1 and want in app.status_text(),
                f"page {page + 1}: {want}",
            )
            assert app.table.row_count == last - first + 1
            return [
                str(app.table.coordinate_to_cell_key((i, 0)).row_key.value)
                for i in range(app.table.row_count)
            ]

        forward: list[list[str]] = []
        for page in range(pages):
            forward.append(await on_page(page))
            if page < pages - 1:
                await pilot.press("right_square_bracket" if page % 2 else "ctrl+f")
        seen = [key for ids in forward for key in ids]
        assert len(seen) == TASKS and len(set(seen)) == TASKS  # every row, each once
        assert {
            r["task_id"] for r in state.list_state("tasks", ["name=paging_noop"], limit=TASKS)
        } == set(seen)

        await pilot.press("right_square_bracket")  # past the last page: it stays
        await until(pilot, lambda: "the last page" in notes(app), "the last-page note")
        assert len(app.pages) == pages

        for page in reversed(range(pages - 1)):
            await pilot.press("left_square_bracket" if page % 2 else "ctrl+b")
            assert await on_page(page) == forward[page]
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "the first page" in notes(app), "the first-page note")
        assert len(app.pages) == 1

    app = TopApp(
        cluster.address,
        id_keys(cluster.address),
        view=View("tasks", ("name=paging_noop",)),
        refresh=REFRESH,
        max_rows=PAGE,
    )
    run(app, body)


def notes(app: TopApp) -> str:
    return " ".join(str(n.message) for n in app._notifications)


def test_a_cell_shows_its_text_as_it_is(cluster: Cluster) -> None:
    """A task named like markup is shown by its name, not styled by it (DataTable reads a str
    cell as markup)."""
    name = "paging[bold]marked[/bold]"
    assert freight.get(paging_noop.options(name=name).remote(1)) == 1

    async def body(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        await until(pilot, lambda: app.table.row_count == 1, "the task")
        cell = app.table.get_row_at(0)[1]
        assert cell == name and str(cell) == name
        rendered = app.table.render_line(1).text  # line 0 is the header
        assert name in rendered, rendered

    app = TopApp(
        cluster.address,
        id_keys(cluster.address),
        view=View("tasks", ("name~^paging\\[",)),
        refresh=REFRESH,
    )
    run(app, body)
