"""What watching costs and delivers: ``StateService.Watch`` on a private cluster.

    python benchmarks/watch.py                 # 100,000 tasks, ten watchers
    python benchmarks/watch.py --tasks 2000    # a quick look

Prints:

- **events per second one watcher receives**: one watcher of ``tasks`` reading the listing of
  every task record the head holds (after the workload), and the changes while a workload runs.
- **latency from change to delivery (p50/p99)**: cluster events reported to the head one at a
  time (``ReportEvents``, stamped by the head when it records them) and read by a watcher of
  ``events`` in another process; the delay is the reader's clock minus the record's time (one
  machine, one clock).
- **the head's CPU seconds** (user + system, from /proc) over the same task workload with no
  watcher and with ten watchers of ``tasks`` (threads of one other process), every task given its
  state-API record (``FREIGHT_TASK_ROWS_SAMPLE=0``): the worst case for the change feed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import psutil

WATCHERS = """
    import sys, threading, time
    from freight import state

    n, kind = int(sys.argv[1]), sys.argv[2]
    counts = [0] * n
    synced = threading.Barrier(n + 1)

    def run(i):
        first = True
        for ev in state.watch(kind):
            counts[i] += 1
            if ev.type == "SYNCED" and first:
                first = False
                synced.wait()

    for i in range(n):
        threading.Thread(target=run, args=(i,), daemon=True).start()
    synced.wait()
    print("ready", flush=True)
    sys.stdin.readline()  # until told to stop
    print(sum(counts), flush=True)
"""

LATENCY_READER = """
    import json, sys, time
    from freight import state

    for ev in state.watch("events", ["kind=AUTOSCALER_DECISION"]):
        if ev.type == "SYNCED":
            print("ready", flush=True)
        elif ev.type == "ADDED" and ev.row["message"].startswith("probe"):
            print(json.dumps([time.time() - ev.row["time"], ev.row["message"]]), flush=True)
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"a watcher process did not start: {line!r}")
    return proc


def _head() -> psutil.Process:
    me = psutil.Process()
    for child in me.children(recursive=True):
        if "freight.head" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("the head process was not found among this process's children")


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def workload(tasks: int) -> float:
    """Run ``tasks`` no-op tasks in waves; return the seconds it took."""
    import freight

    @freight.remote
    def noop(i: int) -> int:
        return i

    start = time.perf_counter()
    for first in range(0, tasks, 2000):
        freight.get([noop.remote(i) for i in range(first, min(tasks, first + 2000))])
    return time.perf_counter() - start


def settle(head: psutil.Process, want: int) -> None:
    """Wait until the head holds ``want`` more task records' final states (reports arrive
    after the results)."""
    from freight import state

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        held = state.summarize("tasks")["by_state"].get("FINISHED", 0)
        if held >= want:
            return
        time.sleep(0.2)  # polling the head's summary; the deadline bounds it
    raise TimeoutError(f"the head did not record {want} finished tasks")


def cpu_figures(tasks: int, watchers: int) -> dict[str, Any]:
    head = _head()
    out: dict[str, Any] = {}
    done = 0
    for n in (0, watchers):
        procs = _spawn(WATCHERS, str(n), "tasks") if n else None
        before = _cpu(head)
        took = workload(tasks)
        done += tasks
        settle(head, done)
        used = _cpu(head) - before
        received = 0
        if procs is not None:
            assert procs.stdin is not None and procs.stdout is not None
            procs.stdin.write("\n")
            procs.stdin.flush()
            received = int(procs.stdout.readline())
            procs.wait(timeout=60)
        out[n] = {"head_cpu_s": used, "workload_s": took, "events_received": received}
    return out


def throughput() -> dict[str, float]:
    """One watcher of tasks: the listing of every record the head holds, rows per second."""
    from freight import state

    start = time.perf_counter()
    rows = 0
    for ev in state.watch("tasks"):
        if ev.type == "SYNCED":
            break
        rows += 1
    took = time.perf_counter() - start
    return {"rows": rows, "seconds": took, "per_s": rows / took if took else 0.0}


def changes_throughput(tasks: int) -> dict[str, float]:
    """One watcher of tasks while ``tasks`` run: changes received per second of the stream."""
    import threading

    from freight import state

    stamps: list[float] = []
    ready = threading.Event()
    stop = threading.Event()

    def read() -> None:
        for ev in state.watch("tasks", ["state=FINISHED"]):
            if ev.type == "SYNCED":
                ready.set()
            elif ready.is_set():
                stamps.append(time.perf_counter())
            if stop.is_set():
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(120)
    workload(tasks)
    deadline = time.monotonic() + 120
    while len(stamps) < tasks and time.monotonic() < deadline:
        time.sleep(0.1)  # the reader is a thread of this process: poll its count
    stop.set()
    got = len(stamps)
    span = stamps[-1] - stamps[0] if got > 1 else 0.0
    return {"events": got, "seconds": span, "per_s": got / span if span else 0.0}


def latency(probes: int) -> dict[str, float]:
    from freight.client import access
    from freight.protocol.generated import freight_pb2 as pb
    from freight.protocol.generated import freight_pb2_grpc as pb_grpc
    from freight.util.grpc_auth import sync_channel

    reader = _spawn(LATENCY_READER)
    assert reader.stdout is not None
    target = access.resolve(None)
    head, token = target.address, target.token
    channel = sync_channel(head, token)
    stub = pb_grpc.HeadServiceStub(channel)
    delays: list[float] = []
    try:
        for i in range(probes):
            event = pb.ClusterEvent(
                severity="DEBUG", source="driver", kind="AUTOSCALER_DECISION", message=f"probe {i}"
            )
            stub.ReportEvents(pb.ReportEventsRequest(events=[event]), timeout=30)
            delay, message = json.loads(reader.stdout.readline())
            assert message == f"probe {i}"
            delays.append(delay)
    finally:
        channel.close()
        reader.kill()
        reader.wait()
    delays.sort()
    return {
        "p50_ms": statistics.median(delays) * 1e3,
        "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per CPU-figure run")
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--probes", type=int, default=500, help="events for the latency figure")
    args = parser.parse_args()
    os.environ["FREIGHT_TASK_ROWS_SAMPLE"] = "0"
    os.environ["FREIGHT_STATE_TASKS_MAX"] = str(max(100_000, 3 * args.tasks))
    os.environ["FREIGHT_WATCH_BUFFER"] = os.environ.get("FREIGHT_WATCH_BUFFER", "10000")
    import freight

    with tempfile.TemporaryDirectory(prefix="fw-", dir="/tmp") as tmp:
        os.environ["FREIGHT_TEMP_DIR"] = tmp
        freight.init(num_cpus=2)
        from freight.client import access

        # The watcher processes join this cluster by its address and token.
        target = access.resolve(None)
        os.environ["FREIGHT_ADDRESS"], os.environ["FREIGHT_TOKEN"] = target.address, target.token
        try:
            cpu = cpu_figures(args.tasks, args.watchers)
            listing = throughput()
            changes = changes_throughput(min(args.tasks, 20_000))
            lat = latency(args.probes)
        finally:
            freight.shutdown()
    none, some = cpu[0], cpu[args.watchers]
    print(f"watch figures ({args.tasks:,} tasks per run, {psutil.cpu_count()} CPUs)")
    print("| figure | value |\n|---|---|")
    print(
        f"| one watcher, listing | {listing['per_s']:,.0f} rows/s "
        f"({listing['rows']:,} rows in {listing['seconds']:.2f} s) |"
    )
    print(
        f"| one watcher, changes while tasks run | {changes['per_s']:,.0f} events/s "
        f"({changes['events']:,} events) |"
    )
    print(
        f"| change to delivery (events) | p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms |"
    )
    print(
        f"| head CPU, no watcher | {none['head_cpu_s']:.2f} s "
        f"(workload {none['workload_s']:.1f} s) |"
    )
    print(
        f"| head CPU, {args.watchers} watchers | {some['head_cpu_s']:.2f} s "
        f"(workload {some['workload_s']:.1f} s; {some['events_received']:,} events delivered) |"
    )
    extra = some["head_cpu_s"] - none["head_cpu_s"]
    print(
        f"| head CPU added by {args.watchers} watchers | {extra:+.2f} s ({extra / none['head_cpu_s']:+.0%}) |"
    )


if __name__ == "__main__":
    main()
