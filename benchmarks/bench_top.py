"""How `freight top` answers with a large cluster: 100,000 finished tasks and 1,000 actors.

    python benchmarks/bench_top.py                        # 100,000 tasks, 1,000 actors
    python benchmarks/bench_top.py --tasks 5000 --actors 200 --presses 10   # a quick look

A driver process starts a private cluster (``FREIGHT_TASK_ROWS_SAMPLE=0``: every task keeps its
record), runs ``--tasks`` no-op tasks and creates ``--actors`` actors. Only ``--alive`` of them get
a worker process (a worker costs ~25 MB; a thousand would not fit a small machine); the rest wait
for a resource the cluster holds one unit of, so they are listed as live actors waiting to be
placed, which is what the actors view shows. This process runs only the inspector (``TopApp``,
headless through ``run_test``), so its CPU is the inspector's. Prints:

- **first rows**: seconds from the app opening to the first rows shown (tasks view);
- **key to repaint** (median and p95 of ``--presses`` presses each): ``z``, bound to nothing
  (what Pilot's press and the repaint cost by themselves), ``s`` (sort by the next
  column), down-arrow, ``/`` + a filter + enter (until the filtered rows are shown), ``:actors``
  / ``:tasks`` (until the other view's rows are shown), ``]`` / ``[`` (the next and previous page,
  when the inspector pages);
- **inspector CPU** (user + system seconds per wall second, psutil) on the tasks view while the
  cluster is quiet, and while tasks finish at ``--rate`` per second; the **head's CPU** alike;
- **change to screen** (median and p95 of ``--marks`` tasks): seconds from a task's result
  reaching the driver to its row shown FINISHED in a view filtered on its name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from typing import Any

import psutil

IDLE_KEY = "f12"

DRIVER = """
    import sys, time
    import freight

    tasks, actors, alive = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    freight.init(num_cpus=2, resources={"bench_top_slot": 1})

    @freight.remote
    def bench_top_noop(i):
        return i

    @freight.remote
    def bench_top_mark():
        return 0

    @freight.remote(num_cpus=0)
    class BenchTopActor:
        def ping(self):
            return 1

    for first in range(0, tasks, 2000):
        freight.get([bench_top_noop.remote(i) for i in range(first, min(tasks, first + 2000))])
    held = [BenchTopActor.remote() for _ in range(alive)]
    freight.get([a.ping.remote() for a in held])
    held += [
        BenchTopActor.options(resources={"bench_top_slot": 1}).remote()
        for _ in range(actors - alive)
    ]
    from freight import state

    deadline = time.monotonic() + 600
    while state.summarize("tasks")["by_state"].get("FINISHED", 0) < tasks:
        if time.monotonic() > deadline:
            raise TimeoutError("the head did not record every finished task")
        time.sleep(0.2)  # polling the head's summary; the deadline bounds it
    from freight.client import access

    target = access.resolve(None)
    print("ready", target.address, target.token, flush=True)
    for line in sys.stdin:  # "steady RATE SECONDS": tasks finishing at RATE per second
        if line.startswith("steady"):
            _, rate, seconds = line.split()
            end = time.monotonic() + float(seconds)
            n = 0
            while time.monotonic() < end:
                n += 1
                freight.get([bench_top_noop.remote(n) for _ in range(int(rate) // 10)])
                time.sleep(max(0.0, 0.1 - (time.monotonic() % 0.1)))  # the pace: 10 waves/s
            print("done", flush=True)
        elif line.startswith("mark"):  # one task, and when its result came back
            freight.get(bench_top_mark.remote())
            print("marked", time.time(), flush=True)
        else:
            break
    freight.shutdown()
"""


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _figure(samples: list[float]) -> str:
    if not samples:
        return "-"
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms"


async def _until(pilot: Any, predicate: Callable[[], Any], what: str, limit: float = 120) -> None:
    """Let the app run until ``predicate()`` holds, then until it has repainted."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)  # hand the loop to the app; the deadline bounds the wait
    await pilot.pause()  # the repaint the change asked for


def head_process(driver: subprocess.Popen[str]) -> psutil.Process:
    """The cluster's head: the driver's child running ``python -m freight.head``."""
    for p in psutil.Process(driver.pid).children(recursive=True):
        if "freight.head" in p.cmdline():
            return p
    raise RuntimeError("the driver's cluster has no head process")


def loaded(app: Any) -> bool:
    """The view shows its page as listed (not the empty table of a page being listed)."""
    return app.last is not None and app.last.synced and app.table.row_count > 0


def listing_latency(address: str, n: int) -> dict[str, list[float]]:
    """What the inspector's feed waits for on a view or page change: one ``list_state`` of 1,000
    rows (the head's work, gRPC and the JSON), called ``n`` times each, before the app opens."""
    import inspect

    from freight import state

    sorts = "sort_by" in inspect.signature(state.list_state).parameters
    cases: dict[str, dict[str, Any]] = {
        "tasks": {"kind": "tasks"},
        "tasks name~bench_top": {"kind": "tasks", "filters": ["name~bench_top"]},
        "actors": {"kind": "actors"},
        **({"tasks sorted by name": {"kind": "tasks", "sort_by": "name"}} if sorts else {}),
    }
    out: dict[str, list[float]] = {}
    for name, kw in cases.items():
        for _ in range(n):
            t = time.perf_counter()
            state.list_state(limit=1000, address=address, **kw)
            out.setdefault(name, []).append(time.perf_counter() - t)
    return out


async def measure(args: argparse.Namespace, address: str, driver: subprocess.Popen[str]) -> None:
    from freight.tui.app import TopApp, View, id_keys

    app = TopApp(address, id_keys(address), view=View("tasks"), refresh=args.refresh)
    me = psutil.Process()
    head = head_process(driver)
    figures: dict[str, Any] = {}
    lat: dict[str, list[float]] = {}
    marks: list[float] = []  # seconds from a task's end to its row shown FINISHED
    lists = listing_latency(address, args.presses)
    opened = time.perf_counter()
    async with app.run_test(size=(200, 50)) as pilot:
        await _until(pilot, lambda: app.table.row_count > 0, "the first tasks")
        figures["first rows"] = time.perf_counter() - opened
        await _until(pilot, lambda: app.last is not None and app.last.synced, "the listing")
        await _until(pilot, lambda: app.table.row_count >= min(args.tasks, app.max_rows), "rows")

        async def timed(name: str, keys: tuple[str, ...], done: Callable[[], Any]) -> None:
            t = time.perf_counter()
            await pilot.press(*keys)
            try:
                await _until(pilot, done, name)
            except TimeoutError as e:
                notes = [str(n.message) for n in app._notifications]
                raise TimeoutError(f"{e}; the status line: {app.status_text()}; {notes}") from None
            lat.setdefault(name, []).append(time.perf_counter() - t)

        # A key nothing is bound to: Pilot's own cost per press. (Not x: x cancels the task
        # under the cursor, after a confirmation dialog that would take every key after it.)
        assert IDLE_KEY not in app.active_bindings, f"{IDLE_KEY} is bound"
        for _ in range(args.presses):
            await timed(f"{IDLE_KEY} (no binding: the harness)", (IDLE_KEY,), lambda: True)
        assert len(app.screen_stack) == 1, f"{IDLE_KEY} opened a screen: {app.screen_stack}"
        cycle = len(app.table.columns) + 1  # each column, then as listed
        for i in range(args.presses):
            want = None if (i + 1) % cycle == 0 else (i + 1) % cycle - 1
            await timed("s (sort)", ("s",), lambda w=want: app.sort_column == w and loaded(app))
        app.sort_column = None  # as listed again, for the keys below
        for _ in range(args.presses):
            row = app.table.cursor_row
            await timed("down", ("down",), lambda r=row: app.table.cursor_row == r + 1)
        for i in range(args.presses):
            word = "bench_top_noop" if i % 2 == 0 else "bench_top"
            filt = f"name~{word}"
            await pilot.press("slash")
            await _until(pilot, lambda: app.prompt_mode == "/", "the / prompt")
            app.query_one("#prompt").value = filt  # type: ignore[attr-defined]
            await timed(
                "/ filter enter",
                ("enter",),
                lambda f=filt: app.view.filters == (f,) and app.table.row_count > 0,
            )
        for i in range(args.presses):
            kind = "actors" if i % 2 == 0 else "tasks"
            await pilot.press("colon")
            await _until(pilot, lambda: app.prompt_mode == ":", "the : prompt")
            app.query_one("#prompt").value = kind  # type: ignore[attr-defined]
            await timed(
                ":actors / :tasks enter",
                ("enter",),
                lambda k=kind: app.view.kind == k and app.table.row_count > 0,
            )
        if app.view.kind != "tasks" or app.view.filters:
            await pilot.press("colon")
            await _until(pilot, lambda: app.prompt_mode == ":", "the : prompt")
            app.query_one("#prompt").value = "tasks"  # type: ignore[attr-defined]
            await pilot.press("enter")
        await _until(pilot, lambda: app.view.kind == "tasks" and app.table.row_count > 0, "tasks")
        pages = getattr(app, "page_start", None)
        if pages is not None and args.tasks > app.max_rows:
            for i in range(args.presses):
                key = "right_square_bracket" if i % 2 == 0 else "left_square_bracket"
                first = 1 + app.max_rows * (1 if i % 2 == 0 else 0)
                await timed(
                    "] / [ (page)", (key,), lambda f=first: loaded(app) and app.page_start() == f
                )

        # CPU while the cluster is quiet, then while tasks finish at a steady rate.
        await asyncio.sleep(2 * args.refresh)
        t, c, h = time.perf_counter(), _cpu(me), _cpu(head)
        await asyncio.sleep(args.idle)
        figures["cpu idle"] = (_cpu(me) - c) / (time.perf_counter() - t)
        figures["head cpu idle"] = (_cpu(head) - h) / (time.perf_counter() - t)
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write(f"steady {args.rate} {args.idle}\n")
        driver.stdin.flush()
        t, c, h = time.perf_counter(), _cpu(me), _cpu(head)
        line = await asyncio.to_thread(driver.stdout.readline)
        if line.strip() != "done":
            raise RuntimeError(f"the driver did not run the steady workload: {line!r}")
        figures["cpu steady"] = (_cpu(me) - c) / (time.perf_counter() - t)
        figures["head cpu steady"] = (_cpu(head) - h) / (time.perf_counter() - t)
        figures["rss"] = me.memory_info().rss

        # A change's way to the screen: a task finishes, its row shows FINISHED.
        await pilot.press("colon")
        await _until(pilot, lambda: app.prompt_mode == ":", "the : prompt")
        app.query_one("#prompt").value = "tasks name=bench_top_mark"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await _until(pilot, lambda: app.view.filters == ("name=bench_top_mark",), "the view")
        await _until(pilot, lambda: app.last is not None and app.last.synced, "its listing")

        def finished() -> int:
            return sum(1 for r in app.rows.values() if r.get("state") == "FINISHED")

        for _ in range(args.marks):
            # At a random moment: the head's telemetry, the feed and the repaint all keep
            # their own period, and a mark sent right after the last one was seen would
            # always meet them at the same phase.
            await asyncio.sleep(random.uniform(0, 2 * args.refresh))
            seen = finished()
            driver.stdin.write("mark\n")
            driver.stdin.flush()
            line = await asyncio.to_thread(driver.stdout.readline)
            if not line.startswith("marked"):
                raise RuntimeError(f"the driver did not run the marked task: {line!r}")
            await _until(pilot, lambda s=seen: finished() > s, "the marked task FINISHED")
            marks.append(time.time() - float(line.split()[1]))
    print(
        f"freight top figures ({args.tasks:,} tasks, {args.actors:,} actors of which "
        f"{min(args.alive, args.actors)} alive, refresh {args.refresh} s, {psutil.cpu_count()} CPUs)"
    )
    print("| figure | value |\n|---|---|")
    print(f"| app open to first rows (tasks) | {figures['first rows']:.2f} s |")
    for name, samples in lat.items():
        print(f"| key to repaint: {name} | {_figure(samples)} ({len(samples)} presses) |")
    for name, samples in lists.items():
        print(f"| a listing of 1,000 rows, {name} | {_figure(samples)} ({len(samples)} calls) |")
    print(f"| inspector CPU, idle on tasks | {figures['cpu idle']:.3f} s/s |")
    print(f"| inspector CPU, {args.rate} tasks/s finishing | {figures['cpu steady']:.3f} s/s |")
    print(f"| inspector RSS at the end | {figures['rss'] / 2**20:.0f} MiB |")
    print(f"| a task's end to its row shown FINISHED | {_figure(marks)} ({len(marks)} tasks) |")
    print(f"| head CPU, idle on tasks | {figures['head cpu idle']:.3f} s/s |")
    print(f"| head CPU, {args.rate} tasks/s finishing | {figures['head cpu steady']:.3f} s/s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=1_000)
    parser.add_argument("--alive", type=int, default=50, help="actors given a worker process")
    parser.add_argument("--presses", type=int, default=40, help="presses per key")
    parser.add_argument("--refresh", type=float, default=1.0, help="as freight top --refresh")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds per CPU figure")
    parser.add_argument("--rate", type=int, default=200, help="tasks/s in the steady phase")
    parser.add_argument("--marks", type=int, default=20, help="tasks timed to the screen")
    args = parser.parse_args()
    env = {
        **os.environ,
        "FREIGHT_TASK_ROWS_SAMPLE": "0",
        "FREIGHT_STATE_TASKS_MAX": str(max(100_000, 2 * args.tasks)),
    }
    with tempfile.TemporaryDirectory(prefix="ft-", dir="/tmp") as tmp:
        env["FREIGHT_TEMP_DIR"] = tmp
        driver_args = (str(args.tasks), str(args.actors), str(args.alive))
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), *driver_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert driver.stdout is not None and driver.stdin is not None
            started = time.perf_counter()
            line = driver.stdout.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError(f"the driver did not start the cluster: {line!r}")
            print(f"workload ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            os.environ["FREIGHT_ADDRESS"] = line[1]
            if len(line) > 2:
                os.environ["FREIGHT_TOKEN"] = line[2]
            asyncio.run(measure(args, line[1], driver))
        finally:
            if driver.stdin is not None:
                driver.stdin.close()  # the driver shuts its cluster down
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()


if __name__ == "__main__":
    main()
