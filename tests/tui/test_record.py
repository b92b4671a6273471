"""`freight top --record` against a real cluster, then `--replay` of that file: the replay shows
the rows the live inspector showed, and the task's detail read live; the file grows with changes,
not with ticks."""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pilot import run, until
from test_top import Tmux  # the terminal test's tmux driver
from textual.pilot import Pilot

import freight
from freight.testing import Cluster, connected_cluster, wait_for_condition
from freight.tui.app import DetailScreen, TopApp, View, id_keys
from freight.tui.record import Recorder, RecordingApp, RecordingSource
from freight.tui.replay import ReplayApp, load


@freight.remote
def rec_square(x: int) -> int:
    return x * x


@freight.remote
def rec_fails() -> None:
    raise RuntimeError("rec-boom: the failure the replayed detail must show")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {"FREIGHT_TASK_ROWS_SAMPLE": "0"}  # every task gets its record
    with connected_cluster({"num_cpus": 2}, env=env) as c:
        assert freight.get([rec_square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
        yield c


def names(app: TopApp) -> list[str]:
    return sorted(str(r.get("name")) for r in app.rows.values())


def settled(app: TopApp, expect: list[str]) -> bool:
    """Every expected task shown in a final state, as the head counts them."""
    done = all(r.get("state") in ("FINISHED", "FAILED") for r in app.rows.values())
    last = app.last
    return bool(
        names(app) == expect and done and last and last.synced and last.matched == len(app.rows)
    )


def test_a_recorded_session_replays_the_rows_and_detail_seen_live(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl.gz"
    keys = id_keys(cluster.address)
    recorder = Recorder(path, address=cluster.address, id_keys=keys)
    live = RecordingApp(recorder, cluster.address, keys, view=View("tasks"), refresh=0.1)
    seen: dict[str, Any] = {}
    expect = sorted(["rec_square"] * 6 + ["rec_fails"])

    async def record(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: names(live).count("rec_square") == 4, "the first tasks")
        assert live.status_text().startswith("REC session.jsonl.gz  |  tasks")
        seen["before"] = {k: dict(v) for k, v in live.rows.items()}
        seen["before_t"] = time.time()  # every take shown so far was written before this
        # Changes while recording: new tasks come, one fails.
        assert freight.get([rec_square.remote(i) for i in (10, 11)]) == [100, 121]
        with pytest.raises(freight.exceptions.RayTaskError):
            freight.get(rec_fails.remote())
        await until(pilot, lambda: settled(live, expect), "every task, finished or failed")
        source = live.feed
        assert isinstance(source, RecordingSource)
        quiet = 0
        for _ in range(30):  # a tick that brings nothing new writes nothing
            before, written = live.last, source.written
            live.tick()
            assert before is not None and live.last is not None
            if live.last == before.quiet():
                assert source.written == written
                quiet += 1
        assert quiet > 0 and source.takes > source.written
        (failed,) = [k for k, r in live.rows.items() if r["name"] == "rec_fails"]
        live.table.move_cursor(row=live.table.get_row_index(failed))
        live.table.focus()
        await pilot.press("enter")
        screen = await until(
            pilot,
            lambda: isinstance(live.screen, DetailScreen) and live.screen.detailed and live.screen,
            "the failed task's detail",
        )
        seen["detail"], seen["failed"] = screen.row, failed
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(live.screen, DetailScreen), "the list again")
        seen["rows"] = {k: dict(v) for k, v in live.rows.items()}
        await pilot.press("q")

    run(live, record)
    recorder.close()
    with gzip.open(path, "rt") as f:
        header = json.loads(f.readline())
    assert header["address"] == cluster.address and header["id_keys"] == keys

    recording = load(path)

    async def replay(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ReplayApp)
        await until(pilot, lambda: app.rows == seen["rows"], "the rows seen live, replayed")
        assert app.address == cluster.address
        app.table.move_cursor(row=app.table.get_row_index(seen["failed"]))
        await pilot.press("enter")
        screen = await until(
            pilot,
            lambda: isinstance(app.screen, DetailScreen) and app.screen.detailed and app.screen,
            "the detail read live, replayed",
        )
        assert screen.row == seen["detail"]
        assert "rec-boom" in str(screen.query_one("#detail").render())
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "the list again")
        app.seek(seen["before_t"])  # back: the tasks as they were before the new ones
        await until(pilot, lambda: app.rows == seen["before"], "the first tasks, replayed")
        assert "rec_fails" not in names(app)

    run(ReplayApp(recording, at=recording.end, playing=False, refresh=0.1), replay)


def test_the_real_command_records_then_replays_in_a_terminal(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`freight top --record` in tmux against the cluster, q; then `freight top --replay` of the
    file in tmux, with no cluster named: the same tasks, REPLAY, the slider's keys, q."""
    cli = Path(sys.executable).with_name("freight")
    path, rc = tmp_path / "top.jsonl.gz", tmp_path / "rc"
    env = {"FREIGHT_TOKEN": cluster._token(), "TZ": "UTC"}
    top = f"{cli} top --address {cluster.address} --refresh 0.2 --record {path}; echo $? > {rc}"
    term = Tmux(top, env)
    try:
        term.wait_shows("the tasks on screen", "rec_square", " rows")
        term.keys("q")
        wait_for_condition(lambda: rc.exists() and rc.read_text().strip(), 30, "the end")
        assert rc.read_text().strip() == "0", term.screen()
    finally:
        term.close()
    recording = load(path)
    (tasks,) = [s for s in recording.sessions.values() if s.name == "tasks"]
    assert tasks.closed is not None and tasks.entries  # stopped at q, the file closed whole
    rc.unlink()
    replay = f"{cli} top --replay {path} --refresh 0.2; echo $? > {rc}"
    term = Tmux(replay, {"TZ": "UTC", "FREIGHT_TEMP_DIR": str(tmp_path / "no-cluster")})
    try:
        term.wait_shows("the recorded tasks", "rec_square", "REPLAY", "read-only")
        term.keys("End")
        end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(recording.end))
        term.wait_shows("the clock at the end", f"REPLAY {end}")
        term.keys("<")
        back = time.gmtime(max(recording.end - 10, recording.start))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", back)
        term.wait_shows("the clock 10 s back", f"REPLAY {stamp}")
        term.keys("q")
        wait_for_condition(lambda: rc.exists() and rc.read_text().strip(), 30, "the end")
        assert rc.read_text().strip() == "0", term.screen()
    finally:
        term.close()
