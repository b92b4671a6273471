"""The workload a game day step runs under: a driver process that keeps work in flight and writes
a ledger of what it submitted and what came back right, so that "lost" is a list, not a guess.

``python -m freight.chaos.gameday.workload --address A --ledger FILE --kind tasks`` submits
``square(i)`` tasks (retried when their worker or node dies); ``--kind actor`` calls a named
actor that counts its calls and checkpoints after each (``__freight_checkpoint__``), so a restart
must resume the count: call ``i`` must answer ``i + 1``. It stops submitting when ``--stop-file``
appears (or on SIGTERM), waits up to ``--drain`` seconds for what is in flight, and exits.

The ledger is one JSON object a line, flushed as it goes (the driver may be killed: that is a
game day step too): ``start`` (pid, job id), ``submit`` (i), ``ok`` (i), ``wrong`` (i, got,
want), ``error`` (i, error) and ``end``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

ACTOR_NAME = "gameday-counter"
ACTOR_NAMESPACE = "gameday"
TASK_RETRIES = 10  # a task outlives this many worker or node deaths


def square(i: int, seconds: float) -> int:
    time.sleep(seconds)  # the work itself: it holds a worker this long
    return i * i


class Counter:
    """Counts its calls; its count is checkpointed after every call, so a restart resumes it."""

    __freight_checkpoint_calls__ = 1

    def __init__(self) -> None:
        self.calls = 0

    def add(self, seconds: float) -> int:
        time.sleep(seconds)
        self.calls += 1
        return self.calls

    def __freight_checkpoint__(self) -> int:
        return self.calls

    def __freight_restore__(self, state: int) -> None:
        self.calls = state


@dataclass
class Ledger:
    """The workload's record of itself, appended line by line."""

    file: TextIO

    def write(self, op: str, **fields: Any) -> None:
        self.file.write(json.dumps({"op": op, "t": time.time(), **fields}) + "\n")
        self.file.flush()


@dataclass(frozen=True)
class Outcome:
    """What a ledger says about one workload run, read back by the game day."""

    pid: int = 0
    job_id: str = ""
    started: float = 0.0
    ended: bool = False  # it wrote its end line (it was not killed)
    submitted: dict[int, float] = field(default_factory=dict)  # i -> when
    ok: dict[int, float] = field(default_factory=dict)  # i -> when its right result came back
    failed: dict[int, str] = field(default_factory=dict)  # i -> its error, or the wrong result

    def lost(self) -> dict[int, str]:
        """Submitted, and no right result came back: i -> why (its error, its wrong result,
        or that nothing came back)."""
        return {
            i: self.failed.get(i, "no result came back")
            for i in sorted(self.submitted)
            if i not in self.ok
        }

    def first_ok_after(self, since: float) -> float | None:
        """When the first right result of a call submitted at or after ``since`` came back."""
        times = [t for i, t in self.ok.items() if self.submitted.get(i, 0.0) >= since]
        return min(times) if times else None


def read_ledger(path: str) -> Outcome:
    """The ledger at ``path`` as an :class:`Outcome` (an empty one when it does not exist yet;
    a line cut short by a killed driver is skipped)."""
    start: dict[str, Any] = {}
    submitted: dict[int, float] = {}
    ok: dict[int, float] = {}
    failed: dict[int, str] = {}
    ended = False
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return Outcome()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of a driver killed while writing it
        op = record.get("op")
        if op == "start":
            start = record
        elif op == "submit":
            submitted[int(record["i"])] = float(record["t"])
        elif op == "ok":
            ok[int(record["i"])] = float(record["t"])
            failed.pop(int(record["i"]), None)
        elif op == "wrong":
            failed[int(record["i"])] = f"wrong result {record['got']!r} (want {record['want']!r})"
        elif op == "error":
            failed[int(record["i"])] = str(record["error"])
        elif op == "end":
            ended = True
    return Outcome(
        int(start.get("pid") or 0),
        str(start.get("job_id") or ""),
        float(start.get("t") or 0.0),
        ended,
        submitted,
        ok,
        failed,
    )


def run(args: argparse.Namespace) -> None:
    import freight

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    freight.init(address=args.address, namespace=ACTOR_NAMESPACE, log_to_driver=False)
    with open(args.ledger, "a", encoding="utf-8") as f:
        ledger = Ledger(f)
        ledger.write("start", pid=os.getpid(), job_id=freight.get_runtime_context().get_job_id())
        if args.kind == "actor":
            counter = (
                freight.remote(Counter)
                .options(name=ACTOR_NAME, max_restarts=-1, max_task_retries=-1, num_cpus=0)
                .remote()
            )

            def submit(i: int) -> Any:
                return counter.add.remote(args.task_seconds)

            def want(i: int) -> int:
                return i + 1

        else:
            remote_square = freight.remote(max_retries=TASK_RETRIES)(square)

            def submit(i: int) -> Any:
                return remote_square.remote(i, args.task_seconds)

            def want(i: int) -> int:
                return i * i

        in_flight: dict[Any, int] = {}
        i = 0
        deadline = None
        while in_flight or not stopping:
            if not stopping and os.path.exists(args.stop_file):
                stopping = True
            if stopping and deadline is None:
                deadline = time.monotonic() + args.drain
            if deadline is not None and time.monotonic() > deadline:
                break  # what is still in flight stays unanswered: the ledger says so
            while not stopping and len(in_flight) < args.concurrency:
                ledger.write("submit", i=i)
                in_flight[submit(i)] = i
                i += 1
            ready, _ = freight.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                n = in_flight.pop(ref)
                try:
                    got = freight.get(ref)
                except Exception as e:
                    ledger.write("error", i=n, error=f"{type(e).__name__}: {e}"[:500])
                    continue
                if got == want(n):
                    ledger.write("ok", i=n)
                else:
                    ledger.write("wrong", i=n, got=got, want=want(n))
        ledger.write("end", unanswered=sorted(in_flight.values()))
    freight.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="a game day's workload driver (see module doc)")
    p.add_argument("--address", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--kind", choices=("tasks", "actor"), default="tasks")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--task-seconds", type=float, default=0.2)
    p.add_argument("--drain", type=float, default=60.0)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
