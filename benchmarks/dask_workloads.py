"""The suite's workloads on Dask (distributed), where the definition carries over.

One ``LocalCluster(processes=True)`` with one single-threaded worker process per CPU, the closest
match to one worker process per CPU in freight and Ray. A task is ``client.submit(f, pure=False)``
(``pure=False``: every submission runs, as in the other systems); a get is ``result()`` or
``client.gather``. "multi client tasks async" submits from inside tasks with ``worker_client()``.
Dask has no object store calls (put/get of refs) nor process-per-actor actors, so those rows of
Ray's microbenchmark are left out; its actors (objects inside a worker) are measured in "100
concurrent actors", which the table notes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from extra import GIB, ExtraSizes, TreeSampler, is_agent_of, percentiles
from microbenchmark import Sizes
from rows import ACTORS_100, LATENCY, QUEUE, QUEUE_RSS_AGENT, QUEUE_RSS_TREE, WAIT_10K

CLUSTER = {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1, "processes": True}


def small_value() -> bytes:
    return b"ok"


def stamp() -> float:
    return time.time()


def small_value_batch(n: int) -> None:
    from distributed import worker_client

    with worker_client() as client:
        client.gather([client.submit(small_value, pure=False) for _ in range(n)])


class Pinger:
    def ping(self) -> bytes:
        return b"ok"


def start_cluster() -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(**CLUSTER)
    return cluster, Client(cluster)


def rate_workloads(client: Any, s: Sizes) -> dict[str, tuple[Callable[[], Any], float]]:
    """Rows measured with Ray's method: the operation and what one call counts for."""

    def batch() -> None:
        client.gather([client.submit(small_value, pure=False) for _ in range(s.batch)])

    return {
        "single client tasks and get batch": (batch, 1),
        "single client tasks sync": (lambda: client.submit(small_value, pure=False).result(), 1),
        "single client tasks async": (batch, s.batch),
        "multi client tasks async": (
            lambda: client.gather(
                [client.submit(small_value_batch, s.multi_n, pure=False) for _ in range(s.clients)]
            ),
            s.multi_n * s.clients,
        ),
    }


def wait_10k(client: Any, sizes: ExtraSizes) -> Callable[[], None]:
    """Submit the tasks, then take their results as they complete."""
    from distributed import as_completed

    def drain() -> None:
        futures = [client.submit(small_value, pure=False) for _ in range(sizes.wait_tasks)]
        for _ in as_completed(futures, with_results=True):
            pass

    return drain


def concurrent_actors(client: Any, sizes: ExtraSizes) -> list[float]:
    """Create the actors, call one method on each, get all results, release them."""
    rates = []
    for _ in range(sizes.actor_reps):
        start = time.perf_counter()
        futures = [client.submit(Pinger, actor=True, pure=False) for _ in range(sizes.actors)]
        actors = [f.result() for f in futures]
        calls = [a.ping() for a in actors]
        values = [c.result() for c in calls]
        if values != [b"ok"] * sizes.actors:
            raise RuntimeError("an actor call returned a wrong value")
        del actors, calls
        client.cancel(futures)
        rates.append(sizes.actors / (time.perf_counter() - start))
    return rates


def latency_under_load(client: Any, sizes: ExtraSizes) -> dict[int, float]:
    """Keep ``inflight`` tasks running; latency = a task's start time - its submission time."""
    from distributed import as_completed

    submitted: dict[str, float] = {}
    queue = as_completed(with_results=True)

    def submit() -> None:
        t = time.time()
        future = client.submit(stamp, pure=False)
        submitted[future.key] = t
        queue.add(future)

    for _ in range(sizes.inflight):
        submit()
    latencies: list[float] = []
    record_from = end = float("inf")  # the clock starts with the first result (warm workers)
    left = len(submitted)
    for future, started in queue:
        now = time.perf_counter()
        if end == float("inf"):
            record_from = now + sizes.latency_warmup_s
            end = record_from + sizes.latency_s
        submitted_at = submitted.pop(future.key)
        if record_from <= now and (now < end or len(latencies) < 2):
            latencies.append(started - submitted_at)
        left -= 1
        if now < end or len(latencies) < 2:
            submit()
            left += 1
        if left == 0:
            break
    return percentiles(latencies)


def task_queue(client: Any, n: int) -> dict[str, dict[str, Any]]:
    """Submit ``n`` tiny tasks keeping every future, then gather them all."""
    with TreeSampler(is_agent_of("dask")) as sampler:
        start = time.perf_counter()
        futures = [client.submit(small_value, pure=False) for _ in range(n)]
        submitted = time.perf_counter() - start
        values = client.gather(futures)
        elapsed = time.perf_counter() - start
    if len(values) != n:
        raise RuntimeError(f"got {len(values)} results for {n} tasks")
    size = {"tasks": n, "submit_s": submitted, "total_s": elapsed, "rss_samples": sampler.samples}
    return {
        QUEUE: {"samples": [n / elapsed], "size": size},
        QUEUE_RSS_AGENT: {"samples": [sampler.peak_driver_agent / GIB], "size": size},
        QUEUE_RSS_TREE: {"samples": [sampler.peak_tree / GIB], "size": size},
    }


EXTRA_NAMES = (WAIT_10K, ACTORS_100, LATENCY)
