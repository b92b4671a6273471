"""The suite's workloads beyond Ray's microbenchmark, for freight and Ray (same API).

Start-up to a first task result, a queue of many tasks from one driver with the peak memory of
the process tree, 10,000 tasks drained with ``wait``, 100 concurrent actors, and the latency from
submission to a task's start under a steady load. ``dask_workloads.py`` has the Dask versions.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import psutil
from rows import QUEUE, QUEUE_RSS_AGENT, QUEUE_RSS_TREE, SHUTDOWN, START

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 1024**3
MARK = "FIRST_RESULT_JSON "  # the line first_result.py prints its figures on


@dataclass(frozen=True)
class ExtraSizes:
    """Sizes of the extra workloads; ``queue_tasks`` is set per system by the suite."""

    start_reps: int  # fresh interpreters per pass in "start to first task result"
    queue_tasks: int  # tasks in the task queue
    wait_tasks: int  # tasks in "10,000 tasks with wait"
    wait_batch: int  # num_returns of each wait
    actors: int  # actors in "100 concurrent actors"
    actor_reps: int  # times the 100 actors are created per pass
    inflight: int  # tasks kept in flight in the latency workload
    latency_s: float  # recorded seconds of the latency workload
    latency_warmup_s: float


FULL_EXTRA = ExtraSizes(
    start_reps=3,
    queue_tasks=1_000_000,
    wait_tasks=10_000,
    wait_batch=100,
    actors=100,
    actor_reps=1,
    inflight=200,
    latency_s=3.0,
    latency_warmup_s=0.5,
)
SMOKE_EXTRA = ExtraSizes(
    start_reps=1,
    queue_tasks=2_000,
    wait_tasks=200,
    wait_batch=10,
    actors=4,
    actor_reps=1,
    inflight=20,
    latency_s=0.3,
    latency_warmup_s=0.05,
)


class TreeSampler:
    """Samples the RSS of this process and all its descendants every ``period`` seconds.

    Keeps the peak of the whole tree and of the driver plus its node agent(s), each summed at
    one instant. Runs in a thread: reading /proc releases the GIL, so the driver barely notices.
    """

    def __init__(self, is_agent: Callable[[psutil.Process], bool], period: float = 0.05) -> None:
        self.is_agent = is_agent
        self.period = period
        self.peak_tree = 0
        self.peak_driver_agent = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._me = psutil.Process()
        self._known: dict[int, tuple[psutil.Process, bool]] = {}

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        driver = tree = self._me.memory_info().rss
        agent = 0
        for child in children:
            known = self._known.get(child.pid)
            if known is None or known[0] != child:
                try:
                    known = (child, self.is_agent(child))
                except psutil.Error:
                    continue
                self._known[child.pid] = known
            try:
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            tree += rss
            if known[1]:
                agent += rss
        self.samples += 1
        self.peak_tree = max(self.peak_tree, tree)
        self.peak_driver_agent = max(self.peak_driver_agent, driver + agent)


def is_agent_of(system: str) -> Callable[[psutil.Process], bool]:
    """Which descendant of the driver is the node agent: freight's node process, Ray's raylet."""
    if system == "freight":
        return lambda p: p.cmdline()[1:3] == ["-m", "freight.node"]
    if system == "ray":
        return lambda p: p.name() == "raylet"
    return lambda p: False  # Dask: the scheduler runs inside the driver process


def first_result(system: str, reps: int, timeout_s: float = 180) -> dict[str, dict[str, Any]]:
    """Start ``reps`` fresh interpreters that each start a cluster and get one task result."""
    start, stop = [], []
    script = os.path.join(HERE, "first_result.py")
    for _ in range(reps):
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, script, "--system", system, "--t0", repr(t0)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"first_result.py exited with code {proc.returncode}: {proc.stderr[-2000:]}"
            )
        figures = json.loads(lines[-1][len(MARK) :])
        start.append(figures["first_result_s"])
        stop.append(figures["shutdown_s"])
    return {START: {"samples": start}, SHUTDOWN: {"samples": stop}}


def percentiles(latencies_s: list[float]) -> dict[int, float]:
    """p50, p95 and p99 in milliseconds."""
    if len(latencies_s) < 2:
        value = latencies_s[0] * 1000 if latencies_s else float("nan")
        return {50: value, 95: value, 99: value}
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return {p: cuts[p - 1] * 1000 for p in (50, 95, 99)}


def define_remotes(ray: Any) -> SimpleNamespace:
    """The remote function and actor class of the extra workloads."""

    @ray.remote
    def tiny():
        return b"ok"

    @ray.remote
    def stamp():
        return time.time()

    @ray.remote(num_cpus=0)
    class Pinger:
        def ping(self):
            return b"ok"

    return SimpleNamespace(tiny=tiny, stamp=stamp, Pinger=Pinger)


def task_queue(ray: Any, r: SimpleNamespace, n: int, system: str) -> dict[str, dict[str, Any]]:
    """Submit ``n`` tiny tasks keeping every ref, then get them all; rate and peak RSS."""
    from microbenchmark import tree_cpu

    with TreeSampler(is_agent_of(system)) as sampler:
        used = tree_cpu()
        start = time.perf_counter()
        refs = [r.tiny.remote() for _ in range(n)]
        submitted = time.perf_counter() - start
        values = ray.get(refs)
        elapsed = time.perf_counter() - start
        used = tree_cpu() - used
    if len(values) != n:
        raise RuntimeError(f"got {len(values)} results for {n} tasks")
    size = {"tasks": n, "submit_s": submitted, "total_s": elapsed, "rss_samples": sampler.samples}
    return {
        QUEUE: {"samples": [n / elapsed], "cpu": [used / n * 1e6], "size": size},
        QUEUE_RSS_AGENT: {"samples": [sampler.peak_driver_agent / GIB], "size": size},
        QUEUE_RSS_TREE: {"samples": [sampler.peak_tree / GIB], "size": size},
    }


def wait_10k(ray: Any, r: SimpleNamespace, sizes: ExtraSizes) -> Callable[[], None]:
    """One operation: submit the tasks, then drain them with wait in batches of 100."""

    def drain() -> None:
        rest = [r.tiny.remote() for _ in range(sizes.wait_tasks)]
        while rest:
            _, rest = ray.wait(rest, num_returns=min(sizes.wait_batch, len(rest)))

    return drain


def concurrent_actors(ray: Any, r: SimpleNamespace, sizes: ExtraSizes) -> list[float]:
    """Create the actors, call one method on each, get all results, kill them; actors/s."""
    rates = []
    for _ in range(sizes.actor_reps):
        start = time.perf_counter()
        actors = [r.Pinger.remote() for _ in range(sizes.actors)]
        ray.get([a.ping.remote() for a in actors])
        for a in actors:
            ray.kill(a)
        rates.append(sizes.actors / (time.perf_counter() - start))
    return rates


def latency_under_load(ray: Any, r: SimpleNamespace, sizes: ExtraSizes) -> dict[int, float]:
    """Keep ``inflight`` tasks running; latency = a task's start time - its submission time."""
    pending: dict[Any, float] = {}

    def submit() -> None:
        t = time.time()
        pending[r.stamp.remote()] = t

    for _ in range(sizes.inflight):
        submit()
    latencies: list[float] = []
    record_from = end = float("inf")  # the clock starts with the first result (warm workers)
    while True:
        ready, _ = ray.wait(list(pending), num_returns=1)
        now = time.perf_counter()
        if end == float("inf"):
            record_from = now + sizes.latency_warmup_s
            end = record_from + sizes.latency_s
        for ref in ready:
            submitted = pending.pop(ref)
            started = ray.get(ref)
            if now >= record_from:
                latencies.append(started - submitted)
            submit()
        if now >= end and len(latencies) >= 2:
            break
    ray.get(list(pending))
    return percentiles(latencies)
