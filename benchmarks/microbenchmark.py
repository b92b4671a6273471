"""Ray core's microbenchmark workloads, run against freight or Ray.

The workloads keep the names and definitions of ``ray microbenchmark`` so the figures of the two
systems can be compared row by row. Each row is measured as Ray measures it: one second of warm-up
that also sizes the batch of calls, then four timed rounds of two seconds; the figure is
operations (or gigabytes) per second, mean and standard deviation over the rounds.

    python benchmarks/microbenchmark.py --system freight
    python benchmarks/microbenchmark.py --system ray --json ray.json
    python benchmarks/microbenchmark.py --system freight --smoke   # a few seconds, tiny sizes
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
from dataclasses import asdict, dataclass
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


def measure(fn: Callable[[], Any], multiplier: float, timing: Timing) -> tuple[float, float]:
    """Ray's method: warm up to size the step, then time whole steps over several rounds."""
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < timing.warmup_s:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(timing.rounds):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < timing.round_s:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    return statistics.fmean(rates), statistics.pstdev(rates)


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


class Runner:
    def __init__(
        self, ray: Any, remotes: SimpleNamespace, sizes: Sizes, timing: Timing, pattern: str
    ) -> None:
        self.ray = ray
        self.remotes = remotes
        self.sizes = sizes
        self.timing = timing
        self.pattern = pattern
        self.results: list[Result] = []

    def run(
        self, name: str, fn: Callable[[], Any], multiplier: float = 1, unit: str = "ops/s"
    ) -> None:
        if self.pattern and not re.search(self.pattern, name):
            return
        mean, stdev = measure(fn, multiplier, self.timing)
        self.results.append(Result(name, mean, stdev, unit))
        print(f"{name} per second {mean:.2f} +- {stdev:.2f}", flush=True)

    def kill(self, *actors: Any) -> None:
        # Free each workload's actors so later rows start from an idle node.
        for actor in actors:
            self.ray.kill(actor)


def run_all(runner: Runner) -> None:
    ray, s, r = runner.ray, runner.sizes, runner.remotes
    half_cpus = max(1, multiprocessing.cpu_count() // 2)

    value = ray.put(0)
    runner.run("single client get calls (Plasma Store)", lambda: ray.get(value))
    runner.run("single client put calls (Plasma Store)", lambda: ray.put(0))

    runner.run(
        "multi client put calls (Plasma Store)",
        lambda: ray.get([r.do_put_small.remote(s.puts_per_task) for _ in range(s.put_tasks)]),
        s.puts_per_task * s.put_tasks,
    )

    arr = np.zeros(s.large_put_elems, dtype=np.int64)
    runner.run("single client put gigabytes", lambda: ray.put(arr), arr.nbytes / 1e9, "GB/s")

    runner.run(
        "single client tasks and get batch",
        lambda: ray.get([r.small_value.remote() for _ in range(s.batch)]),
    )

    runner.run(
        "multi client put gigabytes",
        lambda: ray.get(
            [r.do_put.remote(s.multi_puts_per_task, s.multi_put_elems) for _ in range(s.put_tasks)]
        ),
        s.put_tasks * s.multi_puts_per_task * s.multi_put_elems * 8 / 1e9,
        "GB/s",
    )

    containing = r.create_object_containing_ref.remote(s.refs_in_object)
    runner.run("single client get object containing 10k refs", lambda: ray.get(containing))

    def wait_multiple_refs():
        not_ready = [r.small_value.remote() for _ in range(s.wait_refs)]
        # One fetch request per object is enough; later waits need not repeat it.
        fetch_local = True
        for _ in range(s.wait_refs):
            _, not_ready = ray.wait(not_ready, fetch_local=fetch_local)
            fetch_local = False

    runner.run("single client wait 1k refs", wait_multiple_refs)

    runner.run("single client tasks sync", lambda: ray.get(r.small_value.remote()))
    runner.run(
        "single client tasks async",
        lambda: ray.get([r.small_value.remote() for _ in range(s.batch)]),
        s.batch,
    )

    actors = [r.Actor.remote() for _ in range(s.clients)]
    runner.run(
        "multi client tasks async",
        lambda: ray.get([a.small_value_batch.remote(s.multi_n) for a in actors]),
        s.multi_n * s.clients,
    )
    runner.kill(*actors)

    a = r.Actor.remote()
    runner.run("1:1 actor calls sync", lambda: ray.get(a.small_value.remote()))
    runner.kill(a)

    a = r.Actor.remote()
    runner.run(
        "1:1 actor calls async",
        lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]),
        s.batch,
    )
    runner.kill(a)

    a = r.Actor.options(max_concurrency=s.concurrency).remote()
    runner.run(
        "1:1 actor calls concurrent",
        lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]),
        s.batch,
    )
    runner.kill(a)

    servers = [r.Actor.remote() for _ in range(half_cpus)]
    client = r.Client.remote(servers)
    runner.run(
        "1:n actor calls async",
        lambda: ray.get(client.small_value_batch.remote(s.fanout_n)),
        s.fanout_n * len(servers),
    )
    runner.kill(client, *servers)

    servers = [r.Actor.remote() for _ in range(half_cpus)]
    runner.run(
        "n:n actor calls async",
        lambda: ray.get([r.call_actors.remote(servers, s.fanout_n) for _ in range(s.clients)]),
        s.clients * s.fanout_n,
    )
    runner.kill(*servers)

    servers = [r.Actor.remote() for _ in range(half_cpus)]
    clients = [r.Client.remote(server) for server in servers]
    runner.run(
        "n:n actor calls with arg async",
        lambda: ray.get([c.small_value_batch_arg.remote(s.fanout_arg_n) for c in clients]),
        s.fanout_arg_n * len(clients),
    )
    runner.kill(*clients, *servers)

    a = r.AsyncActor.remote()
    runner.run("1:1 async-actor calls sync", lambda: ray.get(a.small_value.remote()))
    runner.kill(a)

    a = r.AsyncActor.remote()
    runner.run(
        "1:1 async-actor calls async",
        lambda: ray.get([a.small_value.remote() for _ in range(s.batch)]),
        s.batch,
    )
    runner.kill(a)

    a = r.AsyncActor.remote()
    runner.run(
        "1:1 async-actor calls with args async",
        lambda: ray.get([a.small_value_with_arg.remote(i) for i in range(s.batch)]),
        s.batch,
    )
    runner.kill(a)

    servers = [r.AsyncActor.remote() for _ in range(half_cpus)]
    client = r.Client.remote(servers)
    runner.run(
        "1:n async-actor calls async",
        lambda: ray.get(client.small_value_batch.remote(s.fanout_n)),
        s.fanout_n * len(servers),
    )
    runner.kill(client, *servers)

    servers = [r.AsyncActor.remote() for _ in range(half_cpus)]
    runner.run(
        "n:n async-actor calls async",
        lambda: ray.get([r.call_actors.remote(servers, s.fanout_n) for _ in range(s.clients)]),
        s.clients * s.fanout_n,
    )
    runner.kill(*servers)


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
    runner = Runner(ray, define_remotes(ray), sizes, timing, args.filter)
    try:
        run_all(runner)
    finally:
        ray.shutdown()

    print_table(runner.results)
    if args.json:
        report = {
            "system": args.system,
            "version": getattr(ray, "__version__", "unknown"),
            "smoke": args.smoke,
            "cpus": multiprocessing.cpu_count(),
            "python": platform.python_version(),
            "sizes": asdict(sizes),
            "results": [asdict(res) for res in runner.results],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
