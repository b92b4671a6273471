"""Ray core's microbenchmark workloads, run against freight or Ray.

The workloads keep the names and definitions of ``ray microbenchmark`` so the figures of the two
systems can be compared row by row. Each row is measured as Ray measures it: one second of warm-up
that also sizes the batch of calls, then four timed rounds of two seconds; the figure is
operations (or gigabytes) per second, mean and standard deviation over the rounds.

    python benchmarks/microbenchmark.py --system freight
    python benchmarks/microbenchmark.py --system ray --json ray.json
    python benchmarks/microbenchmark.py --system freight --smoke   # a few seconds, tiny sizes

``compare.py`` runs the same workloads (through ``suite.py``) beside Ray and Dask.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; the full ones are Ray's, the smoke ones only prove every row runs."""

    batch: int  # calls per batch in the "async" rows
    puts_per_task: int  # puts per task in "multi client put calls"
    put_tasks: int  # tasks per call in the "multi client put" rows
    large_put_elems: int  # int64 elements of the array in "single client put gigabytes"
    multi_put_elems: int  # int64 elements of each array in "multi client put gigabytes"
    multi_puts_per_task: int
    refs_in_object: int  # refs inside the object in "get object containing 10k refs"
    wait_refs: int  # refs in "single client wait 1k refs"
    multi_n: int  # calls per client in "multi client tasks async"
    clients: int  # clients (actors or tasks) in the multi-client rows
    fanout_n: int  # calls per client in the 1:n and n:n rows
    fanout_arg_n: int  # calls per client in "n:n actor calls with arg async"
    concurrency: int  # max_concurrency in "1:1 actor calls concurrent"


FULL = Sizes(
    batch=1000,
    puts_per_task=100,
    put_tasks=10,
    large_put_elems=100 * 1024 * 1024,
    multi_put_elems=10 * 1024 * 1024,
    multi_puts_per_task=10,
    refs_in_object=10_000,
    wait_refs=1000,
    multi_n=10_000,
    clients=4,
    fanout_n=5000,
    fanout_arg_n=1000,
    concurrency=16,
)

SMOKE = Sizes(
    batch=20,
    puts_per_task=5,
    put_tasks=2,
    large_put_elems=1024 * 1024,
    multi_put_elems=128 * 1024,
    multi_puts_per_task=2,
    refs_in_object=100,
    wait_refs=20,
    multi_n=20,
    clients=2,
    fanout_n=20,
    fanout_arg_n=20,
    concurrency=4,
)


@dataclass(frozen=True)
class Timing:
    """Ray's method: ``warmup_s`` of calls (which also sizes the step), then timed rounds."""

    warmup_s: float
    round_s: float
    rounds: int


FULL_TIMING = Timing(warmup_s=1.0, round_s=2.0, rounds=4)
SMOKE_TIMING = Timing(warmup_s=0.02, round_s=0.05, rounds=2)


@dataclass
class Result:
    name: str
    mean: float
    stdev: float
    unit: str
    cpu_us_per_op: float = 0.0  # CPU time of the process tree per operation


@dataclass
class Bench:
    """One row, set up: the operation, what one call counts for, and the actors to free after."""

    fn: Callable[[], Any]
    multiplier: float = 1
    unit: str = "ops/s"
    actors: list[Any] = field(default_factory=list)


def tree_cpu() -> float:
    """CPU seconds used so far by this process and every process under it (the cluster this
    driver started: its head, agents and workers), including those that exited and were reaped
    (counted in their parent's children times), so the figure only grows."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue  # exited meanwhile
        total += t.user + t.system + t.children_user + t.children_system
    return total


def measure(
    fn: Callable[[], Any], multiplier: float, timing: Timing, cpu: list[float] | None = None
) -> list[float]:
    """Ray's method: warm up to size the step, then time whole steps; the rate of each round.

    With ``cpu``, also append each round's CPU time per operation in microseconds, summed over
    the process tree: what the work costs, whatever the machine's other load does to the rate.
    """
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < timing.warmup_s:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(timing.rounds):
        used = tree_cpu() if cpu is not None else 0.0
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < timing.round_s:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
        if cpu is not None:
            cpu.append((tree_cpu() - used) / (multiplier * count) * 1e6)
    return rates


def define_remotes(ray: Any) -> SimpleNamespace:
    """The remote functions and actor classes of the workloads, bound to the chosen system."""

    @ray.remote
    def small_value():
        return b"ok"

    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, x):
            return b"ok"

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            refs = []
            for server in self.servers:
                refs.extend(server.small_value.remote() for _ in range(n))
            ray.get(refs)

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            refs = []
            for server in self.servers:
                refs.extend(server.small_value_arg.remote(x) for _ in range(n))
            ray.get(refs)

    @ray.remote
    def do_put_small(count):
        for _ in range(count):
            ray.put(0)

    @ray.remote
    def do_put(count, elems):
        for _ in range(count):
            ray.put(np.zeros(elems, dtype=np.int64))

    @ray.remote
    def create_object_containing_ref(count):
        return [ray.put(1) for _ in range(count)]

    @ray.remote
    def call_actors(actors, n):
        ray.get([actors[i % len(actors)].small_value.remote() for i in range(n)])

    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "ray"})


def workloads(ray: Any, r: SimpleNamespace, s: Sizes) -> dict[str, Callable[[], Bench]]:
    """Ray's rows by name, in Ray's order; each sets itself up only when it is run."""
    half_cpus = max(1, multiprocessing.cpu_count() // 2)
    table: dict[str, Callable[[], Bench]] = {}

    def row(name: str) -> Callable[[Callable[[], Bench]], Callable[[], Bench]]:
        def register(setup: Callable[[], Bench]) -> Callable[[], Bench]:
            table[name] = setup
            return setup

        return register

    @row("single client get calls (Plasma Store)")
    def _():
        value = ray.put(0)
        return Bench(lambda: ray.get(value))

    @row("single client put calls (Plasma Store)")
    def _():
        return Bench(lambda: ray.put(0))

    @row("multi client put calls (Plasma Store)")
    def _():
        return Bench(
            lambda: ray.get([r.do_put_small.remote(s.puts_per_task) for _ in range(s.put_tasks)]),
            s.puts_per_task * s.put_tasks,
        )

    @row("single client put gigabytes")
    def _():
        arr = np.zeros(s.large_put_elems, dtype=np.int64)
        return Bench(lambda: ray.put(arr), arr.nbytes / 1e9, "GB/s")

    @row("single client tasks and get batch")
    def _():
        return Bench(lambda: ray.get([r.small_value.remote() for _ in range(s.batch)]))

    @row("multi client put gigabytes")
    def _():
        return Bench(
            lambda: ray.get(
                [
                    r.do_put.remote(s.multi_puts_per_task, s.multi_put_elems)
                    for _ in range(s.put_tasks)
                ]
            ),
            s.put_tasks * s.multi_puts_per_task * s.multi_put_elems * 8 / 1e9,
            "GB/s",
        )

    @row("single client get object containing 10k refs")
    def _():
        containing = r.create_object_containing_ref.remote(s.refs_in_object)
        return Bench(lambda: ray.get(containing))

    @row("single client wait 1k refs")
    def _():
        def wait_multiple_refs():
            not_ready = [r.small_value.remote() for _ in range(s.wait_refs)]
            # One fetch request per object is enough; later waits need not repeat it.
            fetch_local = True
            for _ in range(s.wait_refs):
                _, not_ready = ray.wait(not_ready, fetch_local=fetch_local)
                fetch_local = False

        return Bench(wait_multiple_refs)

    @row("single client tasks sync")
    def _():
        return Bench(lambda: ray.get(r.small_value.remote()))

    @row("single client tasks async")
    def _():
        return Bench(lambda: ray.get([r.small_value.remote() for _ in range(s.batch)]), s.batch)

    @row("multi client tasks async")
    def _():
        actors = [r.Actor.remote() for _ in range(s.clients)]
        return Bench(
            lambda: ray.get([a.small_value_batch.remote(s.multi_n) for a in actors]),
            s.multi_n * s.clients,
            actors=actors,
        )

    @row("1:1 actor calls sync")
    def _():
        a = r.Actor.remote()
        return Bench(lambda: ray.get(a.small_value.remote()), actors=[a])

    @row("1:1 actor calls async")
    def _():
        a = r.Actor.remote()
        return Bench(
            lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]), s.batch, actors=[a]
        )

    @row("1:1 actor calls concurrent")
    def _():
        a = r.Actor.options(max_concurrency=s.concurrency).remote()
        return Bench(
            lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]), s.batch, actors=[a]
        )

    @row("1:n actor calls async")
    def _():
        servers = [r.Actor.remote() for _ in range(half_cpus)]
        client = r.Client.remote(servers)
        return Bench(
            lambda: ray.get(client.small_value_batch.remote(s.fanout_n)),
            s.fanout_n * len(servers),
            actors=[client, *servers],
        )

    @row("n:n actor calls async")
    def _():
        servers = [r.Actor.remote() for _ in range(half_cpus)]
        return Bench(
            lambda: ray.get([r.call_actors.remote(servers, s.fanout_n) for _ in range(s.clients)]),
            s.clients * s.fanout_n,
            actors=servers,
        )

    @row("n:n actor calls with arg async")
    def _():
        servers = [r.Actor.remote() for _ in range(half_cpus)]
        clients = [r.Client.remote(server) for server in servers]
        return Bench(
            lambda: ray.get([c.small_value_batch_arg.remote(s.fanout_arg_n) for c in clients]),
            s.fanout_arg_n * len(clients),
            actors=[*clients, *servers],
        )

    @row("1:1 async-actor calls sync")
    def _():
        a = r.AsyncActor.remote()
        return Bench(lambda: ray.get(a.small_value.remote()), actors=[a])

    @row("1:1 async-actor calls async")
    def _():
        a = r.AsyncActor.remote()
        return Bench(
            lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]), s.batch, actors=[a]
        )

    @row("1:1 async-actor calls with args async")
    def _():
        a = r.AsyncActor.remote()
        return Bench(
            lambda: ray.get([a.small_value_with_arg.remote(i) for i in range(s.batch)]),
            s.batch,
            actors=[a],
        )

    @row("1:n async-actor calls async")
    def _():
        servers = [r.AsyncActor.remote() for _ in range(half_cpus)]
        client = r.Client.remote(servers)
        return Bench(
            lambda: ray.get(client.small_value_batch.remote(s.fanout_n)),
            s.fanout_n * len(servers),
            actors=[client, *servers],
        )

    @row("n:n async-actor calls async")
    def _():
        servers = [r.AsyncActor.remote() for _ in range(half_cpus)]
        return Bench(
            lambda: ray.get([r.call_actors.remote(servers, s.fanout_n) for _ in range(s.clients)]),
            s.clients * s.fanout_n,
            actors=servers,
        )

    return table


def run_bench(
    ray: Any, setup: Callable[[], Bench], timing: Timing, cpu: list[float] | None = None
) -> tuple[list[float], str]:
    """Set one row up, measure it, free its actors; the rate of each round and the unit."""
    bench = setup()
    try:
        return measure(bench.fn, bench.multiplier, timing, cpu), bench.unit
    finally:
        # Free each workload's actors so later rows start from an idle node.
        for actor in bench.actors:
            ray.kill(actor)


def print_table(results: list[Result]) -> None:
    width = max((len(res.name) for res in results), default=4)
    print()
    print(f"{'name':<{width}}  {'per second (mean)':>18}  {'stdev':>12}  unit")
    for res in results:
        print(f"{res.name:<{width}}  {res.mean:>18,.2f}  {res.stdev:>12,.2f}  {res.unit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["freight", "ray"], default="freight")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and rounds")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--filter", default="", help="run only rows whose name matches this regular expression"
    )
    args = parser.parse_args(argv)

    ray = importlib.import_module(args.system)
    sizes, timing = (SMOKE, SMOKE_TIMING) if args.smoke else (FULL, FULL_TIMING)

    ray.init()
    results: list[Result] = []
    try:
        for name, setup in workloads(ray, define_remotes(ray), sizes).items():
            if args.filter and not re.search(args.filter, name):
                continue
            cpu: list[float] = []
            rates, unit = run_bench(ray, setup, timing, cpu)
            res = Result(
                name, statistics.fmean(rates), statistics.pstdev(rates), unit, statistics.fmean(cpu)
            )
            results.append(res)
            print(f"{name} per second {res.mean:.2f} +- {res.stdev:.2f}", flush=True)
    finally:
        ray.shutdown()

    print_table(results)
    if args.json:
        report = {
            "system": args.system,
            "version": getattr(ray, "__version__", "unknown"),
            "smoke": args.smoke,
            "cpus": multiprocessing.cpu_count(),
            "python": platform.python_version(),
            "sizes": asdict(sizes),
            "results": [asdict(res) for res in results],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
