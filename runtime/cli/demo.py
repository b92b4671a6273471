"""`freight demo`: the embedded default. A local cluster, a sample workload, a status summary,
then on a terminal the inspector (`freight top`) on it until q."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import freight


@freight.remote
def square(x: int) -> int:
    return x * x


@freight.remote
def checksum(block: Any) -> float:
    return float(block.sum())


@freight.remote
def fan_out(n: int) -> int:
    # A task that submits tasks: nested work is ordinary work.
    return sum(freight.get([square.remote(i) for i in range(n)]))


@freight.remote
class Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, k: int) -> int:
        self.value += k
        return self.value


def run_workload(console: Any) -> None:
    import numpy as np

    t0 = time.perf_counter()
    squares = freight.get([square.remote(i) for i in range(1000)])
    console.print(
        f"1,000 tasks: sum of squares = {sum(squares)}  ({time.perf_counter() - t0:.2f} s)"
    )
    console.print(f"nested tasks: fan_out(100) = {freight.get(fan_out.remote(100))}")
    counter = Counter.remote()
    last = freight.get([counter.add.remote(1) for _ in range(500)])[-1]
    console.print(f"actor {counter!r}: 500 ordered calls, value = {last}")
    block = np.arange(8 * 1024 * 1024, dtype=np.float64)  # 64 MiB in shared memory
    ref = freight.put(block)
    sums = freight.get([checksum.remote(ref) for _ in range(4)])
    view = freight.get(ref)
    console.print(
        f"large object: 64 MiB array read by 4 tasks (sum {sums[0]:.0f}); "
        f"get() returns a read-only zero-copy view: writeable={view.flags.writeable}"
    )


SETTLE_S = 5.0  # the longest the summary waits for the workload's leases to come back


def settled_status(head_address: str, token: str) -> Any:
    """The cluster's status once the workload is over: the driver keeps an idle worker lease a
    moment for the next task (``LEASE_IDLE_S``), so a summary taken at once shows CPUs in use
    that nothing uses. Wait, up to :data:`SETTLE_S`, for every CPU to be back."""
    from freight.cli.status import status_report

    deadline = time.monotonic() + SETTLE_S
    while True:
        st = status_report(head_address, token)
        total = st.total.amounts.get("CPU", 0.0)
        if st.available.amounts.get("CPU", 0.0) >= total or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from freight.cli.status import render_status

    console = Console()
    t0 = time.perf_counter()
    info = freight.init(num_cpus=args.num_cpus)
    console.print(
        f"[bold]freight[/bold] local cluster up in {time.perf_counter() - t0:.2f} s "
        f"(session {info['session_dir']})"
    )
    try:
        run_workload(console)
        w = freight._api._require_worker()
        render_status(settled_status(w.head_address, w.token), console)
        if args.inspector and sys.stdin.isatty() and sys.stdout.isatty():
            from freight.tui.app import TopApp, id_keys

            TopApp(w.head_address, id_keys(w.head_address)).run()  # q quits, then stop
    finally:
        freight.shutdown()
    console.print("cluster stopped; nothing left running.")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="start a local cluster, run a sample workload, show status (and on a terminal, "
        "freight top until q)",
    )
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument(
        "--no-inspector",
        dest="inspector",
        action="store_false",
        help="on a terminal too, stop after the status summary (no freight top)",
    )
    p.set_defaults(func=cmd_demo)
