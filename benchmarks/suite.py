"""Measure the planned workloads on one system and write their samples as JSON lines.

    python benchmarks/suite.py --system freight|ray|dask --plan PLAN.json --out OUT.jsonl

Started by ``compare.py`` for each system and pass, with the interpreter of the system's
virtualenv. The cluster starts with the first workload that needs one. Each line of ``OUT`` is an
event: ``meta``, then per workload ``start``, its ``row`` figures (samples: the rate of each timed
round, or the figure of each repetition; cpu: each round's CPU microseconds per operation over
the process tree, for the rate rows of Ray-like systems) or an ``error``, and ``end``; ``done`` at
the very end.
The parent reads the lines as they come, so a workload that hangs can be timed out and the
workloads after it run in a new process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import traceback
from dataclasses import asdict, replace
from typing import Any

import extra
import microbenchmark as mb
from rows import ACTORS_100, LATENCY, QUEUE, START, WAIT_10K

DASK_MULTI_N = 1000


class RayLike:
    """freight or Ray: the same API, the workloads of microbenchmark.py and extra.py."""

    def __init__(self, system: str, sizes: mb.Sizes, ex: extra.ExtraSizes, timing: mb.Timing):
        self.system = system
        self.ray = importlib.import_module(system)
        self.sizes, self.ex, self.timing = sizes, ex, timing
        self.version = str(getattr(self.ray, "__version__", "unknown"))
        self.config: dict[str, Any] = {"init": "init() with defaults"}
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.ray.init()
            self.started = True
            self.micro = mb.workloads(self.ray, mb.define_remotes(self.ray), self.sizes)
            self.remotes = extra.define_remotes(self.ray)

    def run(self, name: str) -> dict[str, dict[str, Any]]:
        if name == START:
            return extra.first_result(self.system, self.ex.start_reps)
        self._start()
        ray, r = self.ray, self.remotes
        cpu: list[float] = []
        if name in self.micro:
            rates, _ = mb.run_bench(ray, self.micro[name], self.timing, cpu)
            return {name: {"samples": rates, "cpu": cpu}}
        if name == WAIT_10K:
            drain = extra.wait_10k(ray, r, self.ex)
            rates = mb.measure(drain, self.ex.wait_tasks, self.timing, cpu)
            return {name: {"samples": rates, "cpu": cpu}}
        if name == ACTORS_100:
            return {name: {"samples": extra.concurrent_actors(ray, r, self.ex)}}
        if name == LATENCY:
            cuts = extra.latency_under_load(ray, r, self.ex)
            return {f"{LATENCY} p{p}": {"samples": [v]} for p, v in cuts.items()}
        if name == QUEUE:
            return extra.task_queue(ray, r, self.ex.queue_tasks, self.system)
        raise ValueError(f"{self.system} has no workload named {name!r}")

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


class Dask:
    """Dask's LocalCluster; only the workloads whose definition carries over."""

    def __init__(self, sizes: mb.Sizes, ex: extra.ExtraSizes, timing: mb.Timing) -> None:
        import dask
        import dask_workloads
        import distributed

        self.dw = dask_workloads
        self.ex, self.timing = ex, timing
        self.version = f"{dask.__version__} (distributed {distributed.__version__})"
        # Dask runs tiny tasks ~10x slower than freight here: one call of Ray's 4 x 10,000
        # "multi client tasks async" would take minutes, so each client submits fewer (the
        # figure is a rate either way).
        self.sizes = replace(sizes, multi_n=min(sizes.multi_n, DASK_MULTI_N))
        self.config = {"LocalCluster": dask_workloads.CLUSTER, "multi_n": self.sizes.multi_n}
        self.cluster: Any = None

    def run(self, name: str) -> dict[str, dict[str, Any]]:
        dw = self.dw
        if name == START:
            return extra.first_result("dask", self.ex.start_reps)
        if self.cluster is None:
            self.cluster, self.client = dw.start_cluster()
        client = self.client
        rates = dw.rate_workloads(client, self.sizes)
        if name in rates:
            fn, multiplier = rates[name]
            return {name: {"samples": mb.measure(fn, multiplier, self.timing)}}
        if name == WAIT_10K:
            drain = dw.wait_10k(client, self.ex)
            return {name: {"samples": mb.measure(drain, self.ex.wait_tasks, self.timing)}}
        if name == ACTORS_100:
            return {name: {"samples": dw.concurrent_actors(client, self.ex)}}
        if name == LATENCY:
            cuts = dw.latency_under_load(client, self.ex)
            return {f"{LATENCY} p{p}": {"samples": [v]} for p, v in cuts.items()}
        if name == QUEUE:
            return dw.task_queue(client, self.ex.queue_tasks)
        raise ValueError(f"dask has no workload named {name!r}")

    def close(self) -> None:
        if self.cluster is not None:
            self.client.close()
            self.cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", choices=["freight", "ray", "dask"], required=True)
    p.add_argument("--plan", required=True, help="JSON: workloads, smoke, timing, queue_tasks")
    p.add_argument("--out", required=True, help="JSON-lines file to append the events to")
    args = p.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    sizes = mb.SMOKE if plan["smoke"] else mb.FULL
    ex = replace(
        extra.SMOKE_EXTRA if plan["smoke"] else extra.FULL_EXTRA, queue_tasks=plan["queue_tasks"]
    )
    timing = mb.Timing(**plan["timing"])
    with open(args.out, "a", buffering=1) as out:

        def emit(**event: Any) -> None:
            out.write(json.dumps(event) + "\n")

        backend: RayLike | Dask
        if args.system == "dask":
            backend = Dask(sizes, ex, timing)
        else:
            backend = RayLike(args.system, sizes, ex, timing)
        emit(
            event="meta",
            system=args.system,
            version=backend.version,
            python=platform.python_version(),
            pid=os.getpid(),
            config=backend.config,
            sizes=asdict(backend.sizes),
            extra_sizes=asdict(ex),
        )
        try:
            for name in plan["workloads"]:
                emit(event="start", workload=name)
                try:
                    rows = backend.run(name)
                except Exception as e:  # one workload failing must not stop the others
                    traceback.print_exc()
                    emit(event="error", workload=name, error=f"{type(e).__name__}: {e}"[:2000])
                else:
                    for row, rec in rows.items():
                        emit(event="row", workload=name, row=row, **rec)
                        print(f"[{args.system}] {row}: {rec['samples']}", flush=True)
                emit(event="end", workload=name)
        finally:
            backend.close()
        emit(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
