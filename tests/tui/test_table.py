"""The view's table skips measuring new rows once its columns have fixed widths, and still shows
every row at those widths (no cluster: a table in an app of its own)."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult

from freight.tui.app import Cell, Table


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield Table(id="table")


def test_fixed_widths_are_kept_and_rows_are_not_measured() -> None:
    async def main() -> None:
        app = One()
        async with app.run_test(size=(80, 20)) as pilot:
            table = app.query_one(Table)
            table.add_column("name", key="0")
            table.add_column("state", key="1")
            table.add_row(Cell("short"), Cell("RUNNING"), key="a")
            await pilot.pause()
            name = table.columns[next(iter(table.columns))]
            assert name.auto_width and name.content_width == len("short")  # measured
            for column in table.columns.values():
                column.auto_width, column.width = False, 12
            for i in range(1000):
                table.add_row(Cell(f"a much longer name {i}"), Cell("FINISHED"), key=str(i))
            await pilot.pause()
            assert name.content_width == len("short")  # not measured: the width is fixed
            assert table.row_count == 1001
            assert table.virtual_size.height >= 1001  # every row is scrollable to
            table.move_cursor(row=1000)
            await pilot.pause()
            lines = [table.render_line(y).text for y in range(table.size.height)]
            assert any("a much longe" in line for line in lines), lines

    asyncio.run(main())
